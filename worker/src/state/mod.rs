//! Keyed state: the API operators keep per-key data through, and its in-memory backend.
//!
//! State is addressed by a **key** (the row-format bytes of the record's key, see [`crate::keys`]) and a
//! **namespace** (a window, or [`Namespace::Global`]), like Flink's keyed state scoped by key and
//! window. Four kinds are offered, each registered once by name through a typed descriptor:
//! value, list, map and reducing state. Operators are written against [`KeyedStateBackend`]; the
//! in-memory [`MemoryStateBackend`] keeps values as Rust objects (no serialisation on access), a
//! RocksDB backend stores the same values serialised under `key group | key | namespace`.
//!
//! Snapshots: a backend writes its entries by key group ([`KeyedStateBackend::snapshot`]) and loads
//! the key groups it is given on restore, whatever parallelism wrote them.

mod backend;
mod memory;
pub mod rocksdb;
pub mod ttl;

use std::hash::Hash;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::rocksdb::RocksDbStateBackend;
pub use backend::{Backend, StateSettings};
pub use memory::MemoryStateBackend;

use crate::checkpoint::state::{RestoredState, StateWriter};
use crate::error::Result;
use crate::time::Timestamp;

/// Snapshot sections holding a registered state are named with this prefix and the state's name.
pub(crate) const SECTION_PREFIX: &str = "state/";

/// The snapshot section of state `name`.
pub(crate) fn section_name(name: &str) -> String {
    format!("{SECTION_PREFIX}{name}")
}

/// What state is scoped by besides the key.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub enum Namespace {
    /// Not scoped: one value per key.
    Global,
    /// A time window `[start, end)`.
    Window { start: Timestamp, end: Timestamp },
}

/// A value that can be kept in state: owned, cloneable, serialisable for snapshots and RocksDB.
pub trait StateValue: Clone + Send + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Serialize + DeserializeOwned + 'static> StateValue for T {}

/// A key of map state.
pub trait MapKey: StateValue + Eq + Hash + Ord {}
impl<T: StateValue + Eq + Hash + Ord> MapKey for T {}

/// Handle of a registered value state holding one `T` per key and namespace.
#[derive(Debug)]
pub struct ValueState<T> {
    pub(crate) id: usize,
    _t: PhantomData<fn() -> T>,
}

/// Handle of a registered list state holding a list of `T` per key and namespace.
#[derive(Debug)]
pub struct ListState<T> {
    pub(crate) id: usize,
    _t: PhantomData<fn() -> T>,
}

/// Handle of a registered map state holding a map `K -> V` per key and namespace.
#[derive(Debug)]
pub struct MapState<K, V> {
    pub(crate) id: usize,
    _t: PhantomData<fn() -> (K, V)>,
}

/// How a reducing state folds a value into its accumulator.
pub type ReduceFn<T> = Box<dyn Fn(&mut T, T) + Send + Sync>;

/// Handle of a registered reducing state: values added are folded into one with its function.
pub struct ReducingState<T> {
    pub(crate) value: ValueState<T>,
    pub(crate) reduce: ReduceFn<T>,
}

impl<T> std::fmt::Debug for ReducingState<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReducingState")
            .field("id", &self.value.id)
            .finish()
    }
}

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        Self::new(self.id)
    }
}
impl<T> Clone for ListState<T> {
    fn clone(&self) -> Self {
        Self::new(self.id)
    }
}
impl<K, V> Clone for MapState<K, V> {
    fn clone(&self) -> Self {
        Self::new(self.id)
    }
}

impl<T> ValueState<T> {
    pub(crate) fn new(id: usize) -> Self {
        Self {
            id,
            _t: PhantomData,
        }
    }
}
impl<T> ListState<T> {
    pub(crate) fn new(id: usize) -> Self {
        Self {
            id,
            _t: PhantomData,
        }
    }
}
impl<K, V> MapState<K, V> {
    pub(crate) fn new(id: usize) -> Self {
        Self {
            id,
            _t: PhantomData,
        }
    }
}

