//! Timers of a keyed operator: event-time timers fire when the watermark passes them, processing-time
//! timers when the wall clock does. A timer is identified by (time, namespace, key); registering it
//! twice is the same timer, as in Flink. Timers fire in time order, ties broken by namespace and key.

use std::collections::BTreeSet;

use crate::state::Namespace;
use crate::time::{TimeDomain, Timestamp};

/// One timer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub time: Timestamp,
    pub namespace: Namespace,
    pub key: Box<[u8]>,
}

/// The event-time and processing-time timers of one operator subtask.
#[derive(Debug, Default)]
pub struct TimerService {
    event: BTreeSet<Timer>,
    processing: BTreeSet<Timer>,
}

impl TimerService {
    fn set(&mut self, domain: TimeDomain) -> &mut BTreeSet<Timer> {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    /// Registers a timer; registering an existing one again changes nothing.
    pub fn register(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        key: &[u8],
        namespace: Namespace,
    ) {
        self.set(domain).insert(Timer {
            time,
            namespace,
            key: key.into(),
        });
    }

    /// Deletes a timer if it exists.
    pub fn delete(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        key: &[u8],
        namespace: Namespace,
    ) {
        self.set(domain).remove(&Timer {
            time,
            namespace,
            key: key.into(),
        });
    }

    /// Removes and returns the earliest timer at or before `time`.
    pub fn pop_due(&mut self, domain: TimeDomain, time: Timestamp) -> Option<Timer> {
        let set = self.set(domain);
        if set.first().is_some_and(|t| t.time <= time) {
            set.pop_first()
        } else {
            None
        }
    }

    /// The earliest processing-time timer.
    pub fn next_processing_time(&self) -> Option<Timestamp> {
        self.processing.first().map(|t| t.time)
    }

    /// Number of timers registered in `domain`.
    pub fn len(&self, domain: TimeDomain) -> usize {
        match domain {
            TimeDomain::EventTime => self.event.len(),
            TimeDomain::ProcessingTime => self.processing.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_order_once() {
        let mut t = TimerService::default();
        let ns = Namespace::Global;
        t.register(TimeDomain::EventTime, 20, b"b", ns);
        t.register(TimeDomain::EventTime, 10, b"a", ns);
        t.register(TimeDomain::EventTime, 10, b"a", ns);
        t.register(TimeDomain::EventTime, 30, b"c", ns);
        t.delete(TimeDomain::EventTime, 30, b"c", ns);
        assert_eq!(t.len(TimeDomain::EventTime), 2);
        let fired: Vec<_> = std::iter::from_fn(|| t.pop_due(TimeDomain::EventTime, 25))
            .map(|t| t.time)
            .collect();
        assert_eq!(fired, vec![10, 20]);
        assert!(t.pop_due(TimeDomain::EventTime, i64::MAX).is_none());
    }
}
