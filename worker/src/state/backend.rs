//! The backend an operator subtask gets: chosen by the job's `stateBackend` setting, the same
//! operator code runs on either (static dispatch through one enum).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use strom_api::StateBackendKind;

use super::{
    KeyedStateBackend, ListState, MapKey, MapState, MemoryStateBackend, Namespace,
    RocksDbStateBackend, StateValue, ValueState,
};
use crate::checkpoint::state::{RestoredState, StateWriter};
use crate::error::Result;
use crate::operator::SubtaskInfo;

/// Where an operator subtask keeps its keyed state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateSettings {
    pub backend: StateBackendKind,
    /// Local directory for RocksDB instances (a temporary one if not set).
    pub dir: Option<PathBuf>,
}

/// Either backend.
#[derive(Debug)]
pub enum Backend {
    Memory(MemoryStateBackend),
    RocksDb(Box<RocksDbStateBackend>),
}

static OPENED: AtomicU64 = AtomicU64::new(0);

impl Backend {
    /// The backend of subtask `info`, as its job's settings say.
    pub fn for_subtask(info: &SubtaskInfo) -> Result<Self> {
        Ok(match info.state.backend {
            StateBackendKind::Hashmap => {
                Backend::Memory(MemoryStateBackend::new(info.max_parallelism))
            }
            StateBackendKind::Rocksdb => {
                let root = info.state.dir.clone().unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("strom-state-{}", std::process::id()))
                });
                let n = OPENED.fetch_add(1, Ordering::Relaxed);
                let safe: String = info
                    .name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .take(40)
                    .collect();
                let dir = root.join(format!("{safe}-{}-{n}", info.index));
                Backend::RocksDb(Box::new(RocksDbStateBackend::open(
                    &dir,
                    info.key_groups(),
                    info.max_parallelism,
                )?))
            }
        })
    }
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            Backend::Memory($b) => $e,
            Backend::RocksDb($b) => $e,
        }
    };
}

impl KeyedStateBackend for Backend {
    fn value_state<T: StateValue>(&mut self, name: &str) -> ValueState<T> {
        dispatch!(self, b => b.value_state(name))
    }
    fn list_state<T: StateValue>(&mut self, name: &str) -> ListState<T> {
        dispatch!(self, b => b.list_state(name))
    }
    fn map_state<K: MapKey, V: StateValue>(&mut self, name: &str) -> MapState<K, V> {
        dispatch!(self, b => b.map_state(name))
    }
    fn with_value<T: StateValue, R>(
        &self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
        f: impl FnOnce(Option<&T>) -> R,
    ) -> Result<R> {
        dispatch!(self, b => b.with_value(state, key, ns, f))
    }
    fn get<T: StateValue>(
        &self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Option<T>> {
        dispatch!(self, b => b.get(state, key, ns))
    }
    fn update<T: StateValue, R>(
        &mut self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R> {
        dispatch!(self, b => b.update(state, key, ns, f))
    }
    fn upsert<T: StateValue, R>(
        &mut self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
        init: impl FnOnce() -> T,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R> {
        dispatch!(self, b => b.upsert(state, key, ns, init, f))
    }
    fn take<T: StateValue>(
        &mut self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Option<T>> {
        dispatch!(self, b => b.take(state, key, ns))
    }
    fn list_add<T: StateValue>(
        &mut self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
        value: T,
    ) -> Result<bool> {
        dispatch!(self, b => b.list_add(state, key, ns, value))
    }
    fn list_get<T: StateValue>(
        &self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Vec<T>> {
        dispatch!(self, b => b.list_get(state, key, ns))
    }
    fn with_list<T: StateValue, R>(
        &self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
        f: impl FnOnce(&[T]) -> R,
    ) -> Result<R> {
        dispatch!(self, b => b.with_list(state, key, ns, f))
    }
    fn list_put<T: StateValue>(
        &mut self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
        values: Vec<T>,
    ) -> Result<()> {
        dispatch!(self, b => b.list_put(state, key, ns, values))
    }
    fn list_take<T: StateValue>(
        &mut self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Vec<T>> {
        dispatch!(self, b => b.list_take(state, key, ns))
    }
    fn list_clear<T: StateValue>(&mut self, state: &ListState<T>) -> Result<()> {
        dispatch!(self, b => b.list_clear(state))
    }
    fn map_get<K: MapKey, V: StateValue>(
        &self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
        map_key: &K,
    ) -> Result<Option<V>> {
        dispatch!(self, b => b.map_get(state, key, ns, map_key))
    }
    fn map_put<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
        map_key: K,
        value: V,
    ) -> Result<()> {
        dispatch!(self, b => b.map_put(state, key, ns, map_key, value))
    }
    fn map_remove<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
        map_key: &K,
    ) -> Result<Option<V>> {
        dispatch!(self, b => b.map_remove(state, key, ns, map_key))
    }
    fn map_entries<K: MapKey, V: StateValue>(
        &self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Vec<(K, V)>> {
        dispatch!(self, b => b.map_entries(state, key, ns))
    }
    fn map_clear<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<()> {
        dispatch!(self, b => b.map_clear(state, key, ns))
    }
    fn for_each_in_namespace<T: StateValue>(
        &self,
        state: &ValueState<T>,
        ns: &Namespace,
        f: impl FnMut(&[u8], &T) -> Result<()>,
    ) -> Result<()> {
        dispatch!(self, b => b.for_each_in_namespace(state, ns, f))
    }
    fn drain_namespace<T: StateValue>(
        &mut self,
        state: &ValueState<T>,
        ns: &Namespace,
    ) -> Result<Vec<(Vec<u8>, T)>> {
        dispatch!(self, b => b.drain_namespace(state, ns))
    }
    fn entries(&self) -> usize {
        dispatch!(self, b => b.entries())
    }
    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        dispatch!(self, b => b.snapshot(checkpoint_id, out))
    }
    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        dispatch!(self, b => b.restore(state))
    }
}
