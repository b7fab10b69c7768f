//! Recovery: a job whose task fails is restarted from its latest completed checkpoint, as often as
//! its restart strategy allows (Flink's fixed-delay, exponential-delay and failure-rate
//! strategies). The strategies' decisions are pure ([`RestartTracker`]); [`run`] carries them out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::checkpointing::CheckpointStats;
use super::{JobHandle, RestoreOptions, RunOptions, start_with};
use crate::checkpoint::storage::latest_checkpoint;
use crate::error::{Error, Result};
use crate::plan::LogicalGraph;

/// When a failed job is restarted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum RestartStrategy {
    /// Never: the first failure fails the job.
    None,
    /// Up to `attempts` restarts, `delay_ms` apart.
    FixedDelay { attempts: u32, delay_ms: u64 },
    /// Restarts with a delay that starts at `initial_ms` and grows by `multiplier` up to `max_ms`;
    /// it goes back to `initial_ms` after `reset_after_ms` without a failure. At most `attempts`
    /// restarts in all.
    ExponentialDelay {
        initial_ms: u64,
        max_ms: u64,
        multiplier: f64,
        reset_after_ms: u64,
        attempts: u32,
    },
    /// Restarts after `delay_ms` unless more than `max_failures` failures happened within
    /// `interval_ms`.
    FailureRate {
        max_failures: u32,
        interval_ms: u64,
        delay_ms: u64,
    },
}

/// The pure part: given the failure times so far, whether and when to restart.
#[derive(Debug)]
pub struct RestartTracker {
    strategy: RestartStrategy,
    restarts: u32,
    failures: VecDeque<u64>,
    current_delay: u64,
    last_failure_ms: Option<u64>,
}

impl RestartTracker {
    pub fn new(strategy: RestartStrategy) -> Self {
        Self {
            strategy,
            restarts: 0,
            failures: VecDeque::new(),
            current_delay: 0,
            last_failure_ms: None,
        }
    }

    /// A failure at `now_ms`: the delay before restarting, or `None` to give up.
    pub fn on_failure(&mut self, now_ms: u64) -> Option<u64> {
        let previous = self.last_failure_ms.replace(now_ms);
        let delay = match &self.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay_ms } => {
                (self.restarts < *attempts).then_some(*delay_ms)
            }
            RestartStrategy::ExponentialDelay {
                initial_ms,
                max_ms,
                multiplier,
                reset_after_ms,
                attempts,
            } => {
                let quiet = previous.is_none_or(|p| now_ms.saturating_sub(p) >= *reset_after_ms);
                self.current_delay = if quiet || self.current_delay == 0 {
                    *initial_ms
                } else {
                    ((self.current_delay as f64 * multiplier) as u64).min(*max_ms)
                };
                (self.restarts < *attempts).then_some(self.current_delay)
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval_ms,
                delay_ms,
            } => {
                self.failures.push_back(now_ms);
                while self
                    .failures
                    .front()
                    .is_some_and(|&t| now_ms.saturating_sub(t) > *interval_ms)
                {
                    self.failures.pop_front();
                }
                (self.failures.len() <= *max_failures as usize).then_some(*delay_ms)
            }
        };
        if delay.is_some() {
            self.restarts += 1;
        }
        delay
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }
}

/// What is visible about a running job across restarts.
#[derive(Debug, Default)]
pub struct JobStatus {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    restarts: u32,
    last_failure: Option<String>,
    attempt_checkpoints: Option<Arc<CheckpointStats>>,
    restored_from: Vec<String>,
    completed_before: Vec<crate::runtime::checkpointing::CompletedSnapshot>,
}

impl JobStatus {
    /// How often the job was restarted.
    pub fn restarts(&self) -> u32 {
        self.inner.lock().restarts
    }

    /// The failure that caused the last restart (or ended the job).
    pub fn last_failure(&self) -> Option<String> {
        self.inner.lock().last_failure.clone()
    }

    /// The snapshot directory each restart restored from, in order.
    pub fn restored_from(&self) -> Vec<String> {
        self.inner.lock().restored_from.clone()
    }

    /// Every snapshot completed, over all attempts.
    pub fn completed_checkpoints(&self) -> Vec<crate::runtime::checkpointing::CompletedSnapshot> {
        let s = self.inner.lock();
        let mut all = s.completed_before.clone();
        if let Some(c) = &s.attempt_checkpoints {
            all.extend(c.history());
        }
        all
    }
}

