//! Types shared by the Strom operator and the worker: the engine configuration a job runs with, its
//! defaults and its validation. This crate does no I/O and links no runtime: the operator uses it to
//! check a `FlinkJob` before anything is started, the worker to check the same values at start-up.

use serde::{Deserialize, Serialize};

pub mod crd;
pub mod job;
pub use job::{CheckpointMode, CheckpointSpec, JobSpec, JobSpecError, OutputSpec, RestartSpec};

/// The largest `max_parallelism` a job may use (Flink's limit: 2^15 key groups).
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// The default number of key groups, and so the highest parallelism a job can later be rescaled to.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// What a job does with an input record it cannot read (a malformed CSV line, JSON of the wrong shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum ErrorPolicy {
    /// Fail the job with the record's position and the reason. The default: nothing is lost silently.
    #[default]
    Fail,
    /// Count the record and send it, with the reason, to the job's dead-letter sink.
    DeadLetter,
}

/// Where keyed state lives (Flink's `state.backend.type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackendKind {
    /// Objects on the heap: fastest, bounded by memory.
    #[default]
    Hashmap,
    /// RocksDB on local disk, one instance per operator subtask, incremental checkpoints.
    Rocksdb,
}

/// Engine settings of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EngineConfig {
    /// Default parallelism of operators that do not set their own.
    pub parallelism: u32,
    /// Number of key groups: the unit keyed state is partitioned and rescaled by.
    pub max_parallelism: u32,
    /// Rows per batch that sources aim for.
    pub batch_size: usize,
    /// Batches a channel between two subtasks holds before its producer blocks (backpressure).
    pub channel_capacity: usize,
    /// What happens to malformed input records.
    pub error_policy: ErrorPolicy,
    /// Where keyed state lives.
    pub state_backend: StateBackendKind,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            parallelism: 1,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            batch_size: 4096,
            channel_capacity: 4,
            error_policy: ErrorPolicy::Fail,
            state_backend: StateBackendKind::Hashmap,
        }
    }
}

/// Why an [`EngineConfig`] is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("parallelism must be at least 1")]
    ZeroParallelism,
    #[error("maxParallelism must be between 1 and {UPPER_BOUND_MAX_PARALLELISM}, got {0}")]
    MaxParallelismOutOfRange(u32),
    #[error("parallelism {parallelism} exceeds maxParallelism {max_parallelism}")]
    ParallelismAboveMax {
        parallelism: u32,
        max_parallelism: u32,
    },
    #[error("{field} must be at least 1")]
    Zero { field: &'static str },
}

impl EngineConfig {
    /// Checks the invariants every job relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_parallelism(self.parallelism, self.max_parallelism)?;
        if self.batch_size == 0 {
            return Err(ConfigError::Zero { field: "batchSize" });
        }
        if self.channel_capacity == 0 {
            return Err(ConfigError::Zero {
                field: "channelCapacity",
            });
        }
        Ok(())
    }
}

/// Checks one operator's (or job's) parallelism against the job's number of key groups.
pub fn validate_parallelism(parallelism: u32, max_parallelism: u32) -> Result<(), ConfigError> {
    if max_parallelism == 0 || max_parallelism > UPPER_BOUND_MAX_PARALLELISM {
        return Err(ConfigError::MaxParallelismOutOfRange(max_parallelism));
    }
    if parallelism == 0 {
        return Err(ConfigError::ZeroParallelism);
    }
    if parallelism > max_parallelism {
        return Err(ConfigError::ParallelismAboveMax {
            parallelism,
            max_parallelism,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let config = EngineConfig::default();
        assert_eq!(config.validate(), Ok(()));
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<EngineConfig>(&json).unwrap(), config);
        let partial: EngineConfig = serde_json::from_str(r#"{"parallelism": 4}"#).unwrap();
        assert_eq!(partial.parallelism, 4);
        assert_eq!(partial.max_parallelism, DEFAULT_MAX_PARALLELISM);
    }

    #[test]
    fn rejects_bad_parallelism() {
        assert_eq!(
            validate_parallelism(0, 128),
            Err(ConfigError::ZeroParallelism)
        );
        assert_eq!(
            validate_parallelism(200, 128),
            Err(ConfigError::ParallelismAboveMax {
                parallelism: 200,
                max_parallelism: 128
            })
        );
        assert_eq!(
            validate_parallelism(1, 0),
            Err(ConfigError::MaxParallelismOutOfRange(0))
        );
        assert_eq!(
            validate_parallelism(1, 1 << 16),
            Err(ConfigError::MaxParallelismOutOfRange(1 << 16))
        );
        let policy: ErrorPolicy = serde_json::from_str(r#"{"policy":"dead-letter"}"#).unwrap();
        assert_eq!(policy, ErrorPolicy::DeadLetter);
    }
}
