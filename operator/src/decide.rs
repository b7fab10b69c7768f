//! The reconciler's decisions, as pure functions of what it observed: the FlinkJob (spec and the
//! status the operator wrote last), the JobManager's answers and the time. They return the next
//! status, the actions to carry out and the Events to record; the controller does the I/O.
//!
//! Everything the operator must remember between passes is in the status, written after every
//! pass: a new run is recorded before its objects are applied, a stop is recorded before it is
//! requested, and every step can be observed again. So an operator killed at any point converges
//! from what it finds when it comes back.
//!
//! Phases and their exits (each has a deadline, `spec.progressDeadlineSeconds`):
//! - **Deploying** a run → job RUNNING (Ready) | deadline → rollback or Stalled.
//! - **Stopping** (stop with a savepoint) → savepoint completed and job FINISHED → next run |
//!   savepoint failed or deadline → the old job keeps running, Stalled.
//! - **Suspended**, **Finished**: Ready until the spec changes.

use std::time::Duration;

use jiff::Timestamp;
use strom_api::crd::{
    Condition, DesiredState, FlinkJobSpec, FlinkJobStatus, RunStatus, Snapshot, UpgradeMode,
    UpgradeStatus,
};

use crate::resources::{Target, only_parallelism_differs, run_storage, spec_hash, validate};

/// The job of the current run as its JobManager reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum JobView {
    /// No run deployed.
    NoRun,
    /// The JobManager did not answer (not up yet, restarting, gone).
    Unreachable(String),
    /// It answered but does not know the job.
    NotFound,
    State {
        state: String,
        message: Option<String>,
        parallelism: i32,
    },
}

impl JobView {
    fn state(&self) -> Option<&str> {
        match self {
            JobView::State { state, .. } => Some(state),
            _ => None,
        }
    }
    fn is(&self, s: &str) -> bool {
        self.state() == Some(s)
    }
    fn terminal(&self) -> bool {
        matches!(self.state(), Some("FINISHED" | "FAILED" | "CANCELED"))
    }
    fn describe(&self) -> String {
        match self {
            JobView::NoRun => "no run deployed".into(),
            JobView::Unreachable(why) => why.clone(),
            JobView::NotFound => "the JobManager does not know the job (yet)".into(),
            JobView::State { state, message, .. } => match message {
                Some(m) if !m.is_empty() => format!("job {state}: {m}"),
                _ => format!("job {state}"),
            },
        }
    }
}

/// A savepoint request's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavepointView {
    InProgress,
    /// Its directory in the run's storage.
    Completed(String),
    Failed(String),
    /// The JobManager no longer knows the request (it restarted).
    Lost,
    /// No answer.
    Unknown(String),
}

/// The job's newest snapshots, from its checkpoint history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointView {
    /// Directory and completion time (epoch ms, when reported) of the newest complete checkpoint.
    pub latest_checkpoint: Option<(String, Option<i64>)>,
    /// Directory of the newest savepoint.
    pub latest_savepoint: Option<String>,
}

/// Everything a decision depends on.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub target: Target<'a>,
    pub generation: i64,
    pub spec: &'a FlinkJobSpec,
    pub status: &'a FlinkJobStatus,
    pub job: JobView,
    /// The savepoint request the status waits for (the upgrade's, else the periodic one's).
    pub savepoint: Option<SavepointView>,
    /// `None` when the JobManager did not answer.
    pub checkpoints: Option<CheckpointView>,
    /// A pod problem worth reporting (image missing, crash loop), if any.
    pub pods: Option<String>,
    pub now: Timestamp,
}

/// What the controller carries out, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Server-side apply of the current run's objects.
    Apply,
    /// Delete the run's Deployments (suspend, delete).
    TearDown,
    /// Stop with a savepoint; the request id goes to `status.upgrade.requestId`.
    StopWithSavepoint {
        job_id: String,
    },
    /// A periodic savepoint; the request goes to `status.pendingSavepoint`.
    TriggerSavepoint {
        job_id: String,
    },
    Cancel {
        job_id: String,
    },
    /// Delete a savepoint, then forget it (`status.savepointHistory`).
    Dispose {
        location: String,
    },
}

/// An Event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub reason: &'static str,
    pub message: String,
    pub warning: bool,
}

/// The outcome of one pass.
#[derive(Debug, Clone)]
pub struct Plan {
    pub status: FlinkJobStatus,
    pub actions: Vec<Action>,
    pub events: Vec<Note>,
    pub requeue: Duration,
    /// For a deletion: whether the finalizer may go.
    pub done: bool,
}

