//! The TaskManager role: offers its slots to the leading JobManager, runs the subtasks deployed
//! to it (the embedded runtime's task code, [`crate::runtime`]), connects their remote channels
//! through the [`exchange`](super::exchange), uploads their state at checkpoints and tells the
//! JobManager about acknowledgements, declines, ends and failures.
//!
//! When it loses the JobManager (three missed heartbeats, or the JobManager no longer knows it) it
//! cancels everything it runs before it registers again: tasks of a leader that is gone must not
//! go on writing next to the new leader's.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use strom_api::JobSpec;
use tokio::runtime::Handle;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::config::TaskManagerConfig;
use super::exchange::{self, ChannelStats, MAX_FRAME};
use super::metrics::{Family, Source};
use super::proto::job_manager_client::JobManagerClient;
use super::proto::task_manager_client::TaskManagerClient;
use super::proto::task_manager_server::{TaskManager as TaskManagerRpc, TaskManagerServer};
use super::proto::{self, task_report};
use super::{checkpoint_options, job_graph, open_store};
use crate::checkpoint::storage::{
    Acked, SnapshotKind, SnapshotRef, checkpoint_dir, savepoint_dir, upload_state,
};
use crate::error::{Error, Result};
use crate::plan::physical::plan;
use crate::runtime::channel::{Barrier, Message};
use crate::runtime::checkpointing::{Control, Report};
use crate::runtime::metrics::JobMetrics;
use crate::runtime::{
    ChannelKey, Exchange, JobHandle, Placement, Restore, RestoreOptions, RunOptions, launch,
    subtasks,
};

/// Heartbeats a TaskManager may miss before it gives the JobManager up.
const MISSED_HEARTBEATS: u32 = 3;
/// How long a consumer's side waits for the deployment that registers its channel.
const CHANNEL_WAIT: Duration = Duration::from_secs(60);

/// A remote channel into a local subtask, as the exchange's consumer side finds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InboundKey {
    job: String,
    attempt: u64,
    channel: ChannelKey,
}

struct InboundEnd {
    sender: Sender<Message>,
    stop: Arc<AtomicBool>,
    capacity: u32,
}

/// One attempt of a job, the part of it that runs here.
struct Running {
    job: String,
    attempt: u64,
    session: String,
    handle: Mutex<Option<JobHandle>>,
    controls: Vec<Option<Sender<Control>>>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    metrics: Arc<JobMetrics>,
    /// (task, index) of each global subtask, and whether it runs here.
    numbering: Vec<(usize, u32, bool)>,
}

/// The TaskManager's state, shared by its RPC handlers, task threads and background loops.
pub struct TaskManager {
    id: String,
    config: TaskManagerConfig,
    rt: Handle,
    session: Mutex<String>,
    jobmanager: Mutex<Option<JobManagerClient<Channel>>>,
    running: Mutex<HashMap<(String, u64), Arc<Running>>>,
    inbound: Mutex<HashMap<InboundKey, InboundEnd>>,
    channels: Mutex<Vec<Arc<ChannelStats>>>,
    peers: Mutex<HashMap<String, TaskManagerClient<Channel>>>,
    /// Shared state files already in each checkpoint store (by store location and key).
    uploaded: Mutex<HashSet<String>>,
    local_dir: PathBuf,
}

impl std::fmt::Debug for TaskManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskManager").field("id", &self.id).finish()
    }
}

