//! Channels between subtasks and the partitioners that feed them.
//!
//! Every pair of connected producer and consumer subtasks has its own bounded channel, so a slow
//! consumer blocks exactly the producers that feed it (backpressure) and the memory in flight is at
//! most `channel_capacity` batches per channel. Data, watermarks, idleness, barriers and the end of
//! input travel in order on the same channel. Partitioning is the business of [`EdgeWriter`]; operators
//! never see it.

use std::sync::Arc;

use arrow::array::UInt32Array;
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;

use crossbeam_channel::Sender;

use super::metrics::SubtaskMetrics;
use crate::error::{Error, Result};
use crate::keys::{KeyRows, KeySpec, key_group, subtask_for_key_group};
use crate::plan::Partitioning;
use crate::time::Timestamp;

/// What travels on a channel.
#[derive(Debug, Clone)]
pub enum Message {
    Data(RecordBatch),
    Watermark(Timestamp),
    /// The producer became idle (`true`) or active again (`false`).
    Idle(bool),
    /// A checkpoint barrier, in band with the data.
    Barrier(Barrier),
    /// The producer's data has ended (after its final watermark): operators flush what they hold.
    /// Barriers of a final checkpoint may still follow.
    EndOfData,
    /// The producer will send nothing more at all.
    EndOfInput,
}

/// A checkpoint barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    pub id: u64,
    pub timestamp_ms: u64,
    /// Whether this is a savepoint after which the job stops (stop-with-savepoint).
    pub stop: bool,
    /// Whether the snapshot is a savepoint (self-contained, under `savepoints/`).
    pub savepoint: bool,
}

/// The producer end of one edge for one producer subtask.
pub(crate) struct EdgeWriter {
    senders: Vec<Sender<Message>>,
    route: Route,
    pub(crate) records_out: u64,
    /// Where waits for room in full channels (backpressure) are counted.
    metrics: Arc<SubtaskMetrics>,
}

enum Route {
    /// One target (forward), or rebalance round-robin.
    RoundRobin {
        next: usize,
    },
    Broadcast,
    Hash {
        key: KeySpec,
        max_parallelism: u32,
        keys: KeyRows,
        targets: Vec<u32>,
    },
}

impl EdgeWriter {
    pub(crate) fn new(
        partitioning: &Partitioning,
        senders: Vec<Sender<Message>>,
        producer_index: usize,
        max_parallelism: u32,
        metrics: Arc<SubtaskMetrics>,
    ) -> Self {
        let route = match partitioning {
            // Start rebalancing at different targets so that producers spread evenly.
            Partitioning::Forward | Partitioning::Rebalance => Route::RoundRobin {
                next: producer_index % senders.len().max(1),
            },
            Partitioning::Broadcast => Route::Broadcast,
            Partitioning::Hash(key) => Route::Hash {
                key: key.clone(),
                max_parallelism,
                keys: KeyRows::default(),
                targets: Vec::new(),
            },
        };
        Self {
            senders,
            route,
            records_out: 0,
            metrics,
        }
    }

