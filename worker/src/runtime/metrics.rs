//! Live counters of a running job, read by the local mode's progress line and by tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

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
    /// Nanoseconds spent blocked on full output channels (backpressure from downstream).
    pub backpressured_ns: AtomicU64,
}

impl Default for SubtaskMetrics {
    fn default() -> Self {
        Self {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            watermark: AtomicI64::new(MIN_WATERMARK),
            malformed: AtomicU64::new(0),
            backpressured_ns: AtomicU64::new(0),
        }
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