/// Runs `graph` to its end, restarting it from its latest checkpoint after failures as `strategy`
/// allows. Returns the last error once the strategy gives up.
pub fn run(
    graph: &LogicalGraph,
    options: &RunOptions,
    strategy: RestartStrategy,
    status: &Arc<JobStatus>,
) -> Result<()> {
    run_with(graph, options, strategy, status, |_| {})
}

/// [`run`], calling `attempt` with each attempt's handle once it started (tests and tools watch the
/// job through it).
pub fn run_with(
    graph: &LogicalGraph,
    options: &RunOptions,
    strategy: RestartStrategy,
    status: &Arc<JobStatus>,
    mut attempt: impl FnMut(&JobHandle),
) -> Result<()> {
    let mut tracker = RestartTracker::new(strategy);
    let mut options = options.clone();
    loop {
        let result = start_with(graph, &options).and_then(|handle| {
            status.inner.lock().attempt_checkpoints = Some(handle.checkpoints().clone());
            attempt(&handle);
            handle.join()
        });
        {
            let mut s = status.inner.lock();
            if let Some(c) = s.attempt_checkpoints.take() {
                let done = c.history();
                s.completed_before.extend(done);
            }
        }
        let error = match result {
            Ok(()) => return Ok(()),
            Err(Error::Plan { .. }) | Err(Error::Restore(_)) => return result,
            Err(e) => e,
        };
        status.inner.lock().last_failure = Some(error.to_string());
        let now = crate::time::now_millis().max(0) as u64;
        let Some(delay) = tracker.on_failure(now) else {
            tracing::error!(error = %error, restarts = tracker.restarts(), "job failed; restart strategy gives up");
            return Err(error);
        };
        status.inner.lock().restarts = tracker.restarts();
        tracing::warn!(error = %error, delay_ms = delay, "job failed; restarting from the latest checkpoint");
        std::thread::sleep(Duration::from_millis(delay));
        if let Some(checkpoints) = &options.checkpoints
            && let Some(latest) = latest_checkpoint(&checkpoints.store)?
        {
            status.inner.lock().restored_from.push(latest.dir.clone());
            options.restore = Some(RestoreOptions {
                snapshot: latest,
                allow_non_restored_state: options
                    .restore
                    .as_ref()
                    .is_some_and(|r| r.allow_non_restored_state),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_delay_allows_a_number_of_attempts() {
        let mut t = RestartTracker::new(RestartStrategy::FixedDelay {
            attempts: 2,
            delay_ms: 10,
        });
        assert_eq!(t.on_failure(0), Some(10));
        assert_eq!(t.on_failure(100), Some(10));
        assert_eq!(t.on_failure(200), None);
        assert_eq!(t.restarts(), 2);
    }

    #[test]
    fn exponential_delay_grows_caps_and_resets_after_quiet() {
        let mut t = RestartTracker::new(RestartStrategy::ExponentialDelay {
            initial_ms: 10,
            max_ms: 50,
            multiplier: 2.0,
            reset_after_ms: 1000,
            attempts: 10,
        });
        let delays: Vec<_> = [0, 10, 20, 30, 40]
            .into_iter()
            .map(|now| t.on_failure(now))
            .collect();
        assert_eq!(
            delays,
            vec![Some(10), Some(20), Some(40), Some(50), Some(50)]
        );
        assert_eq!(
            t.on_failure(5000),
            Some(10),
            "quiet for longer than reset_after"
        );
    }

    #[test]
    fn failure_rate_gives_up_above_the_rate() {
        let mut t = RestartTracker::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval_ms: 1000,
            delay_ms: 5,
        });
        assert_eq!(t.on_failure(0), Some(5));
        assert_eq!(t.on_failure(500), Some(5));
        assert_eq!(t.on_failure(900), None, "third failure within a second");
        let mut t = RestartTracker::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval_ms: 1000,
            delay_ms: 5,
        });
        assert_eq!(t.on_failure(0), Some(5));
        assert_eq!(t.on_failure(500), Some(5));
        assert_eq!(
            t.on_failure(2000),
            Some(5),
            "the old failures left the window"
        );
    }

    #[test]
    fn none_never_restarts() {
        assert_eq!(
            RestartTracker::new(RestartStrategy::None).on_failure(0),
            None
        );
    }
}
