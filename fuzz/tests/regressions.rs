//! Every seed is read, and every input that ever made a parser fail (kept under
//! `fuzz/regressions/<target>/` by `cargo xtask fuzz`) is now read or refused with a typed
//! error.

use calmflow_fuzz::{Harness, Outcome, Target, input, regressions_dir, seeds};

#[test]
fn every_seed_is_read() {
    let harness = Harness::new().unwrap();
    for target in Target::ALL {
        for (name, bytes) in seeds(target) {
            assert_eq!(
                harness.run(target, &bytes),
                Outcome::Read,
                "{}: seed {name}",
                target.name()
            );
        }
    }
}

#[test]
fn every_saved_failure_is_now_a_typed_error_or_a_read() {
    let harness = Harness::new().unwrap();
    let mut replayed = 0;
    for target in Target::ALL {
        let Ok(entries) = std::fs::read_dir(regressions_dir(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let outcome = harness.run(target, &bytes);
            assert!(
                !matches!(outcome, Outcome::Panicked(_)),
                "{}: {outcome:?}",
                path.display()
            );
            replayed += 1;
        }
    }
    eprintln!("{replayed} regression inputs replayed");
}

/// A short run of every target in the default test run: 200 mutated inputs each, none
/// panicking (the full search is `cargo xtask fuzz`).
#[test]
fn the_first_mutated_inputs_of_every_target_do_not_panic() {
    let harness = Harness::new().unwrap();
    for target in Target::ALL {
        let seeds = seeds(target);
        let mut refused = 0;
        for i in 0..200 {
            let bytes = input(target, &seeds, i);
            match harness.run(target, &bytes) {
                Outcome::Panicked(message) => {
                    panic!("{} input {i}: {message}", target.name())
                }
                Outcome::Refused(_) => refused += 1,
                Outcome::Read => {}
            }
        }
        // The mutations damage most inputs: a target that refuses none is not being fuzzed.
        assert!(refused >= 20, "{}: {refused} of 200 refused", target.name());
    }
}

/// Input `i` is a pure function of `(target, i)`: a failure is reproduced from its index.
#[test]
fn inputs_are_reproducible_from_their_index() {
    for target in Target::ALL {
        let seeds = seeds(target);
        for i in [0, 7, 12_345] {
            assert_eq!(input(target, &seeds, i), input(target, &seeds, i));
        }
        assert_ne!(input(target, &seeds, 100), input(target, &seeds, 101));
    }
}