/// How the resource stands (kstatus).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    Ready(&'static str, String),
    Progressing(&'static str, String),
    Stalled(&'static str, String),
}

/// Reasons of a stop that failed for this generation: not retried until the spec changes.
const STOP_FAILED: &[&str] = &["SavepointFailed", "SavepointTimeout"];
/// Lineage entries kept.
const LINEAGE: usize = 20;

/// The decision for a FlinkJob that exists.
pub fn decide(o: &Observed<'_>) -> Plan {
    let mut p = Planner::new(o);
    let health = p.reconcile();
    p.finish(health, false)
}

/// The decision for a FlinkJob being deleted: a savepoint first when configured, disposal of the
/// history when configured, then the pods go and the finalizer may be removed.
pub fn decide_cleanup(o: &Observed<'_>) -> Plan {
    let mut p = Planner::new(o);
    let (health, done) = p.cleanup();
    p.finish(health, done)
}

struct Planner<'o, 'a> {
    o: &'o Observed<'a>,
    st: FlinkJobStatus,
    actions: Vec<Action>,
    events: Vec<Note>,
}

impl<'o, 'a> Planner<'o, 'a> {
    fn new(o: &'o Observed<'a>) -> Self {
        let mut st = o.status.clone();
        st.observed_generation = Some(o.generation);
        Self {
            o,
            st,
            actions: Vec::new(),
            events: Vec::new(),
        }
    }

    fn event(&mut self, reason: &'static str, message: String) {
        self.events.push(Note {
            reason,
            message,
            warning: false,
        });
    }

    fn warn(&mut self, reason: &'static str, message: String) {
        self.events.push(Note {
            reason,
            message,
            warning: true,
        });
    }

    fn now(&self) -> String {
        self.o.now.to_string()
    }

    fn deadline(&self) -> i64 {
        self.o.spec.progress_deadline_seconds
    }

    /// Whether more than the deadline has passed since `since` (RFC 3339).
    fn overdue(&self, since: &str) -> bool {
        seconds_since(since, self.o.now).is_some_and(|s| s > self.deadline())
    }

    fn lifecycle(&mut self, s: &str) {
        self.st.lifecycle_state = Some(s.to_owned());
    }

    fn reconcile(&mut self) -> Health {
        let o = self.o;
        if let Err(e) = validate(&o.target, o.spec) {
            if self.st.run.is_some() {
                self.actions.push(Action::Apply);
            }
            return Health::Stalled("InvalidSpec", e.0);
        }
        if let Some(up) = self.st.upgrade.clone() {
            return self.continue_change(up);
        }
        let want_running = o.spec.job.state == DesiredState::Running;
        let Some(run) = self.st.run.clone() else {
            if !want_running {
                self.lifecycle("Suspended");
                return Health::Ready("Suspended", self.suspended_message());
            }
            let restore = if self.st.runs == 0 {
                o.spec.job.initial_savepoint_path.clone()
            } else {
                self.st.resume_from.take()
            };
            let resuming = self.st.runs > 0;
            self.start_run(spec_value(o.spec), restore.clone(), None);
            self.event(
                if resuming { "Resuming" } else { "Deploying" },
                format!(
                    "run {} at parallelism {}{}",
                    self.job_id(),
                    o.spec.job.parallelism,
                    restore.map(|r| format!(" from {r}")).unwrap_or_default()
                ),
            );
            return Health::Progressing(
                "Deploying",
                "deploying the JobManager and TaskManagers".into(),
            );
        };
        if !want_running {
            return self.begin_change("suspend", &run);
        }
        let target = spec_hash(o.spec);
        let rolled_back_from_this = run.rolled_back_from.as_deref() == Some(target.as_str());
        if run.spec_hash != target && !rolled_back_from_this {
            if let Some((reason, message)) = self.stop_failed_for(o.generation) {
                self.actions.push(Action::Apply);
                return Health::Stalled(reason, message);
            }
            let kind = match run_spec(&run) {
                Some(old) if only_parallelism_differs(&old, o.spec) => "rescale",
                _ => "upgrade",
            };
            return self.begin_change(kind, &run);
        }
        self.steady(&run)
    }

    /// A stop that failed for this generation (not retried until the spec changes).
    fn stop_failed_for(&self, generation: i64) -> Option<(&'static str, String)> {
        let c = self.condition("Stalled")?;
        if c.status != "True" || c.observed_generation != Some(generation) {
            return None;
        }
        let reason = STOP_FAILED
            .iter()
            .find(|r| Some(**r) == c.reason.as_deref())?;
        Some((reason, c.message.clone().unwrap_or_default()))
    }

    fn condition(&self, kind: &str) -> Option<&Condition> {
        self.o.status.conditions.iter().find(|c| c.type_ == kind)
    }

    fn job_id(&self) -> String {
        self.st
            .run
            .as_ref()
            .map(|r| r.job_id.clone())
            .unwrap_or_default()
    }

    fn suspended_message(&self) -> String {
        match &self.st.resume_from {
            Some(r) => format!("suspended; resumes from {r}"),
            None => "suspended; resumes empty".into(),
        }
    }

    /// Records a new run (its objects are applied in this pass).
    fn start_run(
        &mut self,
        spec: serde_json::Value,
        restore: Option<String>,
        rolled_back_from: Option<String>,
    ) {
        let parsed: Option<FlinkJobSpec> = serde_json::from_value(spec.clone()).ok();
        let parallelism = parsed.as_ref().map_or(0, |s| s.job.parallelism);
        self.st.runs += 1;
        let uid: String = self
            .o
            .target
            .uid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(8)
            .collect();
        let job_id = format!("{}-{uid}-{}", self.o.target.name, self.st.runs);
        if let Some(r) = &restore {
            self.st.restored_from.push(Snapshot {
                location: r.clone(),
                time: Some(self.now()),
                parallelism: Some(parallelism),
            });
            let excess = self.st.restored_from.len().saturating_sub(LINEAGE);
            self.st.restored_from.drain(..excess);
        }
        self.st.run = Some(RunStatus {
            job_id: job_id.clone(),
            spec_hash: parsed.as_ref().map(spec_hash).unwrap_or_default(),
            parallelism,
            started_at: self.now(),
            running_at: None,
            restored_from: restore,
            rolled_back_from,
            spec,
        });
        self.st.job_id = Some(job_id);
        self.st.job_state = None;
        self.lifecycle("Deploying");
        self.actions.push(Action::Apply);
    }

    /// A run whose spec is current.
    fn steady(&mut self, run: &RunStatus) -> Health {
        let o = self.o;
        self.actions.push(Action::Apply);
        self.st.job_state = o.job.state().map(str::to_owned);
        match &o.job {
            JobView::State {
                state, parallelism, ..
            } if state == "RUNNING" => {
                self.mark_running(*parallelism);
                if run.rolled_back_from.is_none() {
                    self.st.last_stable_spec = Some(run.spec.clone());
                }
                self.periodic_savepoints(run);
                self.retention();
                if run.rolled_back_from.is_some() {
                    self.lifecycle("RolledBack");
                    return Health::Stalled(
                        "RolledBack",
                        format!(
                            "the upgrade to generation {} did not run; running the last stable \
                             spec again (change the spec to try again)",
                            o.generation
                        ),
                    );
                }
                self.lifecycle("Running");
                Health::Ready(
                    "Running",
                    format!("job {} running at parallelism {parallelism}", run.job_id),
                )
            }
            JobView::State { state, .. } if state == "FINISHED" => {
                self.lifecycle("Finished");
                Health::Ready("Finished", format!("job {} finished", run.job_id))
            }
            JobView::State { state, message, .. } if state == "FAILED" || state == "CANCELED" => {
                self.lifecycle("Failed");
                let why = message.clone().unwrap_or_default();
                if run.running_at.is_none()
                    && let Some(h) = self.rollback(run, &why)
                {
                    return h;
                }
                Health::Stalled(
                    if state == "FAILED" {
                        "JobFailed"
                    } else {
                        "JobCanceled"
                    },
                    format!(
                        "job {} is {state}{}; change the spec or restartNonce to run it again",
                        run.job_id,
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!(": {why}")
                        }
                    ),
                )
            }
            _ => {
                let why = self.not_running_reason();
                if run.running_at.is_none() {
                    self.lifecycle("Deploying");
                    if self.overdue(&run.started_at) {
                        if let Some(h) = self.rollback(run, &why) {
                            return h;
                        }
                        return Health::Stalled(
                            "DeployTimeout",
                            format!(
                                "job {} not running {} s after it was deployed: {why}",
                                run.job_id,
                                self.deadline()
                            ),
                        );
                    }
                    Health::Progressing("Deploying", why)
                } else {
                    self.lifecycle("Recovering");
                    let since = self
                        .condition("Ready")
                        .filter(|c| c.status == "False")
                        .and_then(|c| c.last_transition_time.clone())
                        .unwrap_or_else(|| self.now());
                    if self.overdue(&since) {
                        return Health::Stalled("JobNotRunning", why);
                    }
                    Health::Progressing("Recovering", why)
                }
            }
        }
    }

    fn not_running_reason(&self) -> String {
        match &self.o.pods {
            Some(p) => format!("{}; {p}", self.o.job.describe()),
            None => self.o.job.describe(),
        }
    }

    fn mark_running(&mut self, parallelism: i32) {
        let now = self.now();
        if let Some(run) = self.st.run.as_mut()
            && run.running_at.is_none()
        {
            run.running_at = Some(now);
            let msg = format!("job {} running at parallelism {parallelism}", run.job_id);
            self.event("JobRunning", msg);
        }
        self.st.parallelism = Some(parallelism);
        self.st.job_state = Some("RUNNING".into());
    }

    /// Runs the last stable spec again after a failed upgrade, when configured.
    fn rollback(&mut self, run: &RunStatus, why: &str) -> Option<Health> {
        if !self.o.spec.rollback_on_failure || run.rolled_back_from.is_some() {
            return None;
        }
        let stable = self.st.last_stable_spec.clone()?;
        let stable_hash = serde_json::from_value::<FlinkJobSpec>(stable.clone())
            .ok()
            .map(|s| spec_hash(&s))?;
        if stable_hash == run.spec_hash {
            return None;
        }
        let restore = run.restored_from.clone();
        self.st.upgrade = None;
        self.start_run(stable, restore.clone(), Some(run.spec_hash.clone()));
        let msg = format!(
            "run {} did not get running within {} s ({why}); rolled back to the last stable spec{}",
            run.job_id,
            self.deadline(),
            restore.map(|r| format!(" from {r}")).unwrap_or_default()
        );
        self.warn("RolledBack", msg.clone());
        self.lifecycle("RolledBack");
        Some(Health::Stalled("RolledBack", msg))
    }

    /// A change of the running run, starting now in its stopping phase.
    fn new_change(&self, kind: &str, mode: UpgradeMode, run: &RunStatus) -> UpgradeStatus {
        let now = self.now();
        UpgradeStatus {
            kind: kind.to_owned(),
            mode,
            phase: "stopping".into(),
            started_at: now.clone(),
            phase_started_at: now,
            request_id: None,
            stopped_at: None,
            restore_from: None,
            from_parallelism: run.parallelism,
        }
    }

    /// Starts a change of the running job: a suspend, an upgrade or a rescale.
    fn begin_change(&mut self, kind: &'static str, run: &RunStatus) -> Health {
        let o = self.o;
        let mode = match (kind, o.spec.job.upgrade_mode) {
            ("rescale", UpgradeMode::LastState) => UpgradeMode::Savepoint,
            (_, m) => m,
        };
        let mut up = self.new_change(kind, mode, run);
        self.actions.push(Action::Apply);
        // A run that never got running made no progress: the next one starts where it would have.
        if run.running_at.is_none() {
            let restore = match mode {
                UpgradeMode::Stateless => None,
                _ => run.restored_from.clone(),
            };
            return self.stopped(up, restore);
        }
        match mode {
            UpgradeMode::Stateless => {
                self.cancel(run);
                self.stopped(up, None)
            }
            UpgradeMode::LastState => match self.latest_checkpoint(run) {
                Ok(restore) => {
                    self.cancel(run);
                    self.stopped(up, Some(restore))
                }
                Err(why) => self.blocked(kind, why),
            },
            UpgradeMode::Savepoint => {
                if o.job.is("RUNNING") {
                    self.actions.push(Action::StopWithSavepoint {
                        job_id: run.job_id.clone(),
                    });
                    self.event(
                        "Stopping",
                        format!("{kind}: stopping job {} with a savepoint", run.job_id),
                    );
                    self.st.upgrade = Some(up);
                    self.lifecycle(if kind == "suspend" {
                        "Suspending"
                    } else {
                        "Upgrading"
                    });
                    return Health::Progressing(
                        "Stopping",
                        format!("{kind}: taking a savepoint of job {}", run.job_id),
                    );
                }
                if o.job.terminal() || matches!(o.job, JobView::Unreachable(_)) {
                    // No savepoint can be taken of a job that is not running: its latest
                    // checkpoint, as the restore policy allows.
                    return match self.latest_checkpoint(run) {
                        Ok(restore) => {
                            up.mode = UpgradeMode::LastState;
                            self.warn(
                                "NoSavepoint",
                                format!(
                                    "{kind}: {}; restoring the latest checkpoint instead",
                                    o.job.describe()
                                ),
                            );
                            self.stopped(up, Some(restore))
                        }
                        Err(why) => self.blocked(kind, why),
                    };
                }
                Health::Progressing(
                    "WaitingForJob",
                    format!(
                        "{kind}: waiting for the job to run to take a savepoint ({})",
                        o.job.describe()
                    ),
                )
            }
        }
    }

    fn cancel(&mut self, run: &RunStatus) {
        if matches!(self.o.job, JobView::State { .. }) && !self.o.job.terminal() {
            self.actions.push(Action::Cancel {
                job_id: run.job_id.clone(),
            });
        }
    }

    /// The restore policy, checked before the running job is touched: the newest checkpoint of the
    /// run, as a restore location.
    fn latest_checkpoint(&self, run: &RunStatus) -> Result<String, String> {
        let spec = run_spec(run).ok_or("the run's spec is unreadable")?;
        let storage = run_storage(&spec, &run.job_id)
            .ok_or("the run has no checkpoint storage to restore from")?;
        let Some(view) = &self.o.checkpoints else {
            // The JobManager is not answering: the job is not running either; whatever its newest
            // checkpoint is when the next run starts.
            return Ok(format!("{storage}#latest"));
        };
        let Some((_, at)) = &view.latest_checkpoint else {
            return Err(format!(
                "job {} has no complete checkpoint to restore",
                run.job_id
            ));
        };
        if let (Some(max), Some(at)) = (
            self.o
                .spec
                .job
                .restore_policy
                .as_ref()
                .and_then(|p| p.max_checkpoint_age_seconds),
            at,
        ) {
            let age = (self.o.now.as_millisecond() - at) / 1000;
            if age > max {
                return Err(format!(
                    "the newest checkpoint of job {} is {age} s old; restorePolicy.\
                     maxCheckpointAgeSeconds is {max}",
                    run.job_id
                ));
            }
        }
        Ok(format!("{storage}#latest"))
    }

    fn blocked(&mut self, kind: &str, why: String) -> Health {
        let msg = format!("{kind} not started, the job keeps running: {why}");
        if self.condition("Stalled").and_then(|c| c.reason.as_deref()) != Some("UpgradeBlocked") {
            self.warn("UpgradeBlocked", msg.clone());
        }
        Health::Stalled("UpgradeBlocked", msg)
    }

    /// The old job is stopped (or was never running): the change's next step.
    fn stopped(&mut self, mut up: UpgradeStatus, restore: Option<String>) -> Health {
        let now = self.now();
        up.stopped_at = Some(now.clone());
        up.restore_from = restore.clone();
        if up.kind == "suspend" {
            self.actions.push(Action::TearDown);
            self.st.resume_from = restore;
            self.st.run = None;
            self.st.upgrade = None;
            self.st.job_state = None;
            self.st.parallelism = Some(0);
            self.lifecycle("Suspended");
            let msg = self.suspended_message();
            self.event("Suspended", msg.clone());
            return Health::Ready("Suspended", msg);
        }
        up.phase = "deploying".into();
        up.phase_started_at = now;
        let kind = up.kind.clone();
        self.st.upgrade = Some(up);
        self.start_run(spec_value(self.o.spec), restore.clone(), None);
        self.lifecycle("Upgrading");
        self.event(
            if kind == "rescale" {
                "Rescaling"
            } else {
                "Upgrading"
            },
            format!(
                "{kind}: run {} at parallelism {}{}",
                self.job_id(),
                self.o.spec.job.parallelism,
                restore.map(|r| format!(" from {r}")).unwrap_or_default()
            ),
        );
        Health::Progressing(
            "Deploying",
            format!("{kind}: deploying run {}", self.job_id()),
        )
    }

    fn continue_change(&mut self, up: UpgradeStatus) -> Health {
        let Some(run) = self.st.run.clone() else {
            self.st.upgrade = None;
            return self.reconcile();
        };
        self.st.job_state = self.o.job.state().map(str::to_owned);
        if up.phase == "deploying" {
            return self.deploying(up, &run);
        }
        self.actions.push(Action::Apply);
        match self.stop_progress(&up, &run) {
            Stop::Waiting(why) => {
                if self.overdue(&up.phase_started_at) {
                    self.st.upgrade = None;
                    let msg = format!(
                        "{}: the savepoint of job {} did not complete within {} s ({why}); the \
                         job keeps running",
                        up.kind,
                        run.job_id,
                        self.deadline()
                    );
                    self.warn("SavepointTimeout", msg.clone());
                    return Health::Stalled("SavepointTimeout", msg);
                }
                self.lifecycle(if up.kind == "suspend" {
                    "Suspending"
                } else {
                    "Upgrading"
                });
                Health::Progressing("Stopping", why)
            }
            Stop::Failed(why) => {
                self.st.upgrade = None;
                let msg = format!(
                    "{}: the savepoint of job {} failed ({why}); the job keeps running",
                    up.kind, run.job_id
                );
                self.warn("SavepointFailed", msg.clone());
                Health::Stalled("SavepointFailed", msg)
            }
            Stop::Done(location) => self.stopped(up, Some(location)),
        }
    }

    /// Where a stop with savepoint is. Records the savepoint once it completed.
    fn stop_progress(&mut self, up: &UpgradeStatus, run: &RunStatus) -> Stop {
        let o = self.o;
        let completed = match (&up.request_id, &o.savepoint) {
            (Some(_), Some(SavepointView::Completed(dir))) => Some(dir.clone()),
            (Some(_), Some(SavepointView::Failed(why))) => return Stop::Failed(why.clone()),
            // Asked, but the answer is lost (operator or JobManager restarted): a finished job
            // tells by its newest savepoint; a running one is asked again.
            (None, _) | (Some(_), Some(SavepointView::Lost)) => {
                if o.job.is("FINISHED") {
                    o.checkpoints
                        .as_ref()
                        .and_then(|c| c.latest_savepoint.clone())
                } else {
                    // A request is re-sent only once the first has had time to be recorded.
                    let lost = up.request_id.is_some()
                        || seconds_since(&up.phase_started_at, o.now).is_none_or(|s| s >= 10);
                    if o.job.is("RUNNING") && lost {
                        if let Some(u) = self.st.upgrade.as_mut() {
                            u.request_id = None;
                        }
                        self.actions.push(Action::StopWithSavepoint {
                            job_id: run.job_id.clone(),
                        });
                    }
                    return Stop::Waiting(format!(
                        "stopping job {}: {}",
                        run.job_id,
                        o.job.describe()
                    ));
                }
            }
            _ => None,
        };
        let Some(dir) = completed else {
            return Stop::Waiting(format!("taking a savepoint of job {}", run.job_id));
        };
        let location = snapshot_location(run, &dir);
        self.record_savepoint(&location, run.parallelism);
        // The job ends right after the savepoint; its sinks publish first.
        if o.job.is("FINISHED") || !matches!(o.job, JobView::State { .. }) {
            Stop::Done(location)
        } else {
            Stop::Waiting(format!(
                "savepoint {location} taken; waiting for job {} to finish ({})",
                run.job_id,
                o.job.describe()
            ))
        }
    }

    fn record_savepoint(&mut self, location: &str, parallelism: i32) {
        if self
            .st
            .savepoint_history
            .iter()
            .any(|s| s.location == location)
        {
            return;
        }
        let snapshot = Snapshot {
            location: location.to_owned(),
            time: Some(self.now()),
            parallelism: Some(parallelism),
        };
        self.st.savepoint_history.push(snapshot.clone());
        self.st.last_savepoint = Some(snapshot);
        self.event("Savepoint", format!("savepoint {location}"));
    }

    fn deploying(&mut self, up: UpgradeStatus, run: &RunStatus) -> Health {
        if self.o.job.is("RUNNING") {
            let since = up.stopped_at.clone().unwrap_or(up.started_at.clone());
            let downtime = millis_since(&since, self.o.now).unwrap_or(0);
            if up.kind == "rescale" {
                self.st.last_rescale_downtime_ms = Some(downtime);
            }
            self.st.upgrade = None;
            let msg = format!(
                "{} done: job {} running at parallelism {} (from {}), {downtime} ms without a \
                 running job",
                up.kind, run.job_id, run.parallelism, up.from_parallelism
            );
            self.event(
                if up.kind == "rescale" {
                    "Rescaled"
                } else {
                    "Upgraded"
                },
                msg,
            );
            return self.steady(run);
        }
        if self.o.job.terminal() || self.overdue(&up.phase_started_at) {
            self.st.upgrade = None;
        }
        let health = self.steady(run);
        if self.st.upgrade.is_some() {
            self.lifecycle("Upgrading");
        }
        health
    }

    fn periodic_savepoints(&mut self, run: &RunStatus) {
        let Some(sp) = self.o.spec.savepoints.clone() else {
            return;
        };
        if let Some(pending) = self.st.pending_savepoint.clone() {
            match &self.o.savepoint {
                Some(SavepointView::Completed(dir)) => {
                    let location = snapshot_location(run, dir);
                    self.record_savepoint(&location, run.parallelism);
                    self.st.pending_savepoint = None;
                }
                Some(SavepointView::Failed(why)) => {
                    self.warn("SavepointFailed", format!("periodic savepoint: {why}"));
                    self.st.pending_savepoint = None;
                }
                Some(SavepointView::Lost) => self.st.pending_savepoint = None,
                _ if pending.job_id != run.job_id || self.overdue(&pending.triggered_at) => {
                    self.st.pending_savepoint = None;
                }
                _ => {}
            }
            return;
        }
        if sp.interval_seconds <= 0 {
            return;
        }
        let last = self
            .st
            .last_savepoint
            .as_ref()
            .and_then(|s| s.time.clone())
            .into_iter()
            .chain(run.running_at.clone())
            .filter_map(|t| seconds_since(&t, self.o.now))
            .min();
        if last.is_none_or(|s| s >= sp.interval_seconds) {
            self.actions.push(Action::TriggerSavepoint {
                job_id: run.job_id.clone(),
            });
        }
    }

    /// Keeps `savepoints.history` savepoints: the oldest beyond it is disposed (the controller
    /// forgets it once the disposal succeeded). Never the newest, nor one a run restored from or
    /// would resume from.
    fn retention(&mut self) {
        let keep = self.o.spec.savepoints.as_ref().map_or(5, |s| s.history) as usize;
        let history = &self.st.savepoint_history;
        if history.len() <= keep {
            return;
        }
        let protected: Vec<&str> = self
            .st
            .last_savepoint
            .iter()
            .map(|s| s.location.as_str())
            .chain(
                self.st
                    .run
                    .iter()
                    .filter_map(|r| r.restored_from.as_deref()),
            )
            .chain(self.st.resume_from.as_deref())
            .collect();
        if let Some(oldest) = history
            .iter()
            .find(|s| !protected.contains(&s.location.as_str()))
        {
            self.actions.push(Action::Dispose {
                location: oldest.location.clone(),
            });
        }
    }

    fn cleanup(&mut self) -> (Health, bool) {
        let o = self.o;
        let sp = o.spec.savepoints.clone();
        let save = sp.as_ref().is_some_and(|s| s.savepoint_on_delete);
        let mut done = true;
        if let Some(run) = self.st.run.clone()
            && save
            && run.running_at.is_some()
        {
            let up = match self.st.upgrade.clone() {
                Some(up) if up.kind == "delete" => Some(up),
                _ if o.job.is("RUNNING") => {
                    self.st.upgrade = Some(self.new_change("delete", UpgradeMode::Savepoint, &run));
                    self.actions.push(Action::StopWithSavepoint {
                        job_id: run.job_id.clone(),
                    });
                    done = false;
                    None
                }
                _ => None,
            };
            if let Some(up) = up {
                match self.stop_progress(&up, &run) {
                    Stop::Waiting(why) if !self.overdue(&up.phase_started_at) => {
                        self.lifecycle("Deleting");
                        return (Health::Progressing("Deleting", why), false);
                    }
                    Stop::Waiting(why) | Stop::Failed(why) => self.warn(
                        "SavepointFailed",
                        format!("no savepoint before deletion ({why}); deleting anyway"),
                    ),
                    Stop::Done(_) => {}
                }
                self.st.upgrade = None;
            }
        }
        if !done {
            self.lifecycle("Deleting");
            return (
                Health::Progressing("Deleting", "taking a savepoint before deletion".into()),
                false,
            );
        }
        if sp.as_ref().is_some_and(|s| s.dispose_on_delete) {
            let keep = if save {
                self.st.last_savepoint.as_ref().map(|s| s.location.clone())
            } else {
                None
            };
            for s in &self.st.savepoint_history {
                if Some(&s.location) != keep.as_ref() {
                    self.actions.push(Action::Dispose {
                        location: s.location.clone(),
                    });
                }
            }
        }
        self.actions.push(Action::TearDown);
        self.lifecycle("Deleted");
        (Health::Progressing("Deleting", "deleted".into()), true)
    }

    fn finish(mut self, health: Health, done: bool) -> Plan {
        let now = self.now();
        let generation = self.o.generation;
        let (ready, reconciling, stalled) = match &health {
            Health::Ready(r, m) => (("True", *r, m), ("False", *r, m), ("False", *r, m)),
            Health::Progressing(r, m) => (("False", *r, m), ("True", *r, m), ("False", *r, m)),
            Health::Stalled(r, m) => (("False", *r, m), ("False", *r, m), ("True", *r, m)),
        };
        for (kind, (status, reason, message)) in [
            ("Ready", ready),
            ("Reconciling", reconciling),
            ("Stalled", stalled),
        ] {
            set_condition(
                &mut self.st.conditions,
                kind,
                status,
                reason,
                message,
                &now,
                generation,
            );
        }
        if let Health::Stalled(_, m) = &health {
            self.st.error = Some(m.clone());
        }
        let requeue = match (&health, &self.st.upgrade) {
            (Health::Progressing(..), _) | (_, Some(_)) => Duration::from_secs(2),
            (Health::Ready(..), _) if self.st.pending_savepoint.is_some() => Duration::from_secs(2),
            (Health::Ready(..), _) => Duration::from_secs(10),
            (Health::Stalled(..), _) => Duration::from_secs(10),
        };
        Plan {
            status: self.st,
            actions: self.actions,
            events: self.events,
            requeue,
            done,
        }
    }
}