/// The keyed state of one subtask of one operator. Every backend implements the same semantics; the
/// tests in this module run against each of them.
pub trait KeyedStateBackend: Send + 'static {
    /// Registers (or finds again, by name) a value state.
    fn value_state<T: StateValue>(&mut self, name: &str) -> ValueState<T>;
    /// Registers (or finds again, by name) a list state.
    fn list_state<T: StateValue>(&mut self, name: &str) -> ListState<T>;
    /// Registers (or finds again, by name) a map state.
    fn map_state<K: MapKey, V: StateValue>(&mut self, name: &str) -> MapState<K, V>;
    /// Registers a reducing state that folds added values with `reduce`.
    fn reducing_state<T: StateValue>(
        &mut self,
        name: &str,
        reduce: impl Fn(&mut T, T) + Send + Sync + 'static,
    ) -> ReducingState<T> {
        ReducingState {
            value: self.value_state(name),
            reduce: Box::new(reduce),
        }
    }

    /// The value for `key` in `ns`.
    /// Calls `f` with the value for `key` in `ns`, without copying it where the backend can.
    fn with_value<T: StateValue, R>(
        &self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
        f: impl FnOnce(Option<&T>) -> R,
    ) -> Result<R> {
        Ok(f(self.get(state, key, ns)?.as_ref()))
    }
    fn get<T: StateValue>(
        &self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Option<T>>;
    /// Reads, changes and writes back the value for `key` in `ns` in one step. Setting the option to
    /// `None` clears it. Returns what `f` returns.
    fn update<T: StateValue, R>(
        &mut self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R>;
    /// Changes the value for `key` in `ns`, creating it with `init` first if there is none. The cheap
    /// path for accumulators: the in-memory backend neither clones nor re-inserts.
    fn upsert<T: StateValue, R>(
        &mut self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
        init: impl FnOnce() -> T,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R>;
    /// Sets the value for `key` in `ns`.
    fn put<T: StateValue>(
        &mut self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
        value: T,
    ) -> Result<()> {
        self.update(state, key, ns, |v| *v = Some(value))
    }
    /// Clears the value for `key` in `ns`; returns what was there.
    fn take<T: StateValue>(
        &mut self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Option<T>> {
        self.update(state, key, ns, Option::take)
    }

    /// Appends to the list for `key` in `ns`; returns whether the list was empty before.
    fn list_add<T: StateValue>(
        &mut self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
        value: T,
    ) -> Result<bool>;
    /// The list for `key` in `ns` (empty if none).
    fn list_get<T: StateValue>(
        &self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Vec<T>>;
    /// Calls `f` with the list for `key` in `ns` (empty if none), without copying it where the
    /// backend can.
    fn with_list<T: StateValue, R>(
        &self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
        f: impl FnOnce(&[T]) -> R,
    ) -> Result<R> {
        Ok(f(&self.list_get(state, key, ns)?))
    }
    /// Replaces the list for `key` in `ns`; an empty list clears it.
    fn list_put<T: StateValue>(
        &mut self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
        values: Vec<T>,
    ) -> Result<()>;
    /// Removes and returns the list for `key` in `ns`.
    fn list_take<T: StateValue>(
        &mut self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Vec<T>>;
    /// Removes every key's list in every namespace of this subtask (at the end of the input,
    /// when no list will be read again, in one sweep rather than key by key).
    fn list_clear<T: StateValue>(&mut self, state: &ListState<T>) -> Result<()>;

    /// The value under `map_key` in the map for `key` in `ns`.
    fn map_get<K: MapKey, V: StateValue>(
        &self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
        map_key: &K,
    ) -> Result<Option<V>>;
    /// Sets `map_key` to `value` in the map for `key` in `ns`.
    fn map_put<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
        map_key: K,
        value: V,
    ) -> Result<()>;
    /// Removes `map_key` from the map for `key` in `ns`.
    fn map_remove<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
        map_key: &K,
    ) -> Result<Option<V>>;
    /// All entries of the map for `key` in `ns`, in key order.
    fn map_entries<K: MapKey, V: StateValue>(
        &self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Vec<(K, V)>>;
    /// Removes the whole map for `key` in `ns`.
    fn map_clear<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<()>;

    /// Folds `value` into the reducing state for `key` in `ns`.
    fn reduce_add<T: StateValue>(
        &mut self,
        state: &ReducingState<T>,
        key: &[u8],
        ns: &Namespace,
        value: T,
    ) -> Result<()> {
        self.update(&state.value, key, ns, |current| match current {
            Some(acc) => (state.reduce)(acc, value),
            None => *current = Some(value),
        })
    }
    /// The folded value for `key` in `ns`.
    fn reduce_get<T: StateValue>(
        &self,
        state: &ReducingState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Option<T>> {
        self.get(&state.value, key, ns)
    }

    /// Calls `f` with every key's value in namespace `ns` (in no particular order).
    fn for_each_in_namespace<T: StateValue>(
        &self,
        state: &ValueState<T>,
        ns: &Namespace,
        f: impl FnMut(&[u8], &T) -> Result<()>,
    ) -> Result<()>;

    /// Removes every key's value in namespace `ns` and returns them (in no particular order).
    fn drain_namespace<T: StateValue>(
        &mut self,
        state: &ValueState<T>,
        ns: &Namespace,
    ) -> Result<Vec<(Vec<u8>, T)>>;

    /// Number of (key, namespace) entries across all states; for metrics and tests.
    fn entries(&self) -> usize;

    /// Writes this backend's contents for checkpoint `checkpoint_id` into `out`: key-group sections,
    /// or files for a backend that snapshots files. Runs on the task thread while the pipeline is
    /// paused at the barrier; anything slow (uploads) happens after, elsewhere.
    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()>;

    /// Loads a restored snapshot's key groups (the state is empty before). States are matched by
    /// name; a state not registered yet receives its entries when it is registered.
    fn restore(&mut self, state: &RestoredState) -> Result<()>;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn check_semantics<B: KeyedStateBackend>(mut b: B) {
        let w1 = Namespace::Window { start: 0, end: 10 };
        let w2 = Namespace::Window { start: 10, end: 20 };
        let count: ValueState<i64> = b.value_state("count");
        assert_eq!(b.get(&count, b"a", &w1).unwrap(), None);
        b.put(&count, b"a", &w1, 3).unwrap();
        b.update(&count, b"a", &w1, |v| *v = v.map(|x| x + 1))
            .unwrap();
        let mut created = false;
        b.upsert(
            &count,
            b"c",
            &w1,
            || {
                created = true;
                10
            },
            |v| *v += 1,
        )
        .unwrap();
        assert!(created);
        b.upsert(&count, b"c", &w1, || 0, |v| *v += 1).unwrap();
        assert_eq!(b.take(&count, b"c", &w1).unwrap(), Some(12));
        b.put(&count, b"a", &w2, 7).unwrap();
        b.put(&count, b"b", &w1, 1).unwrap();
        assert_eq!(b.get(&count, b"a", &w1).unwrap(), Some(4));
        assert_eq!(b.get(&count, b"a", &w2).unwrap(), Some(7));
        assert_eq!(b.take(&count, b"a", &w1).unwrap(), Some(4));
        assert_eq!(b.get(&count, b"a", &w1).unwrap(), None);
        // Registering again by name finds the same state.
        let again: ValueState<i64> = b.value_state("count");
        assert_eq!(b.get(&again, b"b", &w1).unwrap(), Some(1));

        let mut in_w2 = Vec::new();
        b.for_each_in_namespace(&count, &w2, |k, v| {
            in_w2.push((k.to_vec(), *v));
            Ok(())
        })
        .unwrap();
        assert_eq!(in_w2, vec![(b"a".to_vec(), 7)]);
        assert_eq!(
            b.drain_namespace(&count, &w2).unwrap(),
            vec![(b"a".to_vec(), 7)]
        );
        assert_eq!(b.get(&count, b"a", &w2).unwrap(), None);

        let list: ListState<String> = b.list_state("list");
        assert!(
            b.list_add(&list, b"a", &Namespace::Global, "x".into())
                .unwrap()
        );
        assert!(
            !b.list_add(&list, b"a", &Namespace::Global, "y".into())
                .unwrap()
        );
        assert_eq!(
            b.list_get(&list, b"a", &Namespace::Global).unwrap(),
            vec!["x", "y"]
        );
        assert!(
            b.list_get(&list, b"b", &Namespace::Global)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            b.list_take(&list, b"a", &Namespace::Global).unwrap().len(),
            2
        );
        assert!(
            b.list_get(&list, b"a", &Namespace::Global)
                .unwrap()
                .is_empty()
        );
        for (key, ns) in [(b"a", Namespace::Global), (b"b", w1), (b"c", w2)] {
            b.list_add(&list, key, &ns, "z".into()).unwrap();
        }
        let kept: ListState<String> = b.list_state("kept");
        b.list_add(&kept, b"a", &w1, "k".into()).unwrap();
        b.list_clear(&list).unwrap();
        for (key, ns) in [(b"a", Namespace::Global), (b"b", w1), (b"c", w2)] {
            assert!(b.list_get(&list, key, &ns).unwrap().is_empty());
        }
        assert_eq!(b.list_get(&kept, b"a", &w1).unwrap(), vec!["k"]);
        b.list_take(&kept, b"a", &w1).unwrap();

        let map: MapState<i64, String> = b.map_state("map");
        b.map_put(&map, b"k", &w1, 2, "two".into()).unwrap();
        b.map_put(&map, b"k", &w1, 1, "one".into()).unwrap();
        b.map_put(&map, b"k", &w2, 1, "uno".into()).unwrap();
        assert_eq!(
            b.map_get(&map, b"k", &w1, &1).unwrap().as_deref(),
            Some("one")
        );
        assert_eq!(
            b.map_entries(&map, b"k", &w1).unwrap(),
            vec![(1, "one".to_owned()), (2, "two".to_owned())]
        );
        assert_eq!(
            b.map_remove(&map, b"k", &w1, &1).unwrap().as_deref(),
            Some("one")
        );
        b.map_clear(&map, b"k", &w1).unwrap();
        assert!(b.map_entries(&map, b"k", &w1).unwrap().is_empty());
        assert_eq!(b.map_entries(&map, b"k", &w2).unwrap().len(), 1);

        let max = b.reducing_state::<i64>("max", |acc, v| *acc = (*acc).max(v));
        for v in [3, 9, 2] {
            b.reduce_add(&max, b"k", &Namespace::Global, v).unwrap();
        }
        assert_eq!(
            b.reduce_get(&max, b"k", &Namespace::Global).unwrap(),
            Some(9)
        );
    }

    #[test]
    fn memory_backend_semantics() {
        check_semantics(MemoryStateBackend::default());
    }
}
