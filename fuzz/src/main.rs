//! `calmflow-fuzz`: runs every parser of user files on mutated inputs for a time budget
//! (`cargo xtask fuzz`), in a worker process per target that this supervisor restarts
//! after an abort or a hang; every failing input is saved under `fuzz/regressions/`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use calmflow_fuzz::{Harness, Outcome, Target, input, regressions_dir, seeds};
use clap::Parser;

/// The largest single allocation a parser may ask for: every seed is under 1 MiB, so a
/// request this large comes from a size read out of a damaged header, not from data.
const ALLOCATION_CAP: usize = 1 << 30;

/// The system allocator, refusing requests above [`ALLOCATION_CAP`] (the process then
/// aborts with "memory allocation of N bytes failed", which the supervisor records).
struct Capped;

// SAFETY: every call is forwarded unchanged to the system allocator, or refused with a
// null pointer, which `GlobalAlloc` allows. (A cap on allocations needs an allocator, and
// `GlobalAlloc` is an unsafe trait: the one unsafe code outside the CPU kernels.)
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// Mutation fuzzing of calmflow's file parsers.
#[derive(Debug, Parser)]
#[command(name = "calmflow-fuzz")]
struct Args {
    /// Seconds of fuzzing per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Targets to run (default: all): npy, npz, csv, h5ad, safetensors, neox-config,
    /// tokenizer, config, checkpoint, checkpoint-state, checkpoint-config,
    /// checkpoint-manifest, optimizer.
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
    /// Seconds one input may take before it counts as a hang.
    #[arg(long, default_value_t = 10)]
    hang_seconds: u64,
    /// Internal: run as the worker of one target, from this input index.
    #[arg(long, hide = true, value_name = "NAME")]
    worker: Option<String>,
    /// Internal: the worker's first input index.
    #[arg(long, hide = true, default_value_t = 0)]
    from: u64,
    /// Write input INDEX of the one --target to --out instead of fuzzing (to reproduce a
    /// failure by its index).
    #[arg(long, value_name = "INDEX", requires = "out")]
    input: Option<u64>,
    /// Where --input writes.
    #[arg(long, value_name = "FILE", requires = "input")]
    out: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(name) = &args.worker {
        return match Target::by_name(name) {
            Some(target) => worker(target, args.from, Duration::from_secs(args.seconds)),
            None => ExitCode::from(2),
        };
    }
    if let (Some(i), Some(out)) = (args.input, &args.out) {
        let [name] = args.targets.as_slice() else {
            eprintln!("--input needs exactly one --target");
            return ExitCode::from(2);
        };
        let Some(target) = Target::by_name(name) else {
            eprintln!("unknown target `{name}`");
            return ExitCode::from(2);
        };
        return match std::fs::write(out, input(target, &seeds(target), i)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cannot write {}: {e}", out.display());
                ExitCode::FAILURE
            }
        };
    }
    let targets: Vec<Target> = if args.targets.is_empty() {
        Target::ALL.to_vec()
    } else {
        let mut chosen = Vec::new();
        for name in &args.targets {
            match Target::by_name(name) {
                Some(t) => chosen.push(t),
                None => {
                    let names: Vec<_> = Target::ALL.iter().map(|t| t.name()).collect();
                    eprintln!("unknown target `{name}`; targets: {}", names.join(", "));
                    return ExitCode::from(2);
                }
            }
        }
        chosen
    };
    let mut findings = 0;
    println!("| target | inputs | read | refused (typed error) | panics | aborts | hangs |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for target in targets {
        match supervise(target, &args) {
            Ok(tally) => {
                findings += tally.panics + tally.aborts + tally.hangs;
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    target.name(),
                    tally.inputs,
                    tally.read,
                    tally.refused,
                    tally.panics,
                    tally.aborts,
                    tally.hangs
                );
            }
            Err(e) => {
                eprintln!("{}: {e}", target.name());
                return ExitCode::FAILURE;
            }
        }
    }
    if findings > 0 {
        eprintln!(
            "{findings} failing input(s); one of each kind of failure saved under {}",
            regressions_dir(Target::Npy)
                .parent()
                .map_or_else(String::new, |p| p.display().to_string())
        );
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The worker: runs inputs `from, from + 1, …` until `budget` is spent, printing each
/// index before it runs and each panic after it.
fn worker(target: Target, from: u64, budget: Duration) -> ExitCode {
    std::panic::set_hook(Box::new(|_| {}));
    let harness = match Harness::new() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("the fuzzer's harness cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let seeds = seeds(target);
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    let (mut read, mut refused) = (0u64, 0u64);
    let mut i = from;
    while started.elapsed() < budget {
        let bytes = input(target, &seeds, i);
        if writeln!(out, "start {i}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return ExitCode::FAILURE;
        }
        let line = match harness.run(target, &bytes) {
            Outcome::Read => {
                read += 1;
                None
            }
            Outcome::Refused(_) => {
                refused += 1;
                None
            }
            Outcome::Panicked(message) => Some(format!("panic {i} {}", message.replace('\n', " "))),
        };
        if let Some(line) = line
            && writeln!(out, "{line}").is_err()
        {
            return ExitCode::FAILURE;
        }
        // Counts so far, so that a worker that aborts later still reports them.
        if (i - from) % 1000 == 999 && writeln!(out, "tally {read} {refused}").is_err() {
            return ExitCode::FAILURE;
        }
        i += 1;
    }
    match writeln!(out, "tally {read} {refused}").and_then(|()| writeln!(out, "done")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

#[derive(Debug, Default)]
struct Tally {
    inputs: u64,
    read: u64,
    refused: u64,
    panics: u64,
    aborts: u64,
    hangs: u64,
}

/// What tells failures apart: their kind and message with the numbers left out (offsets,
/// sizes and indices differ from input to input for one fault).
fn signature(kind: &str, detail: &str) -> String {
    let words: String = detail.chars().filter(|c| !c.is_ascii_digit()).collect();
    format!("{kind}: {words}")
}

/// Saves input `i` of `target` as a regression input named by its kind and index, unless
/// a failure with the same [`signature`] was saved in this run.
fn save(
    target: Target,
    seeds: &[(String, Vec<u8>)],
    i: u64,
    kind: &str,
    detail: &str,
    seen: &mut std::collections::BTreeSet<String>,
) -> std::io::Result<()> {
    if !seen.insert(signature(kind, detail)) {
        return Ok(());
    }
    let bytes = input(target, seeds, i);
    let dir = regressions_dir(target);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{kind}-{i}.bin"));
    std::fs::write(&path, bytes)?;
    eprintln!(
        "{}: input {i} {kind}: {detail} (saved as {})",
        target.name(),
        path.display()
    );
    Ok(())
}

/// Runs `target`'s worker for the budget, restarting it after an abort or a hang.
fn supervise(target: Target, args: &Args) -> std::io::Result<Tally> {
    let exe = std::env::current_exe()?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let hang = Duration::from_secs(args.hang_seconds);
    let seeds = seeds(target);
    let mut tally = Tally::default();
    let mut seen = std::collections::BTreeSet::new();
    let mut from = 0u64;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut child = Command::new(&exe)
            .args(["--worker", target.name(), "--from", &from.to_string()])
            .args(["--seconds", &left.as_secs().max(1).to_string()])
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (send, lines) = mpsc::channel();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut current = None;
        let mut finished = false;
        // The worker's latest counts (cumulative within this worker).
        let (mut read, mut refused) = (0u64, 0u64);
        loop {
            match lines.recv_timeout(hang) {
                Ok(line) => {
                    let mut words = line.splitn(3, ' ');
                    match (words.next(), words.next(), words.next()) {
                        (Some("start"), Some(i), _) => {
                            current = i.parse::<u64>().ok();
                            tally.inputs += 1;
                        }
                        (Some("panic"), Some(i), message) => {
                            tally.panics += 1;
                            let i = i.parse::<u64>().unwrap_or(0);
                            save(target, &seeds, i, "panic", message.unwrap_or(""), &mut seen)?;
                        }
                        (Some("tally"), Some(r), Some(f)) => {
                            read = r.parse::<u64>().unwrap_or(read);
                            refused = f.parse::<u64>().unwrap_or(refused);
                        }
                        (Some("done"), _, _) => finished = true,
                        _ => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    tally.read += read;
                    tally.refused += refused;
                    child.kill()?;
                    child.wait()?;
                    if let Some(i) = current {
                        tally.hangs += 1;
                        save(
                            target,
                            &seeds,
                            i,
                            "hang",
                            &format!("still running after {hang:?}"),
                            &mut seen,
                        )?;
                        from = i + 1;
                    }
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    tally.read += read;
                    tally.refused += refused;
                    let status = child.wait()?;
                    if finished {
                        return Ok(tally);
                    }
                    let mut stderr = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        e.read_to_string(&mut stderr)?;
                    }
                    let i = current.unwrap_or(from);
                    tally.aborts += 1;
                    // The abort's message and the first frame of calmflow's own code.
                    let first = stderr.lines().next().unwrap_or("");
                    let frame = stderr
                        .lines()
                        .map(str::trim)
                        .find(|l| l.contains("calmflow_") && !l.contains("calmflow_fuzz"))
                        .unwrap_or("");
                    let tail = format!("{first} {frame}");
                    save(
                        target,
                        &seeds,
                        i,
                        "abort",
                        &format!("{status}: {tail}"),
                        &mut seen,
                    )?;
                    from = i + 1;
                    break;
                }
            }
        }
    }
    Ok(tally)
}
