//! The subtask shared by generator sources whose row `n` is a pure function of `n` (Nexmark,
//! datagen): subtask `i` of `p` produces rows `i, i + p, i + 2p, …` below an end, a batch at a time,
//! optionally paced by a wall-clock [`Throttle`]. The same rows come out at any parallelism, and
//! after a restore at another one.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use serde::{Deserialize, Serialize};

use super::throttle::{Admit, Throttle};
use crate::checkpoint::state::{RestoredState, StateWriter, decode, encode};
use crate::error::Result;
use crate::operator::{Source, SourceContext, SourcePoll, SubtaskInfo};

/// A generator that builds the rows `start, start + step, …` (`len` of them) as one batch.
pub(crate) trait IndexedBatches: Send + Sync + 'static {
    fn batch(&self, start: u64, step: u64, len: usize) -> Result<RecordBatch>;
}

/// Subtask `info` of a generator of the rows below `end`, at most `rate` rows/s over all subtasks.
///
/// The rows are cut into *splits*: at the first start, one per subtask (split `s` of `S` holds rows
/// `s, s + S, …`). A snapshot records each split's position; a restore at another parallelism
/// hands the splits out round-robin, and a subtask with several reads them in step (always the
/// one furthest behind), with a watermark per split.
pub(crate) fn subtask<G: IndexedBatches>(
    generator: Arc<G>,
    info: &SubtaskInfo,
    end: u64,
    rate: Option<u64>,
) -> Box<dyn Source> {
    let p = u64::from(info.parallelism.max(1));
    Box::new(Interleaved {
        generator,
        end,
        splits: vec![Split {
            id: info.index,
            count: info.parallelism.max(1),
            position: 0,
        }],
        throttle: rate.map(|r| Throttle::new(r as f64 / p as f64)),
    })
}

/// One split: rows `id, id + count, …` below the end; `position` of them were generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Split {
    id: u32,
    count: u32,
    position: u64,
}

impl Split {
    fn first(&self) -> u64 {
        u64::from(self.id)
    }

    fn step(&self) -> u64 {
        u64::from(self.count.max(1))
    }

    fn total(&self, end: u64) -> u64 {
        if end > self.first() {
            (end - self.first() - 1) / self.step() + 1
        } else {
            0
        }
    }

    fn next_row(&self) -> u64 {
        self.first()
            .saturating_add(self.position.saturating_mul(self.step()))
    }
}

const SPLITS: &str = "splits";

struct Interleaved<G> {
    generator: Arc<G>,
    end: u64,
    splits: Vec<Split>,
    throttle: Option<Throttle>,
}

impl<G: IndexedBatches> Source for Interleaved<G> {
    fn poll(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll> {
        let end = self.end;
        // The split furthest behind goes next, so that splits advance together.
        let Some(split) = self
            .splits
            .iter_mut()
            .filter(|s| s.position < s.total(end))
            .min_by_key(|s| s.next_row())
        else {
            return Ok(SourcePoll::Finished);
        };
        let left = split.total(end) - split.position;
        let mut len = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(ctx.batch_size.max(1));
        if let Some(throttle) = &mut self.throttle {
            match throttle.admit(len) {
                Admit::Rows(n) => len = len.min(n),
                Admit::Wait(wait) => return Ok(SourcePoll::Pending(wait)),
            }
        }
        let batch = self.generator.batch(split.next_row(), split.step(), len)?;
        split.position += len as u64;
        let id = split.id;
        Ok(if self.splits.len() > 1 {
            SourcePoll::SplitData(id, batch)
        } else {
            SourcePoll::Data(batch)
        })
    }

    fn snapshot(&mut self, out: &mut StateWriter) -> Result<()> {
        for split in &self.splits {
            out.list_entry(SPLITS, encode(split)?);
        }
        Ok(())
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        self.splits = state
            .list(SPLITS)
            .iter()
            .map(|bytes| decode::<Split>(bytes))
            .collect::<Result<_>>()?;
        Ok(())
    }

    fn open_splits(&self) -> Option<Vec<u32>> {
        (self.splits.len() > 1).then(|| {
            self.splits
                .iter()
                .filter(|s| s.position < s.total(self.end))
                .map(|s| s.id)
                .collect()
        })
    }
}
