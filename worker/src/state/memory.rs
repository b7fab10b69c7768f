//! The in-memory keyed state backend: every state is a table `namespace -> key -> value` of Rust
//! objects, so reading and updating costs a hash lookup and no serialisation (Flink's heap backend),
//! and everything in one namespace (a window, a pane) can be visited or dropped without lookups.

use std::any::Any;
use std::collections::BTreeMap;

use hashbrown::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    KeyedStateBackend, ListState, MapKey, MapState, Namespace, StateValue, ValueState, section_name,
};
use crate::checkpoint::state::{RestoredState, StateWriter, decode, push_record, records};
use crate::error::{Error, Result};
use crate::keys::key_group;

type Table<T> = HashMap<Namespace, HashMap<Vec<u8>, T>>;

struct Registered {
    name: String,
    table: Box<dyn Any + Send>,
    entries: fn(&dyn Any) -> usize,
    snapshot: fn(&dyn Any, &str, u32, &mut StateWriter) -> Result<()>,
    copy: fn(&dyn Any) -> Option<Box<dyn Any + Send>>,
    restore: fn(&mut dyn Any, &[u8]) -> Result<()>,
}

/// Keyed state held in memory.
pub struct MemoryStateBackend {
    states: Vec<Registered>,
    max_parallelism: u32,
    /// Restored sections of states not registered yet, by section name.
    pending: HashMap<String, Vec<u8>>,
}

impl Default for MemoryStateBackend {
    fn default() -> Self {
        Self::new(strom_api::DEFAULT_MAX_PARALLELISM)
    }
}

impl std::fmt::Debug for MemoryStateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.states.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("MemoryStateBackend")
            .field("states", &names)
            .finish()
    }
}

fn count_entries<T: 'static>(table: &dyn Any) -> usize {
    table
        .downcast_ref::<Table<T>>()
        .map_or(0, |t| t.values().map(HashMap::len).sum())
}

/// Writes every entry of a table as `(namespace, key, value)` records, by key group.
fn snapshot_table<T: Serialize + 'static>(
    table: &dyn Any,
    name: &str,
    max_parallelism: u32,
    out: &mut StateWriter,
) -> Result<()> {
    let Some(table) = table.downcast_ref::<Table<T>>() else {
        return Ok(());
    };
    let section = section_name(name);
    let mut by_group: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
    for (ns, keys) in table {
        for (key, value) in keys {
            let buf = by_group.entry(key_group(key, max_parallelism)).or_default();
            push_record(buf, &(ns, key.as_slice(), value))?;
        }
    }
    for (kg, bytes) in by_group {
        out.keyed_owned(kg, &section, bytes);
    }
    Ok(())
}

/// A copy of a table, taken at the barrier; encoded later, off the task thread.
fn copy_table<T: Clone + Send + 'static>(table: &dyn Any) -> Option<Box<dyn Any + Send>> {
    table
        .downcast_ref::<Table<T>>()
        .map(|t| Box::new(t.clone()) as Box<dyn Any + Send>)
}

/// Loads records written by [`snapshot_table`].
fn restore_table<T: DeserializeOwned + 'static>(table: &mut dyn Any, section: &[u8]) -> Result<()> {
    let Some(table) = table.downcast_mut::<Table<T>>() else {
        return Err(Error::State("restored state has another type".into()));
    };
    for record in records(section) {
        let (ns, key, value): (Namespace, Vec<u8>, T) = decode(record?)?;
        table.entry(ns).or_default().insert(key, value);
    }
    Ok(())
}

impl MemoryStateBackend {
    /// An empty backend for a job with `max_parallelism` key groups.
    pub fn new(max_parallelism: u32) -> Self {
        Self {
            states: Vec::new(),
            max_parallelism,
            pending: HashMap::new(),
        }
    }

