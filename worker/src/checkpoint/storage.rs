//! How checkpoints and savepoints are laid out in a [`CheckpointStore`], written and read back.
//!
//! ```text
//! <root>/chk-0000000042/state/<operator>-<subtask>   one SubtaskState each (postcard)
//! <root>/chk-0000000042/files/<instance>/<name>      files of this snapshot only
//! <root>/chk-0000000042/_metadata                    JSON, written last: the checkpoint exists once it does
//! <root>/shared/<instance>/<name>                    immutable files shared by checkpoints (RocksDB SSTs)
//! <root>/savepoints/savepoint-0000000043/...         self-contained: no shared files
//! ```
//!
//! A checkpoint that fails halfway leaves objects without `_metadata`: invisible to restores, and
//! deleted by the next retention pass. Nothing of an existing checkpoint is ever overwritten.
//! The format is described in `docs/checkpoints.md`; [`FORMAT_VERSION`] is checked on restore.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state::{FORMAT_VERSION, FileSet, SubtaskState, decode, encode};
use super::store::CheckpointStore;
use crate::error::{Error, Result};

const METADATA: &str = "_metadata";
const CHECKPOINT_PREFIX: &str = "chk-";
const SHARED: &str = "shared/";
/// Where savepoints go in a job's store unless another place is given.
pub const SAVEPOINTS: &str = "savepoints";

/// Checkpoint or savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    Checkpoint,
    Savepoint,
}

/// One operator's part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorMeta {
    pub uid: String,
    pub parallelism: u32,
    /// Object keys of the subtasks' states, relative to the snapshot's directory, by subtask.
    pub subtasks: Vec<String>,
}

/// The `_metadata` object: what a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub format_version: u32,
    pub id: u64,
    pub kind: SnapshotKind,
    pub job: String,
    pub timestamp_ms: u64,
    pub max_parallelism: u32,
    pub operators: Vec<OperatorMeta>,
    /// Shared objects (keys relative to the root) this checkpoint references.
    #[serde(default)]
    pub shared: Vec<String>,
    /// Bytes written for this snapshot (state objects and files it uploaded itself).
    #[serde(default)]
    pub bytes_written: u64,
    /// Bytes of every file and state object it references, shared ones included.
    #[serde(default)]
    pub full_size: u64,
}

/// Where one snapshot is: a store and the snapshot's directory in it.
#[derive(Debug, Clone)]
pub struct SnapshotRef {
    pub store: Arc<dyn CheckpointStore>,
    /// E.g. `chk-0000000042` or `savepoints/savepoint-0000000043`.
    pub dir: String,
}

/// The directory of checkpoint `id`.
pub fn checkpoint_dir(id: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{id:010}")
}

/// The directory of savepoint `id` under [`SAVEPOINTS`].
pub fn savepoint_dir(id: u64) -> String {
    format!("{SAVEPOINTS}/savepoint-{id:010}")
}

/// One subtask's state as acknowledged: the operator's uid, its parallelism, and the state (with
/// the encoding work its snapshot deferred, run here before the upload).
pub struct AckedState {
    pub uid: String,
    pub subtask: u32,
    pub parallelism: u32,
    pub state: SubtaskState,
    pub deferred: Vec<super::state::DeferredWrite>,
}

impl std::fmt::Debug for AckedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckedState")
            .field("uid", &self.uid)
            .field("subtask", &self.subtask)
            .field("deferred", &self.deferred.len())
            .finish()
    }
}

/// A subtask's acknowledged state: still to be uploaded, or uploaded where it ran.
#[derive(Debug)]
pub enum Acked {
    Pending(AckedState),
    Uploaded(UploadedState),
}

/// One subtask's state after its upload: what the snapshot's metadata records of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadedState {
    pub uid: String,
    pub subtask: u32,
    pub parallelism: u32,
    /// The state object's key, relative to the snapshot's directory.
    pub key: String,
    pub bytes_written: u64,
    pub full_size: u64,
    /// Shared objects (keys relative to the root) it references.
    pub shared: Vec<String>,
}

/// The state object of `uid`'s subtask, relative to a snapshot's directory.
fn state_key(uid: &str, subtask: u32) -> String {
    let uid: String = uid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("state/{uid}-{subtask}")
}

