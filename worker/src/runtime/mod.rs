//! The embedded runtime: runs a physical graph in this process, one thread per subtask, with bounded
//! channels between them (Flink's MiniCluster in spirit: the JobManager's scheduling and the
//! TaskManagers' execution in one place).
//!
//! Failure handling: the first task that fails records its error and ends; its channels close, so its
//! neighbours stop with [`Error::Cancelled`] and so on through the graph. [`JobHandle::join`] reports
//! the first real error.

pub mod channel;
pub mod checkpointing;
pub mod metrics;
pub mod recovery;
mod task;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use parking_lot::Mutex;

use self::channel::{EdgeWriter, Message};
use self::checkpointing::{
    CheckpointOptions, CheckpointStats, Control, ControlLine, Report, TaskEnd,
};
use self::metrics::{JobMetrics, SubtaskMetrics, TaskMetrics};
use self::task::{Chain, ChainNode, Link};
use crate::checkpoint::alignment::Mode;
use crate::checkpoint::state::{check_rescale, redistribute};
use crate::checkpoint::storage::{LoadedSnapshot, SnapshotRef, SnapshotWriter};
use crate::error::{Error, Result};
use crate::keys::{field_index, key_group_range};
use crate::operator::{Operator, Source, SourceContext, SubtaskInfo};
use crate::plan::physical::{PhysicalGraph, plan};
use crate::plan::{LogicalGraph, NodeKind, Partitioning};

/// The channels into one subtask, each with the input it feeds.
type Inputs = Vec<(Receiver<Message>, usize)>;

/// How a job is run: checkpointing, what it restores from, where it keeps local files.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub checkpoints: Option<CheckpointOptions>,
    pub restore: Option<RestoreOptions>,
    /// Local working directory (state backends' files, downloads during a restore); a temporary
    /// directory if not set.
    pub local_dir: Option<std::path::PathBuf>,
}

/// What a job restores from.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub snapshot: SnapshotRef,
    /// Whether state of operators the job no longer has may be dropped (otherwise it is an error).
    pub allow_non_restored_state: bool,
}

/// A job running in this process.
pub struct JobHandle {
    threads: Vec<(String, JoinHandle<Result<()>>)>,
    cancelled: Arc<AtomicBool>,
    first_error: Arc<Mutex<Option<Error>>>,
    metrics: Arc<JobMetrics>,
    sinks: Vec<usize>,
    /// The line to the checkpoint coordinator (savepoint requests); `None` without checkpointing.
    reports: Option<crossbeam_channel::Sender<Report>>,
    driver: Option<JoinHandle<()>>,
    /// Without checkpointing, keeps the subtasks' control channels open.
    _controls: Vec<crossbeam_channel::Sender<Control>>,
    checkpoints: Arc<CheckpointStats>,
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("subtasks", &self.threads.len())
            .finish()
    }
}

impl JobHandle {
    /// Live counters.
    pub fn metrics(&self) -> &Arc<JobMetrics> {
        &self.metrics
    }

    /// Indices of the tasks that end the job.
    pub fn sink_tasks(&self) -> &[usize] {
        &self.sinks
    }

