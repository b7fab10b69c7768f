//! The `strom` binary: runs a job in the embedded mini-cluster (`strom run`), lists the built-in
//! jobs, and prints a job's physical plan. The JobManager and TaskManager roles join it with the
//! distributed runtime.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use strom::checkpoint::alignment::Mode;
use strom::checkpoint::coordinator::CheckpointConfig;
use strom::checkpoint::storage::SnapshotRef;
use strom::checkpoint::store::{CheckpointStore, LocalStore};
use strom::cluster::config::{JobManagerConfig, RoleConfig, TaskManagerConfig};
use strom::jobs::{self, JobArgs, JobOutput};
use strom::plan::physical;
use strom::runtime::checkpointing::{CheckpointOptions, CheckpointStats};
use strom::runtime::metrics::JobMetrics;
use strom::runtime::recovery::{JobStatus, RestartStrategy, run_with};
use strom::runtime::{RestoreOptions, RunOptions};
use strom::stream::StreamEnv;
use strom::time::{MAX_WATERMARK, MIN_WATERMARK, Timestamp};
use strom::{EngineConfig, ErrorPolicy};
use strom_api::StateBackendKind;

/// mimalloc rather than glibc's malloc: state and window buffers allocate and free many small
/// objects per record.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "strom",
    version,
    about = "Flink's stream processing model, in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a built-in job on the embedded runtime (the `local` role: JobManager and TaskManagers
    /// in this process), showing its progress.
    #[command(alias = "local")]
    Run(RunArgs),
    /// Runs a Flink SQL script (`CREATE TABLE`, `CREATE VIEW`, `SET`, `INSERT INTO`, `SELECT`,
    /// `EXPLAIN`) on the embedded runtime: `strom sql job.sql`. Its sinks are the script's tables.
    Sql(RunArgs),
    /// The JobManager role: schedules jobs into TaskManager slots, coordinates checkpoints,
    /// serves the REST API.
    Jobmanager(RoleArgs),
    /// The TaskManager role: offers slots to the JobManager and runs the tasks deployed to it.
    Taskmanager(RoleArgs),
    /// Lists the built-in jobs.
    Jobs,
    /// Prints a job's physical plan.
    Explain(RunArgs),
}

