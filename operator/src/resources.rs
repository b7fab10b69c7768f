//! What a run of a `FlinkJob` looks like in Kubernetes: the ConfigMap with the JobManager's and the
//! TaskManagers' configuration (the job spec of issue 5 inside), the JobManager Deployment and
//! Service, the TaskManager Deployment. Pure functions of the spec and the run; the controller
//! applies them with server-side apply.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::ObjectMeta;
use serde_json::{Value, json};
use strom_api::crd::{CheckpointModeSpec, FlinkJobSpec, PullPolicy};
use strom_api::{EngineConfig, JobSpec};

/// Ports (a Service's port equals its target port).
pub const RPC_PORT: u16 = 6123;
pub const REST_PORT: u16 = 8081;
pub const TM_RPC_PORT: u16 = 6122;
pub const TM_METRICS_PORT: u16 = 9249;
/// Where the ConfigMap is mounted.
const CONFIG_DIR: &str = "/etc/strom";
/// Writable scratch space (an emptyDir; the root filesystem is read-only): RocksDB's local files.
const SCRATCH_DIR: &str = "/var/lib/strom";
/// The non-root user of the images.
const USER: i64 = 65532;
/// Longest FlinkJob name the derived names (`<name>-jobmanager`, a DNS label) allow.
pub const MAX_NAME: usize = 45;

/// Arguments a built-in job takes (`job.args`).
const JOB_ARGS: &[&str] = &[
    "events",
    "seed",
    "eventsPerSecond",
    "rateLimit",
    "sinkRateLimit",
    "output",
    "restart",
];

/// The arguments of `job.args` a SQL job takes (its inputs and outputs are its tables).
const SQL_JOB_ARGS: &[&str] = &["restart"];

/// A spec the API server accepted but that cannot run; the resource is `Stalled` with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// The identity of one FlinkJob.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
}

impl Target<'_> {
    pub fn jobmanager(&self) -> String {
        format!("{}-jobmanager", self.name)
    }
    pub fn taskmanager(&self) -> String {
        format!("{}-taskmanager", self.name)
    }
    pub fn config(&self) -> String {
        format!("{}-config", self.name)
    }
    /// The JobManager's REST endpoint, by Service name.
    pub fn rest_url(&self) -> String {
        format!(
            "http://{}.{}:{REST_PORT}",
            self.jobmanager(),
            self.namespace
        )
    }
    /// The Lease the JobManagers elect a leader on.
    pub fn leader_lease(&self) -> String {
        format!("{}-jobmanager-leader", self.name)
    }
    fn owner(&self) -> Value {
        json!([{
            "apiVersion": "strom.dev/v1alpha1",
            "kind": "FlinkJob",
            "name": self.name,
            "uid": self.uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }])
    }
    fn labels(&self, component: &str) -> Value {
        json!({
            "app.kubernetes.io/name": "strom",
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": "strom-operator",
        })
    }
    fn meta(&self, name: String, component: &str) -> Value {
        json!({
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(component),
            "ownerReferences": self.owner(),
        })
    }
}

/// One deployment of the job: its id and what it restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run<'a> {
    pub job_id: &'a str,
    pub restore_from: Option<&'a str>,
}

/// Where a run's checkpoints and savepoints go: a prefix of its own under the spec's storage, so
/// that a new run never picks up another run's checkpoints.
pub fn run_storage(spec: &FlinkJobSpec, job_id: &str) -> Option<String> {
    spec.checkpointing
        .as_ref()
        .map(|c| format!("{}/{job_id}", c.storage.trim_end_matches('/')))
}

