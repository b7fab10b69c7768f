//! The checkpoint coordinator of the embedded runtime: a thread that carries out the decisions of
//! the pure [`Coordinator`] — sends triggers to the source subtasks, collects acknowledgements,
//! writes complete snapshots to the store (metadata last), tells every subtask which checkpoint
//! completed or was aborted, and applies retention. The pipeline never waits for the store: tasks
//! hand over their state and go on; uploads happen here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::channel::Barrier;
use crate::checkpoint::coordinator::{AbortReason, CheckpointConfig, Coordinator, Event};
use crate::checkpoint::storage::{
    Acked, SnapshotKind, SnapshotRef, SnapshotWriter, checkpoint_dir, savepoint_dir,
};
use crate::error::{Error, Result};
use crate::time::now_millis;

/// What the coordinator tells a subtask.
#[derive(Debug, Clone)]
pub(crate) enum Control {
    /// Sources: inject this barrier now.
    Trigger(Barrier),
    /// Checkpoint (or savepoint) `id` is durable. `end`: it is the final checkpoint, taken after
    /// every source ended; the sources may now end the job's input.
    Complete { id: u64, end: bool },
    /// Checkpoint `id` will not complete.
    Abort { id: u64 },
}

/// What a subtask (or the job's handle) tells the coordinator.
#[derive(Debug)]
pub(crate) enum Report {
    Ack {
        id: u64,
        task: usize,
        /// Whether the barrier was a savepoint's (where a TaskManager uploads the state).
        savepoint: bool,
        states: Vec<Acked>,
    },
    Decline {
        id: u64,
        task: usize,
        reason: String,
    },
    /// A source subtask's data ended; once all have, a final checkpoint is taken at once.
    SourceFinished,
    /// Take a savepoint (and stop the job after it if `stop`); the reply says where it is.
    Savepoint {
        stop: bool,
        reply: Sender<Result<SnapshotRef>>,
    },
}

/// Counters and the latest results of checkpointing, readable while the job runs.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    inner: Mutex<StatsInner>,
}

/// A completed checkpoint or savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedSnapshot {
    pub id: u64,
    pub kind: SnapshotKind,
    pub dir: String,
    /// Bytes this snapshot uploaded itself (incremental size).
    pub bytes_written: u64,
    /// Bytes of everything it references.
    pub full_size: u64,
    /// From trigger to metadata written.
    pub duration_ms: u64,
}

#[derive(Debug, Default, Clone)]
struct StatsInner {
    /// The newest checkpoint triggered after every source ended, and whether it completed.
    final_id: Option<u64>,
    final_done: bool,
    completed: u64,
    failed: u64,
    history: Vec<CompletedSnapshot>,
    last_failure: Option<String>,
}

impl CheckpointStats {
    /// Checkpoints completed so far (savepoints included).
    pub fn completed(&self) -> u64 {
        self.inner.lock().completed
    }

    /// Checkpoints that failed (declined, expired, or not written).
    pub fn failed(&self) -> u64 {
        self.inner.lock().failed
    }

    /// Every completed snapshot, oldest first.
    pub fn history(&self) -> Vec<CompletedSnapshot> {
        self.inner.lock().history.clone()
    }

    /// Why the last checkpoint failed.
    pub fn last_failure(&self) -> Option<String> {
        self.inner.lock().last_failure.clone()
    }

    /// Forgets the final checkpoint of an earlier attempt (a new attempt takes its own).
    pub(crate) fn new_attempt(&self) {
        let mut s = self.inner.lock();
        s.final_id = None;
        s.final_done = false;
    }

    fn final_completed(&self) -> Option<u64> {
        let s = self.inner.lock();
        s.final_done.then_some(s.final_id).flatten()
    }

    fn fail(&self, reason: String) {
        let mut s = self.inner.lock();
        s.failed += 1;
        s.last_failure = Some(reason);
    }
}

/// Checkpointing settings of a run.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    /// Periodic checkpoints; an interval of 0 takes none (savepoints and the final checkpoint only).
    pub config: CheckpointConfig,
    pub mode: crate::checkpoint::alignment::Mode,
    pub store: Arc<dyn crate::checkpoint::store::CheckpointStore>,
    /// Complete checkpoints kept.
    pub retain: usize,
}

