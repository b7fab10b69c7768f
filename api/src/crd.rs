//! The `FlinkJob` custom resource (`strom.dev/v1alpha1`, short name `fj`): what a user applies, and
//! the status the operator reports. The CRD is generated from these types (`crdgen` → `crds/`), with
//! a scale subresource on the job's parallelism, printer columns, and CEL rules for the invariants
//! the schema alone cannot state. The pod template is a free-form object (not the full PodSpec
//! schema) so that the CRD stays small enough for `kubectl apply`.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::DEFAULT_MAX_PARALLELISM;

/// A streaming job the operator runs on a JobManager and TaskManagers.
// Printer columns repeat `type_ = "string"`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "strom.dev",
    version = "v1alpha1",
    kind = "FlinkJob",
    namespaced,
    shortname = "fj",
    status = "FlinkJobStatus",
    derive = "PartialEq",
    doc = "A streaming job run by the Strom operator on a JobManager and TaskManagers.",
    scale(
        spec_replicas_path = ".spec.job.parallelism",
        status_replicas_path = ".status.parallelism"
    ),
    printcolumn(name = "State", type_ = "string", json_path = ".status.lifecycleState"),
    printcolumn(
        name = "Parallelism",
        type_ = "integer",
        json_path = ".status.parallelism"
    ),
    printcolumn(
        name = "Last savepoint",
        type_ = "string",
        json_path = ".status.lastSavepoint.location"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.job.parallelism <= self.job.maxParallelism").message("job.parallelism must not exceed job.maxParallelism (the number of key groups)"),
    validation = Rule::new("self.job.upgradeMode == 'stateless' || has(self.checkpointing)").message("upgradeMode savepoint and last-state need spec.checkpointing (where the snapshots go)"),
    validation = Rule::new("self.job.maxParallelism == oldSelf.job.maxParallelism").message("job.maxParallelism is immutable: state is partitioned into that many key groups"),
    validation = Rule::new("!has(self.savepoints) || has(self.checkpointing)").message("spec.savepoints needs spec.checkpointing (savepoints go to its storage)"),
    validation = Rule::new("has(self.job.name) != has(self.job.sql)").message("exactly one of job.name (a built-in job) and job.sql (a Flink SQL script) must be set")
)]
#[serde(rename_all = "camelCase")]
pub struct FlinkJobSpec {
    /// The worker image.
    #[schemars(length(min = 1))]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    pub job: JobSection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpointing: Option<Checkpointing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoints: Option<Savepoints>,
    #[serde(default)]
    pub job_manager: JobManagerSection,
    #[serde(default)]
    pub task_manager: TaskManagerSection,
    /// Free-form engine settings passed to the job (batchSize, channelCapacity, stateBackend, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "free_form")]
    pub engine: BTreeMap<String, serde_json::Value>,
    /// Changing it restarts the job (with its upgrade mode) without any other change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_nonce: Option<i64>,
    /// Seconds any phase (deploying, a savepoint, stopping, suspending) may take; past it the
    /// resource is `Stalled` with the reason.
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 10, max = 86400))]
    pub progress_deadline_seconds: i64,
    /// When an upgrade does not get its job running within the deadline, run the last spec that
    /// did again, from the snapshot the upgrade took.
    #[serde(default)]
    pub rollback_on_failure: bool,
}

fn default_progress_deadline() -> i64 {
    300
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// What to run and how its state carries over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSection {
    /// A job built into the image (`strom jobs`). Exactly one of `name` and `sql`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub name: Option<String>,
    /// A Flink SQL script (`CREATE TABLE`, `CREATE VIEW`, `SET`, `INSERT INTO`), run as `strom sql`
    /// runs a file; its errors fail the job with their line and column. `job.parallelism` wins over
    /// the script's `SET 'parallelism.default'`. Exactly one of `name` and `sql`. At most 256 KiB
    /// (the status keeps the spec of the run and of the last stable run, within etcd's object size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 262144))]
    pub sql: Option<String>,
    /// Arguments of the built-in job (events, seed, eventsPerSecond, rateLimit, output, ...); of a
    /// SQL job, only `restart`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "free_form")]
    pub args: BTreeMap<String, serde_json::Value>,
    #[schemars(range(min = 1, max = 32768))]
    pub parallelism: i32,
    #[serde(default = "default_max_parallelism")]
    #[schemars(range(min = 1, max = 32768))]
    pub max_parallelism: i32,
    #[serde(default)]
    pub state: DesiredState,
    #[serde(default)]
    pub upgrade_mode: UpgradeMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_savepoint_path: Option<String>,
    #[serde(default)]
    pub allow_non_restored_state: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_policy: Option<RestorePolicy>,
}

