//! The embedded runtime: runs a physical graph in this process, one thread per subtask, with bounded
//! channels between them (Flink's MiniCluster in spirit: the JobManager's scheduling and the
//! TaskManagers' execution in one place).
//!
//! Failure handling: the first task that fails records its error and ends; its channels close, so its
//! neighbours stop with [`Error::Cancelled`] and so on through the graph. [`JobHandle::join`] reports
//! the first real error.

pub mod channel;
pub mod metrics;
mod task;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use parking_lot::Mutex;

use self::channel::{EdgeWriter, Message};
use self::metrics::{JobMetrics, SubtaskMetrics, TaskMetrics};
use self::task::{Chain, ChainNode};
use crate::error::{Error, Result};
use crate::keys::field_index;
use crate::operator::{SourceContext, SubtaskInfo};
use crate::plan::physical::{PhysicalGraph, plan};
use crate::plan::{LogicalGraph, NodeKind, Partitioning};

/// The channels into one subtask, each with the input it feeds.
type Inputs = Vec<(Receiver<Message>, usize)>;

/// A job running in this process.
pub struct JobHandle {
    threads: Vec<(String, JoinHandle<Result<()>>)>,
    cancelled: Arc<AtomicBool>,
    first_error: Arc<Mutex<Option<Error>>>,
    metrics: Arc<JobMetrics>,
    sinks: Vec<usize>,
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

    /// Waits for every subtask and returns the first failure, if any.
    pub fn join(self) -> Result<()> {
        for (name, thread) in self.threads {
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

/// Plans and starts `graph`.
pub fn start(graph: &LogicalGraph) -> Result<JobHandle> {
    let physical = plan(graph)?;
    start_physical(graph, &physical)
}

/// Starts an already planned graph.
pub fn start_physical(graph: &LogicalGraph, physical: &PhysicalGraph) -> Result<JobHandle> {
    let config = &graph.config;
    let max_parallelism = config.max_parallelism;

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

    for task in &physical.tasks {
        let head = &graph.nodes[task.nodes[0]];
        let names: Vec<&str> = task
            .nodes
            .iter()
            .map(|&n| graph.nodes[n].name.as_str())
            .collect();
        let mut task_metrics = TaskMetrics {
            name: names.join(" -> "),
            is_source: matches!(head.kind, NodeKind::Source { .. }),
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
                nodes.push(ChainNode { operator, writers });
            }
            let chain = Chain {
                nodes,
                metrics: subtask_metrics,
            };
            let inputs = std::mem::take(&mut receivers[task.id][index as usize]);
            chains.push((task.id, index, head, chain, inputs));
        }
        metrics.tasks.push(task_metrics);
    }

    let sinks: Vec<usize> = physical
        .tasks
        .iter()
        .filter(|t| !physical.edges.iter().any(|e| e.from_task == t.id))
        .map(|t| t.id)
        .collect();

    for (task_id, index, head, chain, inputs) in chains {
        let thread_name = format!("{}#{index}", head.name);
        let task_cancelled = cancelled.clone();
        let parallelism = physical.tasks[task_id].parallelism;
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
                {
                    let cancelled = task_cancelled.clone();
                    Box::new(move || task::run_source(source, ctx, watermarks, chain, &cancelled))
                }
            }
            NodeKind::Operator { .. } => Box::new(move || task::run_operator(chain, inputs)),
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

    Ok(JobHandle {
        threads,
        cancelled,
        first_error,
        metrics: Arc::new(metrics),
        sinks,
    })
}
