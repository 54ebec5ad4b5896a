//! The host's part of a training step (data points, their coupling), drawn on a thread of
//! its own a few steps ahead, so that the device is not kept waiting for it.
//!
//! Step `s` draws from the stream `step_seed(seed, s, 0)`, which is all the randomness of
//! its pairs: the thread draws exactly what the step itself would, and hands the stream on
//! where the pairs left it (the step then draws its path noise from it). A run with the
//! prefetch is the run without it, bit for bit.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use calmflow_data::{Rng, seeded_rng};
use ndarray::Array2;

use crate::coupling::Coupling;
use crate::data::{FlowData, PointSource};
use crate::error::{Result, TrainError, invalid};
use crate::seed::step_seed;

/// Source points, target points and (for conditional data) each example's condition.
pub(crate) type Pairs = (Array2<f32>, Array2<f32>, Option<Vec<usize>>);

/// Drawn steps waiting for the step in training (a third is drawn meanwhile): enough to
/// hide a draw's time behind a step's, few enough that the batches waiting are small next
/// to the model.
const STEPS_AHEAD: usize = 2;

/// What the pairs of a step are drawn with.
#[derive(Debug, Clone)]
pub(crate) struct PairSettings {
    /// Sequences per batch.
    pub batch_size: usize,
    /// Pairs per sequence (`FlowObjective::pairs_per_example`).
    pub per_example: usize,
    /// How sources and targets are paired.
    pub coupling: Coupling,
}

/// Draws one step's pairs from `rng`.
pub(crate) fn draw_pairs(data: &FlowData, settings: &PairSettings, rng: &mut Rng) -> Result<Pairs> {
    let per = settings.per_example;
    let n = settings.batch_size * per;
    let x0 = data.source.draw(n, rng);
    match &data.conditions {
        None => {
            let x1 = data.target.draw(n, rng);
            let (x0, x1) = settings.coupling.couple(&x0, &x1, rng)?;
            Ok((x0, x1, None))
        }
        Some(cd) => {
            let PointSource::Points(target) = &data.target else {
                return Err(invalid("conditional data needs a target point set"));
            };
            let (x1, conditions) = cd.draw(target, settings.batch_size, per, rng);
            let rows: Vec<usize> = conditions
                .iter()
                .flat_map(|&c| std::iter::repeat_n(c, per))
                .collect();
            let (x0, x1) = settings.coupling.couple_grouped(&x0, &x1, &rows, rng)?;
            Ok((x0, x1, Some(conditions)))
        }
    }
}

/// One step's pairs and the step's stream where they left it.
type Drawn = (usize, Result<Pairs>, Rng);

/// The pairs of steps `first ..= last`, drawn in order on a thread of their own.
pub(crate) struct PairPrefetch {
    receiver: Option<Receiver<Drawn>>,
    thread: Option<JoinHandle<()>>,
}

impl PairPrefetch {
    /// Starts drawing the steps `first ..= last` of a run with `seed`.
    pub(crate) fn start(
        data: Arc<FlowData>,
        settings: PairSettings,
        seed: u64,
        first: usize,
        last: usize,
    ) -> Result<Self> {
        let (sender, receiver) = sync_channel(STEPS_AHEAD);
        let thread = std::thread::Builder::new()
            .name("calmflow-batches".into())
            .spawn(move || produce(&data, &settings, seed, first, last, &sender))
            .map_err(|e| invalid(format!("cannot start the batch-drawing thread: {e}")))?;
        Ok(Self {
            receiver: Some(receiver),
            thread: Some(thread),
        })
    }

    /// The pairs of `step` (the next one in order) and the step's stream.
    pub(crate) fn next(&mut self, step: usize) -> Result<(Pairs, Rng)> {
        let received = self.receiver.as_ref().map(Receiver::recv);
        match received {
            Some(Ok((drawn, pairs, rng))) if drawn == step => Ok((pairs?, rng)),
            Some(Ok((drawn, _, _))) => Err(invalid(format!(
                "the batch-drawing thread drew step {drawn} where step {step} was due"
            ))),
            _ => Err(self.stopped()),
        }
    }

    /// Why the thread stopped sending: its panic, or the end of its steps.
    fn stopped(&mut self) -> TrainError {
        self.receiver = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Err(payload)) => invalid(format!(
                "the batch-drawing thread panicked: {}",
                crate::parallel::panic_message(payload.as_ref())
                    .unwrap_or_else(|| "no message".into())
            )),
            _ => invalid("the batch-drawing thread has no more steps"),
        }
    }
}

impl Drop for PairPrefetch {
    fn drop(&mut self) {
        // A closed channel ends the thread at its next send.
        self.receiver = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn produce(
    data: &FlowData,
    settings: &PairSettings,
    seed: u64,
    first: usize,
    last: usize,
    sender: &SyncSender<Drawn>,
) {
    for step in first..=last {
        let mut rng = seeded_rng(step_seed(seed, step as u64, 0));
        let pairs = draw_pairs(data, settings, &mut rng);
        let failed = pairs.is_err();
        if sender.send((step, pairs, rng)).is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    fn data() -> Arc<FlowData> {
        let points = |shift: f32| {
            Array2::from_shape_fn((50, 2), |(i, j)| {
                ((i * 13 + j * 7) % 17) as f32 * 0.3 + shift
            })
        };
        let source = PointSource::points(points(0.0), "source").unwrap();
        let target = PointSource::points(points(2.0), "target").unwrap();
        Arc::new(FlowData::new(source, target, 0.2, 8, 3).unwrap())
    }

    fn settings() -> PairSettings {
        PairSettings {
            batch_size: 6,
            per_example: 2,
            coupling: Coupling::ExactOt,
        }
    }

    #[test]
    fn prefetched_pairs_and_streams_are_those_the_step_would_draw() {
        let data = data();
        let mut prefetch = PairPrefetch::start(Arc::clone(&data), settings(), 9, 3, 6).unwrap();
        for step in 3..=6 {
            let (pairs, mut rng) = prefetch.next(step).unwrap();
            let mut own = seeded_rng(step_seed(9, step as u64, 0));
            let expected = draw_pairs(&data, &settings(), &mut own).unwrap();
            assert_eq!(pairs, expected, "step {step}");
            assert_eq!(pairs.0.nrows(), 12);
            // The stream continues where the pairs left it.
            assert_eq!(rng.next_u64(), own.next_u64(), "step {step}");
        }
        let past = prefetch.next(7).unwrap_err().to_string();
        assert!(past.contains("no more steps"), "{past}");
    }

    #[test]
    fn a_step_out_of_order_is_an_error_and_dropping_stops_the_thread() {
        let mut prefetch = PairPrefetch::start(data(), settings(), 1, 1, usize::MAX).unwrap();
        let skipped = prefetch.next(2).unwrap_err().to_string();
        assert!(
            skipped.contains("drew step 1 where step 2 was due"),
            "{skipped}"
        );
        // Dropping joins the thread, which stops at its next send: a thread that went on
        // drawing its usize::MAX steps would never return here.
        drop(prefetch);
    }
}
