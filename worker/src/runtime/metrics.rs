//! Live counters of a running job, read by the local mode's progress line and by tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use crate::time::{MIN_WATERMARK, Timestamp};

/// Counters of one subtask.
#[derive(Debug)]
pub struct SubtaskMetrics {
    /// Records that entered the task (for sources: records produced).
    pub records_in: AtomicU64,
    /// Records sent on the task's outgoing edges.
    pub records_out: AtomicU64,
    /// The last watermark the chain's last operator passed on.
    pub watermark: AtomicI64,
    /// Malformed input records seen (sources).
    pub malformed: AtomicU64,
    /// Nanoseconds of finished waits for room in full output channels.
    waited_ns: AtomicU64,
    /// When the wait under way began (nanoseconds after `origin`, plus one); 0 when none is.
    waiting_since: AtomicU64,
    /// The largest backpressure time reported, so that it never goes back.
    reported_ns: AtomicU64,
    origin: Instant,
}

impl Default for SubtaskMetrics {
    fn default() -> Self {
        Self {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            watermark: AtomicI64::new(MIN_WATERMARK),
            malformed: AtomicU64::new(0),
            waited_ns: AtomicU64::new(0),
            waiting_since: AtomicU64::new(0),
            reported_ns: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }
}

impl SubtaskMetrics {
    /// Marks the start of a wait for room in a full output channel.
    pub(crate) fn wait_started(&self, at: Instant) {
        let since = at.saturating_duration_since(self.origin).as_nanos() as u64;
        self.waiting_since.store(since + 1, Ordering::Relaxed);
    }

    /// Marks the end of the wait that began at `started`.
    pub(crate) fn wait_ended(&self, started: Instant) {
        self.waited_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.waiting_since.store(0, Ordering::Relaxed);
    }

    /// Nanoseconds the subtask has spent blocked on full output channels (backpressure from
    /// downstream), the wait under way included: a task blocked for good shows as backpressured,
    /// not as idle. Never decreases.
    pub fn backpressured_ns(&self) -> u64 {
        let since = self.waiting_since.load(Ordering::Relaxed);
        let open = match since {
            0 => 0,
            s => (self.origin.elapsed().as_nanos() as u64).saturating_sub(s - 1),
        };
        let total = self.waited_ns.load(Ordering::Relaxed) + open;
        self.reported_ns
            .fetch_max(total, Ordering::Relaxed)
            .max(total)
    }
}

/// Counters of one task (chain) over its subtasks.
#[derive(Debug)]
pub struct TaskMetrics {
    pub name: String,
    pub is_source: bool,
    pub subtasks: Vec<Arc<SubtaskMetrics>>,
}

impl TaskMetrics {
    /// Records that entered the task, over all subtasks.
    pub fn records_in(&self) -> u64 {
        self.subtasks
            .iter()
            .map(|s| s.records_in.load(Ordering::Relaxed))
            .sum()
    }

    /// Records the task sent, over all subtasks.
    pub fn records_out(&self) -> u64 {
        self.subtasks
            .iter()
            .map(|s| s.records_out.load(Ordering::Relaxed))
            .sum()
    }

    /// The lowest watermark over the subtasks.
    pub fn watermark(&self) -> Timestamp {
        self.subtasks
            .iter()
            .map(|s| s.watermark.load(Ordering::Relaxed))
            .min()
            .unwrap_or(MIN_WATERMARK)
    }

    /// Malformed records seen, over all subtasks.
    pub fn malformed(&self) -> u64 {
        self.subtasks
            .iter()
            .map(|s| s.malformed.load(Ordering::Relaxed))
            .sum()
    }
}

/// Counters of a whole job.
#[derive(Debug, Default)]
pub struct JobMetrics {
    pub tasks: Vec<TaskMetrics>,
}

impl JobMetrics {
    /// Records produced by all sources.
    pub fn source_records(&self) -> u64 {
        self.tasks
            .iter()
            .filter(|t| t.is_source)
            .map(TaskMetrics::records_in)
            .sum()
    }

    /// Malformed records seen by all sources.
    pub fn malformed_records(&self) -> u64 {
        self.tasks.iter().map(TaskMetrics::malformed).sum()
    }

    /// The watermark of the tasks that end the job (no outgoing edges): how far event time has got.
    pub fn output_watermark(&self, sinks: &[usize]) -> Timestamp {
        sinks
            .iter()
            .map(|&t| self.tasks[t].watermark())
            .min()
            .unwrap_or(MIN_WATERMARK)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_wait_under_way_counts_as_backpressure_and_the_count_never_goes_back() {
        let m = SubtaskMetrics::default();
        assert_eq!(m.backpressured_ns(), 0);
        let started = Instant::now();
        m.wait_started(started);
        std::thread::sleep(std::time::Duration::from_millis(2));
        // Blocked and not back yet: the open wait shows.
        let during = m.backpressured_ns();
        assert!(during >= 2_000_000, "{during}");
        let later = m.backpressured_ns();
        assert!(later >= during);
        m.wait_ended(started);
        let after = m.backpressured_ns();
        assert!(after >= later);
        // No wait under way: the count stands still.
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(m.backpressured_ns(), after);
    }
}