    /// Whether every subtask has ended.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|(_, t)| t.is_finished())
    }

    /// Asks the sources to stop; the job then ends with [`Error::Cancelled`].
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Checkpoint counters and history.
    pub fn checkpoints(&self) -> &Arc<CheckpointStats> {
        &self.checkpoints
    }

    fn request_savepoint(&self, stop: bool) -> Result<SnapshotRef> {
        let Some(reports) = &self.reports else {
            return Err(Error::plan(
                "job",
                "savepoints need checkpoint storage (checkpointing options)",
            ));
        };
        let (reply, answer) = crossbeam_channel::bounded(1);
        reports
            .send(Report::Savepoint { stop, reply })
            .map_err(|_| Error::Cancelled)?;
        loop {
            match answer.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(result) => return result,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if self.first_error.lock().is_some() || self.is_finished() {
                        return Err(Error::Storage(
                            "the job ended before the savepoint completed".into(),
                        ));
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(Error::Cancelled);
                }
            }
        }
    }

    /// Takes a savepoint while the job goes on; returns where it is.
    pub fn trigger_savepoint(&self) -> Result<SnapshotRef> {
        self.request_savepoint(false)
    }

    /// Takes a savepoint and stops the job right after it (sinks commit what it covers); returns
    /// where it is, and [`JobHandle::join`] then returns once every subtask stopped. If the
    /// savepoint fails, the job goes on, as in Flink.
    pub fn stop_with_savepoint(&self) -> Result<SnapshotRef> {
        self.request_savepoint(true)
    }

    /// Waits for every subtask and returns the first failure, if any.
    pub fn join(mut self) -> Result<()> {
        let result = self.join_tasks();
        self.reports = None;
        if let Some(driver) = self.driver.take() {
            let _ = driver.join();
        }
        result
    }

    fn join_tasks(&mut self) -> Result<()> {
        let threads = std::mem::take(&mut self.threads);
        for (name, thread) in threads {
            match thread.join() {
                Ok(Ok(())) | Ok(Err(Error::Cancelled)) => {}
                Ok(Err(e)) => record(&self.first_error, &self.cancelled, e),
                Err(_) => record(
                    &self.first_error,
                    &self.cancelled,
                    Error::Operator {
                        operator: name,
                        subtask: 0,
                        message: "panicked".into(),
                    },
                ),
            }
        }
        if let Some(e) = self.first_error.lock().take() {
            return Err(e);
        }
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }
}

fn record(slot: &Mutex<Option<Error>>, cancelled: &AtomicBool, error: Error) {
    let mut first = slot.lock();
    if first.is_none() {
        *first = Some(error);
    }
    cancelled.store(true, Ordering::Relaxed);
}

/// Plans and starts `graph` without checkpointing.
pub fn start(graph: &LogicalGraph) -> Result<JobHandle> {
    start_with(graph, &RunOptions::default())
}

/// Plans and starts `graph` with `options`.
pub fn start_with(graph: &LogicalGraph, options: &RunOptions) -> Result<JobHandle> {
    let physical = plan(graph)?;
    start_physical(graph, &physical, options)
}

/// What the subtasks restore from, checked against the job.
pub(crate) struct Restore {
    snapshot: LoadedSnapshot,
    /// Logical node -> index of its operator in the snapshot.
    operator_of: Vec<Option<usize>>,
    local_dir: std::path::PathBuf,
}

impl Restore {
    pub(crate) fn new(
        graph: &LogicalGraph,
        options: &RestoreOptions,
        local_dir: &std::path::Path,
    ) -> Result<Self> {
        let snapshot = LoadedSnapshot::load(options.snapshot.clone())?;
        let meta = &snapshot.metadata;
        if meta.max_parallelism != graph.config.max_parallelism {
            return Err(Error::Restore(format!(
                "{} was taken with maxParallelism {} but the job has {}: key groups cannot be remapped",
                options.snapshot.dir, meta.max_parallelism, graph.config.max_parallelism
            )));
        }
        let operator_of: Vec<Option<usize>> = graph
            .nodes
            .iter()
            .map(|n| meta.operators.iter().position(|o| o.uid == n.uid))
            .collect();
        let unmatched: Vec<&str> = meta
            .operators
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                !operator_of.contains(&Some(*i))
                    && snapshot.states[*i].iter().any(|s| !s.is_empty())
            })
            .map(|(_, o)| o.uid.as_str())
            .collect();
        if !unmatched.is_empty() && !options.allow_non_restored_state {
            return Err(Error::Restore(format!(
                "{} has state for operators the job does not have (uids: {}); set allowNonRestoredState to drop it",
                options.snapshot.dir,
                unmatched.join(", ")
            )));
        }
        for node in &graph.nodes {
            check_rescale(&node.name, node.parallelism, meta.max_parallelism)?;
        }
        Ok(Self {
            snapshot,
            operator_of,
            local_dir: local_dir.join("restore"),
        })
    }

    /// Restores one node's subtask (operator or source).
    fn apply(
        &self,
        node: usize,
        uid: &str,
        index: u32,
        parallelism: u32,
        max_parallelism: u32,
        target: Target<'_>,
    ) -> Result<Option<crate::checkpoint::state::RestoredState>> {
        let Some(op) = self.operator_of[node] else {
            return Ok(None);
        };
        let key_groups = key_group_range(index, parallelism, max_parallelism);
        let (mut restored, files) =
            redistribute(&self.snapshot.states[op], index, parallelism, key_groups);
        restored.checkpoint_id = self.snapshot.metadata.id;
        for (k, set) in files.iter().enumerate() {
            let dir = self
                .local_dir
                .join(format!("{}-{index}-{k}", sanitize(uid)));
            let _ = std::fs::remove_dir_all(&dir);
            self.snapshot.download(set, &dir)?;
            restored.files.push((set.key_groups.clone(), dir));
        }
        let old_parallelism = self.snapshot.metadata.operators[op].parallelism;
        if old_parallelism != parallelism && restored.sections(task::IN_FLIGHT).next().is_some() {
            return Err(Error::Restore(format!(
                "{} is an unaligned checkpoint with in-flight records for operator '{uid}', which cannot change parallelism ({old_parallelism} -> {parallelism}); rescale from a savepoint",
                self.snapshot.source.dir
            )));
        }
        match target {
            Target::Operator(op) => op.restore(&restored)?,
            Target::Source(source) => source.restore(&restored)?,
        }
        Ok(Some(restored))
    }
}

