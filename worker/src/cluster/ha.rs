//! High availability of the JobManager: leader election and the records a new leader recovers
//! jobs from.
//!
//! The local backend is an exclusive lock on `<dir>/leader.lock` (one host, or a shared file
//! system with working locks): the process holding it leads; the lock dies with the process, so a
//! standby blocked on it takes over the moment the leader is gone, `kill -9` included. The leader
//! writes `<dir>/leader.json` (who leads, where) for people and TaskManagers that want to know. Job
//! records (`<dir>/jobs/<id>.json`: the spec and whether it reached a terminal state) let the new
//! leader resume every job that was running, from its latest checkpoint. The Kubernetes Lease
//! backend comes with the operator.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strom_api::JobSpec;

use crate::error::{Error, Result};

/// Leadership, held until dropped (or the process ends).
#[derive(Debug)]
pub struct Leadership {
    _lock: File,
    pub dir: PathBuf,
}

/// Who leads, as written into `leader.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderInfo {
    pub session: String,
    pub rpc_address: String,
    pub rest_address: String,
    pub pid: u32,
}

/// Blocks until this process holds the leader lock in `dir`, then records `info`.
pub fn acquire(dir: &Path, info: &LeaderInfo, poll: Duration) -> Result<Leadership> {
    std::fs::create_dir_all(dir.join("jobs"))
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join("leader.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut waiting = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if !waiting {
                    tracing::info!(lock = %path.display(), "standing by: another JobManager leads");
                    waiting = true;
                }
                std::thread::sleep(poll);
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()), e));
            }
        }
    }
    let json = serde_json::to_vec_pretty(info)
        .map_err(|e| Error::Storage(format!("encoding the leader record: {e}")))?;
    write_atomically(&dir.join("leader.json"), &json)?;
    tracing::info!(session = %info.session, "leading");
    Ok(Leadership {
        _lock: file,
        dir: dir.to_owned(),
    })
}

/// What a leader records of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub id: String,
    pub spec: JobSpec,
    /// Set once the job finished, failed or was cancelled: a new leader leaves it alone.
    #[serde(default)]
    pub terminal: Option<String>,
}

impl Leadership {
    pub fn save(&self, record: &JobRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::Storage(format!("encoding job record: {e}")))?;
        write_atomically(
            &self.dir.join("jobs").join(format!("{}.json", record.id)),
            &json,
        )
    }

    /// Every job record, in id order.
    pub fn jobs(&self) -> Result<Vec<JobRecord>> {
        let dir = self.dir.join("jobs");
        let mut records = Vec::new();
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = std::fs::read(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            match serde_json::from_slice::<JobRecord>(&bytes) {
                Ok(r) => records.push(r),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping an unreadable job record")
                }
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(session: &str) -> LeaderInfo {
        LeaderInfo {
            session: session.into(),
            rpc_address: "127.0.0.1:1".into(),
            rest_address: "127.0.0.1:2".into(),
            pid: std::process::id(),
        }
    }

    #[test]
    fn one_leader_at_a_time_and_the_next_takes_over_with_the_records() {
        let dir = std::env::temp_dir().join(format!("strom-ha-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = acquire(&dir, &info("a"), Duration::from_millis(5)).unwrap();
        first
            .save(&JobRecord {
                id: "j1".into(),
                spec: JobSpec::named("q5"),
                terminal: None,
            })
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let standby_dir = dir.clone();
        let standby = std::thread::spawn(move || {
            let l = acquire(&standby_dir, &info("b"), Duration::from_millis(5)).unwrap();
            tx.send(()).unwrap();
            l
        });
        // The standby blocks while the first leads.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(first);
        rx.recv().unwrap();
        let second = standby.join().unwrap();
        let recorded: LeaderInfo =
            serde_json::from_slice(&std::fs::read(dir.join("leader.json")).unwrap()).unwrap();
        assert_eq!(recorded.session, "b");
        let jobs = second.jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].spec, JobSpec::named("q5"));
    }
}
