//! What a job is, as the JobManager accepts it: a built-in job by name with its inputs, or a Flink
//! SQL script; the engine settings, checkpointing, restarts, where the results go and what it
//! restores from. The operator
//! writes the same structure from a `FlinkJob`; the worker's `jobmanager` role reads it from its
//! configuration file or a REST submission.

use serde::{Deserialize, Serialize};

use crate::{ConfigError, EngineConfig};

/// One job: a built-in job (`name`) or a Flink SQL script (`sql`), exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// The built-in job (`strom jobs` lists them), e.g. `q5` or `auction-stats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A Flink SQL script, the text `strom sql FILE` runs: its tables are its inputs and outputs
    /// (the built-in jobs' `events`, `rateLimit`, `output`, ... do not apply). The engine's
    /// parallelism wins over the script's `SET 'parallelism.default'`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
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
    #[error("job sql must not be empty")]
    NoSql,
    #[error("a job is either a built-in job (name) or a Flink SQL script (sql), not both")]
    NameAndSql,
    #[error("a job needs a built-in job (name) or a Flink SQL script (sql)")]
    NeitherNameNorSql,
    #[error("{0} is for built-in jobs; a SQL job reads and writes the tables its script declares")]
    NotForSql(&'static str),
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
    /// A built-in job with defaults for everything but its name.
    pub fn named(name: &str) -> Self {
        Self {
            name: Some(name.to_owned()),
            sql: None,
            ..Self::sql("")
        }
    }

    /// A Flink SQL job with defaults for everything but its script.
    pub fn sql(script: &str) -> Self {
        Self {
            name: None,
            sql: Some(script.to_owned()),
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

    /// What the job is called: the built-in job's name, or `sql` for a SQL script.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("sql")
    }

    /// Checks what can be checked without I/O (a SQL script is planned by the worker, which
    /// reports its errors with line and column).
    pub fn validate(&self) -> Result<(), JobSpecError> {
        match (&self.name, &self.sql) {
            (Some(_), Some(_)) => return Err(JobSpecError::NameAndSql),
            (None, None) => return Err(JobSpecError::NeitherNameNorSql),
            (Some(name), None) if name.trim().is_empty() => return Err(JobSpecError::NoName),
            (None, Some(sql)) if sql.trim().is_empty() => return Err(JobSpecError::NoSql),
            (None, Some(_)) => {
                // What only a built-in job reads (the rest have defaults, so an explicit value
                // cannot be told from none).
                if self.events.is_some() {
                    return Err(JobSpecError::NotForSql("events"));
                }
                if self.rate_limit.is_some() {
                    return Err(JobSpecError::NotForSql("rateLimit"));
                }
                if self.sink_rate_limit.is_some() {
                    return Err(JobSpecError::NotForSql("sinkRateLimit"));
                }
                if self.output != OutputSpec::Discard {
                    return Err(JobSpecError::NotForSql("output"));
                }
            }
            (Some(_), None) => {}
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
        spec.name = Some("q5".into());
        spec.restore_from = Some("savepoints/savepoint-1".into());
        assert_eq!(spec.validate(), Err(JobSpecError::RestoreNeedsStorage));
    }

    #[test]
    fn a_job_is_a_built_in_job_or_a_sql_script_exactly_one() {
        let script = "CREATE TABLE t (x INT) WITH ('connector' = 'datagen');";
        // Either alone is accepted, as JSON too.
        let named: JobSpec = serde_json::from_str(r#"{"name":"q5"}"#).unwrap();
        assert_eq!(named.validate(), Ok(()));
        assert_eq!(named.label(), "q5");
        let sql: JobSpec = serde_json::from_value(serde_json::json!({"sql": script})).unwrap();
        assert_eq!(sql, JobSpec::sql(script));
        assert_eq!(sql.validate(), Ok(()));
        assert_eq!(sql.label(), "sql");
        // Neither is written when absent.
        let json = serde_json::to_value(&sql).unwrap();
        assert!(json.get("name").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<JobSpec>(json).unwrap(), sql);
        assert!(serde_json::to_value(&named).unwrap().get("sql").is_none());

        // Both, or neither, are rejected.
        let mut both = JobSpec::named("q5");
        both.sql = Some(script.into());
        assert_eq!(both.validate(), Err(JobSpecError::NameAndSql));
        let neither: JobSpec = serde_json::from_str(r#"{"engine":{"parallelism":2}}"#).unwrap();
        assert_eq!(neither.validate(), Err(JobSpecError::NeitherNameNorSql));
        assert_eq!(
            JobSpec::sql(" \n").validate(),
            Err(JobSpecError::NoSql),
            "a blank script"
        );

        // A SQL job's inputs and outputs are its tables: the built-in jobs' arguments are errors.
        let mut with_output = JobSpec::sql(script);
        with_output.output = OutputSpec::Print;
        assert_eq!(
            with_output.validate(),
            Err(JobSpecError::NotForSql("output"))
        );
        let mut with_events = JobSpec::sql(script);
        with_events.events = Some(10);
        assert!(
            with_events
                .validate()
                .unwrap_err()
                .to_string()
                .contains("events is for built-in jobs")
        );
        // What applies to every job still does.
        let mut checkpointed = JobSpec::sql(script);
        checkpointed.checkpoints = Some(CheckpointSpec {
            storage: "/tmp/c".into(),
            interval_ms: 100,
            timeout_ms: 1000,
            mode: CheckpointMode::ExactlyOnce,
            retain: 0,
        });
        assert_eq!(checkpointed.validate(), Err(JobSpecError::ZeroRetain));
    }
}