enum Target<'a> {
    Operator(&'a mut dyn Operator),
    Source(&'a mut dyn Source),
}

fn sanitize(uid: &str) -> String {
    uid.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Starts an already planned graph, every subtask in this process.
pub fn start_physical(
    graph: &LogicalGraph,
    physical: &PhysicalGraph,
    options: &RunOptions,
) -> Result<JobHandle> {
    let subtasks = subtasks(physical).len();
    let (report_tx, report_rx) = crossbeam_channel::unbounded::<Report>();
    let placement = Placement {
        local: vec![true; subtasks],
        exchange: None,
        reports: options.checkpoints.as_ref().map(|_| report_tx.clone()),
        on_exit: None,
    };
    let restore = match &options.restore {
        Some(r) => Some(Arc::new(Restore::new(graph, r, &local_dir(options))?)),
        None => None,
    };
    let restored_id = restore.as_ref().map(|r| r.snapshot.metadata.id);
    let (mut handle, controls) = launch(graph, physical, options, restore, placement)?;
    let task_ends: Vec<TaskEnd> = subtasks_of(physical)
        .zip(controls)
        .filter_map(|((_, _, is_source), c)| {
            c.map(|c| TaskEnd {
                control: ControlLine::Local(c),
                is_source,
            })
        })
        .collect();
    match &options.checkpoints {
        Some(checkpoints) => {
            let writer = SnapshotWriter::new(
                checkpoints.store.clone(),
                &graph.name,
                graph.config.max_parallelism,
            );
            let first_id = first_checkpoint_id(&checkpoints.store, restored_id)?;
            let checkpoints = checkpoints.clone();
            let stats = handle.checkpoints.clone();
            let driver = std::thread::Builder::new()
                .name("checkpoints".into())
                .spawn(move || {
                    checkpointing::drive(checkpoints, writer, task_ends, report_rx, first_id, stats)
                })
                .map_err(|e| Error::io("spawning the checkpoint coordinator", e))?;
            handle.reports = Some(report_tx);
            handle.driver = Some(driver);
        }
        None => {
            handle._controls = task_ends
                .into_iter()
                .filter_map(|t| match t.control {
                    ControlLine::Local(c) => Some(c),
                    ControlLine::Remote { .. } => None,
                })
                .collect();
        }
    }
    Ok(handle)
}

/// The first checkpoint id of a run: after every checkpoint in the store and the restored one.
pub(crate) fn first_checkpoint_id(
    store: &Arc<dyn crate::checkpoint::store::CheckpointStore>,
    restored: Option<u64>,
) -> Result<u64> {
    let latest = crate::checkpoint::storage::latest_checkpoint(store)?
        .and_then(|r| r.dir.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()));
    Ok(latest.max(restored).map_or(1, |id| id + 1))
}

fn local_dir(options: &RunOptions) -> std::path::PathBuf {
    options.local_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "strom-{}-{}",
            std::process::id(),
            crate::time::now_millis()
        ))
    })
}