#[derive(clap::Args)]
struct RoleArgs {
    /// YAML configuration file; `STROM_*` environment variables override what it sets.
    #[arg(long, short)]
    config: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputKind {
    /// Print every result row to stdout.
    Print,
    /// Count the results and checksum them (as the Flink peer does).
    Checksum,
    /// Drop the results.
    Discard,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The job, e.g. `hot-items` (see `strom jobs`); for `strom sql`, the script's file.
    #[arg(value_name = "JOB|FILE")]
    job: String,
    /// The job is a SQL script (`strom sql`, or `strom explain FILE.sql`).
    #[arg(skip)]
    sql: bool,
    /// Input records (bids for Nexmark queries).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Parallelism of every operator.
    #[arg(long, short, default_value_t = 2)]
    parallelism: u32,
    /// Number of key groups (the most the job can be rescaled to).
    #[arg(long, default_value_t = strom_api::DEFAULT_MAX_PARALLELISM)]
    max_parallelism: u32,
    /// Nexmark seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Nexmark event-time rate, events per event-time second.
    #[arg(long, default_value_t = 10_000_000)]
    events_per_second: u64,
    /// Rows per batch.
    #[arg(long, default_value_t = 4096)]
    batch_size: usize,
    /// Where the results go.
    #[arg(long, value_enum, default_value = "print")]
    output: OutputKind,
    /// At the end, print one JSON line with the run's figures to stdout.
    #[arg(long)]
    json: bool,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
    /// Where keyed state lives.
    #[arg(long, value_enum, default_value = "hashmap")]
    state_backend: StateBackendArg,
    /// Take checkpoints into this local directory (enables checkpointing and exactly-once).
    #[arg(long)]
    checkpoint_dir: Option<std::path::PathBuf>,
    /// Milliseconds between checkpoints (0: only the final checkpoint and savepoints).
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// How barriers are handled at operators with several inputs.
    #[arg(long, value_enum, default_value = "exactly-once")]
    checkpointing_mode: ModeArg,
    /// Complete checkpoints kept.
    #[arg(long, default_value_t = 3)]
    retain_checkpoints: usize,
    /// Restore from this checkpoint or savepoint directory (inside --checkpoint-dir, or a path
    /// given as `<store root>:<dir>`).
    #[arg(long)]
    restore: Option<String>,
    /// Drop restored state of operators the job no longer has.
    #[arg(long)]
    allow_non_restored_state: bool,
    /// Restart a failed job from its latest checkpoint up to this many times (fixed delay).
    #[arg(long, default_value_t = 0)]
    restart_attempts: u32,
    /// Milliseconds between a failure and the restart.
    #[arg(long, default_value_t = 1000)]
    restart_delay_ms: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum StateBackendArg {
    Hashmap,
    Rocksdb,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    ExactlyOnce,
    AtLeastOnce,
    Unaligned,
}

impl RunArgs {
    fn run_options(&self) -> anyhow::Result<RunOptions> {
        let mut options = RunOptions::default();
        if let Some(dir) = &self.checkpoint_dir {
            let store: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(dir));
            options.checkpoints = Some(CheckpointOptions {
                config: CheckpointConfig {
                    interval_ms: self.checkpoint_interval_ms,
                    ..CheckpointConfig::default()
                },
                mode: match self.checkpointing_mode {
                    ModeArg::ExactlyOnce => Mode::ExactlyOnce,
                    ModeArg::AtLeastOnce => Mode::AtLeastOnce,
                    ModeArg::Unaligned => Mode::Unaligned,
                },
                store,
                retain: self.retain_checkpoints,
            });
            options.local_dir = Some(dir.join(".local"));
        }
        if let Some(restore) = &self.restore {
            let (store, dir): (Arc<dyn CheckpointStore>, String) = match restore.split_once(':') {
                Some((root, dir)) => (Arc::new(LocalStore::new(root)), dir.to_owned()),
                None => match &self.checkpoint_dir {
                    Some(root) => (Arc::new(LocalStore::new(root)), restore.clone()),
                    None => bail!("--restore needs --checkpoint-dir or <store root>:<dir>"),
                },
            };
            options.restore = Some(RestoreOptions {
                snapshot: SnapshotRef { store, dir },
                allow_non_restored_state: self.allow_non_restored_state,
            });
        }
        Ok(options)
    }

    fn env(&self, output: &JobOutput) -> anyhow::Result<StreamEnv> {
        let config = EngineConfig {
            parallelism: self.parallelism,
            max_parallelism: self.max_parallelism,
            batch_size: self.batch_size,
            error_policy: ErrorPolicy::Fail,
            state_backend: match self.state_backend {
                StateBackendArg::Hashmap => StateBackendKind::Hashmap,
                StateBackendArg::Rocksdb => StateBackendKind::Rocksdb,
            },
            ..EngineConfig::default()
        };
        config.validate().context("invalid engine configuration")?;
        if self.sql {
            return sql_env(&self.job, config);
        }
        let env = StreamEnv::new(&self.job, config);
        let args = JobArgs {
            events: self.events,
            seed: self.seed,
            events_per_second: self.events_per_second,
            rate_limit: None,
            sink_rate_limit: None,
        };
        jobs::build(&env, &self.job, &args, output)?;
        Ok(env)
    }
}

/// A SQL script's job: `SET 'parallelism.default'` overrides `--parallelism`; `EXPLAIN`s are
/// printed.
fn sql_env(file: &str, mut config: EngineConfig) -> anyhow::Result<StreamEnv> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let script = strom::sql::plan_script(&text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    for (key, value) in &script.settings {
        if key == "parallelism.default" {
            config.parallelism = value
                .parse()
                .with_context(|| format!("{file}: SET '{key}' = '{value}'"))?;
        }
    }
    for text in strom::sql::compile::explain(&script, &config)
        .map_err(|e| anyhow::anyhow!("{file}: {e}"))?
    {
        println!("{text}");
    }
    let name = std::path::Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("sql");
    let env = StreamEnv::new(name, config);
    strom::sql::compile::compile(&script, &env).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    Ok(env)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The cluster roles are services: they log what they do unless told otherwise.
    let default_filter = match cli.command {
        Command::Jobmanager(_) | Command::Taskmanager(_) => "info",
        _ => "error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Jobmanager(role) => {
            let config = JobManagerConfig::load(role.config.as_deref())?;
            let runtime = service_runtime()?;
            let result = runtime.block_on(strom::cluster::jobmanager::run(config));
            // Job masters may still be blocked on the runtime (leadership lost): don't wait.
            runtime.shutdown_background();
            result?;
            Ok(())
        }
        Command::Taskmanager(role) => {
            let config = TaskManagerConfig::load(role.config.as_deref())?;
            service_runtime()?.block_on(strom::cluster::taskmanager::run(config))?;
            Ok(())
        }
        Command::Jobs => {
            for (name, about) in jobs::JOBS {
                println!("{name:<16} {about}");
            }
            Ok(())
        }
        Command::Explain(mut args) => {
            args.sql = args.job.ends_with(".sql");
            let graph = args.env(&JobOutput::Discard)?.build()?;
            print!("{}", physical::explain(&graph, &physical::plan(&graph)?));
            Ok(())
        }
        Command::Run(args) => run(&args),
        Command::Sql(mut args) => {
            args.sql = true;
            run(&args)
        }
    }
}

