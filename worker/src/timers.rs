//! Timers of a keyed operator: event-time timers fire when the watermark passes them, processing-time
//! timers when the wall clock does. A timer is identified by (time, namespace, key); registering it
//! twice is the same timer, as in Flink. Timers fire in time order, then by namespace, then by key.
//!
//! Timers are grouped by (time, namespace): windows register one timer per key at the same time, so
//! the ordered part stays as small as the number of distinct firing times.

use std::collections::BTreeMap;

use hashbrown::HashSet;

use crate::checkpoint::state::{RestoredState, StateWriter, decode, push_record, records};
use crate::error::Result;
use crate::keys::key_group;
use crate::state::Namespace;

/// The snapshot section timers are written to.
const TIMERS_SECTION: &str = "timers";
use crate::time::{TimeDomain, Timestamp};

/// One timer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub time: Timestamp,
    pub namespace: Namespace,
    pub key: Box<[u8]>,
}

/// A group being fired: its (time, namespace) and its keys, sorted, popped from the end.
type Firing = ((Timestamp, Namespace), Vec<Vec<u8>>);

#[derive(Debug, Default)]
struct Queue {
    groups: BTreeMap<(Timestamp, Namespace), HashSet<Vec<u8>>>,
    /// Keys of the group being fired, sorted, popped from the end.
    firing: Option<Firing>,
    len: usize,
}

impl Queue {
    fn insert(&mut self, time: Timestamp, namespace: Namespace, key: &[u8]) {
        let group = self.groups.entry((time, namespace)).or_default();
        if !group.contains(key) {
            group.insert(key.to_vec());
            self.len += 1;
        }
    }

    fn remove(&mut self, time: Timestamp, namespace: Namespace, key: &[u8]) {
        if let Some(group) = self.groups.get_mut(&(time, namespace))
            && group.remove(key)
        {
            self.len -= 1;
            if group.is_empty() {
                self.groups.remove(&(time, namespace));
            }
        }
        if let Some((id, keys)) = &mut self.firing
            && *id == (time, namespace)
            && let Some(pos) = keys.iter().position(|k| k == key)
        {
            keys.remove(pos);
            self.len -= 1;
        }
    }

    fn first_time(&self) -> Option<Timestamp> {
        let firing = self.firing.as_ref().map(|((t, _), _)| *t);
        let grouped = self.groups.first_key_value().map(|((t, _), _)| *t);
        match (firing, grouped) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn pop_due(&mut self, time: Timestamp) -> Option<Timer> {
        loop {
            if let Some(((t, ns), keys)) = &mut self.firing {
                // A group registered meanwhile at an earlier time fires first.
                let earlier = self
                    .groups
                    .first_key_value()
                    .is_some_and(|(id, _)| *id < (*t, *ns));
                if !earlier {
                    if let Some(key) = keys.pop() {
                        self.len -= 1;
                        return Some(Timer {
                            time: *t,
                            namespace: *ns,
                            key: key.into_boxed_slice(),
                        });
                    }
                    self.firing = None;
                    continue;
                }
                // Put the rest back and fire the earlier group first.
                if let Some(((t, ns), keys)) = self.firing.take() {
                    let group = self.groups.entry((t, ns)).or_default();
                    group.extend(keys);
                }
            }
            let (&(t, ns), _) = self.groups.first_key_value()?;
            if t > time {
                return None;
            }
            let group = self.groups.remove(&(t, ns)).unwrap_or_default();
            let mut keys: Vec<Vec<u8>> = group.into_iter().collect();
            keys.sort_unstable_by(|a, b| b.cmp(a));
            self.firing = Some(((t, ns), keys));
        }
    }
}

/// The event-time and processing-time timers of one operator subtask.
#[derive(Debug, Default)]
pub struct TimerService {
    event: Queue,
    processing: Queue,
}

impl TimerService {
    fn queue(&mut self, domain: TimeDomain) -> &mut Queue {
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
        self.queue(domain).insert(time, namespace, key);
    }

