//! The distributed runtime: a JobManager and TaskManagers as separate processes of the one worker
//! binary, connected over gRPC (tonic).
//!
//! - [`jobmanager`]: the dispatcher and a job master per job (scheduling into TaskManager slots,
//!   failover from the latest checkpoint, the checkpoint coordinator), heartbeats, the REST API
//!   ([`rest`]) and leader election ([`ha`]).
//! - [`taskmanager`]: registers its slots, runs the subtasks deployed to it on the same task code
//!   as the embedded runtime, uploads their state at checkpoints and reports to the JobManager.
//! - [`exchange`]: the data plane; one gRPC stream per remote channel with credit-based flow
//!   control.
//!
//! What a job is comes from [`strom_api::JobSpec`]; [`job_graph`] turns one into a dataflow the
//! same way on the JobManager (for the plan) and on every TaskManager (for the tasks).

pub mod config;
pub mod exchange;
pub mod ha;
pub mod jobmanager;
pub mod metrics;
pub mod rest;
pub mod taskmanager;

#[allow(clippy::all, missing_docs, unreachable_pub)]
pub(crate) mod proto {
    tonic::include_proto!("strom.cluster");
}

use std::sync::Arc;

use strom_api::{CheckpointMode, JobSpec, OutputSpec};

use crate::checkpoint::alignment::Mode;
use crate::checkpoint::coordinator::CheckpointConfig;
use crate::checkpoint::s3::{S3Config, S3Store};
use crate::checkpoint::storage::{SnapshotRef, resolve_snapshot};
use crate::checkpoint::store::{CheckpointStore, LocalStore};
use crate::connectors::two_phase::ExactlyOnceFileSink;
use crate::error::{Error, Result};
use crate::jobs::{self, JobArgs, JobOutput};
use crate::plan::LogicalGraph;
use crate::runtime::checkpointing::CheckpointOptions;
use crate::stream::StreamEnv;

/// Where committed result files (JSON lines) go inside an `output.kind: files` location.
pub const RESULTS_DIR: &str = "results";

/// Opens a storage location: `s3://bucket/prefix` (endpoint and credentials from `STROM_S3_ENDPOINT`
/// or `AWS_ENDPOINT_URL`, and the SDK's `AWS_*` variables), `file:///path` or a plain directory.
pub fn open_store(location: &str) -> Result<Arc<dyn CheckpointStore>> {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Storage(format!("{location}: no bucket")));
        }
        let endpoint = std::env::var("STROM_S3_ENDPOINT")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .ok();
        let config = S3Config {
            endpoint,
            region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
            bucket: bucket.to_owned(),
            prefix: prefix.trim_end_matches('/').to_owned(),
            ..S3Config::default()
        };
        return Ok(Arc::new(S3Store::new(config)?));
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    if path.is_empty() {
        return Err(Error::Storage("an empty storage location".into()));
    }
    Ok(Arc::new(LocalStore::new(path)))
}

/// The dataflow of a job spec (the same on every process that builds it): a built-in job, or a
/// Flink SQL script planned as `strom sql` plans a file.
pub fn job_graph(spec: &JobSpec) -> Result<LogicalGraph> {
    if let Some(script) = &spec.sql {
        return sql_graph(spec, script);
    }
    let output = match &spec.output {
        OutputSpec::Print => JobOutput::Print,
        OutputSpec::Discard => JobOutput::Discard,
        OutputSpec::Files { path } => {
            JobOutput::ExactlyOnce(ExactlyOnceFileSink::new(open_store(path)?, RESULTS_DIR))
        }
    };
    let env = StreamEnv::new(spec.label(), spec.engine.clone());
    let args = JobArgs {
        events: spec.events.unwrap_or(JobArgs::default().events),
        seed: spec.seed,
        events_per_second: spec.events_per_second,
        rate_limit: spec.rate_limit,
        sink_rate_limit: spec.sink_rate_limit,
    };
    jobs::build(&env, spec.label(), &args, &output)?;
    env.build()
}

