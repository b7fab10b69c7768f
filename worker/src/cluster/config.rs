//! Configuration of the `jobmanager` and `taskmanager` roles: a YAML file (what the operator mounts
//! from a ConfigMap) overlaid with `STROM_*` environment variables (what it sets per pod), checked
//! before anything starts so that a mistake is one clear line, not a failure later.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strom_api::JobSpec;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The JobManager role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobManagerConfig {
    /// Where the gRPC server for TaskManagers listens.
    #[serde(default = "default_jm_rpc")]
    pub rpc_address: String,
    /// Where the REST API (and `/metrics`) listens.
    #[serde(default = "default_rest")]
    pub rest_address: String,
    /// The gRPC address TaskManagers should use, if not `rpcAddress` (e.g. a Service name).
    #[serde(default)]
    pub advertised_address: Option<String>,
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval_ms: u64,
    /// A TaskManager silent for this long is lost: its tasks fail over.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_ms: u64,
    /// High availability: leader election and the job records a standby takes over.
    #[serde(default)]
    pub high_availability: Option<HaConfig>,
    /// Application mode: the job this JobManager runs (more may come over REST).
    #[serde(default)]
    pub job: Option<JobSpec>,
    /// The id of `job`; stable across JobManager restarts so that a standby finds its checkpoints.
    #[serde(default = "default_job_id")]
    pub job_id: String,
}

/// Leader election among JobManagers: `{dir}` (a lock file and the job records in a directory
/// every JobManager sees) or `{lease, storage}` (a Kubernetes Lease; job records in a storage
/// location, if given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HaRepr", into = "HaRepr")]
pub enum HaConfig {
    /// An exclusive lock on `<dir>/leader.lock`; job records in `<dir>/jobs/`.
    Dir { dir: PathBuf },
    /// A Kubernetes Lease; job records in `<storage>/jobs/` when `storage` is set (a directory,
    /// `file://` or `s3://` URL), else only the configured job is resumed by a new leader.
    Lease {
        lease: LeaseConfig,
        storage: Option<String>,
    },
}

/// The Lease JobManagers contend for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This JobManager's name in the Lease's `holderIdentity`; unique among the contenders.
    /// Defaults to `POD_NAME`, else `<hostname>-<pid>`.
    #[serde(default)]
    pub identity: Option<String>,
    /// How long the Lease stays valid after the holder last renewed it.
    #[serde(default = "default_lease_duration")]
    pub duration_seconds: u64,
    /// The holder renews this long before the Lease would expire.
    #[serde(default = "default_lease_grace")]
    pub grace_seconds: u64,
}

/// What `highAvailability` looks like in YAML: one mapping, checked into [`HaConfig`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HaRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    storage: Option<String>,
}

impl TryFrom<HaRepr> for HaConfig {
    type Error = String;

    fn try_from(r: HaRepr) -> Result<Self, String> {
        match (r.dir, r.lease, r.storage) {
            (Some(dir), None, None) => Ok(HaConfig::Dir { dir }),
            (None, Some(lease), storage) => Ok(HaConfig::Lease { lease, storage }),
            (Some(_), None, Some(_)) => Err(
                "highAvailability: storage goes with lease; with dir the records live in dir"
                    .into(),
            ),
            (Some(_), Some(_), _) => Err("highAvailability: either dir or lease, not both".into()),
            (None, None, _) => Err("highAvailability needs dir or lease".into()),
        }
    }
}

impl From<HaConfig> for HaRepr {
    fn from(c: HaConfig) -> Self {
        match c {
            HaConfig::Dir { dir } => HaRepr {
                dir: Some(dir),
                lease: None,
                storage: None,
            },
            HaConfig::Lease { lease, storage } => HaRepr {
                dir: None,
                lease: Some(lease),
                storage,
            },
        }
    }
}