    fn register<T: Clone + Send + Serialize + DeserializeOwned + 'static>(
        &mut self,
        name: &str,
    ) -> usize {
        if let Some(i) = self.states.iter().position(|s| s.name == name) {
            return i;
        }
        let mut registered = Registered {
            name: name.to_owned(),
            table: Box::new(Table::<T>::new()),
            entries: count_entries::<T>,
            snapshot: snapshot_table::<T>,
            copy: copy_table::<T>,
            restore: restore_table::<T>,
        };
        if let Some(section) = self.pending.remove(&section_name(name)) {
            // Registration cannot fail; a section that does not decode as this type is reported
            // and left out (the state starts empty), never half-loaded silently.
            if let Err(e) = (registered.restore)(registered.table.as_mut(), &section) {
                tracing::error!(state = name, error = %e, "restoring keyed state failed");
            }
        }
        self.states.push(registered);
        self.states.len() - 1
    }

    fn table<T: 'static>(&self, id: usize) -> Result<&Table<T>> {
        self.states
            .get(id)
            .and_then(|s| s.table.downcast_ref::<Table<T>>())
            .ok_or_else(|| Error::user(format!("state #{id} was registered with another type")))
    }

    fn table_mut<T: 'static>(&mut self, id: usize) -> Result<&mut Table<T>> {
        self.states
            .get_mut(id)
            .and_then(|s| s.table.downcast_mut::<Table<T>>())
            .ok_or_else(|| Error::user(format!("state #{id} was registered with another type")))
    }

    fn lookup<T: 'static>(&self, id: usize, key: &[u8], ns: &Namespace) -> Result<Option<&T>> {
        Ok(self.table::<T>(id)?.get(ns).and_then(|keys| keys.get(key)))
    }

    fn slot<T: Default + 'static>(
        &mut self,
        id: usize,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<&mut T> {
        Ok(self
            .table_mut::<T>(id)?
            .entry(*ns)
            .or_default()
            .entry_ref(key)
            .or_default())
    }

    fn remove<T: 'static>(&mut self, id: usize, key: &[u8], ns: &Namespace) -> Result<Option<T>> {
        let table = self.table_mut::<T>(id)?;
        let Some(keys) = table.get_mut(ns) else {
            return Ok(None);
        };
        let value = keys.remove(key);
        if keys.is_empty() {
            table.remove(ns);
        }
        Ok(value)
    }
}

impl KeyedStateBackend for MemoryStateBackend {
    fn value_state<T: StateValue>(&mut self, name: &str) -> ValueState<T> {
        ValueState::new(self.register::<T>(name))
    }

    fn list_state<T: StateValue>(&mut self, name: &str) -> ListState<T> {
        ListState::new(self.register::<Vec<T>>(name))
    }

    fn map_state<K: MapKey, V: StateValue>(&mut self, name: &str) -> MapState<K, V> {
        MapState::new(self.register::<BTreeMap<K, V>>(name))
    }

    fn with_value<T: StateValue, R>(
        &self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
        f: impl FnOnce(Option<&T>) -> R,
    ) -> Result<R> {
        Ok(f(self.lookup::<T>(state.id, key, ns)?))
    }

