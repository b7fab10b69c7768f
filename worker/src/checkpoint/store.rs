//! Checkpoint storage: one blocking interface over a flat namespace of immutable objects, with a local
//! file-system implementation here and an S3 one in [`super::s3`]. The checkpoint logic above it
//! decides what is written where; a store only puts, gets, lists and deletes bytes.
//!
//! Object keys are `/`-separated relative paths. A store never needs a key to be both an object and
//! a prefix of other objects.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Where checkpoints are kept.
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    /// Writes an object (replacing any with that key).
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()>;
    /// Uploads a local file as an object (large files in parts where the store supports it).
    fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Storage(format!("reading {}: {e}", path.display())))?;
        self.put(key, &bytes)
    }
    /// Reads an object; `None` if it does not exist.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Downloads an object into a local file; false if it does not exist.
    fn get_file(&self, key: &str, path: &Path) -> Result<bool> {
        match self.get(key)? {
            Some(bytes) => {
                std::fs::write(path, bytes)
                    .map_err(|e| Error::Storage(format!("writing {}: {e}", path.display())))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
    /// Keys of every object under `prefix` (a directory-like prefix ending in `/`, or empty), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Deletes an object; deleting a missing object is not an error.
    fn delete(&self, key: &str) -> Result<()>;
}

/// A store in a local directory: each object a file under it. Writes go to a temporary file that is
/// renamed into place, so a reader never sees half an object.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created when first written to).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        let relative = Path::new(key);
        if key.is_empty()
            || relative
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(Error::Storage(format!("invalid object key '{key}'")));
        }
        Ok(self.root.join(relative))
    }
}

fn storage(context: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Storage(format!("{context} {}: {e}", path.display()))
}

impl CheckpointStore for LocalStore {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| storage("creating", dir, e))?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|e| storage("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| storage("renaming", &tmp, e))
    }

    fn put_file(&self, key: &str, source: &Path) -> Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| storage("creating", dir, e))?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::copy(source, &tmp).map_err(|e| storage("copying", source, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| storage("renaming", &tmp, e))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key)?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage("reading", &path, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(storage("listing", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| storage("listing", &dir, e))?;
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(relative) = path.strip_prefix(&self.root) {
                    let key = relative.to_string_lossy().replace('\\', "/");
                    if key.starts_with(prefix) && !key.contains(".tmp-") {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(storage("deleting", &path, e)),
        }
        // Drop directories left empty, up to the root.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

/// Checks the behaviour every [`CheckpointStore`] must have; run by each implementation's tests.
#[doc(hidden)]
pub fn check_store_contract(store: &dyn CheckpointStore) -> Result<()> {
    let fail = |what: &str| Err(Error::Storage(format!("contract: {what}")));
    if store.get("c/none")?.is_some() {
        return fail("missing object read");
    }
    store.put("c/chk-1/a", b"one")?;
    store.put("c/chk-1/_metadata", b"meta")?;
    store.put("c/chk-2/a", b"two")?;
    store.put("c/chk-1/a", b"uno")?;
    if store.get("c/chk-1/a")?.as_deref() != Some(b"uno".as_slice()) {
        return fail("overwrite");
    }
    let listed = store.list("c/chk-1/")?;
    if listed != ["c/chk-1/_metadata", "c/chk-1/a"] {
        return fail(&format!("list gave {listed:?}"));
    }
    if store.list("c/")?.len() != 3 || !store.list("nothing/")?.is_empty() {
        return fail("list of a prefix");
    }
    store.delete("c/chk-1/a")?;
    store.delete("c/chk-1/a")?;
    if store.get("c/chk-1/a")?.is_some() || store.list("c/chk-1/")? != ["c/chk-1/_metadata"] {
        return fail("delete");
    }
    for key in store.list("c/")? {
        store.delete(&key)?;
    }
    if !store.list("c/")?.is_empty() {
        return fail("cleanup");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_store_meets_the_contract_and_rejects_escaping_keys() {
        let dir = std::env::temp_dir().join(format!("strom-store-{}", std::process::id()));
        let store = LocalStore::new(&dir);
        check_store_contract(&store).unwrap();
        assert!(store.put("../x", b"").is_err());
        assert!(store.put("/abs", b"").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