impl LeaseConfig {
    /// The configured identity, else `POD_NAME`, else `<hostname>-<pid>`.
    pub fn identity(&self) -> String {
        if let Some(i) = &self.identity {
            return i.clone();
        }
        if let Ok(pod) = std::env::var("POD_NAME")
            && !pod.is_empty()
        {
            return pod;
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "jobmanager".into());
        format!("{host}-{}", std::process::id())
    }

    fn check(&self) -> Result<(), ConfigError> {
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 253
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        if !name_ok(&self.name) {
            return Err(ConfigError::Invalid(format!(
                "highAvailability.lease.name '{}' is not a Kubernetes object name",
                self.name
            )));
        }
        if !name_ok(&self.namespace) {
            return Err(ConfigError::Invalid(format!(
                "highAvailability.lease.namespace '{}' is not a Kubernetes namespace",
                self.namespace
            )));
        }
        if let Some(i) = &self.identity
            && i.trim().is_empty()
        {
            return Err(ConfigError::Invalid(
                "highAvailability.lease.identity must not be empty".into(),
            ));
        }
        if self.grace_seconds == 0 || self.grace_seconds >= self.duration_seconds {
            return Err(ConfigError::Invalid(format!(
                "highAvailability.lease: graceSeconds ({}) must be at least 1 and less than durationSeconds ({})",
                self.grace_seconds, self.duration_seconds
            )));
        }
        Ok(())
    }
}

/// The TaskManager role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskManagerConfig {
    /// Unique among the cluster's TaskManagers (defaults to host name and process id).
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default = "default_tm_rpc")]
    pub rpc_address: String,
    #[serde(default)]
    pub advertised_address: Option<String>,
    /// Where `/metrics` is served; none if unset.
    #[serde(default)]
    pub metrics_address: Option<String>,
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// gRPC addresses of the JobManagers (the leader is whichever accepts the registration).
    #[serde(default)]
    pub jobmanagers: Vec<String>,
    /// Local working directory (state backends, restores).
    #[serde(default)]
    pub local_dir: Option<PathBuf>,
}

fn default_jm_rpc() -> String {
    "127.0.0.1:6123".into()
}
fn default_tm_rpc() -> String {
    "127.0.0.1:6122".into()
}
fn default_rest() -> String {
    "127.0.0.1:8081".into()
}
fn default_heartbeat_interval() -> u64 {
    1000
}
fn default_heartbeat_timeout() -> u64 {
    10_000
}
fn default_job_id() -> String {
    "job".into()
}
fn default_slots() -> u32 {
    1
}
fn default_lease_duration() -> u64 {
    15
}
fn default_lease_grace() -> u64 {
    5
}

/// Environment variables each role reads, and the (possibly nested) key each sets.
const JM_ENV: &[(&str, &[&str])] = &[
    ("STROM_RPC_ADDRESS", &["rpcAddress"]),
    ("STROM_REST_ADDRESS", &["restAddress"]),
    ("STROM_ADVERTISED_ADDRESS", &["advertisedAddress"]),
    ("STROM_HEARTBEAT_INTERVAL_MS", &["heartbeatIntervalMs"]),
    ("STROM_HEARTBEAT_TIMEOUT_MS", &["heartbeatTimeoutMs"]),
    ("STROM_HA_DIR", &["highAvailability", "dir"]),
    (
        "STROM_HA_LEASE_NAME",
        &["highAvailability", "lease", "name"],
    ),
    (
        "STROM_HA_LEASE_NAMESPACE",
        &["highAvailability", "lease", "namespace"],
    ),
    (
        "STROM_HA_IDENTITY",
        &["highAvailability", "lease", "identity"],
    ),
    (
        "STROM_HA_LEASE_DURATION_SECONDS",
        &["highAvailability", "lease", "durationSeconds"],
    ),
    (
        "STROM_HA_LEASE_GRACE_SECONDS",
        &["highAvailability", "lease", "graceSeconds"],
    ),
    ("STROM_HA_STORAGE", &["highAvailability", "storage"]),
    ("STROM_JOB_ID", &["jobId"]),
];

