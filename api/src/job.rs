//! What a job is, as the JobManager accepts it: a built-in job by name with its inputs, the engine
//! settings, checkpointing, restarts, where the results go and what it restores from. The operator
//! writes the same structure from a `FlinkJob`; the worker's `jobmanager` role reads it from its
//! configuration file or a REST submission.

use serde::{Deserialize, Serialize};

use crate::{ConfigError, EngineConfig};

/// One job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// The built-in job (`strom jobs` lists them), e.g. `q5` or `auction-stats`.
    pub name: String,
    /// Input records (bids for the Nexmark jobs); `null` for an unbounded job.
    #[serde(default)]
    pub events: Option<u64>,
    /// Generator seed.
    #[serde(default)]
    pub seed: u64,
    /// Event-time rate of the generators, events per event-time second.
    #[serde(default = "default_events_per_second")]
    pub events_per_second: u64,
    /// Wall-clock rate limit of the sources, records per second over the job (`null`: as fast as
    /// possible).
    #[serde(default)]
    pub rate_limit: Option<u64>,
    #[serde(default)]
    pub sink_rate_limit: Option<u64>,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub checkpoints: Option<CheckpointSpec>,
    #[serde(default)]
    pub restart: RestartSpec,
    #[serde(default)]
    pub output: OutputSpec,
    /// A snapshot to start from: a directory inside the checkpoint storage
    /// (`savepoints/savepoint-0000000042`), or `<storage URL>#<dir>` for another storage. The dir
    /// `latest` is the newest complete checkpoint of that storage when an attempt starts (none:
    /// the attempt fails).
    #[serde(default)]
    pub restore_from: Option<String>,
    /// Drop state of operators the job no longer has instead of refusing to start.
    #[serde(default)]
    pub allow_non_restored_state: bool,
}

fn default_events_per_second() -> u64 {
    10_000_000
}

/// Checkpointing of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSpec {
    /// Where checkpoints and savepoints go: a local directory (`/data/ckpt` or `file:///data/ckpt`)
    /// or `s3://bucket/prefix` (the S3 endpoint and credentials come from the worker's configuration).
    pub storage: String,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub mode: CheckpointMode,
    /// Complete checkpoints kept.
    #[serde(default = "default_retain")]
    pub retain: usize,
}

fn default_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    60_000
}
fn default_retain() -> usize {
    3
}

/// How barriers are handled at tasks with several input channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointMode {
    #[default]
    ExactlyOnce,
    AtLeastOnce,
    Unaligned,
}

/// How a failed job is restarted (from its latest checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "strategy")]
pub enum RestartSpec {
    /// A failure ends the job.
    None,
    #[serde(rename_all = "camelCase")]
    FixedDelay { attempts: u32, delay_ms: u64 },
}

impl Default for RestartSpec {
    fn default() -> Self {
        Self::FixedDelay {
            attempts: 10,
            delay_ms: 1000,
        }
    }
}

/// Where a job's results go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum OutputSpec {
    /// Logged, one line per row.
    Print,
    /// Dropped.
    #[default]
    Discard,
    /// Exactly-once CSV files (two-phase commit on checkpoints) under `path`: a directory, or a
    /// storage URL like the checkpoint storage's. Needs checkpointing.
    Files { path: String },
}

/// Why a [`JobSpec`] is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobSpecError {
    #[error("job name must not be empty")]
    NoName,
    #[error("engine: {0}")]
    Engine(#[from] ConfigError),
    #[error("checkpoints.storage must not be empty")]
    NoStorage,
    #[error("checkpoints.retain must be at least 1")]
    ZeroRetain,
    #[error("output kind files needs checkpoints (exactly-once commits happen on checkpoints)")]
    FilesNeedCheckpoints,
    #[error("restoreFrom needs checkpoints.storage or a '<storage>#<dir>' location")]
    RestoreNeedsStorage,
}

impl JobSpec {
    /// A job with defaults for everything but its name.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            events: None,
            seed: 0,
            events_per_second: default_events_per_second(),
            rate_limit: None,
            sink_rate_limit: None,
            engine: EngineConfig::default(),
            checkpoints: None,
            restart: RestartSpec::default(),
            output: OutputSpec::default(),
            restore_from: None,
            allow_non_restored_state: false,
        }
    }

    /// Checks what can be checked without I/O.
    pub fn validate(&self) -> Result<(), JobSpecError> {
        if self.name.trim().is_empty() {
            return Err(JobSpecError::NoName);
        }
        self.engine.validate()?;
        if let Some(c) = &self.checkpoints {
            if c.storage.trim().is_empty() {
                return Err(JobSpecError::NoStorage);
            }
            if c.retain == 0 {
                return Err(JobSpecError::ZeroRetain);
            }
        }
        if matches!(self.output, OutputSpec::Files { .. }) && self.checkpoints.is_none() {
            return Err(JobSpecError::FilesNeedCheckpoints);
        }
        if let Some(r) = &self.restore_from
            && self.checkpoints.is_none()
            && !r.contains('#')
        {
            return Err(JobSpecError::RestoreNeedsStorage);
        }
        Ok(())
    }

    /// The number of slots the job needs (slot sharing: one slot holds a subtask of every vertex).
    pub fn slots_needed(&self) -> u32 {
        self.engine.parallelism
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_spec_gets_defaults_and_round_trips() {
        let spec: JobSpec = serde_json::from_str(r#"{"name":"q5"}"#).unwrap();
        assert_eq!(spec, JobSpec::named("q5"));
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), spec);
        let full: JobSpec = serde_json::from_str(
            r#"{"name":"auction-stats","events":1000,"engine":{"parallelism":3},
                "checkpoints":{"storage":"/tmp/c","intervalMs":200,"mode":"unaligned"},
                "restart":{"strategy":"fixed-delay","attempts":3,"delayMs":10},
                "output":{"kind":"files","path":"/tmp/out"}}"#,
        )
        .unwrap();
        assert_eq!(full.engine.parallelism, 3);
        assert_eq!(
            full.checkpoints.as_ref().unwrap().mode,
            CheckpointMode::Unaligned
        );
        assert_eq!(full.checkpoints.as_ref().unwrap().retain, 3);
        assert!(full.validate().is_ok());
    }

    #[test]
    fn invalid_specs_say_why() {
        let mut spec = JobSpec::named("q5");
        spec.output = OutputSpec::Files {
            path: "/tmp/x".into(),
        };
        assert_eq!(spec.validate(), Err(JobSpecError::FilesNeedCheckpoints));
        spec.output = OutputSpec::Discard;
        spec.engine.parallelism = 0;
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("parallelism")
        );
        let mut spec = JobSpec::named(" ");
        assert_eq!(spec.validate(), Err(JobSpecError::NoName));
        spec.name = "q5".into();
        spec.restore_from = Some("savepoints/savepoint-1".into());
        assert_eq!(spec.validate(), Err(JobSpecError::RestoreNeedsStorage));
    }
}
