//! High availability of the JobManager: leader election, the way a leader learns that it lost,
//! and the records a new leader recovers jobs from.
//!
//! [`lead`] blocks until this process leads and returns its [`Leadership`] (the job records) and a
//! [`Loss`] that resolves when leadership is gone; the JobManager then exits (as Flink's does):
//! Kubernetes restarts it as a standby, and nothing ever runs under two leaders for long. Two
//! backends, chosen by [`HaConfig`]:
//!
//! - **Dir**: an exclusive lock on `<dir>/leader.lock` (one host, or a shared file system with
//!   working locks). The lock dies with the process, so a standby blocked on it takes over the
//!   moment the leader is gone, `kill -9` included; it cannot be lost while the process lives.
//! - **Lease**: a Kubernetes `coordination.k8s.io/v1` Lease (`kube-lease-manager`: acquired when
//!   free or expired, renewed `graceSeconds` before it expires). The leader also reads the Lease
//!   back every second: it has lost when the Lease names another holder, or when it could not
//!   confirm its hold for longer than the Lease is valid (the API server unreachable, renewals
//!   failing). This is the worker's only use of the Kubernetes API.
//!
//! Job records (`jobs/<id>.json`: the spec, and whether it reached a terminal state) let a new
//! leader resume every job that was running, from its latest checkpoint. With a dir they live in
//! it; with a Lease, in `storage` (any checkpoint store location) when one is configured.
//! `leader.json` beside them says who leads, for people and tools.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};
use serde::{Deserialize, Serialize};
use strom_api::JobSpec;
use tokio::sync::mpsc;

use super::config::{HaConfig, LeaseConfig};
use crate::checkpoint::store::{CheckpointStore, LocalStore};
use crate::error::{Error, Result};

/// Who leads, as written into `leader.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderInfo {
    pub session: String,
    pub rpc_address: String,
    pub rest_address: String,
    pub pid: u32,
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

/// Leadership while it lasts: what keeps it (a lock) and the job records. Its methods block (the
/// records may be in S3): call them off the async threads.
#[derive(Debug)]
pub struct Leadership {
    _lock: Option<File>,
    records: Option<Arc<dyn CheckpointStore>>,
}

/// Resolves, with the reason, when leadership is lost.
#[derive(Debug)]
pub struct Loss(Option<mpsc::Receiver<String>>);

impl Loss {
    /// Never resolves for a lock that can only go with the process.
    pub async fn wait(self) -> String {
        match self.0 {
            Some(mut rx) => rx
                .recv()
                .await
                .unwrap_or_else(|| "the Lease keeper stopped".into()),
            None => std::future::pending().await,
        }
    }
}

/// Blocks until this process leads, then records `info` in `leader.json` (where there are
/// records).
pub async fn lead(config: &HaConfig, info: &LeaderInfo) -> Result<(Leadership, Loss)> {
    let (leadership, loss) = match config {
        HaConfig::Dir { dir } => {
            let dir = dir.clone();
            let lock = tokio::task::spawn_blocking(move || {
                lock(&dir, Duration::from_millis(100)).map(|lock| (lock, dir))
            })
            .await
            .map_err(|e| Error::Cluster(format!("leader election: {e}")))??;
            let records: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(&lock.1));
            (
                Leadership {
                    _lock: Some(lock.0),
                    records: Some(records),
                },
                Loss(None),
            )
        }
        HaConfig::Lease { lease, storage } => {
            let loss = hold_lease(lease).await?;
            let records = match storage {
                Some(s) => {
                    let s = s.clone();
                    Some(
                        tokio::task::spawn_blocking(move || super::open_store(&s))
                            .await
                            .map_err(|e| {
                                Error::Cluster(format!("opening the job records: {e}"))
                            })??,
                    )
                }
                None => None,
            };
            (
                Leadership {
                    _lock: None,
                    records,
                },
                loss,
            )
        }
    };
    if let Some(store) = leadership.records.clone() {
        let json = serde_json::to_vec_pretty(info)
            .map_err(|e| Error::Storage(format!("encoding the leader record: {e}")))?;
        tokio::task::spawn_blocking(move || store.put("leader.json", &json))
            .await
            .map_err(|e| Error::Cluster(format!("writing the leader record: {e}")))??;
    }
    tracing::info!(session = %info.session, "leading");
    Ok((leadership, loss))
}

/// Blocks until this process holds the lock in `dir`.
fn lock(dir: &Path, poll: Duration) -> Result<File> {
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
            Ok(()) => return Ok(file),
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
}

fn lease_error(what: &str, lease: &LeaseConfig, e: impl std::fmt::Display) -> Error {
    Error::Cluster(format!(
        "{what} Lease {}/{}: {e}",
        lease.namespace, lease.name
    ))
}

