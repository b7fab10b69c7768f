//! The RocksDB keyed state backend: one RocksDB instance per operator subtask, one column family per
//! registered state, values serialised (postcard) under keys that start with the key group:
//!
//! ```text
//! value / list:  [key group u16 BE][namespace 17 bytes][key]
//! map:           [key group u16 BE][namespace 17 bytes][key length u32 BE][key][map key]
//! namespace:     [0; 17] for Global, [1][start][end] for a window (i64 BE, sign bit flipped)
//! ```
//!
//! so one key group is one contiguous range (rescaling copies ranges), and one namespace of one key
//! group is one prefix (windows visit a pane with a seek per key group). List state appends with a
//! merge operator, without reading the list. Writes skip the WAL: durability is the checkpoints'.
//!
//! Snapshots are **incremental**: a RocksDB checkpoint hard-links the instance's immutable SST files
//! into a directory; they keep their names for the instance's lifetime, so the checkpoint storage
//! uploads each one once and later checkpoints reference it ([`FileRef::shared`]). Restoring with
//! the same key groups opens the downloaded files as the database; at another parallelism each
//! overlapping snapshot is opened read-only and the subtask's key-group range is copied out.
//!
//! Its calls block the task thread that owns the subtask, never an async executor.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, MergeOperands, Options, WriteBatch,
    WriteOptions,
};

use super::{KeyedStateBackend, ListState, MapKey, MapState, Namespace, StateValue, ValueState};
use crate::checkpoint::state::{
    FileRef, FileSet, RestoredState, StateWriter, decode, encode, push_record, records,
};
use crate::error::{Error, Result};

const NS_LEN: usize = 17;
const PREFIX_LEN: usize = 2 + NS_LEN;
/// Local RocksDB checkpoints kept (the newest is being uploaded while the next is taken).
const KEEP_LOCAL: usize = 2;

fn state_error(context: &str, e: impl std::fmt::Display) -> Error {
    Error::State(format!("RocksDB {context}: {e}"))
}

fn encode_ns(ns: &Namespace, out: &mut Vec<u8>) {
    match ns {
        Namespace::Global => out.extend_from_slice(&[0; NS_LEN]),
        Namespace::Window { start, end } => {
            out.push(1);
            out.extend_from_slice(&((*start as u64) ^ (1 << 63)).to_be_bytes());
            out.extend_from_slice(&((*end as u64) ^ (1 << 63)).to_be_bytes());
        }
    }
}

/// Concatenates list elements (each a length-prefixed record).
fn concat(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut out = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for op in operands {
        out.extend_from_slice(op);
    }
    Some(out)
}

fn cf_options() -> Options {
    let mut o = Options::default();
    o.set_merge_operator_associative("strom-list-concat", concat);
    o.set_write_buffer_size(16 << 20);
    // Size-tiered (universal) compaction rewrites far less than leveled compaction when keys are
    // spread evenly (hashed keys always overlap every file of the next level), and every byte a
    // compaction writes is a byte the next incremental checkpoint uploads.
    o.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
    let mut universal = rocksdb::UniversalCompactOptions::default();
    universal.set_size_ratio(20);
    universal.set_min_merge_width(4);
    universal.set_max_size_amplification_percent(400);
    o.set_universal_compaction_options(&universal);
    o.set_level_zero_file_num_compaction_trigger(8);
    o
}

fn db_options() -> Options {
    let mut o = cf_options();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_max_background_jobs(2);
    o
}

/// Column family of state `name` (prefixed, so no state is RocksDB's `default`).
fn cf_name(name: &str) -> String {
    format!("s:{name}")
}

/// A raw key and value read from RocksDB.
type KeyValue = (Box<[u8]>, Box<[u8]>);

static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// Keyed state in a local RocksDB instance.
pub struct RocksDbStateBackend {
    db: DB,
    root: PathBuf,
    db_dir: PathBuf,
    key_groups: Range<u32>,
    max_parallelism: u32,
    instance: String,
    /// Registered states by id: their column family names.
    states: Vec<String>,
    write: WriteOptions,
    /// A column family that could not be created; reported by the next access.
    error: Option<String>,
    local_checkpoints: VecDeque<PathBuf>,
    opened: u64,
}