    /// Deletes a timer if it exists.
    pub fn delete(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        key: &[u8],
        namespace: Namespace,
    ) {
        self.queue(domain).remove(time, namespace, key);
    }

    /// Removes and returns the earliest timer at or before `time`.
    pub fn pop_due(&mut self, domain: TimeDomain, time: Timestamp) -> Option<Timer> {
        self.queue(domain).pop_due(time)
    }

    /// The earliest processing-time timer.
    pub fn next_processing_time(&self) -> Option<Timestamp> {
        self.processing.first_time()
    }

    /// Writes every timer into section `timers` of its key's key group (snapshots happen between
    /// calls, never while a group is half fired by the runtime, but a firing group is kept anyway).
    pub fn snapshot(&self, max_parallelism: u32, out: &mut StateWriter) -> Result<()> {
        let mut by_group: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for (domain, queue) in [
            (TimeDomain::EventTime, &self.event),
            (TimeDomain::ProcessingTime, &self.processing),
        ] {
            let firing = queue
                .firing
                .iter()
                .flat_map(|((t, ns), keys)| keys.iter().map(move |k| (*t, *ns, k)));
            let grouped = queue
                .groups
                .iter()
                .flat_map(|((t, ns), keys)| keys.iter().map(move |k| (*t, *ns, k)));
            for (time, ns, key) in firing.chain(grouped) {
                let buf = by_group.entry(key_group(key, max_parallelism)).or_default();
                push_record(buf, &(domain, time, ns, key.as_slice()))?;
            }
        }
        for (kg, bytes) in by_group {
            out.keyed(kg, TIMERS_SECTION, &bytes);
        }
        Ok(())
    }

    /// Registers the timers of the restored key groups.
    pub fn restore(&mut self, state: &RestoredState) -> Result<()> {
        for (_, section) in state.sections(TIMERS_SECTION) {
            for record in records(section) {
                let (domain, time, ns, key): (TimeDomain, Timestamp, Namespace, Vec<u8>) =
                    decode(record?)?;
                self.register(domain, time, &key, ns);
            }
        }
        Ok(())
    }

    /// Number of timers registered in `domain`.
    pub fn len(&self, domain: TimeDomain) -> usize {
        match domain {
            TimeDomain::EventTime => self.event.len,
            TimeDomain::ProcessingTime => self.processing.len,
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
        t.register(TimeDomain::EventTime, 10, b"z", ns);
        t.register(TimeDomain::EventTime, 10, b"a", ns);
        t.register(TimeDomain::EventTime, 10, b"a", ns);
        t.register(TimeDomain::EventTime, 30, b"c", ns);
        t.delete(TimeDomain::EventTime, 30, b"c", ns);
        assert_eq!(t.len(TimeDomain::EventTime), 3);
        let fired: Vec<_> = std::iter::from_fn(|| t.pop_due(TimeDomain::EventTime, 25))
            .map(|t| (t.time, t.key.to_vec()))
            .collect();
        assert_eq!(
            fired,
            vec![
                (10, b"a".to_vec()),
                (10, b"z".to_vec()),
                (20, b"b".to_vec())
            ]
        );
        assert!(t.pop_due(TimeDomain::EventTime, i64::MAX).is_none());
        assert_eq!(t.len(TimeDomain::EventTime), 0);
    }

    #[test]
    fn a_timer_registered_while_firing_at_an_earlier_time_fires_first() {
        let mut t = TimerService::default();
        let ns = Namespace::Global;
        t.register(TimeDomain::EventTime, 10, b"a", ns);
        t.register(TimeDomain::EventTime, 10, b"b", ns);
        let first = t.pop_due(TimeDomain::EventTime, 100).unwrap();
        assert_eq!(&*first.key, b"a");
        t.register(TimeDomain::EventTime, 5, b"x", ns);
        t.delete(TimeDomain::EventTime, 10, b"b", ns);
        let next = t.pop_due(TimeDomain::EventTime, 100).unwrap();
        assert_eq!((next.time, &*next.key), (5, &b"x"[..]));
        assert!(t.pop_due(TimeDomain::EventTime, 100).is_none());
    }
}