enum Stop {
    Waiting(String),
    Failed(String),
    Done(String),
}

fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    generation: i64,
) {
    let changed_at = conditions
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_owned());
    conditions.retain(|c| c.type_ != kind);
    conditions.push(Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_transition_time: Some(changed_at),
        observed_generation: Some(generation),
    });
    conditions.sort_by_key(|c| match c.type_.as_str() {
        "Ready" => 0,
        "Reconciling" => 1,
        _ => 2,
    });
}

/// `<run storage>#<dir>`: a location any later run can restore.
fn snapshot_location(run: &RunStatus, dir: &str) -> String {
    if dir.contains('#') || dir.contains("://") {
        return dir.to_owned();
    }
    match run_spec(run).and_then(|s| run_storage(&s, &run.job_id)) {
        Some(storage) => format!("{storage}#{dir}"),
        None => dir.to_owned(),
    }
}

fn run_spec(run: &RunStatus) -> Option<FlinkJobSpec> {
    serde_json::from_value(run.spec.clone()).ok()
}

fn spec_value(spec: &FlinkJobSpec) -> serde_json::Value {
    serde_json::to_value(spec).unwrap_or_default()
}

fn millis_since(since: &str, now: Timestamp) -> Option<i64> {
    let t: Timestamp = since.parse().ok()?;
    Some(now.as_millisecond() - t.as_millisecond())
}