    fn get<T: StateValue>(
        &self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Option<T>> {
        Ok(self.lookup::<T>(state.id, key, ns)?.cloned())
    }

    fn update<T: StateValue, R>(
        &mut self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R> {
        let mut current = self.remove::<T>(state.id, key, ns)?;
        let result = f(&mut current);
        if let Some(v) = current {
            self.table_mut::<T>(state.id)?
                .entry(*ns)
                .or_default()
                .insert(key.to_vec(), v);
        }
        Ok(result)
    }

    fn upsert<T: StateValue, R>(
        &mut self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
        init: impl FnOnce() -> T,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R> {
        let keys = self.table_mut::<T>(state.id)?.entry(*ns).or_default();
        Ok(f(keys.entry_ref(key).or_insert_with(init)))
    }

    fn take<T: StateValue>(
        &mut self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Option<T>> {
        self.remove::<T>(state.id, key, ns)
    }

    fn for_each_in_namespace<T: StateValue>(
        &self,
        state: &ValueState<T>,
        ns: &Namespace,
        mut f: impl FnMut(&[u8], &T) -> Result<()>,
    ) -> Result<()> {
        if let Some(keys) = self.table::<T>(state.id)?.get(ns) {
            for (key, value) in keys {
                f(key, value)?;
            }
        }
        Ok(())
    }

    fn drain_namespace<T: StateValue>(
        &mut self,
        state: &ValueState<T>,
        ns: &Namespace,
    ) -> Result<Vec<(Vec<u8>, T)>> {
        Ok(self
            .table_mut::<T>(state.id)?
            .remove(ns)
            .map(|keys| keys.into_iter().collect())
            .unwrap_or_default())
    }

    fn list_add<T: StateValue>(
        &mut self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
        value: T,
    ) -> Result<bool> {
        let list = self.slot::<Vec<T>>(state.id, key, ns)?;
        if list.capacity() == 0 {
            // Room for exactly one: many keys never get a second element (a join keyed by a
            // price), and a first push would make room for four.
            list.reserve_exact(1);
        }
        list.push(value);
        Ok(list.len() == 1)
    }

    fn list_get<T: StateValue>(
        &self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Vec<T>> {
        Ok(self
            .lookup::<Vec<T>>(state.id, key, ns)?
            .cloned()
            .unwrap_or_default())
    }

    fn with_list<T: StateValue, R>(
        &self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
        f: impl FnOnce(&[T]) -> R,
    ) -> Result<R> {
        Ok(f(self
            .lookup::<Vec<T>>(state.id, key, ns)?
            .map_or(&[][..], Vec::as_slice)))
    }

    fn list_put<T: StateValue>(
        &mut self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
        values: Vec<T>,
    ) -> Result<()> {
        if values.is_empty() {
            self.remove::<Vec<T>>(state.id, key, ns)?;
        } else {
            *self.slot::<Vec<T>>(state.id, key, ns)? = values;
        }
        Ok(())
    }

    fn list_take<T: StateValue>(
        &mut self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Vec<T>> {
        Ok(self
            .remove::<Vec<T>>(state.id, key, ns)?
            .unwrap_or_default())
    }

    fn list_clear<T: StateValue>(&mut self, state: &ListState<T>) -> Result<()> {
        self.table_mut::<Vec<T>>(state.id)?.clear();
        Ok(())
    }

    fn map_get<K: MapKey, V: StateValue>(
        &self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
        map_key: &K,
    ) -> Result<Option<V>> {
        Ok(self
            .lookup::<BTreeMap<K, V>>(state.id, key, ns)?
            .and_then(|m| m.get(map_key))
            .cloned())
    }

    fn map_put<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
        map_key: K,
        value: V,
    ) -> Result<()> {
        self.slot::<BTreeMap<K, V>>(state.id, key, ns)?
            .insert(map_key, value);
        Ok(())
    }

    fn map_remove<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
        map_key: &K,
    ) -> Result<Option<V>> {
        let table = self.table_mut::<BTreeMap<K, V>>(state.id)?;
        let Some(keys) = table.get_mut(ns) else {
            return Ok(None);
        };
        let Some(map) = keys.get_mut(key) else {
            return Ok(None);
        };
        let removed = map.remove(map_key);
        if map.is_empty() {
            keys.remove(key);
            if keys.is_empty() {
                table.remove(ns);
            }
        }
        Ok(removed)
    }

    fn map_entries<K: MapKey, V: StateValue>(
        &self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Vec<(K, V)>> {
        Ok(self
            .lookup::<BTreeMap<K, V>>(state.id, key, ns)?
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn map_clear<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<()> {
        self.remove::<BTreeMap<K, V>>(state.id, key, ns)?;
        Ok(())
    }

    fn snapshot(&mut self, _checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        // The barrier's synchronous part is a copy of each table; encoding it by key group happens
        // on the checkpoint coordinator's thread (Flink's asynchronous heap snapshots).
        for s in &self.states {
            if (s.entries)(s.table.as_ref()) == 0 {
                continue;
            }
            let Some(copy) = (s.copy)(s.table.as_ref()) else {
                continue;
            };
            let (encode, name, max) = (s.snapshot, s.name.clone(), self.max_parallelism);
            out.defer(Box::new(move |w| encode(copy.as_ref(), &name, max, w)));
        }
        // Restored sections of states this job has not registered (yet) are carried over, so that a
        // state registered lazily, or by a later version of the job, keeps its contents.
        for (section, bytes) in &self.pending {
            let mut by_group: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
            for record in records(bytes) {
                let record = record?;
                let (_, key): (Namespace, Vec<u8>) = decode(record)?;
                let buf = by_group
                    .entry(key_group(&key, self.max_parallelism))
                    .or_default();
                buf.extend_from_slice(&(record.len() as u32).to_le_bytes());
                buf.extend_from_slice(record);
            }
            for (kg, bytes) in by_group {
                out.keyed(kg, section, &bytes);
            }
        }
        Ok(())
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        let mut sections: HashMap<String, Vec<u8>> = HashMap::new();
        for by_name in state.keyed.values() {
            for (name, bytes) in by_name {
                if name.starts_with(super::SECTION_PREFIX) {
                    sections
                        .entry(name.clone())
                        .or_default()
                        .extend_from_slice(bytes);
                }
            }
        }
        for (section, bytes) in sections {
            match self
                .states
                .iter_mut()
                .find(|s| section_name(&s.name) == section)
            {
                Some(s) => (s.restore)(s.table.as_mut(), &bytes)?,
                None => {
                    self.pending.insert(section, bytes);
                }
            }
        }
        Ok(())
    }

    fn entries(&self) -> usize {
        self.states
            .iter()
            .map(|s| (s.entries)(s.table.as_ref()))
            .sum()
    }
}