fn default_max_parallelism() -> i32 {
    DEFAULT_MAX_PARALLELISM as i32
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DesiredState {
    #[default]
    Running,
    Suspended,
}

/// How a spec change carries the job's state over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeMode {
    /// Start empty.
    Stateless,
    /// Stop with a savepoint and restore it.
    #[default]
    Savepoint,
    /// Restore the latest checkpoint.
    LastState,
}

/// Which snapshot a restart may restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestorePolicy {
    /// A checkpoint older than this is not restored (the upgrade is refused and the job keeps running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_checkpoint_age_seconds: Option<i64>,
}

/// Where checkpoints go and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checkpointing {
    /// `s3://bucket/prefix`.
    #[schemars(regex(pattern = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"))]
    pub storage: String,
    #[serde(default = "default_interval")]
    #[schemars(range(min = 0))]
    pub interval_ms: i64,
    #[serde(default)]
    pub mode: CheckpointModeSpec,
    #[serde(default = "default_retain")]
    #[schemars(range(min = 1, max = 100))]
    pub retain: i32,
    /// The S3 endpoint (self-hosted servers); AWS itself if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// A Secret with `accessKey` and `secretKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

fn default_interval() -> i64 {
    10_000
}
fn default_retain() -> i32 {
    3
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointModeSpec {
    #[default]
    ExactlyOnce,
    AtLeastOnce,
    Unaligned,
}

/// Periodic savepoints and what happens to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Savepoints {
    /// 0: none but those upgrades take.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub interval_seconds: i64,
    #[serde(default = "default_history")]
    #[schemars(range(min = 1, max = 100))]
    pub history: i32,
    #[serde(default)]
    pub dispose_on_delete: bool,
    /// Take a savepoint before the resource is deleted.
    #[serde(default)]
    pub savepoint_on_delete: bool,
}

fn default_history() -> i32 {
    5
}

/// The JobManager pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobManagerSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// 1, or 2 for a standby (leader election on a Lease).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 2))]
    pub replicas: i32,
    /// Merged over the generated pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub pod_template: Option<serde_json::Value>,
}

/// The TaskManager pods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskManagerSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// TaskManagers; by default as many as the parallelism needs at `slots` each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub slots: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub pod_template: Option<serde_json::Value>,
}

fn one() -> i32 {
    1
}

impl Default for JobManagerSection {
    fn default() -> Self {
        Self {
            resources: None,
            replicas: 1,
            pod_template: None,
        }
    }
}

impl Default for TaskManagerSection {
    fn default() -> Self {
        Self {
            resources: None,
            replicas: None,
            slots: 1,
            pod_template: None,
        }
    }
}

/// Requests = limits, as Kubernetes quantities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// What the operator observed and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlinkJobStatus {
    /// kstatus: `Ready`, `Reconciling`, `Stalled`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Deploying, Running, Upgrading, Suspended, Failed, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// As the JobManager reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_state: Option<String>,
    /// The parallelism running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint: Option<Snapshot>,
    #[serde(default)]
    pub savepoint_history: Vec<Snapshot>,
    /// Which snapshot each run restored from (state lineage), oldest first.
    #[serde(default)]
    pub restored_from: Vec<Snapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rescale_downtime_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The run the operator deployed (each upgrade, rescale or resume is a new run with a new
    /// job id and checkpoint prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunStatus>,
    /// Runs started so far (numbers the job ids).
    #[serde(default)]
    pub runs: i64,
    /// A change being carried out: which, and how far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
    /// A periodic savepoint the JobManager is taking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_savepoint: Option<PendingSavepoint>,
    /// What the job resumes from when it is resumed (set when it is suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<String>,
    /// The spec of the last run that reached RUNNING (for `rollbackOnFailure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub last_stable_spec: Option<serde_json::Value>,
}