    /// Sends records to the subtasks the partitioning selects.
    pub(crate) fn send_data(&mut self, batch: RecordBatch) -> Result<()> {
        self.records_out += batch.num_rows() as u64;
        match &mut self.route {
            Route::RoundRobin { next } => {
                let target = *next;
                *next = (*next + 1) % self.senders.len();
                send(&self.metrics, &self.senders[target], Message::Data(batch))
            }
            Route::Broadcast => {
                for sender in &self.senders {
                    send(&self.metrics, sender, Message::Data(batch.clone()))?;
                }
                Ok(())
            }
            Route::Hash {
                key,
                max_parallelism,
                keys,
                targets,
            } => {
                let parallelism = self.senders.len() as u32;
                if parallelism == 1 {
                    return send(&self.metrics, &self.senders[0], Message::Data(batch));
                }
                keys.encode(key, &batch)?;
                targets.clear();
                targets.extend(keys.iter().map(|k| {
                    subtask_for_key_group(
                        key_group(k, *max_parallelism),
                        parallelism,
                        *max_parallelism,
                    )
                }));
                if let Some(&first) = targets.first()
                    && targets.iter().all(|&t| t == first)
                {
                    return send(
                        &self.metrics,
                        &self.senders[first as usize],
                        Message::Data(batch),
                    );
                }
                let mut indices: Vec<Vec<u32>> = vec![Vec::new(); self.senders.len()];
                for (row, &target) in targets.iter().enumerate() {
                    indices[target as usize].push(row as u32);
                }
                for (target, rows) in indices.into_iter().enumerate() {
                    if !rows.is_empty() {
                        let part = take_record_batch(&batch, &UInt32Array::from(rows))?;
                        send(&self.metrics, &self.senders[target], Message::Data(part))?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Sends a control message (watermark, idleness, barrier, end of input) to every target.
    pub(crate) fn broadcast(&mut self, message: &Message) -> Result<()> {
        for sender in &self.senders {
            send(&self.metrics, sender, message.clone())?;
        }
        Ok(())
    }
}

/// Sends `message`, counting the time spent waiting when the channel is full (as it passes, so
/// that a wait that never ends shows too).
fn send(metrics: &SubtaskMetrics, sender: &Sender<Message>, message: Message) -> Result<()> {
    match sender.try_send(message) {
        Ok(()) => Ok(()),
        Err(crossbeam_channel::TrySendError::Full(message)) => {
            let started = std::time::Instant::now();
            metrics.wait_started(started);
            let result = sender.send(message).map_err(|_| Error::Cancelled);
            metrics.wait_ended(started);
            result
        }
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(Error::Cancelled),
    }
}

/// Per-channel watermark bookkeeping of a consumer: its watermark is the minimum over the channels
/// that are active (not idle) and aligned, and never goes back. A channel back from idleness with a
/// watermark behind the combined one is not aligned: it rejoins the minimum once it has caught up
/// (as in Flink's `StatusWatermarkValve`). A finished channel counts as the maximum watermark: it
/// holds nothing back, also when every other channel is idle.
#[derive(Debug)]
pub(crate) struct WatermarkValve {
    channels: Vec<ChannelStatus>,
    current: Timestamp,
    idle: bool,
}

#[derive(Debug, Clone, Copy)]
struct ChannelStatus {
    watermark: Timestamp,
    idle: bool,
    finished: bool,
}

impl WatermarkValve {
    pub(crate) fn new(channels: usize) -> Self {
        Self {
            channels: vec![
                ChannelStatus {
                    watermark: crate::time::MIN_WATERMARK,
                    idle: false,
                    finished: false
                };
                channels
            ],
            current: crate::time::MIN_WATERMARK,
            idle: false,
        }
    }

    /// Records a watermark on `channel`; returns the new combined watermark if it advanced.
    pub(crate) fn watermark(&mut self, channel: usize, watermark: Timestamp) -> Option<Timestamp> {
        let c = &mut self.channels[channel];
        c.watermark = c.watermark.max(watermark);
        self.advance()
    }

    /// Records a change of idleness on `channel`; returns the new combined watermark if it advanced
    /// and the task's own idleness if it changed.
    pub(crate) fn idle(&mut self, channel: usize, idle: bool) -> (Option<Timestamp>, Option<bool>) {
        self.channels[channel].idle = idle;
        let mut advanced = self.advance();
        let all_idle = self.channels.iter().filter(|c| !c.finished).all(|c| c.idle)
            && self.channels.iter().any(|c| !c.finished);
        if all_idle && !self.idle {
            // The last active channel went idle: as Flink does, move up to the highest watermark
            // any channel has reached, so that nothing waits on inputs that have nothing to say.
            let max = self
                .channels
                .iter()
                .filter(|c| !c.finished)
                .map(|c| c.watermark)
                .max();
            if let Some(max) = max
                && max > self.current
            {
                self.current = max;
                advanced = Some(max);
            }
        }
        let changed = (all_idle != self.idle).then(|| {
            self.idle = all_idle;
            all_idle
        });
        (advanced, changed)
    }

    /// Records that `channel` ended.
    pub(crate) fn finish(&mut self, channel: usize) -> Option<Timestamp> {
        self.channels[channel].finished = true;
        self.advance()
    }

    fn advance(&mut self) -> Option<Timestamp> {
        let current = self.current;
        let min = self
            .channels
            .iter()
            .filter(|c| !c.idle)
            .map(|c| {
                if c.finished {
                    crate::time::MAX_WATERMARK
                } else {
                    c.watermark
                }
            })
            .filter(|&w| w >= current)
            .min()?;
        (min > self.current).then(|| {
            self.current = min;
            min
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_is_min_over_active_channels() {
        let mut v = WatermarkValve::new(3);
        assert_eq!(v.watermark(0, 10), None);
        assert_eq!(v.watermark(1, 5), None);
        assert_eq!(v.watermark(2, 7), Some(5));
        // Channel 1 goes idle: it no longer holds the watermark back.
        assert_eq!(v.idle(1, true), (Some(7), None));
        assert_eq!(v.watermark(1, 6), None, "an idle channel does not count");
        // All idle: the task is idle, at the highest watermark any channel reached.
        assert_eq!(v.idle(0, true).1, None);
        assert_eq!(v.idle(2, true), (Some(10), Some(true)));
        // Back to active: the watermark never goes back.
        assert_eq!(v.idle(1, false), (None, Some(false)));
        assert_eq!(v.current, 10);
        assert_eq!(v.watermark(1, 20), Some(20));
        // Channel 1 ends while the others are idle: nothing holds the watermark back any more.
        assert_eq!(v.finish(1), Some(crate::time::MAX_WATERMARK));
    }

    #[test]
    fn a_channel_back_from_idleness_rejoins_once_it_has_caught_up() {
        let mut v = WatermarkValve::new(2);
        assert_eq!(v.watermark(0, 5), None);
        assert_eq!(v.idle(1, true), (Some(5), None));
        assert_eq!(v.watermark(0, 10), Some(10));
        // Back with an older watermark: it does not hold the others back...
        assert_eq!(v.idle(1, false), (None, None));
        assert_eq!(v.watermark(1, 7), None);
        assert_eq!(v.watermark(0, 12), Some(12));
        // ...until it has caught up.
        assert_eq!(v.watermark(1, 15), None);
        assert_eq!(v.watermark(0, 20), Some(15));
    }

    #[test]
    fn an_ended_channel_holds_nothing_back() {
        let mut v = WatermarkValve::new(2);
        assert_eq!(v.watermark(0, 5), None);
        assert_eq!(v.watermark(1, 3), Some(3));
        assert_eq!(v.finish(0), None);
        assert_eq!(
            v.idle(1, true),
            (Some(crate::time::MAX_WATERMARK), Some(true))
        );
    }
}
