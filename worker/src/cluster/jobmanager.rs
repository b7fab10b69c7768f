//! The JobManager role: the dispatcher (jobs from the configuration, from REST and from the HA
//! records), a job master per job, the TaskManager registry with heartbeats, and the gRPC
//! endpoint TaskManagers talk to.
//!
//! A job master runs a job as a sequence of attempts. Each attempt is scheduled into slots with
//! slot sharing (slot `i` runs subtask `i` of every vertex, so a job needs as many slots as its
//! highest parallelism), spread evenly over the TaskManagers; it restores from the latest
//! checkpoint in the job's storage (or `restoreFrom` if there is none) and has its own checkpoint
//! coordinator ([`crate::runtime::checkpointing::drive`], the same as the embedded runtime's) that
//! reaches the subtasks through their TaskManagers. A failed task or a lost TaskManager ends the
//! attempt everywhere (every edge of these jobs is all-to-all, so the failover region is the whole
//! job) and, as the restart strategy allows, the next attempt starts once enough slots are there;
//! until then the job is `WAITING_FOR_RESOURCES`, not failed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use serde::Serialize;
use strom_api::{JobSpec, RestartSpec};
use tokio::runtime::Handle;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::config::JobManagerConfig;
use super::exchange::MAX_FRAME;
use super::ha::{JobRecord, LeaderInfo, Leadership};
use super::metrics::{Family, Source};
use super::proto::job_manager_server::{JobManager as JobManagerRpc, JobManagerServer};
use super::proto::task_manager_client::TaskManagerClient;
use super::proto::{self, task_report};
use super::{checkpoint_options, job_graph, restore_from};
use crate::checkpoint::storage::{
    LoadedSnapshot, SnapshotRef, SnapshotWriter, UploadedState, latest_checkpoint,
};
use crate::error::{Error, Result};
use crate::plan::physical::plan;
use crate::runtime::checkpointing::{
    self, CheckpointStats, CompletedSnapshot, Control, ControlLine, Report, TaskEnd,
};
use crate::runtime::{first_checkpoint_id, subtasks};
use crate::time::{MAX_WATERMARK, MIN_WATERMARK, now_millis};

/// A job's state, as Flink names them (plus `WAITING_FOR_RESOURCES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Created,
    WaitingForResources,
    Running,
    Restarting,
    Cancelling,
    Canceled,
    Finished,
    Failed,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Canceled | Self::Finished | Self::Failed)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::WaitingForResources => "WAITING_FOR_RESOURCES",
            Self::Running => "RUNNING",
            Self::Restarting => "RESTARTING",
            Self::Cancelling => "CANCELLING",
            Self::Canceled => "CANCELED",
            Self::Finished => "FINISHED",
            Self::Failed => "FAILED",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Self::Canceled, Self::Finished, Self::Failed]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// A vertex (task) of a job's plan.
#[derive(Debug, Clone)]
pub struct Vertex {
    pub id: usize,
    pub name: String,
    pub parallelism: u32,
    pub is_source: bool,
}

/// What the job master is told.
#[derive(Debug)]
enum Event {
    Finished { attempt: u64, subtask: u32 },
    Failed { attempt: u64, reason: String },
    TaskManagerLost(String),
    Cancel,
}