/// Uploads one subtask's state (see [`SnapshotWriter::upload`]); `uploaded` remembers shared files
/// already in the store.
pub fn upload_state(
    store: &dyn CheckpointStore,
    uploaded: &mut HashSet<String>,
    dir: &str,
    kind: SnapshotKind,
    mut acked: AckedState,
) -> Result<UploadedState> {
    super::state::complete(&mut acked.state, std::mem::take(&mut acked.deferred))?;
    let mut shared = Vec::new();
    let mut bytes_written = 0u64;
    let mut full_size = 0u64;
    for set in &mut acked.state.files {
        for file in &mut set.files {
            let local = std::path::PathBuf::from(&file.location);
            full_size += file.size;
            let key = if file.shared && kind == SnapshotKind::Checkpoint {
                let key = format!("{SHARED}{}/{}", set.instance, file.name);
                if !uploaded.contains(&key) {
                    store.put_file(&key, &local)?;
                    bytes_written += file.size;
                    uploaded.insert(key.clone());
                }
                shared.push(key.clone());
                key
            } else {
                let relative = format!("files/{}/{}", set.instance, file.name);
                store.put_file(&join(dir, &relative), &local)?;
                bytes_written += file.size;
                relative
            };
            file.location = key;
        }
    }
    let key = state_key(&acked.uid, acked.subtask);
    let bytes = encode(&acked.state)?;
    bytes_written += bytes.len() as u64;
    full_size += bytes.len() as u64;
    store.put(&join(dir, &key), &bytes)?;
    Ok(UploadedState {
        uid: acked.uid,
        subtask: acked.subtask,
        parallelism: acked.parallelism,
        key,
        bytes_written,
        full_size,
        shared,
    })
}

/// Writes snapshots of one job and remembers which shared files are already in the store.
#[derive(Debug)]
pub struct SnapshotWriter {
    store: Arc<dyn CheckpointStore>,
    job: String,
    max_parallelism: u32,
    uploaded: HashSet<String>,
}

fn join(dir: &str, key: &str) -> String {
    if dir.is_empty() {
        key.to_owned()
    } else {
        format!("{}/{key}", dir.trim_end_matches('/'))
    }
}

impl SnapshotWriter {
    pub fn new(store: Arc<dyn CheckpointStore>, job: &str, max_parallelism: u32) -> Self {
        Self {
            store,
            job: job.to_owned(),
            max_parallelism,
            uploaded: HashSet::new(),
        }
    }

    pub fn store(&self) -> &Arc<dyn CheckpointStore> {
        &self.store
    }

    /// Uploads one subtask's state into snapshot `dir` (its files, shared ones once, then the
    /// state object) and returns what the metadata records of it. Runs where the state is: on the
    /// coordinator thread in the embedded runtime, on the TaskManager in a cluster.
    pub fn upload(
        &mut self,
        dir: &str,
        kind: SnapshotKind,
        acked: AckedState,
    ) -> Result<UploadedState> {
        upload_state(self.store.as_ref(), &mut self.uploaded, dir, kind, acked)
    }

    /// Writes a complete snapshot into `dir`, metadata last. Checkpoints upload each shared file
    /// once (later checkpoints reference it); savepoints copy every file into their own directory.
    /// States already uploaded (by TaskManagers) are only recorded.
    pub fn write(
        &mut self,
        dir: &str,
        id: u64,
        kind: SnapshotKind,
        timestamp_ms: u64,
        states: Vec<Acked>,
    ) -> Result<Metadata> {
        let mut operators: Vec<OperatorMeta> = Vec::new();
        let mut shared = BTreeSet::new();
        let mut bytes_written = 0u64;
        let mut full_size = 0u64;
        for acked in states {
            let up = match acked {
                Acked::Pending(a) => self.upload(dir, kind, a)?,
                Acked::Uploaded(u) => u,
            };
            let op = match operators.iter().position(|o| o.uid == up.uid) {
                Some(i) => i,
                None => {
                    operators.push(OperatorMeta {
                        uid: up.uid.clone(),
                        parallelism: up.parallelism,
                        subtasks: vec![String::new(); up.parallelism as usize],
                    });
                    operators.len() - 1
                }
            };
            bytes_written += up.bytes_written;
            full_size += up.full_size;
            shared.extend(up.shared);
            if let Some(slot) = operators[op].subtasks.get_mut(up.subtask as usize) {
                *slot = up.key;
            }
        }
        let metadata = Metadata {
            format_version: FORMAT_VERSION,
            id,
            kind,
            job: self.job.clone(),
            timestamp_ms,
            max_parallelism: self.max_parallelism,
            operators,
            shared: shared.into_iter().collect(),
            bytes_written,
            full_size,
        };
        let json = serde_json::to_vec_pretty(&metadata)
            .map_err(|e| Error::State(format!("encoding metadata: {e}")))?;
        self.store.put(&join(dir, METADATA), &json)?;
        Ok(metadata)
    }