/// A SQL script's dataflow. The spec's parallelism wins over the script's
/// `SET 'parallelism.default'`: it is what the slots were sized for (a `FlinkJob`'s
/// `job.parallelism`, which `kubectl scale` changes). `EXPLAIN` statements are left out. A
/// script that does not plan is an [`Error::Plan`] of the operator `sql` whose message names the
/// line and column.
fn sql_graph(spec: &JobSpec, script: &str) -> Result<LogicalGraph> {
    let failed = |e: crate::sql::SqlError| Error::plan("sql", e.to_string());
    let planned = crate::sql::plan_script(script).map_err(failed)?;
    if let Some((_, value)) = planned
        .settings
        .iter()
        .rev()
        .find(|(key, _)| key == "parallelism.default")
        && value.trim() != spec.engine.parallelism.to_string()
    {
        tracing::warn!(
            set = %value,
            parallelism = spec.engine.parallelism,
            "the script's SET 'parallelism.default' is overridden by the job's parallelism"
        );
    }
    let env = StreamEnv::new(spec.label(), spec.engine.clone());
    crate::sql::compile::compile(&planned, &env).map_err(failed)?;
    env.build()
}

/// Checkpointing of a job spec, with its store opened.
pub fn checkpoint_options(spec: &JobSpec) -> Result<Option<CheckpointOptions>> {
    let Some(c) = &spec.checkpoints else {
        return Ok(None);
    };
    Ok(Some(CheckpointOptions {
        config: CheckpointConfig {
            interval_ms: c.interval_ms,
            timeout_ms: c.timeout_ms,
            max_concurrent: 1,
            min_pause_ms: 0,
        },
        mode: match c.mode {
            CheckpointMode::ExactlyOnce => Mode::ExactlyOnce,
            CheckpointMode::AtLeastOnce => Mode::AtLeastOnce,
            CheckpointMode::Unaligned => Mode::Unaligned,
        },
        store: open_store(&c.storage)?,
        retain: c.retain,
    }))
}

/// The snapshot named by `restoreFrom` (`<dir>` in the job's checkpoint storage, or
/// `<storage>#<dir>`), and its location as TaskManagers are told it. The dir `latest` is resolved
/// here, once per attempt, to the newest complete checkpoint of that storage.
pub fn restore_from(spec: &JobSpec) -> Result<Option<(SnapshotRef, String)>> {
    let Some(r) = &spec.restore_from else {
        return Ok(None);
    };
    let (storage, dir) = match r.split_once('#') {
        Some((storage, dir)) => (Some(storage), dir),
        None => (None, r.as_str()),
    };
    let (store, name) = match (storage, &spec.checkpoints) {
        (Some(storage), _) => (open_store(storage)?, storage),
        (None, Some(c)) => (open_store(&c.storage)?, c.storage.as_str()),
        (None, None) => {
            return Err(Error::Restore(format!(
                "restoreFrom '{r}' needs checkpoints.storage or a '<storage>#<dir>' location"
            )));
        }
    };
    let snapshot = resolve_snapshot(&store, name, dir)?;
    let location = match storage {
        Some(storage) => format!("{storage}#{}", snapshot.dir),
        None => snapshot.dir.clone(),
    };
    Ok(Some((snapshot, location)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SCRIPT: &str = "SET 'parallelism.default' = '4';
CREATE TABLE src (x BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '10',
  'fields.x.kind' = 'sequence', 'fields.x.start' = '1', 'fields.x.end' = '10');
CREATE TABLE out (x BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT x FROM src WHERE x > 3;
";

    #[test]
    fn a_sql_job_is_its_script_planned_at_the_specs_parallelism() {
        let mut spec = JobSpec::sql(SCRIPT);
        spec.engine.parallelism = 3;
        let graph = job_graph(&spec).unwrap();
        assert_eq!(graph.name, "sql");
        assert!(graph.nodes.len() >= 3, "{:?}", graph.nodes.len());
        assert!(
            graph.nodes.iter().all(|n| n.parallelism <= 3),
            "SET 'parallelism.default' = '4' won over the spec's 3"
        );
        assert!(graph.nodes.iter().any(|n| n.parallelism == 3));
    }

    #[test]
    fn a_script_that_does_not_plan_is_a_planning_error_with_line_and_column() {
        let broken = SCRIPT.replace("INSERT INTO out SELECT", "INSERT INTO out SELEC");
        let e = job_graph(&JobSpec::sql(&broken)).unwrap_err().to_string();
        assert!(e.contains("operator 'sql'"), "{e}");
        assert!(e.contains("SQL error at line 5, column 17"), "{e}");
        let unknown = SCRIPT.replace("FROM src", "FROM nowhere");
        let e = job_graph(&JobSpec::sql(&unknown)).unwrap_err().to_string();
        assert!(e.contains("SQL error at line 5, column 1"), "{e}");
        assert!(e.contains("no table or view named nowhere"), "{e}");
    }
}
