//! The subtask shared by generator sources whose row `n` is a pure function of `n` (Nexmark,
//! datagen): subtask `i` of `p` produces rows `i, i + p, i + 2p, …` below an end, a batch at a time,
//! optionally paced by a wall-clock [`Throttle`]. The same rows come out at any parallelism.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use super::throttle::{Admit, Throttle};
use crate::error::Result;
use crate::operator::{Source, SourceContext, SourcePoll, SubtaskInfo};

/// A generator that builds the rows `start, start + step, …` (`len` of them) as one batch.
pub(crate) trait IndexedBatches: Send + Sync + 'static {
    fn batch(&self, start: u64, step: u64, len: usize) -> Result<RecordBatch>;
}

/// Subtask `info` of a generator of the rows below `end`, at most `rate` rows/s over all subtasks.
pub(crate) fn subtask<G: IndexedBatches>(
    generator: Arc<G>,
    info: &SubtaskInfo,
    end: u64,
    rate: Option<u64>,
) -> Box<dyn Source> {
    let p = u64::from(info.parallelism.max(1));
    let i = u64::from(info.index);
    // Rows i, i + p, … below `end`.
    let total = if end > i { (end - i - 1) / p + 1 } else { 0 };
    Box::new(Interleaved {
        generator,
        first: i,
        step: p,
        next: 0,
        total,
        throttle: rate.map(|r| Throttle::new(r as f64 / p as f64)),
    })
}

struct Interleaved<G> {
    generator: Arc<G>,
    /// Index of this subtask's first row.
    first: u64,
    step: u64,
    /// How many of this subtask's rows were generated.
    next: u64,
    /// How many it generates in all.
    total: u64,
    throttle: Option<Throttle>,
}

impl<G: IndexedBatches> Source for Interleaved<G> {
    fn poll(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll> {
        let left = self.total - self.next;
        if left == 0 {
            return Ok(SourcePoll::Finished);
        }
        let mut len = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(ctx.batch_size.max(1));
        if let Some(throttle) = &mut self.throttle {
            match throttle.admit(len) {
                Admit::Rows(n) => len = len.min(n),
                Admit::Wait(wait) => return Ok(SourcePoll::Pending(wait)),
            }
        }
        let start = self.first.wrapping_add(self.next.wrapping_mul(self.step));
        let batch = self.generator.batch(start, self.step, len)?;
        self.next += len as u64;
        Ok(SourcePoll::Data(batch))
    }
}