    /// Removes what a failed snapshot wrote into `dir` (best effort; it has no metadata, so it is
    /// invisible anyway).
    pub fn discard(&self, dir: &str) {
        if let Ok(keys) = self.store.list(&format!("{}/", dir.trim_end_matches('/'))) {
            for key in keys {
                let _ = self.store.delete(&key);
            }
        }
    }

    /// Keeps the newest `retain` checkpoints: older ones lose their metadata first (so they stop
    /// being restorable before anything they hold disappears), then their objects, then shared
    /// files no retained checkpoint references. Also removes leftovers of failed checkpoints older
    /// than the newest complete one.
    pub fn retain(&mut self, retain: usize) -> Result<()> {
        let all = self.store.list(CHECKPOINT_PREFIX)?;
        let mut complete: Vec<String> = Vec::new();
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        for key in &all {
            if let Some((dir, rest)) = key.split_once('/') {
                dirs.insert(dir.to_owned());
                if rest == METADATA {
                    complete.push(dir.to_owned());
                }
            }
        }
        complete.sort();
        let keep: BTreeSet<String> = complete.iter().rev().take(retain.max(1)).cloned().collect();
        let Some(newest) = complete.last().cloned() else {
            return Ok(());
        };
        let mut referenced: HashSet<String> = HashSet::new();
        for dir in &keep {
            if let Some(meta) = read_metadata(self.store.as_ref(), dir)? {
                referenced.extend(meta.shared);
            }
        }
        // Only shared files that a dropped checkpoint referenced may go: a file no metadata
        // references yet may belong to a checkpoint whose states are being uploaded right now
        // (by TaskManagers, while this runs).
        let mut dropped: BTreeSet<String> = BTreeSet::new();
        for dir in dirs.iter().filter(|d| !keep.contains(*d) && **d < newest) {
            if let Ok(Some(meta)) = read_metadata(self.store.as_ref(), dir) {
                dropped.extend(meta.shared);
            }
            self.store.delete(&join(dir, METADATA))?;
            for key in all.iter().filter(|k| k.starts_with(&format!("{dir}/"))) {
                self.store.delete(key)?;
            }
        }
        for key in dropped.iter().filter(|k| !referenced.contains(*k)) {
            self.store.delete(key)?;
            self.uploaded.remove(key);
        }
        Ok(())
    }
}

fn read_metadata(store: &dyn CheckpointStore, dir: &str) -> Result<Option<Metadata>> {
    let Some(bytes) = store.get(&join(dir, METADATA))? else {
        return Ok(None);
    };
    let meta: Metadata = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Restore(format!("{dir}/{METADATA} is not valid metadata: {e}")))?;
    if meta.format_version != FORMAT_VERSION {
        return Err(Error::Restore(format!(
            "{dir} has format version {}, this build reads version {FORMAT_VERSION}",
            meta.format_version
        )));
    }
    Ok(Some(meta))
}

/// The newest complete checkpoint in `store`, if any.
pub fn latest_checkpoint(store: &Arc<dyn CheckpointStore>) -> Result<Option<SnapshotRef>> {
    let newest = store
        .list(CHECKPOINT_PREFIX)?
        .into_iter()
        .filter_map(|k| {
            let (dir, rest) = k.split_once('/')?;
            (rest == METADATA).then(|| dir.to_owned())
        })
        .max();
    Ok(newest.map(|dir| SnapshotRef {
        store: store.clone(),
        dir,
    }))
}