/// Blocks until this process holds the Lease; then keeps renewing it and watches for its loss.
async fn hold_lease(lease: &LeaseConfig) -> Result<Loss> {
    if lease.grace_seconds == 0 || lease.grace_seconds >= lease.duration_seconds {
        return Err(lease_error(
            "leader election:",
            lease,
            "graceSeconds must be at least 1 and less than durationSeconds",
        ));
    }
    let identity = lease.identity();
    // In-cluster (service account) or KUBECONFIG; requests bounded so that a hung API server
    // shows as failed renewals, not as silence.
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| lease_error("reaching the API server for", lease, e))?;
    let timeout = Duration::from_secs(lease.grace_seconds);
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    let client = kube::Client::try_from(config)
        .map_err(|e| lease_error("reaching the API server for", lease, e))?;
    let params = LeaseParams::new(
        identity.clone(),
        lease.duration_seconds,
        lease.grace_seconds,
    )
    .with_field_manager(format!("strom-jobmanager-{identity}"));
    let manager = LeaseManager::new(
        client.clone(),
        &lease.name,
        &lease.namespace,
        params,
        LeaseCreateMode::AutoCreate,
    )
    .await
    .map_err(|e| lease_error("opening", lease, e))?;
    tracing::info!(lease = %lease.name, namespace = %lease.namespace, %identity, "standing by until this JobManager holds the Lease");
    loop {
        match manager.changed().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(lease = %lease.name, error = %e, "contending for the Lease");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tracing::info!(lease = %lease.name, %identity, "holding the Lease");
    let acquired = Instant::now();
    let (tx, rx) = mpsc::channel(2);
    // The keeper renews the Lease (inside `changed`, which returns when the hold changes).
    let keeper_tx = tx.clone();
    let name = lease.name.clone();
    tokio::spawn(async move {
        loop {
            match manager.changed().await {
                Ok(true) => {}
                Ok(false) => {
                    let _ = keeper_tx
                        .send(format!("another JobManager holds the Lease {name}"))
                        .await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(lease = %name, error = %e, "renewing the Lease failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    // The watchdog reads the Lease back and decides.
    let api: kube::Api<Lease> = kube::Api::namespaced(client, &lease.namespace);
    let (name, duration) = (lease.name.clone(), lease.duration_seconds);
    tokio::spawn(async move {
        let mut valid_until = acquired + Duration::from_secs(duration);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            match api.get(&name).await {
                Ok(l) => {
                    let spec = l.spec.unwrap_or_default();
                    let holder = spec.holder_identity.unwrap_or_default();
                    if holder != identity {
                        let who = if holder.is_empty() { "nobody" } else { &holder };
                        let _ = tx
                            .send(format!("the Lease {name} names {who} as its holder"))
                            .await;
                        return;
                    }
                    // Renewed by this process, on its own clock: valid until renewTime + duration.
                    if let (Some(renew), Some(secs)) =
                        (spec.renew_time, spec.lease_duration_seconds)
                    {
                        let expiry = SystemTime::from(renew.0)
                            + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
                        if let Ok(left) = expiry.duration_since(SystemTime::now()) {
                            valid_until = valid_until.max(Instant::now() + left);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %name, error = %e, "reading the Lease back failed")
                }
            }
            if Instant::now() > valid_until {
                let _ = tx
                    .send(format!(
                        "the Lease {name} could not be renewed within its duration ({duration} s)"
                    ))
                    .await;
                return;
            }
        }
    });
    Ok(Loss(Some(rx)))
}

impl Leadership {
    /// Records a job (nothing without a records location).
    pub fn save(&self, record: &JobRecord) -> Result<()> {
        let Some(store) = &self.records else {
            return Ok(());
        };
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::Storage(format!("encoding job record: {e}")))?;
        store.put(&format!("jobs/{}.json", record.id), &json)
    }

    /// Every job record, in id order.
    pub fn jobs(&self) -> Result<Vec<JobRecord>> {
        let Some(store) = &self.records else {
            return Ok(Vec::new());
        };
        let mut records = Vec::new();
        for key in store.list("jobs/")? {
            if !key.ends_with(".json") {
                continue;
            }
            let Some(bytes) = store.get(&key)? else {
                continue;
            };
            match serde_json::from_slice::<JobRecord>(&bytes) {
                Ok(r) => records.push(r),
                Err(e) => {
                    tracing::warn!(record = %key, error = %e, "skipping an unreadable job record")
                }
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_leader_at_a_time_and_the_next_takes_over_with_the_records() {
        let dir = std::env::temp_dir().join(format!("strom-ha-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = HaConfig::Dir { dir: dir.clone() };
        let (first, _) = lead(&config, &info("a")).await.unwrap();
        first
            .save(&JobRecord {
                id: "j1".into(),
                spec: JobSpec::named("q5"),
                terminal: None,
            })
            .unwrap();
        let standby_config = config.clone();
        let standby =
            tokio::spawn(async move { lead(&standby_config, &info("b")).await.unwrap().0 });
        // The standby blocks while the first leads.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!standby.is_finished());
        drop(first);
        let second = standby.await.unwrap();
        let recorded: LeaderInfo =
            serde_json::from_slice(&std::fs::read(dir.join("leader.json")).unwrap()).unwrap();
        assert_eq!(recorded.session, "b");
        let jobs = second.jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].spec, JobSpec::named("q5"));
    }
}
