//! What one operator subtask's snapshot holds, and how snapshots taken at one parallelism are
//! redistributed to the subtasks of another (pure code).
//!
//! A snapshot has three parts, as in Flink:
//! - **keyed state**, in sections per key group (the state backend's tables, the timers); a subtask
//!   restored at any parallelism receives exactly the key groups of its new range;
//! - **operator list state**: named lists of opaque entries (a source's split positions, a sink's
//!   pending transactions), redistributed round-robin over the new subtasks;
//! - **files** (RocksDB's SST files for incremental checkpoints), each covering the key-group range of
//!   the subtask that wrote it; the storage layer uploads them once and shares them between
//!   checkpoints.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Key group -> section name -> bytes.
pub type KeyedSections = BTreeMap<u32, BTreeMap<String, Vec<u8>>>;

/// A file the snapshot references instead of embedding (a RocksDB SST file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Name inside its directory (e.g. `000042.sst`); files of one snapshot are restored side by side.
    pub name: String,
    /// Where the file is: a local path while the snapshot is being written, then the key in the
    /// checkpoint store once uploaded.
    pub location: String,
    pub size: u64,
    /// Whether the file may be shared with later checkpoints (immutable SST files) or belongs to this
    /// snapshot only (RocksDB's MANIFEST, CURRENT, OPTIONS).
    pub shared: bool,
}

/// Files that together are a copy of one state backend instance, covering `key_groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSet {
    /// Identity of the backend instance that wrote the files (unique per open): a shared file is
    /// the same file in every checkpoint that names it with the same instance.
    pub instance: String,
    pub key_groups: Range<u32>,
    pub files: Vec<FileRef>,
}

/// One operator subtask's snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskState {
    pub keyed: KeyedSections,
    pub lists: BTreeMap<String, Vec<Vec<u8>>>,
    pub files: Vec<FileSet>,
}

impl SubtaskState {
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty() && self.lists.is_empty() && self.files.is_empty()
    }

    /// Bytes held inline (files are counted by the store).
    pub fn inline_size(&self) -> usize {
        let keyed: usize = self
            .keyed
            .values()
            .flat_map(|s| s.values())
            .map(Vec::len)
            .sum();
        let lists: usize = self.lists.values().flatten().map(Vec::len).sum();
        keyed + lists
    }
}

/// Work of a snapshot left for after the barrier: encoding a copy of the state, run by the
/// checkpoint coordinator's thread before the upload (Flink's asynchronous snapshot part).
pub type DeferredWrite = Box<dyn FnOnce(&mut StateWriter) -> Result<()> + Send>;

/// Where an operator writes its snapshot.
#[derive(Default)]
pub struct StateWriter {
    state: SubtaskState,
    deferred: Vec<DeferredWrite>,
}

impl std::fmt::Debug for StateWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWriter")
            .field("state", &self.state)
            .field("deferred", &self.deferred.len())
            .finish()
    }
}

impl StateWriter {
    /// Appends `bytes` to section `section` of key group `key_group`.
    pub fn keyed(&mut self, key_group: u32, section: &str, bytes: &[u8]) {
        self.state
            .keyed
            .entry(key_group)
            .or_default()
            .entry(section.to_owned())
            .or_default()
            .extend_from_slice(bytes);
    }

    /// Sets section `section` of key group `key_group` to `bytes` (appends if it exists).
    pub fn keyed_owned(&mut self, key_group: u32, section: &str, bytes: Vec<u8>) {
        let slot = self
            .state
            .keyed
            .entry(key_group)
            .or_default()
            .entry(section.to_owned())
            .or_default();
        if slot.is_empty() {
            *slot = bytes;
        } else {
            slot.extend_from_slice(&bytes);
        }
    }

    /// Leaves work for after the barrier (see [`DeferredWrite`]): the operator has copied what it
    /// needs, and the pipeline goes on while the copy is encoded.
    pub fn defer(&mut self, work: DeferredWrite) {
        self.deferred.push(work);
    }

    /// Adds one entry to operator list state `name`.
    pub fn list_entry(&mut self, name: &str, bytes: Vec<u8>) {
        self.state
            .lists
            .entry(name.to_owned())
            .or_default()
            .push(bytes);
    }

    /// Adds a set of files (local paths) covering `key_groups`.
    pub fn files(&mut self, set: FileSet) {
        self.state.files.push(set);
    }