/// The directory name that, in `restoreFrom`, stands for the newest complete checkpoint of a
/// storage.
pub const LATEST: &str = "latest";

/// The snapshot `dir` names in `store`: [`LATEST`] is the newest complete checkpoint at the time
/// of the call (an error naming `storage` if there is none), anything else the directory itself.
pub fn resolve_snapshot(
    store: &Arc<dyn CheckpointStore>,
    storage: &str,
    dir: &str,
) -> Result<SnapshotRef> {
    if dir.trim_end_matches('/') != LATEST {
        return Ok(SnapshotRef {
            store: store.clone(),
            dir: dir.to_owned(),
        });
    }
    latest_checkpoint(store)?
        .ok_or_else(|| Error::Restore(format!("no complete checkpoint in {storage}")))
}

/// The kind recorded in `dir`'s `_metadata`; `None` if there is none. Reads only the kind, so that
/// snapshots of another format version are recognised too.
pub fn snapshot_kind(store: &dyn CheckpointStore, dir: &str) -> Result<Option<SnapshotKind>> {
    #[derive(Deserialize)]
    struct Kind {
        kind: SnapshotKind,
    }
    let Some(bytes) = store.get(&join(dir, METADATA))? else {
        return Ok(None);
    };
    let kind: Kind = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Storage(format!("{dir}/{METADATA} is not snapshot metadata: {e}")))?;
    Ok(Some(kind.kind))
}

/// Deletes the snapshot in `dir`: `_metadata` first, so that it stops being restorable before
/// anything it holds disappears, then every other object under `dir`. Returns how many objects
/// were deleted. Checks nothing: callers decide what may be disposed of.
pub fn dispose_snapshot(store: &dyn CheckpointStore, dir: &str) -> Result<usize> {
    let dir = dir.trim_end_matches('/');
    let keys = store.list(&format!("{dir}/"))?;
    let metadata = join(dir, METADATA);
    store.delete(&metadata)?;
    let mut count = usize::from(keys.contains(&metadata));
    for key in keys.iter().filter(|k| **k != metadata) {
        store.delete(key)?;
        count += 1;
    }
    Ok(count)
}

/// A snapshot read back: its metadata and every subtask state by operator uid.
#[derive(Debug)]
pub struct LoadedSnapshot {
    pub source: SnapshotRef,
    pub metadata: Metadata,
    /// Per operator (as in `metadata.operators`), the states of its old subtasks in order.
    pub states: Vec<Vec<SubtaskState>>,
}

impl LoadedSnapshot {
    /// Reads a snapshot's metadata and states.
    pub fn load(source: SnapshotRef) -> Result<Self> {
        let metadata = read_metadata(source.store.as_ref(), &source.dir)?.ok_or_else(|| {
            Error::Restore(format!(
                "no snapshot at '{}' ({} is missing)",
                source.dir, METADATA
            ))
        })?;
        let mut states = Vec::new();
        for op in &metadata.operators {
            let mut subtasks = Vec::new();
            for key in &op.subtasks {
                let full = join(&source.dir, key);
                let bytes = source
                    .store
                    .get(&full)?
                    .ok_or_else(|| Error::Restore(format!("snapshot object {full} is missing")))?;
                subtasks.push(decode::<SubtaskState>(&bytes)?);
            }
            states.push(subtasks);
        }
        Ok(Self {
            source,
            metadata,
            states,
        })
    }

    /// Downloads the files of `set` into `local` (created), resolving shared and own locations.
    pub fn download(&self, set: &FileSet, local: &Path) -> Result<()> {
        std::fs::create_dir_all(local)
            .map_err(|e| Error::Storage(format!("creating {}: {e}", local.display())))?;
        for file in &set.files {
            let key = if file.location.starts_with(SHARED) {
                // Shared files live at the root of the store the checkpoint belongs to.
                let root = self.source.dir.rsplit_once('/').map_or("", |(r, _)| r);
                join(root, &file.location)
            } else {
                join(&self.source.dir, &file.location)
            };
            if !self.source.store.get_file(&key, &local.join(&file.name))? {
                return Err(Error::Restore(format!("snapshot file {key} is missing")));
            }
        }
        Ok(())
    }
}

