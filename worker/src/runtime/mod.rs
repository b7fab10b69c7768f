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
use self::checkpointing::{CheckpointOptions, CheckpointStats, Control, Report, TaskEnd};
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
struct Restore {
    snapshot: LoadedSnapshot,
    /// Logical node -> index of its operator in the snapshot.
    operator_of: Vec<Option<usize>>,
    local_dir: std::path::PathBuf,
}

impl Restore {
    fn new(
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

/// Starts an already planned graph.
pub fn start_physical(
    graph: &LogicalGraph,
    physical: &PhysicalGraph,
    options: &RunOptions,
) -> Result<JobHandle> {
    let config = &graph.config;
    let max_parallelism = config.max_parallelism;
    let local_dir = options.local_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "strom-{}-{}",
            std::process::id(),
            crate::time::now_millis()
        ))
    });
    let state_settings = crate::state::StateSettings {
        backend: config.state_backend,
        dir: Some(local_dir.join("state")),
    };
    let restore = match &options.restore {
        Some(r) => Some(Arc::new(Restore::new(graph, r, &local_dir)?)),
        None => None,
    };

    // Channels: receivers per consumer subtask, senders per (edge, producer subtask).
    // [task][subtask] -> (receiver, input) of every channel into that subtask.
    let mut receivers: Vec<Vec<Inputs>> = physical
        .tasks
        .iter()
        .map(|t| (0..t.parallelism).map(|_| Vec::new()).collect())
        .collect();
    let mut senders: Vec<Vec<Vec<Sender<Message>>>> = Vec::new(); // [edge][producer][target]
    for edge in &physical.edges {
        let p = physical.tasks[edge.from_task].parallelism as usize;
        let q = physical.tasks[edge.to_task].parallelism as usize;
        let mut per_producer = vec![Vec::new(); p];
        for (i, producer) in per_producer.iter_mut().enumerate() {
            let targets: Vec<usize> = if edge.partitioning == Partitioning::Forward {
                vec![i]
            } else {
                (0..q).collect()
            };
            for j in targets {
                let (tx, rx) = bounded(config.channel_capacity);
                producer.push(tx);
                receivers[edge.to_task][j].push((rx, edge.to_input));
            }
        }
        senders.push(per_producer);
    }

    let cancelled = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(Mutex::new(None));
    let mut metrics = JobMetrics::default();
    let mut threads = Vec::new();
    let mut chains = Vec::new();
    let (report_tx, report_rx) = crossbeam_channel::unbounded::<Report>();
    let checkpointing = options.checkpoints.is_some();
    let mode = options
        .checkpoints
        .as_ref()
        .map_or(Mode::ExactlyOnce, |c| c.mode);
    let mut task_ends = Vec::new();

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
                            EdgeWriter::new(&edge.partitioning, s, index as usize, max_parallelism),
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
                task: task_ends.len(),
                control: control_rx,
                reports: checkpointing.then(|| report_tx.clone()),
                mode,
            };
            task_ends.push(TaskEnd {
                control: control_tx,
                is_source,
            });
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
        let handle = std::thread::Builder::new()
            .name(thread_name.chars().take(15).collect())
            .spawn(move || {
                let result = body();
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

    let stats = Arc::new(CheckpointStats::default());
    let (reports, driver, controls) = match &options.checkpoints {
        Some(checkpoints) => {
            let writer =
                SnapshotWriter::new(checkpoints.store.clone(), &graph.name, max_parallelism);
            let latest = crate::checkpoint::storage::latest_checkpoint(&checkpoints.store)?
                .and_then(|r| r.dir.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()));
            let restored = restore.as_ref().map(|r| r.snapshot.metadata.id);
            let first_id = latest.max(restored).map_or(1, |id| id + 1);
            let checkpoints = checkpoints.clone();
            let stats = stats.clone();
            let driver = std::thread::Builder::new()
                .name("checkpoints".into())
                .spawn(move || {
                    checkpointing::drive(checkpoints, writer, task_ends, report_rx, first_id, stats)
                })
                .map_err(|e| Error::io("spawning the checkpoint coordinator", e))?;
            (Some(report_tx), Some(driver), Vec::new())
        }
        None => (
            None,
            None,
            task_ends.into_iter().map(|t| t.control).collect(),
        ),
    };

    Ok(JobHandle {
        threads,
        cancelled,
        first_error,
        metrics: Arc::new(metrics),
        sinks,
        reports,
        driver,
        _controls: controls,
        checkpoints: stats,
    })
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