const TM_ENV: &[(&str, &[&str])] = &[
    ("STROM_TASK_MANAGER_ID", &["id"]),
    ("STROM_RPC_ADDRESS", &["rpcAddress"]),
    ("STROM_ADVERTISED_ADDRESS", &["advertisedAddress"]),
    ("STROM_METRICS_ADDRESS", &["metricsAddress"]),
    ("STROM_SLOTS", &["slots"]),
    ("STROM_JOBMANAGERS", &["jobmanagers"]),
    ("STROM_LOCAL_DIR", &["localDir"]),
];

impl RoleConfig for JobManagerConfig {
    const ENV: &'static [(&'static str, &'static [&'static str])] = JM_ENV;

    fn check(&self) -> Result<(), ConfigError> {
        address("rpcAddress", &self.rpc_address)?;
        address("restAddress", &self.rest_address)?;
        if self.heartbeat_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "heartbeatIntervalMs must be at least 1".into(),
            ));
        }
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError::Invalid(format!(
                "heartbeatTimeoutMs ({}) must be larger than heartbeatIntervalMs ({})",
                self.heartbeat_timeout_ms, self.heartbeat_interval_ms
            )));
        }
        if self.job_id.is_empty()
            || !self
                .job_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::Invalid(format!(
                "jobId '{}' must be non-empty letters, digits, '-' and '_'",
                self.job_id
            )));
        }
        if let Some(HaConfig::Lease { lease, .. }) = &self.high_availability {
            lease.check()?;
        }
        if let Some(job) = &self.job {
            job.validate()
                .map_err(|e| ConfigError::Invalid(format!("job: {e}")))?;
        }
        Ok(())
    }
}

impl RoleConfig for TaskManagerConfig {
    const ENV: &'static [(&'static str, &'static [&'static str])] = TM_ENV;

    fn check(&self) -> Result<(), ConfigError> {
        address("rpcAddress", &self.rpc_address)?;
        if let Some(m) = &self.metrics_address {
            address("metricsAddress", m)?;
        }
        if self.slots == 0 {
            return Err(ConfigError::Invalid("slots must be at least 1".into()));
        }
        if self.jobmanagers.is_empty() {
            return Err(ConfigError::Invalid(
                "jobmanagers must name at least one JobManager address (or set STROM_JOBMANAGERS)"
                    .into(),
            ));
        }
        if let Some(id) = &self.id
            && id.trim().is_empty()
        {
            return Err(ConfigError::Invalid("id must not be empty".into()));
        }
        Ok(())
    }
}

impl JobManagerConfig {
    /// The gRPC address TaskManagers use.
    pub fn advertised(&self) -> &str {
        self.advertised_address
            .as_deref()
            .unwrap_or(&self.rpc_address)
    }
}

impl TaskManagerConfig {
    /// The gRPC address other processes use.
    pub fn advertised(&self) -> &str {
        self.advertised_address
            .as_deref()
            .unwrap_or(&self.rpc_address)
    }
}

/// What both roles' configurations share: how they are read and checked.
pub trait RoleConfig: DeserializeOwned {
    /// Environment variables the role reads, and the (possibly nested) key each sets.
    const ENV: &'static [(&'static str, &'static [&'static str])];

    /// Whether the values make sense together (beyond their types).
    fn check(&self) -> Result<(), ConfigError>;

    /// Reads `file` (if any), applies the process's environment, and checks the result.
    fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = load(file, Self::ENV, std::env::vars())?;
        config.check()?;
        Ok(config)
    }

    /// From YAML text and explicit environment (tests).
    fn from_parts(
        yaml: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let config: Self = overlay(yaml, "the configuration", Self::ENV, env)?;
        config.check()?;
        Ok(config)
    }
}

fn address(field: &str, value: &str) -> Result<(), ConfigError> {
    value.parse::<SocketAddr>().map(|_| ()).map_err(|e| {
        ConfigError::Invalid(format!(
            "{field} '{value}' is not an ip:port address to listen on ({e})"
        ))
    })
}

fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    vars: &[(&str, &[&str])],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let (yaml, origin) = match file {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
            path.display().to_string(),
        ),
        None => (String::new(), "the configuration".to_owned()),
    };
    overlay(&yaml, &origin, vars, env)
}

fn overlay<T: DeserializeOwned>(
    yaml: &str,
    origin: &str,
    vars: &[(&str, &[&str])],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let parse = |message: String| ConfigError::Parse {
        origin: origin.to_owned(),
        message,
    };
    let mut root: serde_yaml::Value = if yaml.trim().is_empty() {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        serde_yaml::from_str(yaml).map_err(|e| parse(e.to_string()))?
    };
    if !root.is_mapping() {
        return Err(parse("must be a mapping of settings".into()));
    }
    for (name, value) in env {
        let Some((_, path)) = vars.iter().find(|(v, _)| *v == name) else {
            continue;
        };
        let value = if *path == ["jobmanagers"] {
            serde_yaml::Value::Sequence(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| serde_yaml::Value::String(s.to_owned()))
                    .collect(),
            )
        } else if path
            .last()
            .is_some_and(|k| k.ends_with("Ms") || k.ends_with("Seconds") || *k == "slots")
        {
            // Numbers stay numbers (anything else is refused by the type, with the setting).
            serde_yaml::from_str::<serde_yaml::Value>(&value)
                .ok()
                .filter(|v| v.is_number())
                .unwrap_or(serde_yaml::Value::String(value))
        } else {
            serde_yaml::Value::String(value)
        };
        let mut node = &mut root;
        for (i, key) in path.iter().enumerate() {
            let map = node
                .as_mapping_mut()
                .ok_or_else(|| parse(format!("{} must be a mapping", path[..i].join("."))))?;
            let key = serde_yaml::Value::String((*key).to_owned());
            if i + 1 == path.len() {
                map.insert(key, value.clone());
                break;
            }
            node = map
                .entry(key)
                .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
        }
    }
    serde_yaml::from_value(root).map_err(|e| parse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let tm = TaskManagerConfig::from_parts(
            "slots: 2\njobmanagers: [127.0.0.1:1]\n",
            env(&[
                ("STROM_SLOTS", "4"),
                ("STROM_JOBMANAGERS", "127.0.0.1:2, 127.0.0.1:3"),
                ("STROM_TASK_MANAGER_ID", "tm-a"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(tm.slots, 4);
        assert_eq!(tm.jobmanagers, ["127.0.0.1:2", "127.0.0.1:3"]);
        assert_eq!(tm.id.as_deref(), Some("tm-a"));

        let jm = JobManagerConfig::from_parts(
            "job: {name: q5, engine: {parallelism: 3}}\n",
            env(&[("STROM_HA_DIR", "/tmp/ha"), ("STROM_JOB_ID", "q5-prod")]),
        )
        .unwrap();
        assert_eq!(
            jm.high_availability,
            Some(HaConfig::Dir {
                dir: PathBuf::from("/tmp/ha")
            })
        );
        assert_eq!(jm.job_id, "q5-prod");
        assert_eq!(jm.job.unwrap().engine.parallelism, 3);
    }

    #[test]
    fn mistakes_are_reported_with_the_setting_they_concern() {
        let err = |r: Result<TaskManagerConfig, ConfigError>| r.unwrap_err().to_string();
        assert!(err(TaskManagerConfig::from_parts("slots: 1\n", [])).contains("jobmanagers"));
        assert!(
            err(TaskManagerConfig::from_parts(
                "jobmanagers: [a:1]\nslots: 0\n",
                []
            ))
            .contains("slots")
        );
        assert!(
            err(TaskManagerConfig::from_parts(
                "jobmanagers: [a:1]\nslot: 2\n",
                []
            ))
            .contains("unknown field `slot`")
        );
        assert!(
            err(TaskManagerConfig::from_parts(
                "jobmanagers: [a:1]\nrpcAddress: nowhere\n",
                []
            ))
            .contains("rpcAddress 'nowhere'")
        );
        let jm = JobManagerConfig::from_parts(
            "heartbeatIntervalMs: 500\n",
            env(&[("STROM_HEARTBEAT_TIMEOUT_MS", "400")]),
        );
        assert!(
            jm.unwrap_err()
                .to_string()
                .contains("heartbeatTimeoutMs (400)")
        );
        let jm = JobManagerConfig::from_parts("job: {name: q5, engine: {parallelism: 0}}\n", []);
        assert!(jm.unwrap_err().to_string().contains("job: engine"));
    }

    #[test]
    fn high_availability_is_a_dir_or_a_lease() {
        let ha = |yaml: &str, vars: &[(&str, &str)]| {
            JobManagerConfig::from_parts(yaml, env(vars)).map(|c| c.high_availability)
        };
        assert_eq!(
            ha("highAvailability: {dir: /ha}\n", &[]).unwrap(),
            Some(HaConfig::Dir { dir: "/ha".into() })
        );
        // From the file, defaults filled in.
        let lease = ha(
            "highAvailability: {lease: {name: fj-ha, namespace: jobs}, storage: 's3://b/ha'}\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            lease,
            Some(HaConfig::Lease {
                lease: LeaseConfig {
                    name: "fj-ha".into(),
                    namespace: "jobs".into(),
                    identity: None,
                    duration_seconds: 15,
                    grace_seconds: 5,
                },
                storage: Some("s3://b/ha".into()),
            })
        );
        // From the environment alone (what the operator sets per pod); a numeric-looking
        // identity stays a string.
        let lease = ha(
            "",
            &[
                ("STROM_HA_LEASE_NAME", "fj-ha"),
                ("STROM_HA_LEASE_NAMESPACE", "jobs"),
                ("STROM_HA_IDENTITY", "1234"),
                ("STROM_HA_LEASE_DURATION_SECONDS", "8"),
                ("STROM_HA_LEASE_GRACE_SECONDS", "2"),
            ],
        )
        .unwrap();
        let Some(HaConfig::Lease { lease, storage }) = lease else {
            panic!("{lease:?}")
        };
        assert_eq!(lease.identity(), "1234");
        assert_eq!((lease.duration_seconds, lease.grace_seconds), (8, 2));
        assert_eq!(storage, None);
        // It reads back the way it was written.
        let config = JobManagerConfig::from_parts(
            "highAvailability: {lease: {name: a, namespace: b}, storage: /r}\n",
            [],
        )
        .unwrap();
        let yaml = serde_yaml::to_string(&config).unwrap();
        assert_eq!(JobManagerConfig::from_parts(&yaml, []).unwrap(), config);

        let err = |yaml: &str, vars: &[(&str, &str)]| ha(yaml, vars).unwrap_err().to_string();
        assert!(
            err(
                "highAvailability: {dir: /ha}\n",
                &[
                    ("STROM_HA_LEASE_NAME", "x"),
                    ("STROM_HA_LEASE_NAMESPACE", "y")
                ]
            )
            .contains("either dir or lease, not both")
        );
        assert!(err("highAvailability: {}\n", &[]).contains("needs dir or lease"));
        assert!(
            err("highAvailability: {dir: /ha, storage: /r}\n", &[])
                .contains("storage goes with lease")
        );
        assert!(
            err("highAvailability: {lease: {name: a}}\n", &[])
                .contains("missing field `namespace`")
        );
        assert!(
            err(
                "highAvailability: {lease: {name: a, namespace: b, durationSecs: 3}}\n",
                &[]
            )
            .contains("unknown field `durationSecs`")
        );
        assert!(
            err(
                "highAvailability: {lease: {name: A_b, namespace: b}}\n",
                &[]
            )
            .contains("lease.name 'A_b'")
        );
        assert!(
            err(
                "highAvailability: {lease: {name: a, namespace: b, durationSeconds: 5, graceSeconds: 5}}\n",
                &[]
            )
            .contains("graceSeconds (5)")
        );
    }
}