/// Every subtask of a plan in the job's global numbering (tasks in plan order, subtasks in index
/// order): (task, index, whether the task is a source). The JobManager and every TaskManager number
/// subtasks the same way.
pub(crate) fn subtasks(physical: &PhysicalGraph) -> Vec<(usize, u32, bool)> {
    subtasks_of(physical).collect()
}

fn subtasks_of(physical: &PhysicalGraph) -> impl Iterator<Item = (usize, u32, bool)> + '_ {
    physical.tasks.iter().flat_map(|t| {
        let is_source = !physical.edges.iter().any(|e| e.to_task == t.id);
        (0..t.parallelism).map(move |i| (t.id, i, is_source))
    })
}

/// One channel of a job: an edge of the plan from a producer subtask to a consumer subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    pub edge: u32,
    pub producer: u32,
    pub consumer: u32,
}

/// Connects the channels that cross this process's boundary (the cluster's data exchange).
pub(crate) trait Exchange {
    /// `receiver` carries what a local producer sends on `channel` to a consumer elsewhere.
    fn outbound(&self, channel: ChannelKey, receiver: Receiver<Message>) -> Result<()>;
    /// `sender` feeds a local consumer with what a producer elsewhere sends on `channel`.
    fn inbound(&self, channel: ChannelKey, sender: Sender<Message>) -> Result<()>;
}

/// What runs exactly when a subtask ends: its global number and its result.
pub(crate) type OnExit = Arc<dyn Fn(usize, &Result<()>) + Send + Sync>;

/// Which subtasks of a job run in this process, and how they reach the others and the coordinator.
pub(crate) struct Placement<'a> {
    /// By global subtask number (see [`subtasks`]).
    pub(crate) local: Vec<bool>,
    pub(crate) exchange: Option<&'a dyn Exchange>,
    /// Where local subtasks report to the checkpoint coordinator; `None` without checkpointing.
    pub(crate) reports: Option<Sender<Report>>,
    pub(crate) on_exit: Option<OnExit>,
}