/// One deployment of the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// The job id (also the name of its checkpoint prefix).
    pub job_id: String,
    /// Hash of the spec this run deploys; a spec with another hash is an upgrade.
    pub spec_hash: String,
    pub parallelism: i32,
    /// When the run was deployed (RFC 3339).
    pub started_at: String,
    /// When the job was first seen RUNNING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_at: Option<String>,
    /// The snapshot it restored (`<storage>#<dir>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// Set when this run is a rollback: the spec hash that failed (not retried until the spec
    /// changes again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<String>,
    /// The spec this run deploys.
    #[schemars(schema_with = "free_form")]
    pub spec: serde_json::Value,
}

/// A change in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// upgrade, rescale, restart, suspend or delete.
    pub kind: String,
    /// How the state carries over: stateless, savepoint or last-state.
    pub mode: UpgradeMode,
    /// stopping, then deploying.
    pub phase: String,
    /// When it began (RFC 3339).
    pub started_at: String,
    /// When the current phase began.
    pub phase_started_at: String,
    /// The stop-with-savepoint request, once triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When the old job was seen stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// What the next run restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<String>,
    pub from_parallelism: i32,
}

/// A savepoint being taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingSavepoint {
    pub request_id: String,
    pub job_id: String,
    pub triggered_at: String,
}

/// A kstatus condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A savepoint or checkpoint by location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn the_crd_is_small_scalable_and_carries_its_rules() {
        let crd = FlinkJob::crd();
        let json = serde_json::to_string(&crd).unwrap();
        assert!(json.len() < 32 * 1024, "the CRD is {} bytes", json.len());
        let v = &crd.spec.versions[0];
        let scale = v.subresources.as_ref().unwrap().scale.as_ref().unwrap();
        assert_eq!(scale.spec_replicas_path, ".spec.job.parallelism");
        assert_eq!(scale.status_replicas_path, ".status.parallelism");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["fj".to_owned()][..])
        );
        for rule in [
            "self.job.parallelism <= self.job.maxParallelism",
            "self.job.maxParallelism == oldSelf.job.maxParallelism",
            "has(self.checkpointing)",
            "has(self.job.name) != has(self.job.sql)",
        ] {
            assert!(json.contains(rule), "{rule} missing");
        }
        assert!(json.contains("x-kubernetes-preserve-unknown-fields"));
    }

    #[test]
    fn a_minimal_spec_gets_its_defaults() {
        let spec: FlinkJobSpec = serde_json::from_value(serde_json::json!({
            "image": "strom/worker:dev",
            "job": {"name": "q5", "parallelism": 2}
        }))
        .unwrap();
        assert_eq!(spec.job.max_parallelism, 128);
        assert_eq!(spec.job.upgrade_mode, UpgradeMode::Savepoint);
        assert_eq!(spec.job.state, DesiredState::Running);
        assert_eq!(spec.task_manager.slots, 1);
        assert_eq!(spec.job_manager.replicas, 1);
        assert_eq!(spec.job.name.as_deref(), Some("q5"));
        assert_eq!(spec.job.sql, None);
        let sql: FlinkJobSpec = serde_json::from_value(serde_json::json!({
            "image": "strom/worker:dev",
            "job": {"sql": "INSERT INTO out SELECT * FROM src;", "parallelism": 2}
        }))
        .unwrap();
        assert_eq!(sql.job.name, None);
        let json = serde_json::to_value(&sql).unwrap();
        assert!(json["job"].get("name").is_none(), "{json}");
    }
}