fn service_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn format_watermark(w: Timestamp) -> String {
    match w {
        MIN_WATERMARK => "-".into(),
        MAX_WATERMARK => "end".into(),
        w => {
            let secs = w.div_euclid(1000);
            let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            let (y, m, d) = civil_from_days(days);
            format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                w.rem_euclid(1000)
            )
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn progress_line(
    metrics: &JobMetrics,
    sinks: &[usize],
    started: Instant,
    last: &mut (u64, Instant),
) -> String {
    let now = Instant::now();
    let records = metrics.source_records();
    let rate = (records - last.0) as f64 / now.duration_since(last.1).as_secs_f64().max(1e-3);
    *last = (records, now);
    format!(
        "[{:>6.1}s] {:>12} records  {:>8.2} M records/s  watermark {}",
        started.elapsed().as_secs_f64(),
        records,
        rate / 1e6,
        format_watermark(metrics.output_watermark(sinks))
    )
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let output = match args.output {
        // A SQL script's results go to its own sinks.
        _ if args.sql => JobOutput::Discard,
        OutputKind::Print => JobOutput::Print,
        OutputKind::Discard => JobOutput::Discard,
        OutputKind::Checksum => JobOutput::Checksum(jobs::checksum_for(&args.job)?),
    };
    let env = args.env(&output)?;
    let graph = env.build()?;
    if !args.quiet {
        eprintln!("job '{}' on the embedded runtime:", args.job);
        eprint!("{}", physical::explain(&graph, &physical::plan(&graph)?));
    }
    let started = Instant::now();
    let status = Arc::new(JobStatus::default());
    let strategy = if args.restart_attempts > 0 {
        RestartStrategy::FixedDelay {
            attempts: args.restart_attempts,
            delay_ms: args.restart_delay_ms,
        }
    } else {
        RestartStrategy::None
    };
    let tty = std::io::stderr().is_terminal();
    let mut last = (0u64, started);
    let mut ticks = 0u32;
    let mut watched: Option<(Arc<JobMetrics>, Arc<CheckpointStats>)> = None;
    let result = run_with(&graph, &args.run_options()?, strategy, &status, |job| {
        let metrics = Arc::clone(job.metrics());
        let sinks = job.sink_tasks().to_vec();
        // Checked often: the run's time is measured when this returns, so a coarse poll would
        // round short runs up (a 0.1 s poll made a 0.12 s run take 0.2 s).
        while !job.is_finished() {
            std::thread::sleep(Duration::from_millis(2));
            ticks += 1;
            if !args.quiet && ticks.is_multiple_of(500) {
                let line = progress_line(&metrics, &sinks, started, &mut last);
                if tty {
                    eprint!("\r{line}");
                } else {
                    eprintln!("{line}");
                }
                let _ = std::io::stderr().flush();
            }
        }
        watched = Some((metrics, job.checkpoints().clone()));
    });
    if status.restarts() > 0 && !args.quiet {
        eprintln!(
            "restarted {} times from the latest checkpoint; last failure: {}",
            status.restarts(),
            status.last_failure().unwrap_or_default()
        );
    }
    result?;
    let (metrics, checkpoints) = watched.context("the job never started")?;
    let seconds = started.elapsed().as_secs_f64();
    let records = metrics.source_records();
    if !args.quiet {
        if tty {
            eprintln!();
        }
        eprintln!(
            "done: {records} records in {seconds:.2}s ({:.2} M records/s), peak memory {} MiB",
            records as f64 / seconds / 1e6,
            peak_rss_kib() / 1024
        );
    }
    if metrics.malformed_records() > 0 {
        eprintln!(
            "{} malformed records went to the dead-letter output",
            metrics.malformed_records()
        );
    }
    if args.json {
        let (results, checksum) = match &output {
            JobOutput::Checksum(c) => (Some(c.rows()), Some(c.checksum())),
            _ => (None, None),
        };
        let line = serde_json::json!({
            "engine": "strom",
            "job": args.job,
            "events": records,
            "seconds": seconds,
            "events_per_sec": records as f64 / seconds,
            "results": results,
            "checksum": checksum,
            "peak_rss_kib": peak_rss_kib(),
            "parallelism": args.parallelism,
            "state": match args.state_backend {
                StateBackendArg::Hashmap => "hashmap",
                StateBackendArg::Rocksdb => "rocksdb",
            },
            "checkpoints": checkpoints.history().iter().map(|c| serde_json::json!({
                "id": c.id,
                "bytes_written": c.bytes_written,
                "full_size": c.full_size,
                "duration_ms": c.duration_ms,
            })).collect::<Vec<_>>(),
            "checkpoints_failed": checkpoints.failed(),
            "restarts": status.restarts(),
            "last_failure": status.last_failure(),
        });
        println!("{line}");
    }
    if records == 0 && args.events > 0 && args.restore.is_none() && !args.sql {
        bail!("the job read no input");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_render_as_utc() {
        assert_eq!(
            format_watermark(1_700_000_000_000),
            "2023-11-14T22:13:20.000Z"
        );
        assert_eq!(format_watermark(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_watermark(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