fn seconds_since(since: &str, now: Timestamp) -> Option<i64> {
    millis_since(since, now).map(|ms| ms / 1000)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;

    const T: Target<'static> = Target {
        name: "fj",
        namespace: "ns",
        uid: "0123456789",
    };

    fn spec(parallelism: i32, mode: &str) -> FlinkJobSpec {
        serde_json::from_value(json!({
            "image": "strom.test/strom:dev",
            "job": {"name": "auction-stats", "parallelism": parallelism, "upgradeMode": mode,
                    "restorePolicy": {"maxCheckpointAgeSeconds": 60}},
            "checkpointing": {"storage": "s3://b/ckpt"},
        }))
        .unwrap()
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn running(state: &str, p: i32) -> JobView {
        JobView::State {
            state: state.into(),
            message: None,
            parallelism: p,
        }
    }

    fn observe<'a>(
        spec: &'a FlinkJobSpec,
        status: &'a FlinkJobStatus,
        job: JobView,
        now: Timestamp,
    ) -> Observed<'a> {
        Observed {
            target: T,
            generation: 1,
            spec,
            status,
            job,
            savepoint: None,
            checkpoints: Some(CheckpointView::default()),
            pods: None,
            now,
        }
    }

    /// A first run that the JobManager reports RUNNING.
    fn steady(spec: &FlinkJobSpec) -> FlinkJobStatus {
        let first = decide(&observe(
            spec,
            &FlinkJobStatus::default(),
            JobView::NoRun,
            at(0),
        ));
        assert_eq!(first.actions, vec![Action::Apply]);
        let run = decide(&observe(spec, &first.status, running("RUNNING", 2), at(5)));
        assert_eq!(run.status.lifecycle_state.as_deref(), Some("Running"));
        run.status
    }

    #[test]
    fn a_rescale_records_the_stop_before_asking_then_restores_the_savepoint() {
        let old = spec(2, "savepoint");
        let status = steady(&old);
        let new = spec(3, "savepoint");
        let stop = decide(&observe(&new, &status, running("RUNNING", 2), at(10)));
        let up = stop.status.upgrade.clone().unwrap();
        assert_eq!(
            (up.kind.as_str(), up.phase.as_str()),
            ("rescale", "stopping")
        );
        let job_id = status.run.as_ref().unwrap().job_id.clone();
        assert!(stop.actions.contains(&Action::StopWithSavepoint {
            job_id: job_id.clone()
        }));
        // The same pass seen again before the request id was recorded: no second request.
        let again = decide(&observe(&new, &stop.status, running("RUNNING", 2), at(11)));
        assert!(
            !again
                .actions
                .iter()
                .any(|a| matches!(a, Action::StopWithSavepoint { .. }))
        );
        let mut asked = stop.status.clone();
        asked.upgrade.as_mut().unwrap().request_id = Some("r1".into());
        let mut o = observe(&new, &asked, running("FINISHED", 2), at(14));
        o.savepoint = Some(SavepointView::Completed(
            "savepoints/savepoint-0000000009".into(),
        ));
        let next = decide(&o);
        let run = next.status.run.clone().unwrap();
        let expected = format!("s3://b/ckpt/{job_id}#savepoints/savepoint-0000000009");
        assert_eq!(run.restored_from.as_deref(), Some(expected.as_str()));
        assert_eq!(run.parallelism, 3);
        assert_ne!(run.job_id, job_id);
        assert_eq!(
            next.status.last_savepoint.clone().unwrap().location,
            expected
        );
        let done = decide(&observe(&new, &next.status, running("RUNNING", 3), at(20)));
        assert!(done.status.upgrade.is_none());
        assert_eq!(done.status.last_rescale_downtime_ms, Some(6000));
        assert_eq!(done.status.parallelism, Some(3));
    }

    #[test]
    fn a_failed_savepoint_leaves_the_job_running_and_is_not_retried_for_the_generation() {
        let status = steady(&spec(2, "savepoint"));
        let new = spec(3, "savepoint");
        let mut asked = decide(&observe(&new, &status, running("RUNNING", 2), at(10))).status;
        asked.upgrade.as_mut().unwrap().request_id = Some("r1".into());
        let mut o = observe(&new, &asked, running("RUNNING", 2), at(12));
        o.savepoint = Some(SavepointView::Failed("disk full".into()));
        let failed = decide(&o);
        assert!(failed.status.upgrade.is_none());
        let stalled = failed
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap();
        assert_eq!(stalled.reason.as_deref(), Some("SavepointFailed"));
        assert_eq!(failed.status.run, asked.run, "the old run stays");
        let later = decide(&observe(
            &new,
            &failed.status,
            running("RUNNING", 2),
            at(20),
        ));
        assert!(later.status.upgrade.is_none());
        assert!(
            !later
                .actions
                .iter()
                .any(|a| matches!(a, Action::StopWithSavepoint { .. }))
        );
    }

    #[test]
    fn the_restore_policy_is_checked_before_the_job_is_touched() {
        let status = steady(&spec(2, "last-state"));
        let mut new = spec(2, "last-state");
        new.image = "strom.test/strom:v2".into();
        let mut o = observe(&new, &status, running("RUNNING", 2), at(300));
        o.checkpoints = Some(CheckpointView {
            latest_checkpoint: Some(("chk-0000000004".into(), Some(at(100).as_millisecond()))),
            latest_savepoint: None,
        });
        let blocked = decide(&o);
        assert!(blocked.status.upgrade.is_none());
        assert!(
            blocked.actions.iter().all(|a| *a == Action::Apply),
            "{:?}",
            blocked.actions
        );
        let stalled = blocked
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap();
        assert_eq!(stalled.reason.as_deref(), Some("UpgradeBlocked"));
        assert!(stalled.message.as_deref().unwrap().contains("200 s old"));
        o.checkpoints = Some(CheckpointView {
            latest_checkpoint: Some(("chk-0000000009".into(), Some(at(290).as_millisecond()))),
            latest_savepoint: None,
        });
        let go = decide(&o);
        assert!(
            go.actions
                .iter()
                .any(|a| matches!(a, Action::Cancel { .. }))
        );
        let run = go.status.run.unwrap();
        assert!(run.restored_from.unwrap().ends_with("#latest"));
    }

    #[test]
    fn suspend_takes_a_savepoint_tears_down_and_resume_restores_it() {
        let status = steady(&spec(2, "savepoint"));
        let mut suspended = spec(2, "savepoint");
        suspended.job.state = DesiredState::Suspended;
        let mut asked = decide(&observe(&suspended, &status, running("RUNNING", 2), at(10))).status;
        assert_eq!(asked.lifecycle_state.as_deref(), Some("Suspending"));
        asked.upgrade.as_mut().unwrap().request_id = Some("r".into());
        let mut o = observe(&suspended, &asked, running("FINISHED", 2), at(12));
        o.savepoint = Some(SavepointView::Completed(
            "savepoints/savepoint-0000000003".into(),
        ));
        let down = decide(&o);
        assert!(down.actions.contains(&Action::TearDown));
        assert!(down.status.run.is_none());
        assert_eq!(down.status.lifecycle_state.as_deref(), Some("Suspended"));
        let resume_from = down.status.resume_from.clone().unwrap();
        let up = decide(&observe(
            &spec(2, "savepoint"),
            &down.status,
            JobView::NoRun,
            at(20),
        ));
        assert_eq!(up.status.run.unwrap().restored_from, Some(resume_from));
    }

    #[test]
    fn a_run_that_never_starts_is_stalled_at_the_deadline_and_rolled_back_when_asked() {
        let status = steady(&spec(2, "savepoint"));
        let mut new = spec(2, "savepoint");
        new.image = "strom.test/broken:dev".into();
        new.rollback_on_failure = true;
        new.progress_deadline_seconds = 30;
        let mut asked = decide(&observe(&new, &status, running("RUNNING", 2), at(10))).status;
        asked.upgrade.as_mut().unwrap().request_id = Some("r".into());
        let mut o = observe(&new, &asked, running("FINISHED", 2), at(12));
        o.savepoint = Some(SavepointView::Completed(
            "savepoints/savepoint-0000000005".into(),
        ));
        let deploying = decide(&o).status;
        let broken = deploying.run.clone().unwrap();
        let waiting = decide(&observe(
            &new,
            &deploying,
            JobView::Unreachable("no".into()),
            at(30),
        ));
        assert_eq!(
            waiting.status.run, deploying.run,
            "still within the deadline"
        );
        let rolled = decide(&observe(
            &new,
            &deploying,
            JobView::Unreachable("no".into()),
            at(50),
        ));
        let run = rolled.status.run.clone().unwrap();
        assert_eq!(
            run.rolled_back_from.as_deref(),
            Some(broken.spec_hash.as_str())
        );
        assert_eq!(
            run.restored_from, broken.restored_from,
            "from the upgrade's savepoint"
        );
        assert_eq!(run.spec["image"], "strom.test/strom:dev");
        let stalled = rolled
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap();
        assert_eq!(stalled.reason.as_deref(), Some("RolledBack"));
        // The same failing spec is not tried again; running the stable one stays.
        let after = decide(&observe(
            &new,
            &rolled.status,
            running("RUNNING", 2),
            at(60),
        ));
        assert!(after.status.upgrade.is_none());
        assert_eq!(after.status.run.unwrap().job_id, run.job_id);
    }

    #[test]
    fn retention_disposes_the_oldest_but_never_what_can_be_restored() {
        let mut s = spec(2, "savepoint");
        s.savepoints = Some(serde_json::from_value(json!({"history": 2})).unwrap());
        let mut status = steady(&s);
        let loc = |n: u32| format!("s3://b/ckpt/x#savepoints/savepoint-{n:010}");
        status.savepoint_history = (1..=4)
            .map(|n| Snapshot {
                location: loc(n),
                time: None,
                parallelism: Some(2),
            })
            .collect();
        status.last_savepoint = status.savepoint_history.last().cloned();
        status.run.as_mut().unwrap().restored_from = Some(loc(1));
        let plan = decide(&observe(&s, &status, running("RUNNING", 2), at(10)));
        let disposed: Vec<_> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Dispose { location } => Some(location.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            disposed,
            vec![loc(2)],
            "savepoint 1 is what the run restored from"
        );
    }
}