/// A stable hash of everything that, changed, needs a new run (not `job.state`, savepoint
/// settings, deadlines or the restore policy).
pub fn spec_hash(spec: &FlinkJobSpec) -> String {
    let mut deployed = spec.clone();
    deployed.job.state = Default::default();
    deployed.job.initial_savepoint_path = None;
    deployed.job.restore_policy = None;
    deployed.savepoints = None;
    deployed.progress_deadline_seconds = 0;
    deployed.rollback_on_failure = false;
    let text = serde_json::to_string(&deployed).unwrap_or_default();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// Whether `a` and `b` differ in the parallelism only (a rescale, not an upgrade).
pub fn only_parallelism_differs(a: &FlinkJobSpec, b: &FlinkJobSpec) -> bool {
    let mut a = a.clone();
    a.job.parallelism = b.job.parallelism;
    a.task_manager.replicas = b.task_manager.replicas;
    spec_hash(&a) == spec_hash(b)
}

/// TaskManagers a spec runs: as given, or enough slots for the parallelism.
pub fn taskmanagers(spec: &FlinkJobSpec) -> i32 {
    let slots = spec.task_manager.slots.max(1);
    spec.task_manager
        .replicas
        .unwrap_or((spec.job.parallelism + slots - 1) / slots)
}

/// What the API server's schema cannot check.
pub fn validate(target: &Target<'_>, spec: &FlinkJobSpec) -> Result<(), InvalidSpec> {
    if target.name.len() > MAX_NAME {
        return Err(InvalidSpec(format!(
            "metadata.name is {} characters; at most {MAX_NAME} leave room for the derived names",
            target.name.len()
        )));
    }
    let slots = taskmanagers(spec) * spec.task_manager.slots;
    if slots < spec.job.parallelism {
        return Err(InvalidSpec(format!(
            "parallelism {} needs {} slots; taskManager.replicas × slots gives {slots}",
            spec.job.parallelism, spec.job.parallelism
        )));
    }
    job_spec(
        target,
        spec,
        &Run {
            job_id: "check",
            restore_from: None,
        },
    )
    .map(|_| ())
}

/// The job spec the JobManager runs (issue 5's `JobSpec`) for a run of a FlinkJob.
pub fn job_spec(
    _target: &Target<'_>,
    spec: &FlinkJobSpec,
    run: &Run<'_>,
) -> Result<JobSpec, InvalidSpec> {
    let mut job = serde_json::Map::new();
    for (key, value) in &spec.job.args {
        if !JOB_ARGS.contains(&key.as_str()) {
            return Err(InvalidSpec(format!(
                "job.args.{key} is not an argument of a built-in job (they are {})",
                JOB_ARGS.join(", ")
            )));
        }
        if spec.job.sql.is_some() && !SQL_JOB_ARGS.contains(&key.as_str()) {
            return Err(InvalidSpec(format!(
                "job.args.{key} is an argument of built-in jobs; a SQL job reads and writes the \
                 tables its script declares (its arguments are {})",
                SQL_JOB_ARGS.join(", ")
            )));
        }
        job.insert(key.clone(), value.clone());
    }
    if let Some(name) = &spec.job.name {
        job.insert("name".into(), json!(name));
    }
    if let Some(sql) = &spec.job.sql {
        job.insert("sql".into(), json!(sql));
    }
    let mut engine = serde_json::to_value(EngineConfig::default())
        .map_err(|e| InvalidSpec(format!("engine: {e}")))?;
    if let Some(defaults) = engine.as_object_mut() {
        for (key, value) in &spec.engine {
            if !defaults.contains_key(key) || key == "parallelism" || key == "maxParallelism" {
                return Err(InvalidSpec(format!(
                    "engine.{key} is not an engine setting here (they are {}; parallelism and \
                     maxParallelism are set under job)",
                    defaults
                        .keys()
                        .filter(|k| *k != "parallelism" && *k != "maxParallelism")
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            defaults.insert(key.clone(), value.clone());
        }
        defaults.insert("parallelism".into(), json!(spec.job.parallelism));
        defaults.insert("maxParallelism".into(), json!(spec.job.max_parallelism));
    }
    job.insert("engine".into(), engine);
    if let (Some(c), Some(storage)) = (&spec.checkpointing, run_storage(spec, run.job_id)) {
        job.insert(
            "checkpoints".into(),
            json!({
                "storage": storage,
                "intervalMs": c.interval_ms,
                "mode": match c.mode {
                    CheckpointModeSpec::ExactlyOnce => "exactly-once",
                    CheckpointModeSpec::AtLeastOnce => "at-least-once",
                    CheckpointModeSpec::Unaligned => "unaligned",
                },
                "retain": c.retain,
            }),
        );
    }
    if let Some(r) = run.restore_from {
        job.insert("restoreFrom".into(), json!(r));
    }
    job.insert(
        "allowNonRestoredState".into(),
        json!(spec.job.allow_non_restored_state),
    );
    let job: JobSpec = serde_json::from_value(Value::Object(job))
        .map_err(|e| InvalidSpec(format!("job.args: {e}")))?;
    job.validate()
        .map_err(|e| InvalidSpec(format!("job: {e}")))?;
    Ok(job)
}

/// The ConfigMap: `jobmanager.yaml` and `taskmanager.yaml` (addresses come from the pods' env).
pub fn config_map(
    target: &Target<'_>,
    spec: &FlinkJobSpec,
    run: &Run<'_>,
) -> Result<ConfigMap, InvalidSpec> {
    let job = job_spec(target, spec, run)?;
    let mut jm = json!({ "jobId": run.job_id, "job": job });
    if spec.job_manager.replicas > 1 {
        jm["highAvailability"] = json!({
            "lease": { "name": target.leader_lease(), "namespace": target.namespace },
        });
    }
    let tm = json!({
        "slots": spec.task_manager.slots,
        "jobmanagers": [format!("{}:{RPC_PORT}", target.jobmanager())],
        "localDir": SCRATCH_DIR,
    });
    let yaml = |v: &Value| serde_yaml::to_string(v).map_err(|e| InvalidSpec(e.to_string()));
    Ok(ConfigMap {
        metadata: from_json(target.meta(target.config(), "config"))?,
        data: Some(BTreeMap::from([
            ("jobmanager.yaml".to_owned(), yaml(&jm)?),
            ("taskmanager.yaml".to_owned(), yaml(&tm)?),
        ])),
        ..ConfigMap::default()
    })
}

/// The JobManager's Service: RPC for TaskManagers, REST for the operator. Only ready (leading)
/// JobManagers are behind it.
pub fn jobmanager_service(target: &Target<'_>) -> Result<Service, InvalidSpec> {
    from_json(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": target.meta(target.jobmanager(), "jobmanager"),
        "spec": {
            "selector": {
                "app.kubernetes.io/instance": target.name,
                "app.kubernetes.io/component": "jobmanager",
            },
            "ports": [
                { "name": "rpc", "port": RPC_PORT, "targetPort": RPC_PORT },
                { "name": "rest", "port": REST_PORT, "targetPort": REST_PORT },
            ],
        },
    }))
}

/// The JobManager Deployment (replicas 1, or 2 with a standby).
pub fn jobmanager_deployment(
    target: &Target<'_>,
    spec: &FlinkJobSpec,
    run: &Run<'_>,
    config_hash: &str,
) -> Result<Deployment, InvalidSpec> {
    let mut env = pod_env();
    env.extend([
        json!({"name": "STROM_RPC_ADDRESS", "value": format!("$(POD_IP):{RPC_PORT}")}),
        json!({"name": "STROM_REST_ADDRESS", "value": format!("$(POD_IP):{REST_PORT}")}),
    ]);
    env.extend(storage_env(spec));
    let container = json!({
        "name": "jobmanager",
        "args": ["jobmanager", "--config", format!("{CONFIG_DIR}/jobmanager.yaml")],
        "ports": [
            { "name": "rpc", "containerPort": RPC_PORT },
            { "name": "rest", "containerPort": REST_PORT },
        ],
        "env": env,
        "readinessProbe": {
            "httpGet": { "path": "/v1/overview", "port": REST_PORT },
            "periodSeconds": 2,
            "failureThreshold": 2,
        },
    });
    let pod = pod_template(
        target,
        spec,
        "jobmanager",
        container,
        spec.job_manager.resources.as_ref(),
        spec.job_manager.pod_template.as_ref(),
        run,
        config_hash,
    );
    deployment(
        target,
        target.jobmanager(),
        "jobmanager",
        spec.job_manager.replicas,
        pod,
    )
}

/// The TaskManager Deployment.
pub fn taskmanager_deployment(
    target: &Target<'_>,
    spec: &FlinkJobSpec,
    run: &Run<'_>,
    config_hash: &str,
) -> Result<Deployment, InvalidSpec> {
    let mut env = pod_env();
    env.extend([
        json!({"name": "STROM_TASK_MANAGER_ID", "value": "$(POD_NAME)"}),
        json!({"name": "STROM_RPC_ADDRESS", "value": format!("$(POD_IP):{TM_RPC_PORT}")}),
        json!({"name": "STROM_METRICS_ADDRESS", "value": format!("$(POD_IP):{TM_METRICS_PORT}")}),
    ]);
    env.extend(storage_env(spec));
    let container = json!({
        "name": "taskmanager",
        "args": ["taskmanager", "--config", format!("{CONFIG_DIR}/taskmanager.yaml")],
        "ports": [
            { "name": "rpc", "containerPort": TM_RPC_PORT },
            { "name": "metrics", "containerPort": TM_METRICS_PORT },
        ],
        "env": env,
        "readinessProbe": {
            "tcpSocket": { "port": TM_RPC_PORT },
            "periodSeconds": 2,
        },
    });
    let pod = pod_template(
        target,
        spec,
        "taskmanager",
        container,
        spec.task_manager.resources.as_ref(),
        spec.task_manager.pod_template.as_ref(),
        run,
        config_hash,
    );
    deployment(
        target,
        target.taskmanager(),
        "taskmanager",
        taskmanagers(spec),
        pod,
    )
}

fn pod_env() -> Vec<Value> {
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("POD_IP", "status.podIP"),
    ]
}

/// The S3 endpoint and credentials of the checkpoint storage.
fn storage_env(spec: &FlinkJobSpec) -> Vec<Value> {
    let mut env = Vec::new();
    let Some(c) = &spec.checkpointing else {
        return env;
    };
    if let Some(endpoint) = &c.endpoint {
        env.push(json!({"name": "STROM_S3_ENDPOINT", "value": endpoint}));
    }
    if let Some(secret) = &c.credentials_secret {
        for (var, key) in [
            ("AWS_ACCESS_KEY_ID", "accessKey"),
            ("AWS_SECRET_ACCESS_KEY", "secretKey"),
        ] {
            env.push(json!({
                "name": var,
                "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
            }));
        }
    }
    env
}

#[allow(clippy::too_many_arguments)]
fn pod_template(
    target: &Target<'_>,
    spec: &FlinkJobSpec,
    component: &str,
    mut container: Value,
    resources: Option<&strom_api::crd::Resources>,
    user: Option<&Value>,
    run: &Run<'_>,
    config_hash: &str,
) -> Value {
    container["image"] = json!(spec.image);
    if let Some(p) = spec.image_pull_policy {
        container["imagePullPolicy"] = json!(match p {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        });
    }
    if let Some(r) = resources {
        let mut amounts = serde_json::Map::new();
        if let Some(cpu) = &r.cpu {
            amounts.insert("cpu".into(), json!(cpu));
        }
        if let Some(memory) = &r.memory {
            amounts.insert("memory".into(), json!(memory));
        }
        container["resources"] = json!({ "requests": amounts, "limits": amounts });
    }
    container["volumeMounts"] = json!([
        { "name": "config", "mountPath": CONFIG_DIR, "readOnly": true },
        { "name": "scratch", "mountPath": SCRATCH_DIR },
    ]);
    container["securityContext"] = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
    });
    let mut labels = target.labels(component);
    labels["strom.dev/job-id"] = json!(run.job_id);
    let mut pod = json!({
        "metadata": {
            "labels": labels,
            "annotations": { "strom.dev/config-hash": config_hash },
        },
        "spec": {
            "containers": [container],
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": USER,
                "runAsGroup": USER,
                "fsGroup": USER,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "terminationGracePeriodSeconds": 10,
            "volumes": [
                { "name": "config", "configMap": { "name": target.config() } },
                { "name": "scratch", "emptyDir": {} },
            ],
        },
    });
    if let Some(sa) = &spec.service_account {
        pod["spec"]["serviceAccountName"] = json!(sa);
    }
    if let Some(user) = user {
        merge(&mut pod, user);
    }
    pod
}