/// Runs a TaskManager until the process ends.
pub async fn run(config: TaskManagerConfig) -> Result<()> {
    let id = config
        .id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let local_dir = config
        .local_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("strom-tm-{id}")));
    std::fs::create_dir_all(&local_dir)
        .map_err(|e| Error::io(format!("creating {}", local_dir.display()), e))?;
    let tm = Arc::new(TaskManager {
        id,
        config: config.clone(),
        rt: Handle::current(),
        session: Mutex::new(String::new()),
        jobmanager: Mutex::new(None),
        running: Mutex::new(HashMap::new()),
        inbound: Mutex::new(HashMap::new()),
        channels: Mutex::new(Vec::new()),
        peers: Mutex::new(HashMap::new()),
        uploaded: Mutex::new(HashSet::new()),
        local_dir,
    });
    let addr: std::net::SocketAddr = config
        .rpc_address
        .parse()
        .map_err(|e| Error::Cluster(format!("rpcAddress: {e}")))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("listening on {addr}"), e))?;
    if let Some(metrics) = &config.metrics_address {
        let metrics_listener = tokio::net::TcpListener::bind(metrics)
            .await
            .map_err(|e| Error::io(format!("listening on {metrics}"), e))?;
        let registry = Arc::new(super::metrics::registry(tm.clone()));
        tokio::spawn(async move {
            if let Err(e) = super::metrics::serve(metrics_listener, registry).await {
                tracing::error!(error = %e, "the metrics endpoint stopped");
            }
        });
    }
    tracing::info!(id = %tm.id, rpc = %addr, slots = config.slots, "TaskManager started");
    let service = TaskManagerServer::new(Service(tm.clone()))
        .max_decoding_message_size(MAX_FRAME)
        .max_encoding_message_size(MAX_FRAME);
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(exchange::STREAM_WINDOW)
        .initial_connection_window_size(exchange::CONNECTION_WINDOW)
        .add_service(service)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let membership = tokio::spawn(membership(tm.clone()));
    tokio::select! {
        r = server => r.map_err(|e| Error::Cluster(format!("the RPC server stopped: {e}"))),
        r = membership => r.map_err(|e| Error::Cluster(format!("the heartbeat loop stopped: {e}"))),
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "taskmanager".into())
}

fn connect_lazy(address: &str) -> Result<Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Error::Cluster(format!("address {address}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .initial_stream_window_size(exchange::STREAM_WINDOW)
            .initial_connection_window_size(exchange::CONNECTION_WINDOW)
            .connect_lazy(),
    )
}