impl std::fmt::Debug for RocksDbStateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbStateBackend")
            .field("dir", &self.db_dir)
            .field("key_groups", &self.key_groups)
            .finish()
    }
}

impl RocksDbStateBackend {
    /// A fresh instance under `dir` (whatever is there is removed) for `key_groups`.
    pub fn open(dir: &Path, key_groups: Range<u32>, max_parallelism: u32) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| state_error("creating its directory", e))?;
        let db_dir = dir.join("db-0");
        let db = DB::open(&db_options(), &db_dir).map_err(|e| state_error("open", e))?;
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let now = crate::time::now_millis();
        Ok(Self {
            db,
            root: dir.to_owned(),
            db_dir,
            key_groups,
            max_parallelism,
            instance: format!("{now:x}-{:x}-{n:x}", std::process::id()),
            states: Vec::new(),
            write,
            error: None,
            local_checkpoints: VecDeque::new(),
            opened: 0,
        })
    }

    fn register(&mut self, name: &str) -> usize {
        let cf = cf_name(name);
        if let Some(i) = self.states.iter().position(|s| *s == cf) {
            return i;
        }
        if self.db.cf_handle(&cf).is_none()
            && let Err(e) = self.db.create_cf(&cf, &cf_options())
        {
            self.error = Some(format!("creating column family {cf}: {e}"));
        }
        self.states.push(cf);
        self.states.len() - 1
    }

    fn cf(&self, id: usize) -> Result<&rocksdb::ColumnFamily> {
        if let Some(e) = &self.error {
            return Err(Error::State(e.clone()));
        }
        let name = self
            .states
            .get(id)
            .ok_or_else(|| Error::State(format!("state #{id} is not registered")))?;
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::State(format!("column family {name} is missing")))
    }

    fn key_group(&self, key: &[u8]) -> u16 {
        crate::keys::key_group(key, self.max_parallelism) as u16
    }

    fn prefix(&self, kg: u16, ns: &Namespace) -> Vec<u8> {
        let mut out = Vec::with_capacity(PREFIX_LEN + 16);
        out.extend_from_slice(&kg.to_be_bytes());
        encode_ns(ns, &mut out);
        out
    }

    fn value_key(&self, key: &[u8], ns: &Namespace) -> Vec<u8> {
        let mut out = self.prefix(self.key_group(key), ns);
        out.extend_from_slice(key);
        out
    }

    fn map_prefix(&self, key: &[u8], ns: &Namespace) -> Vec<u8> {
        let mut out = self.prefix(self.key_group(key), ns);
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out
    }

    fn read(&self, id: usize, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let cf = self.cf(id)?;
        self.db.get_cf(cf, key).map_err(|e| state_error("get", e))
    }

    fn write_value(&self, id: usize, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let cf = self.cf(id)?;
        match value {
            Some(v) => self.db.put_cf_opt(cf, key, v, &self.write),
            None => self.db.delete_cf_opt(cf, key, &self.write),
        }
        .map_err(|e| state_error("write", e))
    }

    /// Every (db key, value) of `id` starting with `prefix`.
    fn scan(&self, id: usize, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        let cf = self.cf(id)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(|e| state_error("iterate", e))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    fn groups(&self) -> impl Iterator<Item = u16> + use<> {
        (self.key_groups.start..self.key_groups.end).map(|kg| kg as u16)
    }

    /// Opens a database at `path` with every column family it has.
    fn open_existing(path: &Path, read_only: bool) -> Result<DB> {
        let names = DB::list_cf(&Options::default(), path).map_err(|e| state_error("list", e))?;
        let descriptors: Vec<ColumnFamilyDescriptor> = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, cf_options()))
            .collect();
        if read_only {
            DB::open_cf_descriptors_read_only(&db_options(), path, descriptors, false)
        } else {
            DB::open_cf_descriptors(&db_options(), path, descriptors)
        }
        .map_err(|e| state_error("open", e))
    }

    fn ensure_registered_cfs(&mut self) -> Result<()> {
        for cf in self.states.clone() {
            if self.db.cf_handle(&cf).is_none() {
                self.db
                    .create_cf(&cf, &cf_options())
                    .map_err(|e| state_error("create column family", e))?;
            }
        }
        Ok(())
    }

    /// Copies the keys of this backend's key groups from the database at `path`.
    fn copy_range_from(&mut self, path: &Path) -> Result<()> {
        let source = Self::open_existing(path, true)?;
        let names = DB::list_cf(&Options::default(), path).map_err(|e| state_error("list", e))?;
        let start = (self.key_groups.start as u16).to_be_bytes();
        for name in names.iter().filter(|n| n.starts_with("s:")) {
            if self.db.cf_handle(name).is_none() {
                self.db
                    .create_cf(name, &cf_options())
                    .map_err(|e| state_error("create column family", e))?;
            }
            let Some(from) = source.cf_handle(name) else {
                continue;
            };
            let Some(to) = self.db.cf_handle(name) else {
                continue;
            };
            let mut batch = WriteBatch::default();
            for item in source.iterator_cf(from, IteratorMode::From(&start, Direction::Forward)) {
                let (k, v) = item.map_err(|e| state_error("iterate", e))?;
                let kg = u32::from(u16::from_be_bytes([k[0], k[1]]));
                if kg >= self.key_groups.end {
                    break;
                }
                batch.put_cf(to, &k, &v);
                if batch.len() >= 10_000 {
                    self.db
                        .write_opt(std::mem::take(&mut batch), &self.write)
                        .map_err(|e| state_error("write", e))?;
                }
            }
            self.db
                .write_opt(batch, &self.write)
                .map_err(|e| state_error("write", e))?;
        }
        Ok(())
    }
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).map_err(|e| state_error("copying a restored file", e))?;
    }
    Ok(())
}