fn deployment(
    target: &Target<'_>,
    name: String,
    component: &str,
    replicas: i32,
    pod: Value,
) -> Result<Deployment, InvalidSpec> {
    from_json(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": target.meta(name, component),
        "spec": {
            "replicas": replicas,
            // A new run never overlaps the old one: its pods go first.
            "strategy": { "type": "Recreate" },
            "selector": { "matchLabels": {
                "app.kubernetes.io/instance": target.name,
                "app.kubernetes.io/component": component,
            }},
            "template": pod,
        },
    }))
}

/// Merges `over` into `base` the way users expect of a pod template: objects key by key, lists
/// of named objects (containers, volumes, env, ports, volumeMounts) by name, anything else
/// replaced.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if o.iter().chain(b.iter()).all(named) => {
            for item in o {
                match b.iter_mut().find(|x| x.get("name") == item.get("name")) {
                    Some(existing) => merge(existing, item),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn named(v: &Value) -> bool {
    v.get("name").is_some_and(Value::is_string)
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, InvalidSpec> {
    serde_json::from_value(v).map_err(|e| InvalidSpec(format!("podTemplate: {e}")))
}

/// The hash of a ConfigMap's data (its change rolls the pods).
pub fn config_hash(cm: &ConfigMap) -> String {
    let text = serde_json::to_string(&cm.data).unwrap_or_default();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// Every object of a run, in the order they are applied.
pub struct Objects {
    pub config: ConfigMap,
    pub service: Service,
    pub jobmanager: Deployment,
    pub taskmanager: Deployment,
}

pub fn objects(
    target: &Target<'_>,
    spec: &FlinkJobSpec,
    run: &Run<'_>,
) -> Result<Objects, InvalidSpec> {
    let config = config_map(target, spec, run)?;
    let hash = config_hash(&config);
    Ok(Objects {
        service: jobmanager_service(target)?,
        jobmanager: jobmanager_deployment(target, spec, run, &hash)?,
        taskmanager: taskmanager_deployment(target, spec, run, &hash)?,
        config,
    })
}

/// Metadata only (for deletes and lookups).
pub fn meta_of(target: &Target<'_>, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(target.namespace.to_owned()),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spec(v: Value) -> FlinkJobSpec {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> Value {
        json!({
            "image": "strom.test/strom:dev",
            "job": {"name": "auction-stats", "parallelism": 3,
                    "args": {"events": 1000, "output": {"kind": "files", "path": "s3://out/x"}}},
            "checkpointing": {"storage": "s3://ckpt/jobs", "endpoint": "http://127.0.0.1:9000",
                              "credentialsSecret": "s3"},
            "taskManager": {"slots": 2},
        })
    }

    const T: Target<'static> = Target {
        name: "fj",
        namespace: "ns",
        uid: "u-1",
    };

    #[test]
    fn a_run_becomes_a_job_spec_with_its_own_checkpoint_prefix() {
        let s = spec(base());
        let run = Run {
            job_id: "fj-1",
            restore_from: Some("s3://ckpt/jobs/fj-0#savepoints/savepoint-0000000004"),
        };
        let job = job_spec(&T, &s, &run).unwrap();
        assert_eq!(job.name.as_deref(), Some("auction-stats"));
        assert_eq!(job.sql, None);
        assert_eq!(job.events, Some(1000));
        assert_eq!(job.engine.parallelism, 3);
        assert_eq!(job.engine.max_parallelism, 128);
        assert_eq!(job.checkpoints.unwrap().storage, "s3://ckpt/jobs/fj-1");
        assert_eq!(job.restore_from.as_deref(), run.restore_from);
        assert_eq!(taskmanagers(&s), 2, "3 subtasks at 2 slots each");
    }

    #[test]
    fn specs_that_cannot_run_are_refused_with_the_reason() {
        let mut v = base();
        v["job"]["args"]["colour"] = json!("red");
        assert!(
            validate(&T, &spec(v))
                .unwrap_err()
                .0
                .contains("job.args.colour")
        );
        let mut v = base();
        v["engine"] = json!({"parallelism": 4});
        assert!(
            validate(&T, &spec(v))
                .unwrap_err()
                .0
                .contains("engine.parallelism")
        );
        let mut v = base();
        v["taskManager"]["replicas"] = json!(1);
        assert!(
            validate(&T, &spec(v))
                .unwrap_err()
                .0
                .contains("needs 3 slots")
        );
        let mut v = base();
        v["job"]["args"]["events"] = json!("many");
        assert!(validate(&T, &spec(v)).unwrap_err().0.contains("job.args"));
        assert!(validate(&T, &spec(base())).is_ok());
    }

    #[test]
    fn a_sql_job_carries_its_script_and_takes_no_built_in_arguments() {
        let script = "CREATE TABLE t (x INT) WITH ('connector' = 'datagen');";
        let mut v = base();
        v["job"] = json!({"sql": script, "parallelism": 2,
                          "args": {"restart": {"strategy": "none"}}});
        let s = spec(v.clone());
        let run = Run {
            job_id: "fj-1",
            restore_from: None,
        };
        let job = job_spec(&T, &s, &run).unwrap();
        assert_eq!(job.sql.as_deref(), Some(script));
        assert_eq!(job.name, None);
        assert_eq!(job.engine.parallelism, 2);
        assert_eq!(job.restart, strom_api::RestartSpec::None);
        let cm = config_map(&T, &s, &run).unwrap().data.unwrap();
        let jm: Value = serde_yaml::from_str(&cm["jobmanager.yaml"]).unwrap();
        assert_eq!(jm["job"]["sql"], script);
        assert!(jm["job"].get("name").is_none(), "{jm}");

        v["job"]["args"] = json!({"output": {"kind": "print"}});
        let e = validate(&T, &spec(v.clone())).unwrap_err().0;
        assert!(
            e.contains("job.args.output is an argument of built-in jobs"),
            "{e}"
        );
        // Both or neither (what the CRD's rule refuses, should it be missing).
        v["job"]["args"] = json!({});
        v["job"]["name"] = json!("q5");
        let e = validate(&T, &spec(v.clone())).unwrap_err().0;
        assert!(e.contains("not both"), "{e}");
        v["job"] = json!({"parallelism": 2});
        let e = validate(&T, &spec(v)).unwrap_err().0;
        assert!(
            e.contains("needs a built-in job (name) or a Flink SQL script (sql)"),
            "{e}"
        );
    }

    #[test]
    fn the_hash_ignores_what_needs_no_new_run() {
        let a = spec(base());
        let mut b = a.clone();
        b.job.state = strom_api::crd::DesiredState::Suspended;
        b.progress_deadline_seconds = 30;
        assert_eq!(spec_hash(&a), spec_hash(&b));
        b.job.parallelism = 1;
        assert_ne!(spec_hash(&a), spec_hash(&b));
        assert!(only_parallelism_differs(&a, &b));
        b.image = "other".into();
        assert!(!only_parallelism_differs(&a, &b));
        let mut c = a.clone();
        c.restart_nonce = Some(2);
        assert_ne!(spec_hash(&a), spec_hash(&c));
    }

    #[test]
    fn pods_are_locked_down_and_the_template_merges_by_name() {
        let mut v = base();
        v["taskManager"]["podTemplate"] = json!({
            "metadata": {"labels": {"team": "a"}},
            "spec": {
                "containers": [{"name": "taskmanager", "env": [{"name": "RUST_LOG", "value": "debug"}]},
                               {"name": "sidecar", "image": "busybox"}],
                "nodeSelector": {"disk": "ssd"},
            }
        });
        let s = spec(v);
        let run = Run {
            job_id: "fj-1",
            restore_from: None,
        };
        let objs = objects(&T, &s, &run).unwrap();
        let tm = serde_json::to_value(&objs.taskmanager).unwrap();
        let pod = &tm["spec"]["template"];
        assert_eq!(tm["spec"]["replicas"], 2);
        assert_eq!(tm["spec"]["strategy"]["type"], "Recreate");
        assert_eq!(pod["metadata"]["labels"]["team"], "a");
        assert_eq!(pod["metadata"]["labels"]["strom.dev/job-id"], "fj-1");
        assert_eq!(pod["spec"]["nodeSelector"]["disk"], "ssd");
        let containers = pod["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        let tm_c = &containers[0];
        assert_eq!(tm_c["image"], "strom.test/strom:dev");
        let env: Vec<&str> = tm_c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert!(env.contains(&"RUST_LOG") && env.contains(&"AWS_ACCESS_KEY_ID"));
        assert_eq!(tm_c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(tm_c["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
        let jm = serde_json::to_value(&objs.jobmanager).unwrap();
        assert_eq!(jm["metadata"]["ownerReferences"][0]["kind"], "FlinkJob");
        let cm = objs.config.data.unwrap();
        assert!(cm["taskmanager.yaml"].contains("fj-jobmanager:6123"));
        assert!(cm["jobmanager.yaml"].contains("jobId: fj-1"));
        assert!(!cm["jobmanager.yaml"].contains("highAvailability"));
    }
}