/// A savepoint requested over REST.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SavepointStatus {
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`.
    pub status: &'static str,
    pub stop: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The attempt it was requested of.
    #[serde(skip)]
    attempt: u64,
}

#[derive(Debug, Clone)]
struct Progress {
    state: JobState,
    message: Option<String>,
    attempt: u64,
    restarts: u64,
    start_ms: i64,
    end_ms: Option<i64>,
    failure: Option<String>,
    placement: Vec<String>,
}

/// One job and the thread that runs it.
pub struct JobMaster {
    pub id: String,
    pub spec: JobSpec,
    pub vertices: Vec<Vertex>,
    numbering: Vec<(usize, u32, bool)>,
    slots: u32,
    status: Mutex<Progress>,
    events: Sender<Event>,
    events_rx: Receiver<Event>,
    checkpoints: Arc<CheckpointStats>,
    /// The running attempt's line to its checkpoint coordinator.
    coordinator: Mutex<Option<Sender<Report>>>,
    savepoints: Mutex<BTreeMap<u64, SavepointStatus>>,
    next_request: AtomicU64,
}

impl JobMaster {
    fn new(
        id: String,
        spec: JobSpec,
        vertices: Vec<Vertex>,
        numbering: Vec<(usize, u32, bool)>,
        slots: u32,
        state: JobState,
    ) -> Arc<Self> {
        let (events, events_rx) = crossbeam_channel::unbounded();
        Arc::new(JobMaster {
            id,
            spec,
            vertices,
            numbering,
            slots,
            status: Mutex::new(Progress {
                state,
                message: None,
                attempt: 0,
                restarts: 0,
                start_ms: now_millis(),
                end_ms: None,
                failure: None,
                placement: Vec::new(),
            }),
            events,
            events_rx,
            checkpoints: Arc::new(CheckpointStats::default()),
            coordinator: Mutex::new(None),
            savepoints: Mutex::new(BTreeMap::new()),
            next_request: AtomicU64::new(1),
        })
    }
}

impl std::fmt::Debug for JobMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobMaster").field("id", &self.id).finish()
    }
}

/// The live numbers of one subtask, from heartbeats.
#[derive(Debug, Clone, Default)]
struct Sample {
    metrics: proto::SubtaskMetrics,
    at: Option<Instant>,
    out_per_second: f64,
    backpressure: f64,
}

struct TaskManagerEntry {
    address: String,
    slots: u32,
    last_seen: Instant,
    client: TaskManagerClient<Channel>,
    channels: Vec<proto::ChannelMetrics>,
}

/// The JobManager's state.
pub struct JobManager {
    pub config: JobManagerConfig,
    pub session: String,
    rt: Handle,
    leadership: Option<Leadership>,
    taskmanagers: Mutex<BTreeMap<String, TaskManagerEntry>>,
    jobs: Mutex<BTreeMap<String, Arc<JobMaster>>>,
    /// Slots taken, by job: the TaskManager of each slot.
    assigned: Mutex<HashMap<String, Vec<String>>>,
    samples: Mutex<HashMap<(String, u64, u32), Sample>>,
}

impl std::fmt::Debug for JobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManager")
            .field("session", &self.session)
            .finish()
    }
}

/// Runs a JobManager until the process ends: waits for leadership (with HA), then serves.
pub async fn run(config: JobManagerConfig) -> Result<()> {
    let session = format!(
        "{:x}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let (leadership, loss) = match &config.high_availability {
        Some(ha) => {
            let info = LeaderInfo {
                session: session.clone(),
                rpc_address: config.advertised().to_owned(),
                rest_address: config.rest_address.clone(),
                pid: std::process::id(),
            };
            let (leadership, loss) = super::ha::lead(ha, &info).await?;
            (Some(leadership), Some(loss))
        }
        None => (None, None),
    };
    let jm = Arc::new(JobManager {
        config: config.clone(),
        session,
        rt: Handle::current(),
        leadership,
        taskmanagers: Mutex::new(BTreeMap::new()),
        jobs: Mutex::new(BTreeMap::new()),
        assigned: Mutex::new(HashMap::new()),
        samples: Mutex::new(HashMap::new()),
    });
    let rpc: std::net::SocketAddr = config
        .rpc_address
        .parse()
        .map_err(|e| Error::Cluster(format!("rpcAddress: {e}")))?;
    let rpc_listener = tokio::net::TcpListener::bind(rpc)
        .await
        .map_err(|e| Error::io(format!("listening on {rpc}"), e))?;
    let rest_listener = tokio::net::TcpListener::bind(&config.rest_address)
        .await
        .map_err(|e| Error::io(format!("listening on {}", config.rest_address), e))?;
    let recovering = jm.clone();
    tokio::task::spawn_blocking(move || recovering.recover_jobs())
        .await
        .map_err(|e| Error::Cluster(format!("recovering jobs: {e}")))??;
    let monitor = jm.clone();
    std::thread::Builder::new()
        .name("heartbeats".into())
        .spawn(move || monitor.watch_heartbeats())
        .map_err(|e| Error::io("spawning the heartbeat monitor", e))?;
    tracing::info!(session = %jm.session, rpc = %rpc, rest = %config.rest_address, "JobManager leading");
    let service = JobManagerServer::new(Service(jm.clone()))
        .max_decoding_message_size(MAX_FRAME)
        .max_encoding_message_size(MAX_FRAME);
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(rpc_listener));
    let rest = super::rest::serve(rest_listener, jm.clone());
    let lost = async move {
        match loss {
            Some(loss) => loss.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = server => r.map_err(|e| Error::Cluster(format!("the RPC server stopped: {e}"))),
        r = rest => r.map_err(|e| Error::io("the REST server stopped", e)),
        reason = lost => {
            tracing::error!(session = %jm.session, %reason, "lost leadership: exiting so that a new leader takes over");
            Err(Error::Cluster(format!("lost leadership: {reason}")))
        }
    }
}

impl JobManager {
    /// Jobs of the HA records that did not end, and the configured job (application mode).
    fn recover_jobs(self: &Arc<Self>) -> Result<()> {
        let mut records = match &self.leadership {
            Some(l) => l.jobs()?,
            None => Vec::new(),
        };
        if let Some(spec) = &self.config.job
            && !records.iter().any(|r| r.id == self.config.job_id)
        {
            records.push(JobRecord {
                id: self.config.job_id.clone(),
                spec: spec.clone(),
                terminal: None,
            });
        }
        for record in records {
            let terminal = record.terminal.as_deref().and_then(JobState::parse);
            if let Err(e) = self.start_job(record.id.clone(), record.spec.clone(), terminal) {
                tracing::error!(job = %record.id, error = %e, "cannot start a recorded job");
                // Not even planned (a SQL script with an error, an unknown built-in job): the job
                // is FAILED with the reason, so that whoever watches it over REST (the operator)
                // learns why instead of waiting for a job that never comes.
                if self.job(&record.id).is_none() {
                    self.unplanned(record.id, record.spec, terminal, e.to_string());
                }
            }
        }
        Ok(())
    }

    /// Registers a job that cannot be planned: FAILED with `reason` (and recorded so), unless it
    /// had ended already.
    fn unplanned(&self, id: String, spec: JobSpec, ended: Option<JobState>, reason: String) {
        let state = ended.unwrap_or(JobState::Failed);
        let master = JobMaster::new(id.clone(), spec, Vec::new(), Vec::new(), 1, state);
        {
            let mut s = master.status.lock();
            s.end_ms = Some(s.start_ms);
            if ended.is_none() {
                s.failure = Some(reason);
            }
        }
        self.jobs.lock().insert(id, master.clone());
        if ended.is_none() {
            self.record_terminal(&master, JobState::Failed);
        }
    }

    /// Accepts a job (REST or configuration) and starts its job master.
    pub fn submit(self: &Arc<Self>, id: Option<String>, spec: JobSpec) -> Result<String> {
        spec.validate()
            .map_err(|e| Error::plan("job", e.to_string()))?;
        let id = id.unwrap_or_else(|| {
            format!(
                "{}-{:x}",
                spec.label(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
            )
        });
        if self.jobs.lock().contains_key(&id) {
            return Err(Error::plan("job", format!("a job with id '{id}' exists")));
        }
        self.start_job(id.clone(), spec, None)?;
        Ok(id)
    }

    fn start_job(
        self: &Arc<Self>,
        id: String,
        spec: JobSpec,
        terminal: Option<JobState>,
    ) -> Result<()> {
        let graph = job_graph(&spec)?;
        let physical = plan(&graph)?;
        let numbering = subtasks(&physical);
        let vertices: Vec<Vertex> = physical
            .tasks
            .iter()
            .map(|t| Vertex {
                id: t.id,
                name: t
                    .nodes
                    .iter()
                    .map(|&n| graph.nodes[n].name.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> "),
                parallelism: t.parallelism,
                is_source: !physical.edges.iter().any(|e| e.to_task == t.id),
            })
            .collect();
        let slots = vertices.iter().map(|v| v.parallelism).max().unwrap_or(1);
        let master = JobMaster::new(
            id.clone(),
            spec.clone(),
            vertices,
            numbering,
            slots,
            terminal.unwrap_or(JobState::Created),
        );
        self.jobs.lock().insert(id.clone(), master.clone());
        if terminal.is_some() {
            return Ok(());
        }
        if let Some(l) = &self.leadership {
            l.save(&JobRecord {
                id: id.clone(),
                spec,
                terminal: None,
            })?;
        }
        let jm = self.clone();
        std::thread::Builder::new()
            .name(format!("job-{}", id.chars().take(10).collect::<String>()))
            .spawn(move || jm.run_job(&master))
            .map_err(|e| Error::io("spawning a job master", e))?;
        Ok(())
    }

    pub fn job(&self, id: &str) -> Option<Arc<JobMaster>> {
        self.jobs.lock().get(id).cloned()
    }

    pub fn jobs(&self) -> Vec<Arc<JobMaster>> {
        self.jobs.lock().values().cloned().collect()
    }

    /// (TaskManagers, slots in all, slots free).
    pub fn resources(&self) -> (usize, u32, u32) {
        let tms = self.taskmanagers.lock();
        let total: u32 = tms.values().map(|t| t.slots).sum();
        let used: u32 = self.assigned.lock().values().map(|s| s.len() as u32).sum();
        (tms.len(), total, total.saturating_sub(used))
    }

    /// Registered TaskManagers: (id, address, slots, milliseconds since the last heartbeat).
    pub fn taskmanagers(&self) -> Vec<(String, String, u32, u64)> {
        self.taskmanagers
            .lock()
            .iter()
            .map(|(id, t)| {
                (
                    id.clone(),
                    t.address.clone(),
                    t.slots,
                    t.last_seen.elapsed().as_millis() as u64,
                )
            })
            .collect()
    }

    /// Takes `needed` slots spread evenly over the TaskManagers, or none if there are too few.
    fn assign(&self, job: &str, needed: u32) -> Option<Vec<String>> {
        let tms = self.taskmanagers.lock();
        let mut assigned = self.assigned.lock();
        let mut free: Vec<(String, u32)> = tms
            .iter()
            .map(|(id, t)| {
                let used = assigned.values().flatten().filter(|s| *s == id).count() as u32;
                (id.clone(), t.slots.saturating_sub(used))
            })
            .filter(|(_, f)| *f > 0)
            .collect();
        if free.iter().map(|(_, f)| *f).sum::<u32>() < needed {
            return None;
        }
        let mut slots = Vec::with_capacity(needed as usize);
        while slots.len() < needed as usize {
            for (id, f) in free.iter_mut() {
                if *f > 0 && slots.len() < needed as usize {
                    *f -= 1;
                    slots.push(id.clone());
                }
            }
        }
        assigned.insert(job.to_owned(), slots.clone());
        Some(slots)
    }

    fn release(&self, job: &str) {
        self.assigned.lock().remove(job);
    }

    fn client(&self, tm: &str) -> Option<TaskManagerClient<Channel>> {
        self.taskmanagers.lock().get(tm).map(|t| t.client.clone())
    }

    fn address(&self, tm: &str) -> Option<String> {
        self.taskmanagers.lock().get(tm).map(|t| t.address.clone())
    }

    /// Removes TaskManagers that missed their heartbeats and fails over the jobs they ran.
    fn watch_heartbeats(self: Arc<Self>) {
        let timeout = Duration::from_millis(self.config.heartbeat_timeout_ms);
        loop {
            std::thread::sleep(Duration::from_millis(
                (self.config.heartbeat_interval_ms / 2).max(10),
            ));
            let lost: Vec<String> = {
                let mut tms = self.taskmanagers.lock();
                let lost: Vec<String> = tms
                    .iter()
                    .filter(|(_, t)| t.last_seen.elapsed() > timeout)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &lost {
                    tms.remove(id);
                }
                lost
            };
            for id in lost {
                tracing::warn!(taskmanager = %id, "TaskManager lost: no heartbeat");
                self.lost(&id);
            }
        }
    }

    fn lost(&self, tm: &str) {
        for job in self.jobs() {
            let _ = job.events.send(Event::TaskManagerLost(tm.to_owned()));
        }
    }

    fn record_terminal(&self, job: &JobMaster, state: JobState) {
        if let Some(l) = &self.leadership
            && let Err(e) = l.save(&JobRecord {
                id: job.id.clone(),
                spec: job.spec.clone(),
                terminal: Some(state.name().to_owned()),
            })
        {
            tracing::error!(job = %job.id, error = %e, "cannot record the job's end");
        }
    }

    /// The job master: attempts until the job finishes, is cancelled, or fails for good.
    fn run_job(self: Arc<Self>, job: &Arc<JobMaster>) {
        let mut restarts_left = match job.spec.restart {
            RestartSpec::None => 0,
            RestartSpec::FixedDelay { attempts, .. } => attempts,
        };
        let delay = match job.spec.restart {
            RestartSpec::None => 0,
            RestartSpec::FixedDelay { delay_ms, .. } => delay_ms,
        };
        loop {
            // Slots.
            let slots = loop {
                if let Some(s) = self.assign(&job.id, job.slots) {
                    break s;
                }
                let (_, total, free) = self.resources();
                job.set_state(
                    JobState::WaitingForResources,
                    Some(format!(
                        "needs {} slots; {free} of {total} are free",
                        job.slots
                    )),
                );
                match job.events_rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(Event::Cancel) => return self.end(job, JobState::Canceled, None),
                    Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            let attempt = {
                let mut s = job.status.lock();
                s.attempt += 1;
                s.placement = slots.clone();
                s.attempt
            };
            let outcome = match self.start_attempt(job, attempt, &slots) {
                Ok(running) => {
                    job.set_state(JobState::Running, None);
                    let outcome = self.watch_attempt(job, attempt, &slots);
                    self.stop_attempt(job, attempt, &slots, running);
                    outcome
                }
                Err(e) => {
                    self.stop_attempt(job, attempt, &slots, None);
                    Outcome::Failed(format!("deploying attempt {attempt}: {e}"))
                }
            };
            self.release(&job.id);
            match outcome {
                Outcome::Finished => return self.end(job, JobState::Finished, None),
                Outcome::Cancelled => return self.end(job, JobState::Canceled, None),
                Outcome::Failed(reason) => {
                    tracing::warn!(job = %job.id, attempt, reason, "attempt failed");
                    job.status.lock().failure = Some(reason.clone());
                    if restarts_left == 0 {
                        return self.end(job, JobState::Failed, Some(reason));
                    }
                    restarts_left -= 1;
                    job.status.lock().restarts += 1;
                    job.set_state(JobState::Restarting, Some(reason));
                    match job.events_rx.recv_timeout(Duration::from_millis(delay)) {
                        Ok(Event::Cancel) => return self.end(job, JobState::Canceled, None),
                        Err(RecvTimeoutError::Disconnected) => return,
                        _ => {}
                    }
                    // Whatever else arrived concerns the attempt that ended.
                    while let Ok(e) = job.events_rx.try_recv() {
                        if matches!(e, Event::Cancel) {
                            return self.end(job, JobState::Canceled, None);
                        }
                    }
                }
            }
        }
    }

    fn end(&self, job: &JobMaster, state: JobState, failure: Option<String>) {
        {
            let mut s = job.status.lock();
            s.state = state;
            s.end_ms = Some(now_millis());
            if failure.is_some() {
                s.failure = failure;
            }
            s.message = None;
        }
        tracing::info!(job = %job.id, state = state.name(), "job ended");
        self.record_terminal(job, state);
    }

    fn start_attempt(
        self: &Arc<Self>,
        job: &Arc<JobMaster>,
        attempt: u64,
        slots: &[String],
    ) -> Result<Option<std::thread::JoinHandle<()>>> {
        let checkpoints = checkpoint_options(&job.spec)?;
        // Restore: the latest checkpoint of the job, else what the spec names.
        let mut restore_dir = String::new();
        let mut restored_id = None;
        let latest = match &checkpoints {
            Some(c) => latest_checkpoint(&c.store)?,
            None => None,
        };
        let snapshot = match latest {
            Some(s) => {
                restore_dir = s.dir.clone();
                Some(s)
            }
            None => restore_from(&job.spec)?.map(|(s, location)| {
                restore_dir = location;
                s
            }),
        };
        if let Some(s) = snapshot {
            restored_id = Some(LoadedSnapshot::load(s)?.metadata.id);
        }
        let placement: Vec<String> = job
            .numbering
            .iter()
            .map(|&(_, index, _)| slots[index as usize].clone())
            .collect();
        let taskmanagers: Vec<String> = {
            let mut t: Vec<String> = slots.to_vec();
            t.sort();
            t.dedup();
            t
        };
        let mut addresses = HashMap::new();
        for tm in &taskmanagers {
            let address = self
                .address(tm)
                .ok_or_else(|| Error::Cluster(format!("TaskManager {tm} is gone")))?;
            addresses.insert(tm.clone(), address);
        }
        // The coordinator first, so that no report of the new attempt is lost.
        let mut driver = None;
        let mut first_id = 1;
        // Control messages wait in their lines until every TaskManager has its tasks.
        let mut line_ends: Vec<(String, Receiver<(u32, Control)>)> = Vec::new();
        if let Some(c) = &checkpoints {
            first_id = first_checkpoint_id(&c.store, restored_id)?;
            let (reports_tx, reports_rx) = crossbeam_channel::unbounded::<Report>();
            let mut lines: HashMap<String, Sender<(u32, Control)>> = HashMap::new();
            for tm in &taskmanagers {
                let (tx, rx) = crossbeam_channel::unbounded();
                lines.insert(tm.clone(), tx);
                line_ends.push((tm.clone(), rx));
            }
            let tasks: Vec<TaskEnd> = job
                .numbering
                .iter()
                .enumerate()
                .map(|(n, &(_, _, is_source))| TaskEnd {
                    control: ControlLine::Remote {
                        line: lines[&placement[n]].clone(),
                        subtask: n as u32,
                    },
                    is_source,
                })
                .collect();
            drop(lines);
            let writer = SnapshotWriter::new(
                c.store.clone(),
                job.spec.label(),
                job.spec.engine.max_parallelism,
            );
            job.checkpoints.new_attempt();
            let (options, stats) = (c.clone(), job.checkpoints.clone());
            driver = Some(
                std::thread::Builder::new()
                    .name("checkpoints".into())
                    .spawn(move || {
                        checkpointing::drive(options, writer, tasks, reports_rx, first_id, stats)
                    })
                    .map_err(|e| Error::io("spawning the checkpoint coordinator", e))?,
            );
            *job.coordinator.lock() = Some(reports_tx);
        }
        let spec = serde_json::to_vec(&job.spec)
            .map_err(|e| Error::plan("job", format!("encoding the spec: {e}")))?;
        for tm in &taskmanagers {
            let mut client = self
                .client(tm)
                .ok_or_else(|| Error::Cluster(format!("TaskManager {tm} is gone")))?;
            let request = proto::DeployRequest {
                session: self.session.clone(),
                job_id: job.id.clone(),
                attempt,
                spec: spec.clone(),
                placement: placement.clone(),
                addresses: addresses.clone(),
                restore_dir: restore_dir.clone(),
                first_checkpoint: first_id,
                task_manager_id: tm.clone(),
            };
            if let Err(e) = self.rt.block_on(client.deploy(request)) {
                if matches!(
                    e.code(),
                    tonic::Code::Unavailable | tonic::Code::FailedPrecondition
                ) {
                    // Gone without a word (killed), or another process has its address now: no
                    // need to wait for its heartbeats to stop. Alive, it registers again.
                    self.taskmanagers.lock().remove(tm);
                }
                // Hand the coordinator back so that stop_attempt can end it.
                return Err(Error::Cluster(format!(
                    "TaskManager {tm} refused the deployment: {}",
                    e.message()
                )))
                .inspect_err(|_| {
                    if let Some(d) = driver.take() {
                        *job.coordinator.lock() = None;
                        let _ = d.join();
                    }
                });
            }
        }
        for (tm, rx) in line_ends {
            let jm = self.clone();
            let job_id = job.id.clone();
            std::thread::Builder::new()
                .name("control-line".into())
                .spawn(move || jm.control_line(&tm, &job_id, attempt, &rx))
                .map_err(|e| Error::io("spawning a control line", e))?;
        }
        tracing::info!(job = %job.id, attempt, restore = %restore_dir, "attempt deployed");
        Ok(driver)
    }

    /// Relays the coordinator's control messages for one TaskManager, in order, batching the same
    /// message to several subtasks into one request.
    fn control_line(&self, tm: &str, job: &str, attempt: u64, rx: &Receiver<(u32, Control)>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            let mut i = 0;
            while i < batch.len() {
                let control = batch[i].1.clone();
                let mut subtasks = vec![batch[i].0];
                i += 1;
                while i < batch.len() && same(&batch[i].1, &control) {
                    subtasks.push(batch[i].0);
                    i += 1;
                }
                let kind = match control {
                    Control::Trigger(b) => proto::control_request::Kind::Trigger(proto::Barrier {
                        id: b.id,
                        timestamp_ms: b.timestamp_ms,
                        stop: b.stop,
                        savepoint: b.savepoint,
                    }),
                    Control::Complete { id, end } => {
                        proto::control_request::Kind::Complete(proto::Complete { id, end })
                    }
                    Control::Abort { id } => proto::control_request::Kind::Abort(id),
                };
                let Some(mut client) = self.client(tm) else {
                    continue;
                };
                let request = proto::ControlRequest {
                    session: self.session.clone(),
                    job_id: job.to_owned(),
                    attempt,
                    subtasks,
                    kind: Some(kind),
                };
                if let Err(e) = self.rt.block_on(client.control(request)) {
                    tracing::debug!(taskmanager = tm, error = %e.message(), "a control message was not delivered");
                }
            }
        }
    }

    fn watch_attempt(&self, job: &JobMaster, attempt: u64, slots: &[String]) -> Outcome {
        let mut finished: HashSet<u32> = HashSet::new();
        let total = job.numbering.len();
        loop {
            let event = match job.events_rx.recv() {
                Ok(e) => e,
                Err(_) => return Outcome::Cancelled,
            };
            match event {
                Event::Finished {
                    attempt: a,
                    subtask,
                } if a == attempt => {
                    finished.insert(subtask);
                    if finished.len() == total {
                        return Outcome::Finished;
                    }
                }
                Event::Failed { attempt: a, reason } if a == attempt => {
                    return Outcome::Failed(reason);
                }
                Event::TaskManagerLost(tm) if slots.contains(&tm) => {
                    return Outcome::Failed(format!("TaskManager {tm} was lost"));
                }
                Event::Cancel => {
                    job.set_state(JobState::Cancelling, None);
                    return Outcome::Cancelled;
                }
                _ => {}
            }
        }
    }

    /// Cancels the attempt on every TaskManager it used and ends its coordinator.
    fn stop_attempt(
        &self,
        job: &JobMaster,
        attempt: u64,
        slots: &[String],
        driver: Option<std::thread::JoinHandle<()>>,
    ) {
        let mut tms: Vec<&String> = slots.iter().collect();
        tms.sort();
        tms.dedup();
        for tm in tms {
            let Some(mut client) = self.client(tm) else {
                continue;
            };
            let request = proto::CancelRequest {
                session: self.session.clone(),
                job_id: job.id.clone(),
                keep: 0,
            };
            if let Err(e) = self.rt.block_on(client.cancel(request)) {
                tracing::warn!(taskmanager = %tm, attempt, error = %e.message(), "cancel failed");
            }
        }
        *job.coordinator.lock() = None;
        if let Some(d) = driver {
            let _ = d.join();
        }
    }

    fn on_report(&self, report: proto::TaskReport) -> std::result::Result<(), Status> {
        let Some(job) = self.job(&report.job_id) else {
            return Err(Status::not_found(format!("no job {}", report.job_id)));
        };
        if job.status.lock().attempt != report.attempt {
            return Ok(()); // an attempt that ended
        }
        let line = job.coordinator.lock().clone();
        let to_coordinator = |r: Report| {
            if let Some(line) = &line {
                let _ = line.send(r);
            }
        };
        match report.kind {
            Some(task_report::Kind::Ack(ack)) => {
                let states: Vec<UploadedState> = serde_json::from_slice(&ack.states)
                    .map_err(|e| Status::invalid_argument(format!("state handles: {e}")))?;
                to_coordinator(Report::Ack {
                    id: ack.checkpoint,
                    task: report.subtask as usize,
                    savepoint: false,
                    states: states
                        .into_iter()
                        .map(crate::checkpoint::storage::Acked::Uploaded)
                        .collect(),
                });
            }
            Some(task_report::Kind::Decline(d)) => to_coordinator(Report::Decline {
                id: d.checkpoint,
                task: report.subtask as usize,
                reason: d.reason,
            }),
            Some(task_report::Kind::SourceFinished(_)) => to_coordinator(Report::SourceFinished),
            Some(task_report::Kind::Finished(_)) => {
                let _ = job.events.send(Event::Finished {
                    attempt: report.attempt,
                    subtask: report.subtask,
                });
            }
            Some(task_report::Kind::Failed(reason)) => {
                let _ = job.events.send(Event::Failed {
                    attempt: report.attempt,
                    reason: format!("subtask {}: {reason}", report.subtask),
                });
            }
            None => return Err(Status::invalid_argument("a report without a kind")),
        }
        Ok(())
    }

    fn on_heartbeat(&self, hb: proto::HeartbeatRequest) -> bool {
        {
            let mut tms = self.taskmanagers.lock();
            let Some(entry) = tms.get_mut(&hb.task_manager_id) else {
                return false;
            };
            if hb.session != self.session {
                return false;
            }
            entry.last_seen = Instant::now();
            entry.channels = hb.channels;
        }
        let now = Instant::now();
        let mut samples = self.samples.lock();
        for m in hb.subtasks {
            let key = (m.job_id.clone(), m.attempt, m.subtask);
            let sample = samples.entry(key).or_default();
            if let Some(at) = sample.at {
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                let out = m.records_out.saturating_sub(sample.metrics.records_out);
                let blocked = m
                    .backpressured_ns
                    .saturating_sub(sample.metrics.backpressured_ns);
                sample.out_per_second = out as f64 / secs;
                sample.backpressure = (blocked as f64 / 1e9 / secs).min(1.0);
            }
            sample.metrics = m;
            sample.at = Some(now);
        }
        true
    }
}

fn same(a: &Control, b: &Control) -> bool {
    match (a, b) {
        (Control::Trigger(x), Control::Trigger(y)) => x == y,
        (Control::Complete { id: a, end: e }, Control::Complete { id: b, end: f }) => {
            a == b && e == f
        }
        (Control::Abort { id: a }, Control::Abort { id: b }) => a == b,
        _ => false,
    }
}

enum Outcome {
    Finished,
    Cancelled,
    Failed(String),
}

/// A vertex's live numbers, summed (records) or worst (backpressure, watermark) over subtasks.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VertexStatus {
    pub id: usize,
    pub name: String,
    pub parallelism: u32,
    pub records_in: u64,
    pub records_out: u64,
    pub records_out_per_second: f64,
    /// Share of the last heartbeat interval the busiest subtask spent blocked on output.
    pub backpressure: f64,
    /// The lowest watermark over the subtasks (epoch ms), if every subtask has one.
    pub watermark: Option<i64>,
    pub watermark_lag_ms: Option<i64>,
}

/// One remote channel's flow control, from the producer's TaskManager.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelStatus {
    pub channel: String,
    pub credit_wait_ms: u64,
    pub frames: u64,
    pub queued: u32,
}

/// A job as the REST API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub id: String,
    pub name: String,
    pub state: JobState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub attempt: u64,
    pub restarts: u64,
    pub start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub parallelism: u32,
    pub slots: u32,
    pub taskmanagers: Vec<String>,
    pub vertices: Vec<VertexStatus>,
    pub channels: Vec<ChannelStatus>,
}

/// Checkpointing of a job as the REST API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointsStatus {
    pub completed: u64,
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    pub history: Vec<CheckpointEntry>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointEntry {
    pub id: u64,
    pub savepoint: bool,
    pub path: String,
    pub bytes_written: u64,
    pub full_size: u64,
    pub duration_ms: u64,
}

impl From<CompletedSnapshot> for CheckpointEntry {
    fn from(c: CompletedSnapshot) -> Self {
        Self {
            id: c.id,
            savepoint: c.kind == crate::checkpoint::storage::SnapshotKind::Savepoint,
            path: c.dir,
            bytes_written: c.bytes_written,
            full_size: c.full_size,
            duration_ms: c.duration_ms,
        }
    }
}

impl JobMaster {
    fn set_state(&self, state: JobState, message: Option<String>) {
        let mut s = self.status.lock();
        if s.state.is_terminal() {
            return;
        }
        if s.state != state {
            tracing::info!(job = %self.id, state = state.name(), message = message.as_deref().unwrap_or(""), "job state");
        }
        s.state = state;
        s.message = message;
    }

    pub fn state(&self) -> JobState {
        self.status.lock().state
    }

    /// Asks the job master to cancel the job.
    pub fn cancel(&self) -> Result<()> {
        if self.state().is_terminal() {
            return Err(Error::plan("job", format!("job {} has ended", self.id)));
        }
        let _ = self.events.send(Event::Cancel);
        Ok(())
    }

    /// Starts a savepoint (and a stop after it if `stop`); returns the request id to poll.
    ///
    /// A stop is idempotent: while the running attempt has a stop-with-savepoint that did not fail
    /// (in progress, or completed and the job finishing), another stop request gets that request's
    /// id, so that a caller who lost the first answer sees the same savepoint. A savepoint without
    /// a stop is refused meanwhile: the job is stopping.
    pub fn savepoint(self: &Arc<Self>, stop: bool) -> Result<u64> {
        if self.state() != JobState::Running {
            return Err(Error::plan(
                "job",
                format!("job {} is {}, not RUNNING", self.id, self.state().name()),
            ));
        }
        let Some(line) = self.coordinator.lock().clone() else {
            return Err(Error::plan(
                "job",
                "savepoints need checkpoint storage (spec.checkpoints)",
            ));
        };
        let attempt = self.status.lock().attempt;
        // Held from the check to the insert, so that two requests at once agree on one stop.
        let mut savepoints = self.savepoints.lock();
        let stopping = savepoints
            .iter()
            .rev()
            .find(|(_, s)| s.stop && s.attempt == attempt && s.status != "FAILED")
            .map(|(&id, _)| id);
        match (stopping, stop) {
            (Some(id), true) => return Ok(id),
            (Some(id), false) => {
                return Err(Error::plan(
                    "job",
                    format!(
                        "job {} is stopping with a savepoint (request {id}); a savepoint without stop is refused",
                        self.id
                    ),
                ));
            }
            (None, _) => {}
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        line.send(Report::Savepoint { stop, reply })
            .map_err(|_| Error::Cancelled)?;
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        savepoints.insert(
            id,
            SavepointStatus {
                status: "IN_PROGRESS",
                stop,
                location: None,
                failure: None,
                attempt,
            },
        );
        drop(savepoints);
        let job = self.clone();
        std::thread::Builder::new()
            .name("savepoint".into())
            .spawn(move || job.await_savepoint(id, &answer))
            .map_err(|e| Error::io("spawning a savepoint waiter", e))?;
        Ok(id)
    }

    /// Records the coordinator's answer to savepoint request `id`.
    fn await_savepoint(&self, id: u64, answer: &Receiver<Result<SnapshotRef>>) {
        let result = answer
            .recv()
            .unwrap_or_else(|_| Err(Error::Cluster("the attempt ended".into())));
        let mut s = self.savepoints.lock();
        if let Some(entry) = s.get_mut(&id) {
            match result {
                Ok(r) => {
                    entry.status = "COMPLETED";
                    entry.location = Some(r.dir);
                }
                Err(e) => {
                    entry.status = "FAILED";
                    entry.failure = Some(e.to_string());
                }
            }
        }
    }

    pub fn savepoint_status(&self, id: u64) -> Option<SavepointStatus> {
        self.savepoints.lock().get(&id).cloned()
    }

    pub fn checkpoints(&self) -> CheckpointsStatus {
        CheckpointsStatus {
            completed: self.checkpoints.completed(),
            failed: self.checkpoints.failed(),
            last_failure: self.checkpoints.last_failure(),
            history: self
                .checkpoints
                .history()
                .into_iter()
                .map(CheckpointEntry::from)
                .collect(),
        }
    }

    pub fn restarts(&self) -> u64 {
        self.status.lock().restarts
    }
}

impl JobManager {
    /// A job's status with its vertices' live numbers.
    pub fn job_status(&self, job: &JobMaster) -> JobStatus {
        let s = job.status.lock().clone();
        let samples = self.samples.lock();
        let now = now_millis();
        let vertices = job
            .vertices
            .iter()
            .map(|v| {
                let mine: Vec<&Sample> = job
                    .numbering
                    .iter()
                    .enumerate()
                    .filter(|(_, (t, _, _))| *t == v.id)
                    .filter_map(|(n, _)| samples.get(&(job.id.clone(), s.attempt, n as u32)))
                    .collect();
                let complete = mine.len() == v.parallelism as usize;
                let watermark = mine
                    .iter()
                    .map(|x| x.metrics.watermark)
                    .min()
                    .filter(|w| complete && *w > MIN_WATERMARK && *w < MAX_WATERMARK);
                VertexStatus {
                    id: v.id,
                    name: v.name.clone(),
                    parallelism: v.parallelism,
                    records_in: mine.iter().map(|x| x.metrics.records_in).sum(),
                    records_out: mine.iter().map(|x| x.metrics.records_out).sum(),
                    records_out_per_second: mine.iter().map(|x| x.out_per_second).sum(),
                    backpressure: mine.iter().map(|x| x.backpressure).fold(0.0, f64::max),
                    watermark,
                    watermark_lag_ms: watermark.map(|w| now - w),
                }
            })
            .collect();
        let prefix = format!("{}/{}/", job.id, s.attempt);
        let channels = self
            .taskmanagers
            .lock()
            .values()
            .flat_map(|t| t.channels.iter())
            .filter(|c| c.channel.starts_with(&prefix))
            .map(|c| ChannelStatus {
                channel: c.channel.clone(),
                credit_wait_ms: c.credit_wait_ns / 1_000_000,
                frames: c.frames,
                queued: c.queued,
            })
            .collect();
        let mut taskmanagers = s.placement.clone();
        taskmanagers.sort();
        taskmanagers.dedup();
        JobStatus {
            id: job.id.clone(),
            name: job.spec.label().to_owned(),
            state: s.state,
            message: s.message,
            attempt: s.attempt,
            restarts: s.restarts,
            start_time: s.start_ms,
            end_time: s.end_ms,
            failure: s.failure,
            parallelism: job.spec.engine.parallelism,
            slots: job.slots,
            taskmanagers,
            vertices,
            channels,
        }
    }
}

impl Source for JobManager {
    fn families(&self) -> Vec<Family> {
        let mut state = Family::gauge("job_state", "1 for the state each job is in.");
        let mut restarts = Family::counter("job_restarts", "Restarts of a job (failovers).");
        let mut completed = Family::counter("checkpoints_completed", "Completed checkpoints.");
        let mut failed = Family::counter("checkpoints_failed", "Failed checkpoints.");
        let mut duration = Family::gauge(
            "checkpoint_last_duration_seconds",
            "Duration of the last completed checkpoint.",
        );
        let mut size = Family::gauge(
            "checkpoint_last_size_bytes",
            "Bytes the last completed checkpoint wrote (incremental size).",
        );
        let mut state_size = Family::gauge(
            "state_size_bytes",
            "Full size of the job's state in its last completed checkpoint.",
        );
        let mut rate = Family::gauge(
            "vertex_records_out_per_second",
            "Records per second a vertex emits (over its subtasks).",
        );
        let mut records = Family::gauge(
            "vertex_records_out",
            "Records a vertex emitted in this attempt.",
        );
        let mut backpressure = Family::gauge(
            "vertex_backpressure_ratio",
            "Share of time the vertex's busiest subtask was blocked on output.",
        );
        let mut lag = Family::gauge(
            "vertex_watermark_lag_seconds",
            "How far a vertex's watermark trails the wall clock.",
        );
        for job in self.jobs() {
            let status = self.job_status(&job);
            let id = job.id.as_str();
            state.push(&[("job", id), ("state", status.state.name())], 1.0);
            restarts.push(&[("job", id)], status.restarts as f64);
            let c = job.checkpoints();
            completed.push(&[("job", id)], c.completed as f64);
            failed.push(&[("job", id)], c.failed as f64);
            if let Some(last) = c.history.last() {
                duration.push(&[("job", id)], last.duration_ms as f64 / 1e3);
                size.push(&[("job", id)], last.bytes_written as f64);
                state_size.push(&[("job", id)], last.full_size as f64);
            }
            for v in &status.vertices {
                let labels = [("job", id), ("vertex", v.name.as_str())];
                rate.push(&labels, v.records_out_per_second);
                records.push(&labels, v.records_out as f64);
                backpressure.push(&labels, v.backpressure);
                if let Some(l) = v.watermark_lag_ms {
                    lag.push(&labels, l as f64 / 1e3);
                }
            }
        }
        let (tms, total, free) = self.resources();
        let mut taskmanagers = Family::gauge("taskmanagers", "Registered TaskManagers.");
        taskmanagers.push(&[], tms as f64);
        let mut slots = Family::gauge("slots", "Slots of the registered TaskManagers.");
        slots.push(&[("kind", "total")], f64::from(total));
        slots.push(&[("kind", "free")], f64::from(free));
        vec![
            state,
            restarts,
            completed,
            failed,
            duration,
            size,
            state_size,
            rate,
            records,
            backpressure,
            lag,
            taskmanagers,
            slots,
        ]
    }
}

#[derive(Clone)]
struct Service(Arc<JobManager>);

#[tonic::async_trait]
impl JobManagerRpc for Service {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> std::result::Result<Response<proto::RegisterResponse>, Status> {
        let r = request.into_inner();
        if r.slots == 0 || r.task_manager_id.is_empty() {
            return Err(Status::invalid_argument(
                "a TaskManager needs an id and slots",
            ));
        }
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", r.address))
            .map_err(|e| Status::invalid_argument(format!("address {}: {e}", r.address)))?
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        let client = TaskManagerClient::new(channel)
            .max_decoding_message_size(MAX_FRAME)
            .max_encoding_message_size(MAX_FRAME);
        let (known, replaced) = {
            let mut tms = self.0.taskmanagers.lock();
            // An address belongs to one process: a TaskManager registered at it before is gone
            // (a pod's IP handed to its successor), however recent its last heartbeat.
            let replaced: Vec<String> = tms
                .iter()
                .filter(|(id, t)| t.address == r.address && **id != r.task_manager_id)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &replaced {
                tms.remove(id);
            }
            let known = tms.insert(
                r.task_manager_id.clone(),
                TaskManagerEntry {
                    address: r.address.clone(),
                    slots: r.slots,
                    last_seen: Instant::now(),
                    client,
                    channels: Vec::new(),
                },
            );
            (known, replaced)
        };
        for id in replaced {
            tracing::warn!(taskmanager = %id, address = %r.address, "TaskManager lost: its address is another's now");
            self.0.lost(&id);
        }
        if known.is_some() {
            // It came back (restarted, or it gave us up): what it ran is gone.
            self.0.lost(&r.task_manager_id);
        }
        tracing::info!(taskmanager = %r.task_manager_id, address = %r.address, slots = r.slots, "TaskManager registered");
        Ok(Response::new(proto::RegisterResponse {
            session: self.0.session.clone(),
            heartbeat_interval_ms: self.0.config.heartbeat_interval_ms,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<proto::HeartbeatRequest>,
    ) -> std::result::Result<Response<proto::HeartbeatResponse>, Status> {
        let known = self.0.on_heartbeat(request.into_inner());
        Ok(Response::new(proto::HeartbeatResponse { known }))
    }

    async fn report(
        &self,
        request: Request<proto::TaskReport>,
    ) -> std::result::Result<Response<proto::Empty>, Status> {
        let report = request.into_inner();
        if report.session != self.0.session {
            return Err(Status::failed_precondition("a report of another session"));
        }
        self.0.on_report(report)?;
        Ok(Response::new(proto::Empty {}))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::checkpoint::store::LocalStore;

    /// A running job master whose coordinator line is the returned receiver.
    fn running() -> (Arc<JobMaster>, Receiver<Report>) {
        let spec: JobSpec = serde_json::from_value(serde_json::json!({"name": "q5"})).unwrap();
        let (events, events_rx) = crossbeam_channel::unbounded();
        let (line, reports) = crossbeam_channel::unbounded();
        let job = Arc::new(JobMaster {
            id: "job".into(),
            spec,
            vertices: Vec::new(),
            numbering: Vec::new(),
            slots: 1,
            status: Mutex::new(Progress {
                state: JobState::Running,
                message: None,
                attempt: 1,
                restarts: 0,
                start_ms: 0,
                end_ms: None,
                failure: None,
                placement: Vec::new(),
            }),
            events,
            events_rx,
            checkpoints: Arc::new(CheckpointStats::default()),
            coordinator: Mutex::new(Some(line)),
            savepoints: Mutex::new(BTreeMap::new()),
            next_request: AtomicU64::new(1),
        });
        (job, reports)
    }

    fn status(job: &JobMaster, id: u64) -> &'static str {
        job.savepoint_status(id).unwrap().status
    }

    /// Waits (bounded) until request `id` has left IN_PROGRESS.
    fn settled(job: &JobMaster, id: u64) -> SavepointStatus {
        for _ in 0..500 {
            let s = job.savepoint_status(id).unwrap();
            if s.status != "IN_PROGRESS" {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("savepoint request {id} never settled");
    }

    #[test]
    fn a_second_stop_joins_the_stop_in_progress() {
        let (job, reports) = running();
        let first = job.savepoint(true).unwrap();
        let again = job.savepoint(true).unwrap();
        assert_eq!(again, first, "a repeated stop is the same request");
        let Ok(Report::Savepoint { stop: true, reply }) = reports.try_recv() else {
            panic!("the coordinator was not asked to stop");
        };
        assert!(
            reports.try_recv().is_err(),
            "the coordinator was asked twice"
        );
        let refused = job.savepoint(false).unwrap_err().to_string();
        assert!(refused.contains("stopping"), "{refused}");
        assert_eq!(status(&job, first), "IN_PROGRESS");

        let store: Arc<dyn crate::checkpoint::store::CheckpointStore> =
            Arc::new(LocalStore::new(std::env::temp_dir().join("strom-jm-unit")));
        reply
            .send(Ok(SnapshotRef {
                store,
                dir: "savepoints/savepoint-0000000007".into(),
            }))
            .unwrap();
        let done = settled(&job, first);
        assert_eq!(done.status, "COMPLETED");
        assert_eq!(
            done.location.as_deref(),
            Some("savepoints/savepoint-0000000007")
        );
        // Completed, the job still finishing: a stop sees the same savepoint.
        assert_eq!(job.savepoint(true).unwrap(), first);
        assert!(reports.try_recv().is_err());
    }

    #[test]
    fn a_stop_after_a_failed_one_or_in_a_new_attempt_is_a_new_request() {
        let (job, reports) = running();
        let first = job.savepoint(true).unwrap();
        let Ok(Report::Savepoint { reply, .. }) = reports.try_recv() else {
            panic!("no request");
        };
        reply
            .send(Err(Error::Storage("savepoint 3 failed: Expired".into())))
            .unwrap();
        assert_eq!(settled(&job, first).status, "FAILED");
        // The job went on: a new stop is a new request, and so is a stop of the next attempt.
        let second = job.savepoint(true).unwrap();
        assert_ne!(second, first);
        assert!(matches!(
            reports.try_recv(),
            Ok(Report::Savepoint { stop: true, .. })
        ));
        job.status.lock().attempt = 2;
        let third = job.savepoint(true).unwrap();
        assert_ne!(third, second);
        // A savepoint without stop and no stop pending: a request of its own.
        let (plain_job, plain_reports) = running();
        let plain = plain_job.savepoint(false).unwrap();
        assert_eq!(plain_job.savepoint(true).unwrap(), plain + 1);
        assert_eq!(plain_reports.try_iter().count(), 2);
    }
}
