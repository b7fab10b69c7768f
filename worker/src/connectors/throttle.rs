//! A wall-clock rate limit for generator sources (`with_rate_limit` on the Nexmark and datagen
//! sources): how many rows a source subtask may emit now, or how long it should wait.
//!
//! It only paces one subtask against the wall clock; it does not coordinate subtasks (each gets an
//! equal share of the source's rate) and it says nothing about event time, which the generators
//! derive from row indexes.

use std::time::{Duration, Instant};

/// Paces one source subtask to `per_second` rows per second of wall-clock time, counted from its
/// first poll. Rows are granted in chunks of about 10 ms worth (at least one row), so that a fast
/// rate still makes batches of a useful size and a slow one does not wait for a whole batch.
#[derive(Debug, Clone)]
pub(crate) struct Throttle {
    per_second: f64,
    started: Option<Instant>,
    granted: u64,
}

/// What a [`Throttle`] allows right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Emit up to this many rows (at least 1).
    Rows(usize),
    /// Emit nothing; poll again after this long.
    Wait(Duration),
}

impl Throttle {
    /// A throttle of `per_second` rows per second (callers skip the throttle for "no limit").
    pub(crate) fn new(per_second: f64) -> Self {
        Self {
            per_second: per_second.max(1e-9),
            started: None,
            granted: 0,
        }
    }

    /// How many of the `want` rows the subtask may emit now. Granted rows count as emitted.
    pub(crate) fn admit(&mut self, want: usize) -> Admit {
        self.admit_at(want, Instant::now())
    }

    fn admit_at(&mut self, want: usize, now: Instant) -> Admit {
        let started = *self.started.get_or_insert(now);
        let chunk = ((self.per_second / 100.0) as u64).clamp(1, (want as u64).max(1));
        let elapsed = now.duration_since(started).as_secs_f64();
        let due = (elapsed * self.per_second) as u64;
        let available = due.saturating_sub(self.granted);
        if available >= chunk {
            let rows = available.min(want as u64);
            self.granted += rows;
            return Admit::Rows(usize::try_from(rows).unwrap_or(usize::MAX));
        }
        let ready_at = (self.granted + chunk) as f64 / self.per_second;
        let wait = (ready_at - elapsed).clamp(0.0, 1.0);
        Admit::Wait(Duration::from_secs_f64(wait).max(Duration::from_micros(100)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_waits_first_then_grants_what_is_due() {
        let t0 = Instant::now();
        let at = |micros: u64| t0 + Duration::from_micros(micros);
        let mut t = Throttle::new(1000.0);
        // Nothing is due at the very first poll; the first chunk (10 rows) after 10 ms.
        match t.admit_at(100, t0) {
            Admit::Wait(w) => {
                assert!(w > Duration::from_millis(9) && w <= Duration::from_millis(10))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.admit_at(100, at(5_500)), Admit::Wait(_)));
        assert_eq!(t.admit_at(100, at(30_500)), Admit::Rows(30));
        // Capped by what the caller wants; the rest stays due but waits for a whole chunk.
        assert_eq!(t.admit_at(5, at(40_500)), Admit::Rows(5));
        assert!(matches!(t.admit_at(100, at(40_500)), Admit::Wait(_)));
        assert_eq!(t.admit_at(100, at(45_500)), Admit::Rows(10));
        assert_eq!(t.admit_at(100, at(2_000_500)), Admit::Rows(100));
    }
}