    /// The snapshot written, running deferred work now.
    pub fn finish(self) -> SubtaskState {
        let (mut state, deferred) = self.split();
        if let Err(e) = complete(&mut state, deferred) {
            tracing::error!(error = %e, "deferred snapshot work failed");
        }
        state
    }

    /// The snapshot written so far and the work deferred.
    pub fn split(self) -> (SubtaskState, Vec<DeferredWrite>) {
        (self.state, self.deferred)
    }
}

/// Runs deferred snapshot work into `state`.
pub fn complete(state: &mut SubtaskState, deferred: Vec<DeferredWrite>) -> Result<()> {
    for work in deferred {
        let mut w = StateWriter::default();
        work(&mut w)?;
        let (more, nested) = w.split();
        complete_into(state, more);
        if !nested.is_empty() {
            complete(state, nested)?;
        }
    }
    Ok(())
}

fn complete_into(state: &mut SubtaskState, more: SubtaskState) {
    for (kg, sections) in more.keyed {
        let into = state.keyed.entry(kg).or_default();
        for (name, bytes) in sections {
            let slot = into.entry(name).or_default();
            if slot.is_empty() {
                *slot = bytes;
            } else {
                slot.extend_from_slice(&bytes);
            }
        }
    }
    for (name, entries) in more.lists {
        state.lists.entry(name).or_default().extend(entries);
    }
    state.files.extend(more.files);
}

/// What one subtask restores from: its key groups' sections, its share of the list entries, and the
/// file sets overlapping its key groups (downloaded to local directories).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoredState {
    /// The id of the checkpoint or savepoint restored.
    pub checkpoint_id: u64,
    pub key_groups: Range<u32>,
    pub keyed: KeyedSections,
    pub lists: BTreeMap<String, Vec<Vec<u8>>>,
    /// Local directories, each holding one [`FileSet`]'s files, with the key groups it covers.
    pub files: Vec<(Range<u32>, PathBuf)>,
}

impl RestoredState {
    /// The sections named `section` of every restored key group, in key-group order.
    pub fn sections<'a>(&'a self, section: &'a str) -> impl Iterator<Item = (u32, &'a [u8])> + 'a {
        self.keyed
            .iter()
            .filter_map(move |(kg, s)| s.get(section).map(|b| (*kg, b.as_slice())))
    }

    /// Entries of list state `name`.
    pub fn list(&self, name: &str) -> &[Vec<u8>] {
        self.lists.get(name).map_or(&[], Vec::as_slice)
    }
}

/// Redistributes the snapshots of one operator's old subtasks (in old subtask order) to subtask
/// `index` of `parallelism` owning `key_groups`. File sets are returned with their store locations;
/// the caller downloads them.
pub fn redistribute(
    old: &[SubtaskState],
    index: u32,
    parallelism: u32,
    key_groups: Range<u32>,
) -> (RestoredState, Vec<FileSet>) {
    let mut restored = RestoredState {
        key_groups: key_groups.clone(),
        ..RestoredState::default()
    };
    let mut files = Vec::new();
    let mut position: BTreeMap<&str, usize> = BTreeMap::new();
    for state in old {
        for (kg, sections) in state.keyed.range(key_groups.clone()) {
            let into = restored.keyed.entry(*kg).or_default();
            for (name, bytes) in sections {
                into.entry(name.clone())
                    .or_default()
                    .extend_from_slice(bytes);
            }
        }
        for (name, entries) in &state.lists {
            let next = position.entry(name.as_str()).or_default();
            for entry in entries {
                if *next % parallelism as usize == index as usize {
                    restored
                        .lists
                        .entry(name.clone())
                        .or_default()
                        .push(entry.clone());
                }
                *next += 1;
            }
        }
        for set in &state.files {
            if set.key_groups.start < key_groups.end && key_groups.start < set.key_groups.end {
                files.push(set.clone());
            }
        }
    }
    (restored, files)
}

/// The version of the snapshot encoding written into every checkpoint's metadata.
pub const FORMAT_VERSION: u32 = 1;

/// Encodes a value for a snapshot (compact binary: postcard).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::State(format!("encoding state: {e}")))
}

/// Decodes what [`encode`] wrote.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::State(format!("decoding state: {e}")))
}

