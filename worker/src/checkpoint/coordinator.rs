//! The JobManager's checkpoint coordinator, as Flink's: a checkpoint is triggered at the sources
//! every `interval_ms`, at most `max_concurrent` at a time, never sooner than `min_pause_ms` after
//! the previous one completed; it completes when every task has acknowledged it, expires after
//! `timeout_ms`, and is aborted when a task declines it. Completing checkpoint N subsumes (aborts)
//! every pending checkpoint older than N. Acknowledgements for a checkpoint no longer pending are
//! ignored.

use std::collections::{BTreeMap, BTreeSet};

/// Checkpointing settings, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointConfig {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub max_concurrent: usize,
    pub min_pause_ms: u64,
}

impl Default for CheckpointConfig {
    /// Flink's defaults for everything but the interval (Flink has none; 10 s here).
    fn default() -> Self {
        Self {
            interval_ms: 10_000,
            timeout_ms: 600_000,
            max_concurrent: 1,
            min_pause_ms: 0,
        }
    }
}

/// Why a checkpoint did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortReason {
    Expired,
    Declined { task: usize, reason: String },
    Subsumed { by: u64 },
}

/// What the coordinator decided; the caller carries it out.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<S> {
    /// Inject barrier `id` (stamped `timestamp_ms`) at every source.
    Trigger { id: u64, timestamp_ms: u64 },
    /// Every task acknowledged `id`: write its metadata (last), then tell the tasks (sinks commit).
    Completed { id: u64, states: BTreeMap<usize, S> },
    /// `id` is given up; what its tasks wrote is garbage, the previous checkpoint stays the latest.
    Aborted { id: u64, reason: AbortReason },
}

#[derive(Debug)]
struct Pending<S> {
    started_ms: u64,
    waiting: BTreeSet<usize>,
    acked: BTreeMap<usize, S>,
}

/// Decides checkpoints for a job of `tasks` tasks (numbered `0..tasks`).
#[derive(Debug)]
pub struct Coordinator<S> {
    config: CheckpointConfig,
    tasks: usize,
    next_id: u64,
    last_trigger_ms: Option<u64>,
    last_completion_ms: Option<u64>,
    latest_completed: Option<u64>,
    pending: BTreeMap<u64, Pending<S>>,
}

impl<S> Coordinator<S> {
    /// A coordinator whose first checkpoint gets id `first_id` (after a restore, one more than the
    /// restored checkpoint's, so ids never repeat).
    pub fn new(config: CheckpointConfig, tasks: usize, first_id: u64) -> Self {
        Self {
            config,
            tasks,
            next_id: first_id,
            last_trigger_ms: None,
            last_completion_ms: None,
            latest_completed: None,
            pending: BTreeMap::new(),
        }
    }

    pub fn latest_completed(&self) -> Option<u64> {
        self.latest_completed
    }

    pub fn pending(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending.keys().copied()
    }

