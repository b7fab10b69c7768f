//! Time: timestamps, watermarks and watermark strategies.
//!
//! Timestamps are milliseconds since the epoch as `i64`, like Flink's. A watermark `w` declares that no
//! more records with a timestamp `<= w` are expected. [`MIN_WATERMARK`] is the initial watermark and
//! [`MAX_WATERMARK`] the one a bounded input sends when it ends (it fires every remaining timer).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMillisecondType};

use crate::error::{Error, Result};

/// Milliseconds since the Unix epoch.
pub type Timestamp = i64;

/// The watermark before any has been seen.
pub const MIN_WATERMARK: Timestamp = i64::MIN;
/// The watermark of an input that has ended.
pub const MAX_WATERMARK: Timestamp = i64::MAX;

/// The wall clock, in milliseconds since the epoch.
pub fn now_millis() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Converts a duration into milliseconds, saturating.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How watermarks are derived from the timestamps a source subtask sees.
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkStrategy {
    /// The event-time column: `Int64` epoch milliseconds or `Timestamp(Millisecond)`.
    pub column: String,
    /// How far behind the largest timestamp seen the watermark stays. Zero for ascending timestamps.
    pub out_of_orderness_ms: i64,
    /// After this long without data, a subtask declares itself idle so that it no longer holds back
    /// the watermark of the operators downstream. `None` never does.
    pub idle_timeout_ms: Option<i64>,
}

impl WatermarkStrategy {
    /// Records may arrive up to `bound` late relative to the largest timestamp seen so far; the
    /// watermark is `max_seen - bound - 1`, as Flink's `forBoundedOutOfOrderness`.
    pub fn bounded_out_of_orderness(column: impl Into<String>, bound: Duration) -> Self {
        Self {
            column: column.into(),
            out_of_orderness_ms: millis(bound),
            idle_timeout_ms: None,
        }
    }

    /// Timestamps never decrease; the watermark is `max_seen - 1`, as Flink's `forMonotonousTimestamps`.
    pub fn ascending(column: impl Into<String>) -> Self {
        Self {
            column: column.into(),
            out_of_orderness_ms: 0,
            idle_timeout_ms: None,
        }
    }

    /// Marks a subtask idle after `timeout` without input.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout_ms = Some(millis(timeout));
        self
    }

    /// The watermark after seeing `max_seen` as the largest timestamp.
    pub fn watermark_for(&self, max_seen: Timestamp) -> Timestamp {
        if max_seen == MIN_WATERMARK {
            return MIN_WATERMARK;
        }
        max_seen
            .saturating_sub(self.out_of_orderness_ms)
            .saturating_sub(1)
    }
}

/// Which clock an operator's timers or windows follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TimeDomain {
    EventTime,
    ProcessingTime,
}

/// The values of an event-time column: `Int64` epoch milliseconds or `Timestamp(Millisecond)`.
pub fn event_time_values(array: &dyn Array) -> Result<&[i64]> {
    match array.data_type() {
        DataType::Int64 => Ok(array.as_primitive::<Int64Type>().values()),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Ok(array.as_primitive::<TimestampMillisecondType>().values())
        }
        other => Err(Error::user(format!("event-time column has type {other}"))),
    }
}

/// The largest non-null event time in an event-time column.
pub fn max_event_time(array: &dyn Array) -> Result<Option<Timestamp>> {
    Ok(match array.data_type() {
        DataType::Int64 => arrow::compute::max(array.as_primitive::<Int64Type>()),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            arrow::compute::max(array.as_primitive::<TimestampMillisecondType>())
        }
        other => return Err(Error::user(format!("event-time column has type {other}"))),
    })
}