/// A subtask as the coordinator sees it.
pub(crate) struct TaskEnd {
    pub(crate) control: ControlLine,
    pub(crate) is_source: bool,
}

/// How the coordinator reaches a subtask: its control channel in this process, or the line to the
/// TaskManager that runs it (with the subtask's number).
#[derive(Debug, Clone)]
pub(crate) enum ControlLine {
    Local(Sender<Control>),
    Remote {
        line: Sender<(u32, Control)>,
        subtask: u32,
    },
}

impl ControlLine {
    pub(crate) fn send(&self, control: Control) {
        // A subtask that is gone no longer needs to hear it.
        let _ = match self {
            Self::Local(tx) => tx.send(control).map_err(|_| ()),
            Self::Remote { line, subtask } => line.send((*subtask, control)).map_err(|_| ()),
        };
    }
}

struct PendingSavepoint {
    stop: bool,
    reply: Sender<Result<SnapshotRef>>,
}

/// Runs the coordinator until every subtask and the job's handle have hung up.
pub(crate) fn drive(
    options: CheckpointOptions,
    mut writer: SnapshotWriter,
    tasks: Vec<TaskEnd>,
    reports: Receiver<Report>,
    first_id: u64,
    stats: Arc<CheckpointStats>,
) {
    let periodic = options.config.interval_ms > 0;
    let mut coordinator: Coordinator<Vec<Acked>> =
        Coordinator::new(options.config, tasks.len(), first_id);
    let sources = tasks.iter().filter(|t| t.is_source).count();
    let mut finished_sources = 0usize;
    let mut started: BTreeMap<u64, (u64, Option<PendingSavepoint>)> = BTreeMap::new();
    let mut stopping = false;
    let mut last_final_trigger: Option<u64> = None;
    let final_pause = options.config.min_pause_ms.max(200);
    let mut queued_savepoints: Vec<PendingSavepoint> = Vec::new();
    loop {
        let now = now_millis().max(0) as u64;
        let mut events = Vec::new();
        let all_finished = sources > 0 && finished_sources == sources;
        if !stopping {
            if let Some(sp) = queued_savepoints.pop() {
                stopping = sp.stop;
                let id = coordinator.force_trigger(now);
                started.insert(id, (now, Some(sp)));
                trigger(&tasks, id, now, stopping, true);
            } else if all_finished
                && started.is_empty()
                && stats.final_completed().is_none()
                && last_final_trigger.is_none_or(|t| now >= t + final_pause)
            {
                // The final checkpoint: right away, whatever the interval (retried after a pause
                // if it fails).
                last_final_trigger = Some(now);
                let id = coordinator.force_trigger(now);
                stats.inner.lock().final_id = Some(id);
                started.insert(id, (now, None));
                trigger(&tasks, id, now, false, false);
            } else if periodic && !all_finished {
                events.extend(coordinator.poll(now));
            } else {
                events.extend(coordinator.expire(now));
            }
        } else {
            events.extend(coordinator.expire(now));
        }
        for event in events {
            handle(
                event,
                &tasks,
                &mut writer,
                &options,
                &mut started,
                &stats,
                &mut stopping,
            );
        }
        let wait = coordinator
            .next_deadline_ms(now)
            .saturating_sub(now)
            .clamp(1, 50);
        let report = match reports.recv_timeout(Duration::from_millis(wait)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let now = now_millis().max(0) as u64;
        let events = match report {
            Report::Ack {
                id, task, states, ..
            } => coordinator.acknowledge(id, task, states, now),
            Report::Decline { id, task, reason } => coordinator.decline(id, task, &reason),
            Report::SourceFinished => {
                finished_sources += 1;
                Vec::new()
            }
            Report::Savepoint { stop, reply } => {
                queued_savepoints.push(PendingSavepoint { stop, reply });
                Vec::new()
            }
        };
        for event in events {
            handle(
                event,
                &tasks,
                &mut writer,
                &options,
                &mut started,
                &stats,
                &mut stopping,
            );
        }
    }
    for (_, (_, sp)) in std::mem::take(&mut started) {
        if let Some(sp) = sp {
            let _ = sp.reply.send(Err(Error::Storage(
                "the job ended before the savepoint completed".into(),
            )));
        }
    }
    for sp in queued_savepoints {
        let _ = sp.reply.send(Err(Error::Storage(
            "the job ended before the savepoint started".into(),
        )));
    }
}

fn trigger(tasks: &[TaskEnd], id: u64, now: u64, stop: bool, savepoint: bool) {
    let barrier = Barrier {
        id,
        timestamp_ms: now,
        stop,
        savepoint,
    };
    for t in tasks.iter().filter(|t| t.is_source) {
        t.control.send(Control::Trigger(barrier));
    }
}

fn broadcast(tasks: &[TaskEnd], control: &Control) {
    for t in tasks {
        t.control.send(control.clone());
    }
}

fn handle(
    event: Event<Vec<Acked>>,
    tasks: &[TaskEnd],
    writer: &mut SnapshotWriter,
    options: &CheckpointOptions,
    started: &mut BTreeMap<u64, (u64, Option<PendingSavepoint>)>,
    stats: &CheckpointStats,
    stopping: &mut bool,
) {
    match event {
        Event::Trigger { id, timestamp_ms } => {
            started.insert(id, (timestamp_ms, None));
            trigger(tasks, id, timestamp_ms, false, false);
        }
        Event::Completed { id, states } => {
            let (started_ms, savepoint) = started.remove(&id).unwrap_or((0, None));
            let (dir, kind) = match savepoint {
                Some(_) => (savepoint_dir(id), SnapshotKind::Savepoint),
                None => (checkpoint_dir(id), SnapshotKind::Checkpoint),
            };
            let states: Vec<Acked> = states.into_values().flatten().collect();
            match writer.write(&dir, id, kind, started_ms, states) {
                Ok(meta) => {
                    {
                        let mut s = stats.inner.lock();
                        s.completed += 1;
                        if s.final_id.is_some_and(|f| id >= f) {
                            s.final_done = true;
                        }
                        s.history.push(CompletedSnapshot {
                            id,
                            kind,
                            dir: dir.clone(),
                            bytes_written: meta.bytes_written,
                            full_size: meta.full_size,
                            duration_ms: (now_millis().max(0) as u64).saturating_sub(started_ms),
                        });
                    }
                    tracing::info!(
                        checkpoint = id,
                        ?kind,
                        dir,
                        bytes = meta.bytes_written,
                        "snapshot complete"
                    );
                    let end = stats.inner.lock().final_id.is_some_and(|f| id >= f);
                    broadcast(tasks, &Control::Complete { id, end });
                    if kind == SnapshotKind::Checkpoint
                        && let Err(e) = writer.retain(options.retain)
                    {
                        tracing::warn!(error = %e, "checkpoint retention failed; will retry");
                    }
                    if let Some(sp) = savepoint {
                        let _ = sp.reply.send(Ok(SnapshotRef {
                            store: writer.store().clone(),
                            dir,
                        }));
                    }
                }
                Err(e) => {
                    tracing::warn!(checkpoint = id, error = %e, "writing the snapshot failed; it is abandoned");
                    writer.discard(&dir);
                    stats.fail(format!("checkpoint {id}: {e}"));
                    broadcast(tasks, &Control::Abort { id });
                    if let Some(sp) = savepoint {
                        *stopping = false;
                        let _ = sp.reply.send(Err(e));
                    }
                }
            }
        }
        Event::Aborted { id, reason } => {
            if let Some((_, savepoint)) = started.remove(&id) {
                if !matches!(reason, AbortReason::Subsumed { .. }) {
                    stats.fail(format!("checkpoint {id}: {reason:?}"));
                }
                broadcast(tasks, &Control::Abort { id });
                if let Some(sp) = savepoint {
                    *stopping = false;
                    let _ = sp.reply.send(Err(Error::Storage(format!(
                        "savepoint {id} failed: {reason:?}"
                    ))));
                }
            }
        }
    }
}