    /// When `poll` next has something to do (a trigger or an expiry); never before `now_ms`.
    pub fn next_deadline_ms(&self, now_ms: u64) -> u64 {
        let expiry = self
            .pending
            .values()
            .map(|p| p.started_ms.saturating_add(self.config.timeout_ms))
            .min();
        // With as many pending as allowed, only a completion (not a time) frees a slot.
        let trigger =
            (self.pending.len() < self.max_concurrent()).then(|| self.earliest_trigger_ms());
        [expiry, trigger]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now_ms)
            .max(now_ms)
    }

    /// A minimum pause means one checkpoint at a time, as in Flink.
    fn max_concurrent(&self) -> usize {
        if self.config.min_pause_ms > 0 {
            1
        } else {
            self.config.max_concurrent.max(1)
        }
    }

    fn earliest_trigger_ms(&self) -> u64 {
        let by_interval = self
            .last_trigger_ms
            .map_or(0, |t| t.saturating_add(self.config.interval_ms));
        let by_pause = self
            .last_completion_ms
            .map_or(0, |t| t.saturating_add(self.config.min_pause_ms));
        by_interval.max(by_pause)
    }

    /// Starts a checkpoint now, whatever the interval and the number pending (savepoints, and the
    /// final checkpoint after the sources ended); returns its id.
    pub fn force_trigger(&mut self, now_ms: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.last_trigger_ms = Some(now_ms);
        self.pending.insert(
            id,
            Pending {
                started_ms: now_ms,
                waiting: (0..self.tasks).collect(),
                acked: BTreeMap::new(),
            },
        );
        id
    }

    /// Expires what is overdue, without triggering anything.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Event<S>> {
        let mut events = Vec::new();
        let overdue: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ms >= p.started_ms.saturating_add(self.config.timeout_ms))
            .map(|(&id, _)| id)
            .collect();
        for id in overdue {
            self.pending.remove(&id);
            events.push(Event::Aborted {
                id,
                reason: AbortReason::Expired,
            });
        }
        events
    }

    /// Expires what is overdue, then triggers a checkpoint if one is due and allowed.
    pub fn poll(&mut self, now_ms: u64) -> Vec<Event<S>> {
        let mut events = self.expire(now_ms);
        if self.pending.len() < self.max_concurrent() && now_ms >= self.earliest_trigger_ms() {
            let id = self.force_trigger(now_ms);
            events.push(Event::Trigger {
                id,
                timestamp_ms: now_ms,
            });
        }
        events
    }

    /// Task `task` has snapshotted its part of checkpoint `id` (its state handle `state`).
    pub fn acknowledge(&mut self, id: u64, task: usize, state: S, now_ms: u64) -> Vec<Event<S>> {
        let Some(p) = self.pending.get_mut(&id) else {
            return Vec::new(); // late: expired, aborted or subsumed
        };
        if !p.waiting.remove(&task) {
            return Vec::new(); // duplicate or unknown task
        }
        p.acked.insert(task, state);
        if !p.waiting.is_empty() {
            return Vec::new();
        }
        let Some(done) = self.pending.remove(&id) else {
            return Vec::new();
        };
        self.latest_completed = Some(id);
        self.last_completion_ms = Some(now_ms);
        let mut events = vec![Event::Completed {
            id,
            states: done.acked,
        }];
        let older: Vec<u64> = self.pending.range(..id).map(|(&i, _)| i).collect();
        for old in older {
            self.pending.remove(&old);
            events.push(Event::Aborted {
                id: old,
                reason: AbortReason::Subsumed { by: id },
            });
        }
        events
    }

    /// Task `task` could not take its part of checkpoint `id` (e.g. the store failed).
    pub fn decline(&mut self, id: u64, task: usize, reason: &str) -> Vec<Event<S>> {
        match self.pending.remove(&id) {
            Some(_) => vec![Event::Aborted {
                id,
                reason: AbortReason::Declined {
                    task,
                    reason: reason.to_string(),
                },
            }],
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval: u64, timeout: u64, max_concurrent: usize, pause: u64) -> CheckpointConfig {
        CheckpointConfig {
            interval_ms: interval,
            timeout_ms: timeout,
            max_concurrent,
            min_pause_ms: pause,
        }
    }

    fn triggered(events: &[Event<&str>]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Trigger { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn triggers_every_interval_and_completes_on_the_last_ack() {
        let mut c = Coordinator::new(config(1000, 60_000, 1, 0), 2, 1);
        assert_eq!(triggered(&c.poll(0)), vec![1]);
        assert!(triggered(&c.poll(500)).is_empty());
        assert!(c.acknowledge(1, 0, "a", 600).is_empty());
        assert!(
            c.acknowledge(1, 0, "dup", 610).is_empty(),
            "a duplicate ack counts once"
        );
        let done = c.acknowledge(1, 1, "b", 700);
        assert_eq!(
            done,
            vec![Event::Completed {
                id: 1,
                states: BTreeMap::from([(0, "a"), (1, "b")])
            }]
        );
        assert_eq!(c.latest_completed(), Some(1));
        assert!(triggered(&c.poll(999)).is_empty());
        assert_eq!(triggered(&c.poll(1000)), vec![2]);
    }

    #[test]
    fn max_concurrent_and_min_pause_hold_triggers_back() {
        let mut c: Coordinator<&str> = Coordinator::new(config(100, 60_000, 2, 0), 1, 1);
        assert_eq!(triggered(&c.poll(0)), vec![1]);
        assert_eq!(triggered(&c.poll(100)), vec![2]);
        assert!(triggered(&c.poll(200)).is_empty(), "two pending already");
        assert_eq!(c.pending().collect::<Vec<_>>(), vec![1, 2]);

        let mut c: Coordinator<&str> = Coordinator::new(config(100, 60_000, 5, 1000), 1, 1);
        assert_eq!(triggered(&c.poll(0)), vec![1]);
        assert!(
            triggered(&c.poll(150)).is_empty(),
            "a pause means one at a time"
        );
        c.acknowledge(1, 0, "s", 300);
        assert!(
            triggered(&c.poll(1299)).is_empty(),
            "pause runs from the completion"
        );
        assert_eq!(triggered(&c.poll(1300)), vec![2]);
        assert_eq!(c.next_deadline_ms(1300), 1300 + 60_000);
    }

    #[test]
    fn expiry_and_decline_abort_without_touching_the_latest() {
        let mut c = Coordinator::new(config(100, 1000, 3, 0), 2, 7);
        c.poll(0);
        c.acknowledge(7, 0, "x", 10);
        c.acknowledge(7, 1, "y", 20);
        assert_eq!(c.latest_completed(), Some(7));
        c.poll(100); // 8
        c.poll(200); // 9
        c.poll(300); // 10
        let events = c.poll(1100);
        assert_eq!(
            events,
            vec![
                Event::Aborted {
                    id: 8,
                    reason: AbortReason::Expired
                },
                Event::Trigger {
                    id: 11,
                    timestamp_ms: 1100
                }
            ]
        );
        assert_eq!(
            c.decline(9, 1, "S3 unavailable"),
            vec![Event::Aborted {
                id: 9,
                reason: AbortReason::Declined {
                    task: 1,
                    reason: "S3 unavailable".into()
                }
            }]
        );
        assert!(
            c.acknowledge(8, 0, "late", 1150).is_empty(),
            "late acks are ignored"
        );
        assert!(c.decline(8, 0, "late").is_empty());
        assert_eq!(c.latest_completed(), Some(7));
        assert_eq!(c.pending().collect::<Vec<_>>(), vec![10, 11]);
    }

    #[test]
    fn completing_a_checkpoint_subsumes_older_pending_ones() {
        let mut c = Coordinator::new(config(100, 60_000, 3, 0), 2, 1);
        c.poll(0);
        c.poll(100);
        c.poll(200);
        assert_eq!(c.pending().collect::<Vec<_>>(), vec![1, 2, 3]);
        c.acknowledge(3, 0, "a", 210);
        let events = c.acknowledge(3, 1, "b", 220);
        assert_eq!(
            events,
            vec![
                Event::Completed {
                    id: 3,
                    states: BTreeMap::from([(0, "a"), (1, "b")])
                },
                Event::Aborted {
                    id: 1,
                    reason: AbortReason::Subsumed { by: 3 }
                },
                Event::Aborted {
                    id: 2,
                    reason: AbortReason::Subsumed { by: 3 }
                },
            ]
        );
        assert_eq!(c.latest_completed(), Some(3));
        assert_eq!(c.pending().count(), 0);
    }
}
