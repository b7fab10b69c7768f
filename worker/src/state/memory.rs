//! The in-memory keyed state backend: every state is a table `namespace -> key -> value` of Rust
//! objects, so reading and updating costs a hash lookup and no serialisation (Flink's heap backend).

use std::any::Any;
use std::collections::BTreeMap;

use hashbrown::HashMap;

use super::{KeyedStateBackend, ListState, MapKey, MapState, Namespace, StateValue, ValueState};
use crate::error::{Error, Result};

type Table<T> = HashMap<Namespace, HashMap<Vec<u8>, T>>;

struct Slot {
    name: String,
    table: Box<dyn Any + Send>,
    entries: fn(&dyn Any) -> usize,
}

/// Keyed state held in memory.
#[derive(Default)]
pub struct MemoryStateBackend {
    slots: Vec<Slot>,
}

impl std::fmt::Debug for MemoryStateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.slots.iter().map(|s| s.name.as_str()).collect();
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

impl MemoryStateBackend {
    fn register<T: Send + 'static>(&mut self, name: &str) -> usize {
        if let Some(i) = self.slots.iter().position(|s| s.name == name) {
            return i;
        }
        self.slots.push(Slot {
            name: name.to_owned(),
            table: Box::new(Table::<T>::new()),
            entries: count_entries::<T>,
        });
        self.slots.len() - 1
    }

    fn table<T: 'static>(&self, id: usize) -> Result<&Table<T>> {
        self.slots
            .get(id)
            .and_then(|s| s.table.downcast_ref::<Table<T>>())
            .ok_or_else(|| Error::user(format!("state #{id} was registered with another type")))
    }

    fn table_mut<T: 'static>(&mut self, id: usize) -> Result<&mut Table<T>> {
        self.slots
            .get_mut(id)
            .and_then(|s| s.table.downcast_mut::<Table<T>>())
            .ok_or_else(|| Error::user(format!("state #{id} was registered with another type")))
    }

    fn slot<T: 'static>(&mut self, id: usize, key: &[u8], ns: &Namespace) -> Result<&mut T>
    where
        T: Default,
    {
        let table = self.table_mut::<T>(id)?;
        let keys = table.entry(*ns).or_default();
        Ok(keys.entry_ref(key).or_default())
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

    fn get<T: StateValue>(
        &self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Option<T>> {
        Ok(self
            .table::<T>(state.id)?
            .get(ns)
            .and_then(|keys| keys.get(key))
            .cloned())
    }

    fn update<T: StateValue, R>(
        &mut self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R> {
        let table = self.table_mut::<T>(state.id)?;
        let keys = table.entry(*ns).or_default();
        let result = match keys.get_mut(key) {
            Some(value) => {
                // Move the value out and back so that `f` can clear it.
                let mut current = Some(value.clone());
                let result = f(&mut current);
                match current {
                    Some(v) => *value = v,
                    None => {
                        keys.remove(key);
                    }
                }
                result
            }
            None => {
                let mut current = None;
                let result = f(&mut current);
                if let Some(v) = current {
                    keys.insert(key.to_vec(), v);
                }
                result
            }
        };
        if keys.is_empty() {
            table.remove(ns);
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

    fn list_add<T: StateValue>(
        &mut self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
        value: T,
    ) -> Result<bool> {
        let list = self.slot::<Vec<T>>(state.id, key, ns)?;
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
            .table::<Vec<T>>(state.id)?
            .get(ns)
            .and_then(|keys| keys.get(key))
            .cloned()
            .unwrap_or_default())
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

    fn map_get<K: MapKey, V: StateValue>(
        &self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
        map_key: &K,
    ) -> Result<Option<V>> {
        Ok(self
            .table::<BTreeMap<K, V>>(state.id)?
            .get(ns)
            .and_then(|keys| keys.get(key))
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
            .table::<BTreeMap<K, V>>(state.id)?
            .get(ns)
            .and_then(|keys| keys.get(key))
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

    fn entries(&self) -> usize {
        self.slots
            .iter()
            .map(|s| (s.entries)(s.table.as_ref()))
            .sum()
    }
}