impl KeyedStateBackend for RocksDbStateBackend {
    fn value_state<T: StateValue>(&mut self, name: &str) -> ValueState<T> {
        ValueState::new(self.register(name))
    }

    fn list_state<T: StateValue>(&mut self, name: &str) -> ListState<T> {
        ListState::new(self.register(name))
    }

    fn map_state<K: MapKey, V: StateValue>(&mut self, name: &str) -> MapState<K, V> {
        MapState::new(self.register(name))
    }

    fn get<T: StateValue>(
        &self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Option<T>> {
        match self.read(state.id, &self.value_key(key, ns))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn update<T: StateValue, R>(
        &mut self,
        state: &ValueState<T>,
        key: &[u8],
        ns: &Namespace,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R> {
        let k = self.value_key(key, ns);
        let mut current: Option<T> = match self.read(state.id, &k)? {
            Some(bytes) => Some(decode(&bytes)?),
            None => None,
        };
        let had = current.is_some();
        let result = f(&mut current);
        match current {
            Some(v) => self.write_value(state.id, &k, Some(&encode(&v)?))?,
            None if had => self.write_value(state.id, &k, None)?,
            None => {}
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
        let k = self.value_key(key, ns);
        let mut current: T = match self.read(state.id, &k)? {
            Some(bytes) => decode(&bytes)?,
            None => init(),
        };
        let result = f(&mut current);
        self.write_value(state.id, &k, Some(&encode(&current)?))?;
        Ok(result)
    }

    fn list_add<T: StateValue>(
        &mut self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
        value: T,
    ) -> Result<bool> {
        let k = self.value_key(key, ns);
        let cf = self.cf(state.id)?;
        let was_empty = self
            .db
            .get_pinned_cf(cf, &k)
            .map_err(|e| state_error("get", e))?
            .is_none();
        let mut element = Vec::new();
        push_record(&mut element, &value)?;
        self.db
            .merge_cf_opt(cf, &k, element, &self.write)
            .map_err(|e| state_error("merge", e))?;
        Ok(was_empty)
    }

    fn list_get<T: StateValue>(
        &self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Vec<T>> {
        match self.read(state.id, &self.value_key(key, ns))? {
            Some(bytes) => records(&bytes).map(|r| decode(r?)).collect(),
            None => Ok(Vec::new()),
        }
    }

    fn list_put<T: StateValue>(
        &mut self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
        values: Vec<T>,
    ) -> Result<()> {
        let k = self.value_key(key, ns);
        if values.is_empty() {
            return self.write_value(state.id, &k, None);
        }
        let mut bytes = Vec::new();
        for v in &values {
            push_record(&mut bytes, v)?;
        }
        self.write_value(state.id, &k, Some(&bytes))
    }

    fn list_take<T: StateValue>(
        &mut self,
        state: &ListState<T>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Vec<T>> {
        let values = self.list_get(state, key, ns)?;
        if !values.is_empty() {
            self.write_value(state.id, &self.value_key(key, ns), None)?;
        }
        Ok(values)
    }

    fn list_clear<T: StateValue>(&mut self, state: &ListState<T>) -> Result<()> {
        // Every key of this subtask starts with one of its key groups, two bytes big-endian (there
        // are at most 2^15, so the end of the range fits too).
        let from = self.key_groups.start.to_be_bytes();
        let to = self.key_groups.end.to_be_bytes();
        let cf = self.cf(state.id)?;
        self.db
            .delete_range_cf_opt(cf, &from[2..], &to[2..], &self.write)
            .map_err(|e| state_error("delete range", e))
    }

    fn map_get<K: MapKey, V: StateValue>(
        &self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
        map_key: &K,
    ) -> Result<Option<V>> {
        let mut k = self.map_prefix(key, ns);
        k.extend_from_slice(&encode(map_key)?);
        match self.read(state.id, &k)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn map_put<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
        map_key: K,
        value: V,
    ) -> Result<()> {
        let mut k = self.map_prefix(key, ns);
        k.extend_from_slice(&encode(&map_key)?);
        self.write_value(state.id, &k, Some(&encode(&value)?))
    }

    fn map_remove<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
        map_key: &K,
    ) -> Result<Option<V>> {
        let mut k = self.map_prefix(key, ns);
        k.extend_from_slice(&encode(map_key)?);
        let old = match self.read(state.id, &k)? {
            Some(bytes) => Some(decode(&bytes)?),
            None => None,
        };
        if old.is_some() {
            self.write_value(state.id, &k, None)?;
        }
        Ok(old)
    }

    fn map_entries<K: MapKey, V: StateValue>(
        &self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<Vec<(K, V)>> {
        let prefix = self.map_prefix(key, ns);
        let mut entries = self
            .scan(state.id, &prefix)?
            .into_iter()
            .map(|(k, v)| Ok((decode::<K>(&k[prefix.len()..])?, decode::<V>(&v)?)))
            .collect::<Result<Vec<(K, V)>>>()?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    fn map_clear<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        key: &[u8],
        ns: &Namespace,
    ) -> Result<()> {
        let prefix = self.map_prefix(key, ns);
        for (k, _) in self.scan(state.id, &prefix)? {
            self.write_value(state.id, &k, None)?;
        }
        Ok(())
    }

    fn for_each_in_namespace<T: StateValue>(
        &self,
        state: &ValueState<T>,
        ns: &Namespace,
        mut f: impl FnMut(&[u8], &T) -> Result<()>,
    ) -> Result<()> {
        for kg in self.groups() {
            let prefix = self.prefix(kg, ns);
            for (k, v) in self.scan(state.id, &prefix)? {
                f(&k[PREFIX_LEN..], &decode(&v)?)?;
            }
        }
        Ok(())
    }

    fn drain_namespace<T: StateValue>(
        &mut self,
        state: &ValueState<T>,
        ns: &Namespace,
    ) -> Result<Vec<(Vec<u8>, T)>> {
        let mut out = Vec::new();
        let mut batch = WriteBatch::default();
        {
            let cf = self.cf(state.id)?;
            for kg in self.groups() {
                let prefix = self.prefix(kg, ns);
                for (k, v) in self.scan(state.id, &prefix)? {
                    out.push((k[PREFIX_LEN..].to_vec(), decode(&v)?));
                    batch.delete_cf(cf, &k);
                }
            }
        }
        self.db
            .write_opt(batch, &self.write)
            .map_err(|e| state_error("write", e))?;
        Ok(out)
    }

    fn entries(&self) -> usize {
        // Counts by iterating: for tests and occasional metrics only.
        self.states
            .iter()
            .filter_map(|name| self.db.cf_handle(name))
            .map(|cf| self.db.iterator_cf(cf, IteratorMode::Start).count())
            .sum()
    }

    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        for name in &self.states {
            if let Some(cf) = self.db.cf_handle(name) {
                self.db.flush_cf(cf).map_err(|e| state_error("flush", e))?;
            }
        }
        let dir = self
            .root
            .join("checkpoints")
            .join(format!("chk-{checkpoint_id}-{}", self.opened));
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| state_error("checkpoint dir", e))?;
        }
        Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(&dir))
            .map_err(|e| state_error("checkpoint", e))?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| state_error("checkpoint dir", e))? {
            let entry = entry.map_err(|e| state_error("checkpoint dir", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            files.push(FileRef {
                shared: name.ends_with(".sst"),
                location: entry.path().to_string_lossy().into_owned(),
                name,
                size,
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        out.files(FileSet {
            instance: self.instance.clone(),
            key_groups: self.key_groups.clone(),
            files,
        });
        self.local_checkpoints.push_back(dir);
        while self.local_checkpoints.len() > KEEP_LOCAL {
            if let Some(old) = self.local_checkpoints.pop_front() {
                let _ = std::fs::remove_dir_all(old);
            }
        }
        Ok(())
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        match state.files.as_slice() {
            [] => Ok(()),
            [(range, dir)] if *range == self.key_groups => {
                // Same key groups: the downloaded files are the database.
                self.opened += 1;
                let db_dir = self.root.join(format!("db-{}", self.opened));
                let _ = std::fs::remove_dir_all(&db_dir);
                std::fs::create_dir_all(&db_dir).map_err(|e| state_error("restore dir", e))?;
                for entry in std::fs::read_dir(dir).map_err(|e| state_error("restore dir", e))? {
                    let entry = entry.map_err(|e| state_error("restore dir", e))?;
                    link_or_copy(&entry.path(), &db_dir.join(entry.file_name()))?;
                }
                let db = Self::open_existing(&db_dir, false)?;
                let old = std::mem::replace(&mut self.db, db);
                drop(old);
                let _ = std::fs::remove_dir_all(&self.db_dir);
                self.db_dir = db_dir;
                self.ensure_registered_cfs()
            }
            sets => {
                for (range, dir) in sets {
                    if range.start < self.key_groups.end && self.key_groups.start < range.end {
                        self.copy_range_from(dir)?;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::checkpoint::state::redistribute;
    use crate::keys::key_group_range;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("strom-rocks-{name}-{}", std::process::id()))
    }

    #[test]
    fn rocksdb_backend_semantics() {
        let dir = temp("semantics");
        super::super::tests::check_semantics(RocksDbStateBackend::open(&dir, 0..128, 128).unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    /// Fills `b` with `n` random counters over a few windows; returns what it wrote.
    fn fill(b: &mut RocksDbStateBackend, n: u64, seed: u64) -> BTreeMap<(Vec<u8>, i64), i64> {
        let counts: ValueState<i64> = b.value_state("counts");
        let lists: ListState<String> = b.list_state("lists");
        let mut rng = Lcg(seed);
        let mut expected = BTreeMap::new();
        for i in 0..n {
            let key = format!("key-{}", rng.next() % (n / 2 + 1)).into_bytes();
            let w = (rng.next() % 4) as i64;
            let ns = Namespace::Window {
                start: w * 10,
                end: w * 10 + 10,
            };
            let v = (rng.next() % 1000) as i64;
            b.put(&counts, &key, &ns, v).unwrap();
            b.list_add(&lists, &key, &Namespace::Global, format!("{i}"))
                .unwrap();
            expected.insert((key, w), v);
        }
        expected
    }

    fn read_all(b: &mut RocksDbStateBackend) -> BTreeMap<(Vec<u8>, i64), i64> {
        let counts: ValueState<i64> = b.value_state("counts");
        let mut out = BTreeMap::new();
        for w in 0..4 {
            let ns = Namespace::Window {
                start: w * 10,
                end: w * 10 + 10,
            };
            b.for_each_in_namespace(&counts, &ns, |k, v| {
                out.insert((k.to_vec(), w), *v);
                Ok(())
            })
            .unwrap();
        }
        out
    }

    /// Snapshots `b` and "downloads" its files by copying them into `to`.
    fn snapshot_to(
        b: &mut RocksDbStateBackend,
        id: u64,
        to: &Path,
    ) -> crate::checkpoint::state::SubtaskState {
        let mut w = StateWriter::default();
        b.snapshot(id, &mut w).unwrap();
        let state = w.finish();
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).unwrap();
        for f in &state.files[0].files {
            std::fs::copy(&f.location, to.join(&f.name)).unwrap();
        }
        state
    }

    #[test]
    fn snapshots_restore_at_the_same_and_at_other_parallelisms() {
        let dir = temp("rescale");
        let mut one = RocksDbStateBackend::open(&dir.join("one"), 0..128, 128).unwrap();
        let expected = fill(&mut one, 4000, 1);
        let state = snapshot_to(&mut one, 1, &dir.join("dl-one"));
        // Same key groups.
        let (mut r, _) = redistribute(std::slice::from_ref(&state), 0, 1, 0..128);
        r.files = vec![(0..128, dir.join("dl-one"))];
        let mut same = RocksDbStateBackend::open(&dir.join("same"), 0..128, 128).unwrap();
        same.restore(&r).unwrap();
        assert_eq!(read_all(&mut same), expected);
        let lists: ListState<String> = same.list_state("lists");
        assert!(
            !same
                .list_get(&lists, b"key-1", &Namespace::Global)
                .unwrap()
                .is_empty()
        );
        // Split into three.
        let mut together = BTreeMap::new();
        for i in 0..3 {
            let range = key_group_range(i, 3, 128);
            let mut part =
                RocksDbStateBackend::open(&dir.join(format!("p{i}")), range.clone(), 128).unwrap();
            let restored = RestoredState {
                key_groups: range.clone(),
                files: vec![(0..128, dir.join("dl-one"))],
                ..RestoredState::default()
            };
            part.restore(&restored).unwrap();
            let got = read_all(&mut part);
            assert!(
                got.keys()
                    .all(|(k, _)| range.contains(&crate::keys::key_group(k, 128)))
            );
            together.extend(got);
            // And back: each part snapshotted, merged into one backend.
            snapshot_to(&mut part, 2, &dir.join(format!("dl-p{i}")));
        }
        assert_eq!(together, expected);
        let merged_state = RestoredState {
            key_groups: 0..128,
            files: (0..3)
                .map(|i| (key_group_range(i, 3, 128), dir.join(format!("dl-p{i}"))))
                .collect(),
            ..RestoredState::default()
        };
        let mut merged = RocksDbStateBackend::open(&dir.join("merged"), 0..128, 128).unwrap();
        merged.restore(&merged_state).unwrap();
        assert_eq!(read_all(&mut merged), expected);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn incremental_snapshots_share_unchanged_files() {
        let dir = temp("incremental");
        let mut b = RocksDbStateBackend::open(&dir.join("db"), 0..128, 128).unwrap();
        for round in 0..4 {
            fill(&mut b, 20_000, round);
            let mut w = StateWriter::default();
            b.snapshot(round, &mut w).unwrap();
        }
        let mut w = StateWriter::default();
        b.snapshot(10, &mut w).unwrap();
        let first = w.finish();
        fill(&mut b, 500, 99);
        let mut w = StateWriter::default();
        b.snapshot(11, &mut w).unwrap();
        let second = w.finish();
        let ssts = |s: &crate::checkpoint::state::SubtaskState| -> BTreeMap<String, u64> {
            s.files[0]
                .files
                .iter()
                .filter(|f| f.shared)
                .map(|f| (f.name.clone(), f.size))
                .collect()
        };
        let (a, b2) = (ssts(&first), ssts(&second));
        let total: u64 = b2.values().sum();
        let new: u64 = b2
            .iter()
            .filter(|(n, _)| !a.contains_key(*n))
            .map(|(_, s)| s)
            .sum();
        assert!(a.len() >= 2, "several SST files: {a:?}");
        assert!(
            new * 2 < total,
            "the second snapshot adds {new} of {total} bytes of SST files"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