/// Appends one length-prefixed record to a section (sections are concatenations of records, so that
/// key groups from several old subtasks can be merged by appending).
pub fn push_record<T: Serialize + ?Sized>(section: &mut Vec<u8>, value: &T) -> Result<()> {
    let at = section.len();
    section.extend_from_slice(&[0; 4]);
    let buf = std::mem::take(section);
    let mut buf = postcard::to_extend(value, buf)
        .map_err(|e| Error::State(format!("encoding state: {e}")))?;
    let len = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    *section = buf;
    Ok(())
}

/// Reads the records [`push_record`] appended.
pub fn records(mut section: &[u8]) -> impl Iterator<Item = Result<&[u8]>> {
    std::iter::from_fn(move || {
        if section.is_empty() {
            return None;
        }
        if section.len() < 4 {
            return Some(Err(Error::State("truncated state record".into())));
        }
        let (len, rest) = section.split_at(4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if rest.len() < len {
            section = &[];
            return Some(Err(Error::State("truncated state record".into())));
        }
        let (record, rest) = rest.split_at(len);
        section = rest;
        Some(Ok(record))
    })
}

/// Checks that a subtask of `parallelism` fits `max_parallelism` key groups, with a clear error.
pub fn check_rescale(operator: &str, parallelism: u32, max_parallelism: u32) -> Result<()> {
    if parallelism > max_parallelism {
        return Err(Error::plan(
            operator,
            format!(
                "cannot restore at parallelism {parallelism}: the state has {max_parallelism} key groups (max parallelism)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::key_group_range;

    fn subtask(index: u32, p: u32, max: u32) -> SubtaskState {
        let mut w = StateWriter::default();
        for kg in key_group_range(index, p, max) {
            w.keyed(kg, "count", &[kg as u8]);
        }
        w.list_entry("splits", vec![index as u8]);
        w.finish()
    }

    #[test]
    fn key_groups_and_lists_redistribute_to_any_parallelism() {
        let max = 16;
        let old: Vec<SubtaskState> = (0..4).map(|i| subtask(i, 4, max)).collect();
        for p in [1, 2, 3, 5, 16] {
            let mut seen_groups = Vec::new();
            let mut seen_entries = Vec::new();
            for i in 0..p {
                let range = key_group_range(i, p, max);
                let (r, files) = redistribute(&old, i, p, range.clone());
                assert!(files.is_empty());
                assert_eq!(
                    r.keyed.keys().copied().collect::<Vec<_>>(),
                    range.collect::<Vec<_>>()
                );
                for (kg, bytes) in r.sections("count") {
                    assert_eq!(bytes, &[kg as u8]);
                    seen_groups.push(kg);
                }
                seen_entries.extend(r.list("splits").iter().map(|e| e[0]));
            }
            seen_groups.sort_unstable();
            seen_entries.sort_unstable();
            assert_eq!(seen_groups, (0..max).collect::<Vec<_>>());
            assert_eq!(seen_entries, vec![0, 1, 2, 3], "p={p}");
        }
    }

    #[test]
    fn file_sets_go_to_every_overlapping_subtask() {
        let set = |r: Range<u32>| FileSet {
            instance: "i".into(),
            key_groups: r,
            files: Vec::new(),
        };
        let old = vec![
            SubtaskState {
                files: vec![set(0..8)],
                ..SubtaskState::default()
            },
            SubtaskState {
                files: vec![set(8..16)],
                ..SubtaskState::default()
            },
        ];
        let (_, f) = redistribute(&old, 0, 3, 0..6);
        assert_eq!(f, vec![set(0..8)]);
        let (_, f) = redistribute(&old, 1, 3, 6..11);
        assert_eq!(f, vec![set(0..8), set(8..16)]);
    }

    #[test]
    fn records_round_trip_and_truncation_is_an_error() {
        let mut section = Vec::new();
        push_record(&mut section, &(1u32, "a")).unwrap();
        push_record(&mut section, &(2u32, "bb")).unwrap();
        let back: Vec<(u32, String)> = records(&section)
            .map(|r| decode(r.unwrap()).unwrap())
            .collect();
        assert_eq!(back, vec![(1, "a".to_owned()), (2, "bb".to_owned())]);
        assert!(records(&section[..section.len() - 1]).any(|r| r.is_err()));
    }
}