/// Starts the local subtasks of `physical`; returns the handle and, by global subtask number, the
/// control channels of the local ones.
pub(crate) fn launch(
    graph: &LogicalGraph,
    physical: &PhysicalGraph,
    options: &RunOptions,
    restore: Option<Arc<Restore>>,
    placement: Placement<'_>,
) -> Result<(JobHandle, Vec<Option<Sender<Control>>>)> {
    let config = &graph.config;
    let max_parallelism = config.max_parallelism;
    let local_dir = local_dir(options);
    let state_settings = crate::state::StateSettings {
        backend: config.state_backend,
        dir: Some(local_dir.join("state")),
    };
    let numbering = subtasks(physical);
    let number = |task: usize, index: u32| {
        numbering
            .iter()
            .position(|&(t, i, _)| t == task && i == index)
            .unwrap_or(usize::MAX)
    };
    let is_local = |task: usize, index: u32| {
        placement
            .local
            .get(number(task, index))
            .copied()
            .unwrap_or(false)
    };

    // Channels: receivers per consumer subtask, senders per (edge, producer subtask).
    // [task][subtask] -> (receiver, input) of every channel into that subtask.
    let mut receivers: Vec<Vec<Inputs>> = physical
        .tasks
        .iter()
        .map(|t| (0..t.parallelism).map(|_| Vec::new()).collect())
        .collect();
    let mut senders: Vec<Vec<Vec<Sender<Message>>>> = Vec::new(); // [edge][producer][target]
    for (e, edge) in physical.edges.iter().enumerate() {
        let p = physical.tasks[edge.from_task].parallelism as usize;
        let q = physical.tasks[edge.to_task].parallelism as usize;
        let mut per_producer = vec![Vec::new(); p];
        for (i, producer) in per_producer.iter_mut().enumerate() {
            let targets: Vec<usize> = if edge.partitioning == Partitioning::Forward {
                vec![i]
            } else {
                (0..q).collect()
            };
            let from_here = is_local(edge.from_task, i as u32);
            for j in targets {
                let to_here = is_local(edge.to_task, j as u32);
                if !from_here && !to_here {
                    continue;
                }
                let (tx, rx) = bounded(config.channel_capacity);
                let key = ChannelKey {
                    edge: e as u32,
                    producer: i as u32,
                    consumer: j as u32,
                };
                let exchange = placement.exchange.ok_or_else(|| {
                    Error::plan(
                        "job",
                        "a channel leaves this process but there is no exchange",
                    )
                });
                if from_here {
                    producer.push(tx);
                } else {
                    exchange?.inbound(key, tx)?;
                }
                if to_here {
                    receivers[edge.to_task][j].push((rx, edge.to_input));
                } else {
                    placement
                        .exchange
                        .ok_or_else(|| Error::plan("job", "no exchange"))?
                        .outbound(key, rx)?;
                }
            }
        }
        senders.push(per_producer);
    }

    let cancelled = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(Mutex::new(None));
    let mut metrics = JobMetrics::default();
    let mut threads = Vec::new();
    let mut chains = Vec::new();
    let mode = options
        .checkpoints
        .as_ref()
        .map_or(Mode::ExactlyOnce, |c| c.mode);
    let mut controls = Vec::new();

    for task in &physical.tasks {
        let head = &graph.nodes[task.nodes[0]];
        let names: Vec<&str> = task
            .nodes
            .iter()
            .map(|&n| graph.nodes[n].name.as_str())
            .collect();
        let is_source = matches!(head.kind, NodeKind::Source { .. });
        let mut task_metrics = TaskMetrics {
            name: names.join(" -> "),
            is_source,
            subtasks: Vec::new(),
        };
        for index in 0..task.parallelism {
            let subtask_metrics = Arc::new(SubtaskMetrics::default());
            task_metrics.subtasks.push(subtask_metrics.clone());
            if !is_local(task.id, index) {
                controls.push(None);
                continue;
            }
            let mut nodes = Vec::with_capacity(task.nodes.len());
            for (pos, &node_id) in task.nodes.iter().enumerate() {
                let node = &graph.nodes[node_id];
                let info = SubtaskInfo {
                    name: node.name.clone(),
                    index,
                    parallelism: task.parallelism,
                    max_parallelism,
                    state: state_settings.clone(),
                };
                let operator = match &node.kind {
                    NodeKind::Source { .. } => None,
                    NodeKind::Operator { factory, .. } => Some(factory(&info)?),
                };
                let mut writers = Vec::new();
                for (e, edge) in physical.edges.iter().enumerate() {
                    if edge.from_task == task.id && edge.from_position == pos {
                        let s = std::mem::take(&mut senders[e][index as usize]);
                        writers.push((
                            edge.from_port,
                            EdgeWriter::new(
                                &edge.partitioning,
                                s,
                                index as usize,
                                max_parallelism,
                                subtask_metrics.clone(),
                            ),
                        ));
                    }
                }
                nodes.push(ChainNode {
                    uid: node.uid.clone(),
                    operator,
                    writers,
                });
            }
            let chain = Chain {
                nodes,
                metrics: subtask_metrics,
                index,
                parallelism: task.parallelism,
                max_parallelism,
                replay: Vec::new(),
            };
            let (control_tx, control_rx) = crossbeam_channel::unbounded();
            let link = Link {
                task: controls.len(),
                control: control_rx,
                reports: placement.reports.clone(),
                mode,
            };
            controls.push(Some(control_tx));
            let inputs = std::mem::take(&mut receivers[task.id][index as usize]);
            chains.push((task.id, index, head, chain, inputs, link));
        }
        metrics.tasks.push(task_metrics);
    }

    let sinks: Vec<usize> = physical
        .tasks
        .iter()
        .filter(|t| !physical.edges.iter().any(|e| e.from_task == t.id))
        .map(|t| t.id)
        .collect();

    for (task_id, index, head, mut chain, inputs, link) in chains {
        let thread_name = format!("{}#{index}", head.name);
        let task_cancelled = cancelled.clone();
        let parallelism = physical.tasks[task_id].parallelism;
        let node_ids = physical.tasks[task_id].nodes.clone();
        let restore = restore.clone();
        let body: Box<dyn FnOnce() -> Result<()> + Send> = match &head.kind {
            NodeKind::Source {
                factory,
                watermarks,
            } => {
                let info = SubtaskInfo {
                    name: head.name.clone(),
                    index,
                    parallelism,
                    max_parallelism,
                    state: state_settings.clone(),
                };
                let source = factory(&info)?;
                let watermarks = match watermarks {
                    Some(strategy) => Some((
                        strategy.clone(),
                        field_index(&head.name, &head.schema, &strategy.column)?,
                    )),
                    None => None,
                };
                let ctx = SourceContext::new(info, config.batch_size, config.error_policy.clone());
                let cancelled = task_cancelled.clone();
                Box::new(move || {
                    let mut source = source;
                    if let Some(r) = &restore {
                        restore_chain(
                            r,
                            &node_ids,
                            &mut chain,
                            Some(source.as_mut()),
                            max_parallelism,
                        )?;
                    }
                    task::run_source(source, ctx, watermarks, chain, link, &cancelled)
                })
            }
            NodeKind::Operator { .. } => {
                let cancelled = task_cancelled.clone();
                Box::new(move || {
                    if let Some(r) = &restore {
                        restore_chain(r, &node_ids, &mut chain, None, max_parallelism)?;
                    }
                    task::run_operator(chain, inputs, link, &cancelled)
                })
            }
        };
        let on_exit = placement.on_exit.clone();
        let number = link_number(&numbering, task_id, index);
        let handle = std::thread::Builder::new()
            .name(thread_name.chars().take(15).collect())
            .spawn(move || {
                let result = body();
                if let Some(on_exit) = &on_exit {
                    on_exit(number, &result);
                }
                if let Err(e) = &result
                    && !matches!(e, Error::Cancelled)
                {
                    tracing::error!(task = %thread_name, error = %e, "task failed");
                }
                if result.is_err() {
                    // Stop the sources too; the neighbours see their channels close.
                    task_cancelled.store(true, Ordering::Relaxed);
                }
                result
            })
            .map_err(|e| Error::io("spawning a task thread", e))?;
        threads.push((head.name.clone(), handle));
    }

    Ok((
        JobHandle {
            threads,
            cancelled,
            first_error,
            metrics: Arc::new(metrics),
            sinks,
            reports: None,
            driver: None,
            _controls: Vec::new(),
            checkpoints: Arc::new(CheckpointStats::default()),
        },
        controls,
    ))
}

fn link_number(numbering: &[(usize, u32, bool)], task: usize, index: u32) -> usize {
    numbering
        .iter()
        .position(|&(t, i, _)| t == task && i == index)
        .unwrap_or(usize::MAX)
}

/// Restores every node of a subtask's chain (the source at its head too).
fn restore_chain(
    restore: &Restore,
    node_ids: &[usize],
    chain: &mut Chain,
    mut source: Option<&mut dyn Source>,
    max_parallelism: u32,
) -> Result<()> {
    let (index, parallelism) = (chain.index, chain.parallelism);
    for (pos, node) in chain.nodes.iter_mut().enumerate() {
        let target = match node.operator.as_deref_mut() {
            Some(op) => Target::Operator(op),
            None => match source.take() {
                Some(s) if pos == 0 => Target::Source(s),
                _ => continue,
            },
        };
        let restored = restore.apply(
            node_ids[pos],
            &node.uid,
            index,
            parallelism,
            max_parallelism,
            target,
        )?;
        if pos == 0
            && let Some(r) = restored
        {
            for (_, section) in r.sections(task::IN_FLIGHT) {
                chain.replay.extend(task::decode_in_flight(section)?);
            }
        }
    }
    Ok(())
}