/// Registers with the leader, heartbeats it, and starts over (after cancelling every task) when
/// it is lost.
async fn membership(tm: Arc<TaskManager>) {
    loop {
        let (client, interval) = loop {
            if let Some(found) = register(&tm).await {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut missed = 0;
        loop {
            tokio::time::sleep(interval).await;
            let request = tm.heartbeat();
            match client.clone().heartbeat(request).await {
                Ok(r) if r.get_ref().known => missed = 0,
                Ok(_) => {
                    tracing::warn!("the JobManager no longer knows this TaskManager");
                    break;
                }
                Err(e) => {
                    missed += 1;
                    tracing::warn!(missed, error = %e.message(), "heartbeat failed");
                    if missed >= MISSED_HEARTBEATS {
                        break;
                    }
                }
            }
            let done = tm.clone();
            let _ = tokio::task::spawn_blocking(move || done.reap_finished()).await;
        }
        *tm.jobmanager.lock() = None;
        let old = tm.clone();
        let _ = tokio::task::spawn_blocking(move || old.cancel_where(|_| true)).await;
    }
}

async fn register(tm: &Arc<TaskManager>) -> Option<(JobManagerClient<Channel>, Duration)> {
    for address in &tm.config.jobmanagers {
        let Ok(channel) = connect_lazy(address) else {
            continue;
        };
        let mut client = JobManagerClient::new(channel)
            .max_decoding_message_size(MAX_FRAME)
            .max_encoding_message_size(MAX_FRAME);
        let request = proto::RegisterRequest {
            task_manager_id: tm.id.clone(),
            address: tm.config.advertised().to_owned(),
            slots: tm.config.slots,
            metrics_address: tm.config.metrics_address.clone().unwrap_or_default(),
        };
        match client.register(request).await {
            Ok(response) => {
                let response = response.into_inner();
                tracing::info!(jobmanager = %address, session = %response.session, "registered");
                *tm.session.lock() = response.session;
                *tm.jobmanager.lock() = Some(client.clone());
                let interval = Duration::from_millis(response.heartbeat_interval_ms.max(10));
                return Some((client, interval));
            }
            Err(e) => {
                tracing::debug!(jobmanager = %address, error = %e.message(), "not the leader")
            }
        }
    }
    None
}

impl TaskManager {
    fn heartbeat(&self) -> proto::HeartbeatRequest {
        let mut subtasks = Vec::new();
        for r in self.running.lock().values() {
            for (n, &(task, index, here)) in r.numbering.iter().enumerate() {
                if !here {
                    continue;
                }
                let Some(m) = r
                    .metrics
                    .tasks
                    .get(task)
                    .and_then(|t| t.subtasks.get(index as usize))
                else {
                    continue;
                };
                subtasks.push(proto::SubtaskMetrics {
                    job_id: r.job.clone(),
                    attempt: r.attempt,
                    task: task as u32,
                    subtask: n as u32,
                    records_in: m.records_in.load(Ordering::Relaxed),
                    records_out: m.records_out.load(Ordering::Relaxed),
                    watermark: m.watermark.load(Ordering::Relaxed),
                    backpressured_ns: m.backpressured_ns(),
                    state_bytes: 0,
                });
            }
        }
        let mut channels = self.channels.lock();
        channels.retain(|c| !c.closed.load(Ordering::Relaxed));
        let channels = channels
            .iter()
            .map(|c| proto::ChannelMetrics {
                channel: c.name.clone(),
                credit_wait_ns: c.credit_wait_ns.load(Ordering::Relaxed),
                frames: c.frames.load(Ordering::Relaxed),
                queued: c.queued.load(Ordering::Relaxed) as u32,
            })
            .collect();
        proto::HeartbeatRequest {
            task_manager_id: self.id.clone(),
            session: self.session.lock().clone(),
            subtasks,
            channels,
        }
    }

    /// Sends a report to the JobManager; a lost JobManager loses it (its successor restarts the
    /// job from a checkpoint anyway).
    fn report(
        &self,
        session: &str,
        job: &str,
        attempt: u64,
        subtask: u32,
        kind: task_report::Kind,
    ) {
        let Some(mut client) = self.jobmanager.lock().clone() else {
            return;
        };
        let request = proto::TaskReport {
            session: session.to_owned(),
            job_id: job.to_owned(),
            attempt,
            subtask,
            kind: Some(kind),
        };
        if let Err(e) = self.rt.block_on(client.report(request)) {
            tracing::warn!(job, attempt, error = %e.message(), "a report to the JobManager was lost");
        }
    }

    fn check_session(&self, session: &str) -> std::result::Result<(), Status> {
        let current = self.session.lock().clone();
        if current.is_empty() || current != session {
            return Err(Status::failed_precondition(format!(
                "session '{session}' is not this TaskManager's current session '{current}'"
            )));
        }
        Ok(())
    }

    fn peer(&self, address: &str) -> Result<TaskManagerClient<Channel>> {
        let mut peers = self.peers.lock();
        if let Some(c) = peers.get(address) {
            return Ok(c.clone());
        }
        let client = TaskManagerClient::new(connect_lazy(address)?)
            .max_decoding_message_size(MAX_FRAME)
            .max_encoding_message_size(MAX_FRAME);
        peers.insert(address.to_owned(), client.clone());
        Ok(client)
    }

    fn deploy(self: &Arc<Self>, request: proto::DeployRequest) -> Result<()> {
        let spec: JobSpec = serde_json::from_slice(&request.spec)
            .map_err(|e| Error::plan("job", format!("the deployed spec is not valid: {e}")))?;
        let graph = job_graph(&spec)?;
        let physical = plan(&graph)?;
        let numbering = subtasks(&physical);
        if request.placement.len() != numbering.len() {
            return Err(Error::plan(
                "job",
                format!(
                    "placement names {} subtasks, the plan has {}",
                    request.placement.len(),
                    numbering.len()
                ),
            ));
        }
        let local: Vec<bool> = request.placement.iter().map(|t| *t == self.id).collect();
        let checkpoints = checkpoint_options(&spec)?;
        let local_dir = self
            .local_dir
            .join(format!("{}-{}", request.job_id, request.attempt));
        let restore =
            if request.restore_dir.is_empty() {
                None
            } else {
                let snapshot =
                    match request.restore_dir.split_once('#') {
                        Some((storage, dir)) => SnapshotRef {
                            store: open_store(storage)?,
                            dir: dir.to_owned(),
                        },
                        None => SnapshotRef {
                            store: checkpoints.as_ref().map(|c| c.store.clone()).ok_or_else(
                                || Error::Restore("restoring needs checkpoint storage".into()),
                            )?,
                            dir: request.restore_dir.clone(),
                        },
                    };
                let options = RestoreOptions {
                    snapshot,
                    allow_non_restored_state: spec.allow_non_restored_state,
                };
                Some(Arc::new(Restore::new(&graph, &options, &local_dir)?))
            };
        let options = RunOptions {
            checkpoints: checkpoints.clone(),
            restore: None,
            local_dir: Some(local_dir),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let (reports_tx, reports_rx) = crossbeam_channel::unbounded::<Report>();
        let session = request.session.clone();
        if let Some(c) = &checkpoints {
            let tm = self.clone();
            let store = c.store.clone();
            let (session, job, attempt) =
                (session.clone(), request.job_id.clone(), request.attempt);
            let forwarder = std::thread::Builder::new()
                .name("tm-reports".into())
                .spawn(move || tm.forward_reports(&reports_rx, &store, &session, &job, attempt))
                .map_err(|e| Error::io("spawning the report forwarder", e))?;
            threads.lock().push(forwarder);
        }
        let on_exit = {
            let tm = Arc::downgrade(self);
            let (session, job, attempt) =
                (session.clone(), request.job_id.clone(), request.attempt);
            Arc::new(move |subtask: usize, result: &Result<()>| {
                let Some(tm) = tm.upgrade() else { return };
                let kind = match result {
                    Ok(()) => task_report::Kind::Finished(proto::Empty {}),
                    Err(e) => task_report::Kind::Failed(e.to_string()),
                };
                tm.report(&session, &job, attempt, subtask as u32, kind);
            }) as crate::runtime::OnExit
        };
        let exchange = TmExchange {
            tm: self.clone(),
            session: session.clone(),
            job: request.job_id.clone(),
            attempt: request.attempt,
            stop: stop.clone(),
            consumers: physical.edges.iter().map(|e| e.to_task).collect(),
            numbering: numbering.clone(),
            placement: request.placement.clone(),
            addresses: request.addresses.clone(),
            capacity: graph.config.channel_capacity as u32,
            threads: threads.clone(),
        };
        let placement = Placement {
            local: local.clone(),
            exchange: Some(&exchange),
            reports: checkpoints.as_ref().map(|_| reports_tx.clone()),
            on_exit: Some(on_exit),
        };
        let (handle, controls) = launch(&graph, &physical, &options, restore, placement)?;
        drop(reports_tx);
        tracing::info!(
            job = %request.job_id,
            attempt = request.attempt,
            subtasks = local.iter().filter(|l| **l).count(),
            "deployed"
        );
        let running = Arc::new(Running {
            job: request.job_id.clone(),
            attempt: request.attempt,
            session,
            metrics: handle.metrics().clone(),
            handle: Mutex::new(Some(handle)),
            controls,
            stop,
            threads,
            numbering: numbering
                .iter()
                .zip(&local)
                .map(|(&(t, i, _), &here)| (t, i, here))
                .collect(),
        });
        self.running
            .lock()
            .insert((request.job_id, request.attempt), running);
        Ok(())
    }

    /// Uploads acknowledged state where it is and tells the coordinator where it went.
    fn forward_reports(
        &self,
        reports: &Receiver<Report>,
        store: &Arc<dyn crate::checkpoint::store::CheckpointStore>,
        session: &str,
        job: &str,
        attempt: u64,
    ) {
        for report in reports {
            match report {
                Report::Ack {
                    id,
                    task,
                    savepoint,
                    states,
                } => {
                    let (dir, kind) = if savepoint {
                        (savepoint_dir(id), SnapshotKind::Savepoint)
                    } else {
                        (checkpoint_dir(id), SnapshotKind::Checkpoint)
                    };
                    let mut uploaded = Vec::with_capacity(states.len());
                    let mut failure = None;
                    for state in states {
                        match state {
                            Acked::Uploaded(u) => uploaded.push(u),
                            Acked::Pending(a) => {
                                let mut known = self.uploaded.lock();
                                match upload_state(store.as_ref(), &mut known, &dir, kind, a) {
                                    Ok(u) => uploaded.push(u),
                                    Err(e) => {
                                        failure = Some(e);
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    let kind = match failure {
                        Some(e) => task_report::Kind::Decline(proto::Decline {
                            checkpoint: id,
                            reason: format!("uploading state: {e}"),
                        }),
                        None => match serde_json::to_vec(&uploaded) {
                            Ok(states) => task_report::Kind::Ack(proto::Ack {
                                checkpoint: id,
                                states,
                            }),
                            Err(e) => task_report::Kind::Decline(proto::Decline {
                                checkpoint: id,
                                reason: format!("encoding state handles: {e}"),
                            }),
                        },
                    };
                    self.report(session, job, attempt, task as u32, kind);
                }
                Report::Decline { id, task, reason } => self.report(
                    session,
                    job,
                    attempt,
                    task as u32,
                    task_report::Kind::Decline(proto::Decline {
                        checkpoint: id,
                        reason,
                    }),
                ),
                Report::SourceFinished => self.report(
                    session,
                    job,
                    attempt,
                    0,
                    task_report::Kind::SourceFinished(proto::Empty {}),
                ),
                Report::Savepoint { reply, .. } => {
                    let _ = reply.send(Err(Error::Cluster(
                        "savepoints are requested from the JobManager".into(),
                    )));
                }
            }
        }
    }

    fn control(&self, request: proto::ControlRequest) -> std::result::Result<(), Status> {
        let Some(running) = self
            .running
            .lock()
            .get(&(request.job_id.clone(), request.attempt))
            .cloned()
        else {
            return Err(Status::not_found(format!(
                "attempt {} of job {} does not run here",
                request.attempt, request.job_id
            )));
        };
        let control = match request.kind {
            Some(proto::control_request::Kind::Trigger(b)) => Control::Trigger(Barrier {
                id: b.id,
                timestamp_ms: b.timestamp_ms,
                stop: b.stop,
                savepoint: b.savepoint,
            }),
            Some(proto::control_request::Kind::Complete(c)) => Control::Complete {
                id: c.id,
                end: c.end,
            },
            Some(proto::control_request::Kind::Abort(id)) => Control::Abort { id },
            None => return Err(Status::invalid_argument("a control request without a kind")),
        };
        for subtask in request.subtasks {
            if let Some(Some(tx)) = running.controls.get(subtask as usize) {
                let _ = tx.send(control.clone());
            }
        }
        Ok(())
    }

    /// Cancels the attempts `which` selects and returns once their tasks have ended.
    fn cancel_where(&self, which: impl Fn(&Running) -> bool) {
        let victims: Vec<Arc<Running>> = {
            let mut running = self.running.lock();
            let keys: Vec<(String, u64)> = running
                .iter()
                .filter(|(_, r)| which(r))
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| running.remove(k)).collect()
        };
        for r in victims {
            r.stop.store(true, Ordering::Relaxed);
            if let Some(h) = r.handle.lock().as_ref() {
                h.cancel();
            }
            self.inbound
                .lock()
                .retain(|k, _| !(k.job == r.job && k.attempt == r.attempt));
            self.stop_attempt(&r);
            tracing::info!(job = %r.job, attempt = r.attempt, session = %r.session, "cancelled");
        }
    }

    fn stop_attempt(&self, r: &Running) {
        if let Some(h) = r.handle.lock().take() {
            let _ = h.join();
        }
        for t in std::mem::take(&mut *r.threads.lock()) {
            let _ = t.join();
        }
    }

    /// Forgets attempts whose every local task has ended.
    fn reap_finished(&self) {
        let done: Vec<Arc<Running>> = {
            let mut running = self.running.lock();
            let keys: Vec<(String, u64)> = running
                .iter()
                .filter(|(_, r)| r.handle.lock().as_ref().is_none_or(JobHandle::is_finished))
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| running.remove(k)).collect()
        };
        for r in done {
            r.stop.store(true, Ordering::Relaxed);
            self.stop_attempt(&r);
        }
    }
}

/// The exchange of one attempt: remote channels through gRPC streams.
struct TmExchange {
    tm: Arc<TaskManager>,
    session: String,
    job: String,
    attempt: u64,
    stop: Arc<AtomicBool>,
    /// The consumer task of each edge.
    consumers: Vec<usize>,
    numbering: Vec<(usize, u32, bool)>,
    placement: Vec<String>,
    addresses: HashMap<String, String>,
    capacity: u32,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Exchange for TmExchange {
    fn outbound(&self, channel: ChannelKey, receiver: Receiver<Message>) -> Result<()> {
        let to_task = self
            .consumers
            .get(channel.edge as usize)
            .copied()
            .ok_or_else(|| Error::plan("job", "a channel of an unknown edge"))?;
        let consumer = self
            .numbering
            .iter()
            .position(|&(t, i, _)| t == to_task && i == channel.consumer)
            .ok_or_else(|| Error::plan("job", "a channel to an unknown subtask"))?;
        let tm = &self.placement[consumer];
        let address = self
            .addresses
            .get(tm)
            .ok_or_else(|| Error::plan("job", format!("no address for TaskManager '{tm}'")))?;
        let stats = Arc::new(ChannelStats {
            name: format!(
                "{}/{}/{}/{}->{}",
                self.job, self.attempt, channel.edge, channel.producer, channel.consumer
            ),
            ..ChannelStats::default()
        });
        self.tm.channels.lock().push(stats.clone());
        let id = proto::ChannelId {
            session: self.session.clone(),
            job_id: self.job.clone(),
            attempt: self.attempt,
            edge: channel.edge,
            producer: channel.producer,
            consumer: channel.consumer,
        };
        let thread = exchange::spawn_outbound(
            self.tm.rt.clone(),
            self.tm.peer(address)?,
            id,
            receiver,
            self.stop.clone(),
            stats,
        )?;
        self.threads.lock().push(thread);
        Ok(())
    }

    fn inbound(&self, channel: ChannelKey, sender: Sender<Message>) -> Result<()> {
        self.tm.inbound.lock().insert(
            InboundKey {
                job: self.job.clone(),
                attempt: self.attempt,
                channel,
            },
            InboundEnd {
                sender,
                stop: self.stop.clone(),
                capacity: self.capacity,
            },
        );
        Ok(())
    }
}

#[derive(Clone)]
struct Service(Arc<TaskManager>);

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl TaskManagerRpc for Service {
    async fn deploy(
        &self,
        request: Request<proto::DeployRequest>,
    ) -> std::result::Result<Response<proto::Empty>, Status> {
        let request = request.into_inner();
        // A new leader may deploy as soon as it has our registration, before its answer (and
        // so its session) has reached us.
        for _ in 0..50 {
            if self.0.check_session(&request.session).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.0.check_session(&request.session)?;
        if request.task_manager_id != self.0.id {
            return Err(Status::failed_precondition(format!(
                "this is TaskManager {}, not {}",
                self.0.id, request.task_manager_id
            )));
        }
        let tm = self.0.clone();
        tokio::task::spawn_blocking(move || tm.deploy(request))
            .await
            .map_err(internal)?
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn control(
        &self,
        request: Request<proto::ControlRequest>,
    ) -> std::result::Result<Response<proto::Empty>, Status> {
        let request = request.into_inner();
        self.0.check_session(&request.session)?;
        self.0.control(request)?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn cancel(
        &self,
        request: Request<proto::CancelRequest>,
    ) -> std::result::Result<Response<proto::Empty>, Status> {
        let request = request.into_inner();
        self.0.check_session(&request.session)?;
        let tm = self.0.clone();
        tokio::task::spawn_blocking(move || {
            tm.cancel_where(|r| {
                r.job == request.job_id && (request.keep == 0 || r.attempt != request.keep)
            })
        })
        .await
        .map_err(internal)?;
        Ok(Response::new(proto::Empty {}))
    }

    type ExchangeStream =
        tokio_stream::wrappers::UnboundedReceiverStream<std::result::Result<proto::Credit, Status>>;

    async fn exchange(
        &self,
        request: Request<tonic::Streaming<proto::DataFrame>>,
    ) -> std::result::Result<Response<Self::ExchangeStream>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("an exchange stream without frames"))?;
        let id = first
            .channel
            .ok_or_else(|| Status::invalid_argument("the first frame must name the channel"))?;
        let key = InboundKey {
            job: id.job_id.clone(),
            attempt: id.attempt,
            channel: ChannelKey {
                edge: id.edge,
                producer: id.producer,
                consumer: id.consumer,
            },
        };
        let waited = std::time::Instant::now();
        let end = loop {
            if let Some(end) = self.0.inbound.lock().remove(&key) {
                break end;
            }
            if waited.elapsed() > CHANNEL_WAIT || *self.0.session.lock() != id.session {
                return Err(Status::not_found(format!(
                    "no subtask here consumes channel {key:?} of session {}",
                    id.session
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let (credits, credits_rx) = tokio::sync::mpsc::unbounded_channel();
        let rt = self.0.rt.clone();
        std::thread::Builder::new()
            .name("exchange-in".into())
            .spawn(move || {
                let InboundEnd {
                    sender,
                    stop,
                    capacity,
                } = end;
                if let Err(e) = exchange::inbound(&rt, stream, sender, credits, capacity, &stop)
                    && !stop.load(Ordering::Relaxed)
                {
                    tracing::warn!(channel = ?key, error = %e, "inbound channel broke");
                }
            })
            .map_err(internal)?;
        Ok(Response::new(
            tokio_stream::wrappers::UnboundedReceiverStream::new(credits_rx),
        ))
    }
}

impl Source for TaskManager {
    fn families(&self) -> Vec<Family> {
        let mut records_in = Family::counter("records_in", "Records that entered a subtask.");
        let mut records_out = Family::counter("records_out", "Records a subtask emitted.");
        let mut backpressured = Family::counter(
            "backpressured_seconds",
            "Time a subtask spent blocked on full output channels.",
        );
        let mut watermark = Family::gauge(
            "watermark_milliseconds",
            "The last watermark a subtask passed on (event time, epoch ms).",
        );
        let mut lag = Family::gauge(
            "watermark_lag_seconds",
            "How far a subtask's watermark trails the wall clock.",
        );
        let now = crate::time::now_millis();
        for r in self.running.lock().values() {
            for &(task, index, here) in &r.numbering {
                let Some(t) = r.metrics.tasks.get(task) else {
                    continue;
                };
                let Some(m) = t.subtasks.get(index as usize).filter(|_| here) else {
                    continue;
                };
                let index = index.to_string();
                let labels = [
                    ("job", r.job.as_str()),
                    ("vertex", t.name.as_str()),
                    ("subtask", index.as_str()),
                ];
                records_in.push(&labels, m.records_in.load(Ordering::Relaxed) as f64);
                records_out.push(&labels, m.records_out.load(Ordering::Relaxed) as f64);
                backpressured.push(&labels, m.backpressured_ns() as f64 / 1e9);
                let w = m.watermark.load(Ordering::Relaxed);
                if w > crate::time::MIN_WATERMARK && w < crate::time::MAX_WATERMARK {
                    watermark.push(&labels, w as f64);
                    lag.push(&labels, (now - w) as f64 / 1e3);
                }
            }
        }
        let mut credit_wait = Family::counter(
            "channel_credit_wait_seconds",
            "Time a remote channel's producer side waited for credit (backpressure per channel).",
        );
        let mut queued = Family::gauge(
            "channel_queued_messages",
            "Messages waiting to be sent on a remote channel.",
        );
        for c in self.channels.lock().iter() {
            let labels = [("channel", c.name.as_str())];
            credit_wait.push(
                &labels,
                c.credit_wait_ns.load(Ordering::Relaxed) as f64 / 1e9,
            );
            queued.push(&labels, c.queued.load(Ordering::Relaxed) as f64);
        }
        let mut slots = Family::gauge("task_slots", "Slots this TaskManager offers.");
        slots.push(
            &[("taskmanager", self.id.as_str())],
            f64::from(self.config.slots),
        );
        vec![
            records_in,
            records_out,
            backpressured,
            watermark,
            lag,
            credit_wait,
            queued,
            slots,
        ]
    }
}
