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

/// Leader election among JobManagers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HaConfig {
    /// A directory every JobManager sees: the lock file and the job records live there.
    pub dir: PathBuf,
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

/// Environment variables each role reads, and the (possibly nested) key each sets.
const JM_ENV: &[(&str, &[&str])] = &[
    ("STROM_RPC_ADDRESS", &["rpcAddress"]),
    ("STROM_REST_ADDRESS", &["restAddress"]),
    ("STROM_ADVERTISED_ADDRESS", &["advertisedAddress"]),
    ("STROM_HEARTBEAT_INTERVAL_MS", &["heartbeatIntervalMs"]),
    ("STROM_HEARTBEAT_TIMEOUT_MS", &["heartbeatTimeoutMs"]),
    ("STROM_HA_DIR", &["highAvailability", "dir"]),
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
        } else {
            // Numbers stay numbers, everything else is a string.
            serde_yaml::from_str::<serde_yaml::Value>(&value)
                .ok()
                .filter(|v| v.is_number())
                .unwrap_or(serde_yaml::Value::String(value))
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
        assert_eq!(jm.high_availability.unwrap().dir, PathBuf::from("/tmp/ha"));
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
}