/// Copies a snapshot to another directory (and possibly another store): savepoints are
/// self-contained, so the copy restores like the original.
pub fn copy_snapshot(from: &SnapshotRef, to: &SnapshotRef) -> Result<()> {
    let prefix = format!("{}/", from.dir.trim_end_matches('/'));
    let keys = from.store.list(&prefix)?;
    let (metadata, rest): (Vec<String>, Vec<String>) =
        keys.into_iter().partition(|k| k.ends_with(METADATA));
    for key in rest.into_iter().chain(metadata) {
        let bytes = from
            .store
            .get(&key)?
            .ok_or_else(|| Error::Storage(format!("{key} vanished while copying")))?;
        let relative = &key[prefix.len()..];
        to.store.put(&join(&to.dir, relative), &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::store::LocalStore;

    fn store(name: &str) -> (std::path::PathBuf, Arc<dyn CheckpointStore>) {
        let dir = std::env::temp_dir().join(format!("strom-storage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (dir.clone(), Arc::new(LocalStore::new(dir)))
    }

    fn snapshot(store: &dyn CheckpointStore, dir: &str, kind: SnapshotKind) {
        store.put(&format!("{dir}/state/op-0"), b"state").unwrap();
        let kind = serde_json::to_string(&kind).unwrap();
        let metadata = format!("{{\"formatVersion\": 0, \"kind\": {kind}}}");
        store
            .put(&format!("{dir}/_metadata"), metadata.as_bytes())
            .unwrap();
    }

    #[test]
    fn latest_names_the_newest_complete_checkpoint_at_the_time() {
        let (_, s) = store("latest");
        let err = resolve_snapshot(&s, "s3://b/run-1", LATEST).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot restore: no complete checkpoint in s3://b/run-1"
        );
        snapshot(s.as_ref(), "chk-0000000007", SnapshotKind::Checkpoint);
        snapshot(s.as_ref(), "chk-0000000012", SnapshotKind::Checkpoint);
        // Newer, but without metadata: not complete. Savepoints are not checkpoints.
        s.put("chk-0000000013/state/op-0", b"half").unwrap();
        snapshot(s.as_ref(), &savepoint_dir(14), SnapshotKind::Savepoint);
        assert_eq!(
            resolve_snapshot(&s, "x", LATEST).unwrap().dir,
            "chk-0000000012"
        );
        assert_eq!(
            resolve_snapshot(&s, "x", "latest/").unwrap().dir,
            "chk-0000000012"
        );
        snapshot(s.as_ref(), "chk-0000000013", SnapshotKind::Checkpoint);
        assert_eq!(
            resolve_snapshot(&s, "x", LATEST).unwrap().dir,
            "chk-0000000013"
        );
        // Any other name is the directory itself.
        let named = resolve_snapshot(&s, "x", "savepoints/savepoint-0000000014").unwrap();
        assert_eq!(named.dir, "savepoints/savepoint-0000000014");
    }

    #[test]
    fn disposing_removes_the_metadata_and_everything_under_the_dir() {
        let (root, s) = store("dispose");
        snapshot(s.as_ref(), "savepoints/sp-1", SnapshotKind::Savepoint);
        s.put("savepoints/sp-1/files/i/f", b"f").unwrap();
        snapshot(s.as_ref(), "savepoints/sp-10", SnapshotKind::Savepoint);
        snapshot(s.as_ref(), "chk-0000000003", SnapshotKind::Checkpoint);
        assert_eq!(
            snapshot_kind(s.as_ref(), "savepoints/sp-1").unwrap(),
            Some(SnapshotKind::Savepoint)
        );
        assert_eq!(
            snapshot_kind(s.as_ref(), "chk-0000000003").unwrap(),
            Some(SnapshotKind::Checkpoint)
        );
        assert_eq!(dispose_snapshot(s.as_ref(), "savepoints/sp-1").unwrap(), 3);
        assert_eq!(snapshot_kind(s.as_ref(), "savepoints/sp-1").unwrap(), None);
        assert!(!root.join("savepoints/sp-1").exists());
        // Its neighbours (sp-10 shares the name's prefix, not the dir) stay.
        assert_eq!(s.list("savepoints/sp-10/").unwrap().len(), 2);
        assert_eq!(s.list("chk-").unwrap().len(), 2);
    }
}
