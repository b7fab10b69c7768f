//! Timers of a keyed operator: event-time timers fire when the watermark passes them, processing-time
//! timers when the wall clock does. A timer is identified by (time, namespace, key); registering it
//! twice is the same timer, as in Flink. Timers fire in time order, then by namespace, then by key.
//!
//! Timers are grouped by (time, namespace): windows register one timer per key at the same time, so
//! the ordered part stays as small as the number of distinct firing times.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

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

/// The keys of one (time, namespace) group. A session window's group holds one key (its end moves
/// with every record, so it is made and deleted over and over), a tumbling window's group every
/// key: one key is kept without a hash table.
#[derive(Debug)]
enum Keys {
    One(Vec<u8>),
    Many(HashSet<Vec<u8>>),
}

impl Keys {
    /// Adds `key`; whether it was new.
    fn insert(&mut self, key: &[u8]) -> bool {
        match self {
            Keys::One(one) if one.as_slice() == key => false,
            Keys::One(one) => {
                let mut set = HashSet::with_capacity(2);
                set.insert(std::mem::take(one));
                set.insert(key.to_vec());
                *self = Keys::Many(set);
                true
            }
            Keys::Many(set) if set.contains(key) => false,
            Keys::Many(set) => set.insert(key.to_vec()),
        }
    }

    /// Removes `key`; whether it was there. An emptied `One` reads as empty.
    fn remove(&mut self, key: &[u8]) -> bool {
        match self {
            Keys::One(one) if one.as_slice() == key => {
                *self = Keys::Many(HashSet::new());
                true
            }
            Keys::One(_) => false,
            Keys::Many(set) => set.remove(key),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Keys::Many(set) if set.is_empty())
    }

    fn iter(&self) -> impl Iterator<Item = &Vec<u8>> {
        let (one, many) = match self {
            Keys::One(one) => (Some(one), None),
            Keys::Many(set) => (None, Some(set.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    fn into_vec(self) -> Vec<Vec<u8>> {
        match self {
            Keys::One(one) => vec![one],
            Keys::Many(set) => set.into_iter().collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    groups: BTreeMap<(Timestamp, Namespace), Keys>,
    /// Keys of the group being fired, sorted, popped from the end.
    firing: Option<Firing>,
    len: usize,
}

impl Queue {
    fn insert(&mut self, time: Timestamp, namespace: Namespace, key: &[u8]) {
        match self.groups.entry((time, namespace)) {
            Entry::Vacant(v) => {
                v.insert(Keys::One(key.to_vec()));
                self.len += 1;
            }
            Entry::Occupied(mut o) => {
                if o.get_mut().insert(key) {
                    self.len += 1;
                }
            }
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
                    let group = self
                        .groups
                        .entry((t, ns))
                        .or_insert_with(|| Keys::Many(HashSet::new()));
                    for key in keys {
                        // Registered again meanwhile: counted twice.
                        if !group.insert(&key) {
                            self.len -= 1;
                        }
                    }
                }
            }
            let (&(t, ns), _) = self.groups.first_key_value()?;
            if t > time {
                return None;
            }
            let mut keys = self
                .groups
                .remove(&(t, ns))
                .map(Keys::into_vec)
                .unwrap_or_default();
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

    /// Drops every timer of `domain`.
    pub fn clear(&mut self, domain: TimeDomain) {
        *self.queue(domain) = Queue::default();
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
    fn groups_of_one_key_and_of_many_count_and_fire_alike() {
        let mut t = TimerService::default();
        let ns = Namespace::Global;
        let e = TimeDomain::EventTime;
        // A session's timer moving with its end: a group of one key at a time.
        for end in 1..=100 {
            t.register(e, end, b"s", ns);
            if end > 1 {
                t.delete(e, end - 1, b"s", ns);
            }
        }
        assert_eq!(t.len(e), 1);
        // A group growing from one key to many, and shrinking.
        t.register(e, 50, b"a", ns);
        t.register(e, 50, b"b", ns);
        t.register(e, 50, b"a", ns);
        t.delete(e, 50, b"a", ns);
        t.delete(e, 50, b"zz", ns);
        // A group of one key emptied, then filled again.
        t.register(e, 70, b"c", ns);
        t.delete(e, 70, b"c", ns);
        t.register(e, 70, b"d", ns);
        assert_eq!(t.len(e), 3);
        let fired: Vec<_> = std::iter::from_fn(|| t.pop_due(e, 1000))
            .map(|t| (t.time, t.key.to_vec()))
            .collect();
        assert_eq!(
            fired,
            vec![
                (50, b"b".to_vec()),
                (70, b"d".to_vec()),
                (100, b"s".to_vec())
            ]
        );
        assert_eq!(t.len(e), 0);
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
