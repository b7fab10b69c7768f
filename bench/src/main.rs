//! `strom-bench`: runs each benchmark job on Strom and on Apache Flink 2.3 with the same input on
//! this machine, one after the other in one run, checks that both computed the same result (row
//! count and checksum), and prints events/s, the ratio Strom/Flink and peak memory of each.
//!
//! Each run is its own process (so peak memory is the job's own); Flink runs on a local MiniCluster
//! through `bench/flink/run.sh`, whose start-up is excluded from its time as Strom's is from Strom's.

use std::path::{Path, PathBuf};
use std::process::Command;

mod cluster;
mod sql;

use anyhow::{Context, bail};
use clap::Parser;
use serde::Deserialize;

#[derive(Parser)]
#[command(about = "Strom against Apache Flink, same jobs, same input, same machine")]
pub(crate) struct Args {
    /// Jobs to run (windowed-count, q0, q1, q2, q5, q7).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "windowed-count,q0,q1,q2,q5,q7"
    )]
    pub(crate) jobs: Vec<String>,
    /// Parallelism of both engines.
    #[arg(long, default_value_t = 2)]
    pub(crate) parallelism: u32,
    /// Input records for the windowed count.
    #[arg(long, default_value_t = 50_000_000)]
    pub(crate) count_events: u64,
    /// Bids for the stateless Nexmark queries (q0, q1, q2).
    #[arg(long, default_value_t = 20_000_000)]
    pub(crate) stateless_events: u64,
    /// Bids for the windowed Nexmark queries (q5, q7).
    #[arg(long, default_value_t = 10_000_000)]
    pub(crate) windowed_events: u64,
    /// Nexmark event-time rate for both engines.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) events_per_second: u64,
    /// Flink's state backend.
    #[arg(long, default_value = "heap")]
    pub(crate) flink_state: String,
    /// Strom's state backend (hashmap or rocksdb).
    #[arg(long, default_value = "hashmap")]
    pub(crate) strom_state: String,
    /// What to measure.
    #[arg(long, value_enum, default_value = "compare")]
    pub(crate) mode: Mode,
    /// Checkpoint interval of the checkpoint modes.
    #[arg(long, default_value_t = 1000)]
    pub(crate) checkpoint_interval_ms: u64,
    /// Queries of `--mode sql` (files in bench/sql/nexmark/).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q0,q1,q2,q3,q4,q5,q7,q8,q11"
    )]
    pub(crate) sql_queries: Vec<String>,
    /// Events for the SQL q4 and q7 (regular joins that keep every bid, on both engines).
    #[arg(long, default_value_t = 2_000_000)]
    pub(crate) sql_join_events: u64,
    /// `--mode sql`: runs of each query on each engine, the two engines taking turns; the median
    /// time counts, and the largest peak memory.
    #[arg(long, default_value_t = 1)]
    pub(crate) runs: u32,
    /// The strom binary (default: next to this one).
    #[arg(long)]
    pub(crate) strom: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Each job on Strom and on Flink, same input.
    Compare,
    /// Each job on Strom with checkpoints every --checkpoint-interval-ms against none.
    CheckpointOverhead,
    /// The running count (state growing with the input) on RocksDB with checkpoints: each
    /// checkpoint's uploaded and total size.
    Incremental,
    /// Each job on a JobManager and two TaskManager processes (the distributed runtime over
    /// loopback) against the embedded runtime and against Flink.
    Cluster,
    /// The Nexmark queries as Flink SQL on Strom and on Flink SQL (--sql-queries).
    Sql,
}

#[derive(Debug, Deserialize)]
struct Checkpoint {
    id: u64,
    bytes_written: u64,
    full_size: u64,
    duration_ms: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunResult {
    // Flink's SQL runner reports only its time: `--mode sql` counts the events itself.
    #[serde(default)]
    events: u64,
    seconds: f64,
    #[serde(default)]
    events_per_sec: f64,
    results: Option<u64>,
    checksum: Option<u64>,
    peak_rss_kib: u64,
    #[serde(default)]
    checkpoints: Vec<Checkpoint>,
    #[serde(default)]
    checkpoints_failed: u64,
}

pub(crate) fn run_json(command: &mut Command, what: &str) -> anyhow::Result<RunResult> {
    let output = command
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{what} printed no JSON line:\n{stdout}"))?;
    serde_json::from_str(line).with_context(|| format!("{what} printed {line}"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let strom = match &args.strom {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("strom"),
    };
    let flink = repo_root().join("bench/flink/run.sh");
    match args.mode {
        Mode::Compare => {}
        Mode::CheckpointOverhead => return checkpoint_overhead(&args, &strom),
        Mode::Incremental => return incremental(&args, &strom),
        Mode::Cluster => return cluster::compare(&args, &strom, &flink),
        Mode::Sql => return sql::compare(&args, &strom, &flink),
    }
    println!(
        "{:<15} {:>11} {:>14} {:>14} {:>7} {:>11} {:>11} {:>9}",
        "job", "events", "strom ev/s", "flink ev/s", "ratio", "strom MiB", "flink MiB", "same"
    );
    let mut mismatches = Vec::new();
    for job in &args.jobs {
        let events = match job.as_str() {
            "windowed-count" => args.count_events,
            "q5" | "q7" => args.windowed_events,
            _ => args.stateless_events,
        };
        let common = |c: &mut Command| {
            c.arg("--events")
                .arg(events.to_string())
                .arg("--parallelism")
                .arg(args.parallelism.to_string());
            if job != "windowed-count" {
                c.arg("--seed")
                    .arg("0")
                    .arg("--events-per-second")
                    .arg(args.events_per_second.to_string());
            }
        };
        let mut s = Command::new(&strom);
        s.args(["run", job, "--output", "checksum", "--json", "--quiet"]);
        s.args(["--state-backend", &args.strom_state]);
        common(&mut s);
        let strom_result = run_json(&mut s, &format!("strom {job}"))?;
        let mut f = Command::new("bash");
        f.arg(&flink).arg(job).arg("--state").arg(&args.flink_state);
        common(&mut f);
        let flink_result = run_json(&mut f, &format!("flink {job}"))?;
        let same = strom_result.results == flink_result.results
            && strom_result.checksum == flink_result.checksum;
        if !same {
            mismatches.push(format!(
                "{job}: strom {:?}/{:?} vs flink {:?}/{:?} (rows/checksum)",
                strom_result.results,
                strom_result.checksum,
                flink_result.results,
                flink_result.checksum
            ));
        }
        println!(
            "{:<15} {:>11} {:>14.0} {:>14.0} {:>6.1}x {:>11.0} {:>11.0} {:>9}",
            job,
            strom_result.events,
            strom_result.events_per_sec,
            flink_result.events_per_sec,
            strom_result.events_per_sec / flink_result.events_per_sec,
            strom_result.peak_rss_kib as f64 / 1024.0,
            flink_result.peak_rss_kib as f64 / 1024.0,
            if same { "yes" } else { "NO" },
        );
        let _ = (
            strom_result.seconds,
            flink_result.seconds,
            flink_result.events,
        );
    }
    println!(
        "(parallelism {}; Strom {} state; Flink 2.3 MiniCluster, {} state; events/s over the job's run excluding process and cluster start-up)",
        args.parallelism, args.strom_state, args.flink_state
    );
    if !mismatches.is_empty() {
        bail!("results differ:\n{}", mismatches.join("\n"));
    }
    Ok(())
}

pub(crate) fn events_for(args: &Args, job: &str) -> u64 {
    match job {
        "windowed-count" => args.count_events,
        "q5" | "q7" => args.windowed_events,
        _ => args.stateless_events,
    }
}

pub(crate) fn strom_run(
    args: &Args,
    strom: &Path,
    job: &str,
    checkpoint_dir: Option<&Path>,
) -> anyhow::Result<RunResult> {
    strom_run_to(args, strom, job, checkpoint_dir, "checksum")
}

/// [`strom_run`] with another `--output`.
pub(crate) fn strom_run_to(
    args: &Args,
    strom: &Path,
    job: &str,
    checkpoint_dir: Option<&Path>,
    output: &str,
) -> anyhow::Result<RunResult> {
    let mut s = Command::new(strom);
    s.args(["run", job, "--output", output, "--json", "--quiet"]);
    s.args(["--state-backend", &args.strom_state]);
    s.arg("--events").arg(events_for(args, job).to_string());
    s.arg("--parallelism").arg(args.parallelism.to_string());
    if job != "windowed-count" && job != "running-count" {
        s.args(["--seed", "0", "--events-per-second"])
            .arg(args.events_per_second.to_string());
    }
    if let Some(dir) = checkpoint_dir {
        let _ = std::fs::remove_dir_all(dir);
        s.arg("--checkpoint-dir").arg(dir);
        s.arg("--checkpoint-interval-ms")
            .arg(args.checkpoint_interval_ms.to_string());
    }
    run_json(&mut s, &format!("strom {job}"))
}

fn checkpoint_overhead(args: &Args, strom: &Path) -> anyhow::Result<()> {
    println!(
        "{:<15} {:>11} {:>16} {:>16} {:>7} {:>12} {:>6}",
        "job", "events", "no ckpt ev/s", "ckpt ev/s", "ratio", "checkpoints", "same"
    );
    let dir = std::env::temp_dir().join(format!("strom-bench-ckpt-{}", std::process::id()));
    for job in &args.jobs {
        let plain = strom_run(args, strom, job, None)?;
        let with = strom_run(args, strom, job, Some(&dir))?;
        let same = plain.results == with.results && plain.checksum == with.checksum;
        println!(
            "{:<15} {:>11} {:>16.0} {:>16.0} {:>6.3}x {:>12} {:>6}",
            job,
            plain.events,
            plain.events_per_sec,
            with.events_per_sec,
            with.events_per_sec / plain.events_per_sec,
            with.checkpoints.len(),
            if same { "yes" } else { "NO" }
        );
        if !same || with.checkpoints_failed > 0 {
            bail!(
                "{job}: results differ or checkpoints failed ({} failed)",
                with.checkpoints_failed
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "(parallelism {}; Strom {} state; checkpoints every {} ms to a local directory, exactly-once, aligned)",
        args.parallelism, args.strom_state, args.checkpoint_interval_ms
    );
    Ok(())
}

fn incremental(args: &Args, strom: &Path) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("strom-bench-incr-{}", std::process::id()));
    let mut s = Command::new(strom);
    s.args([
        "run",
        "running-count",
        "--output",
        "discard",
        "--json",
        "--quiet",
    ]);
    s.args(["--state-backend", "rocksdb", "--retain-checkpoints", "2"]);
    s.arg("--events").arg(args.stateless_events.to_string());
    s.arg("--parallelism").arg(args.parallelism.to_string());
    s.arg("--checkpoint-dir").arg(&dir);
    s.arg("--checkpoint-interval-ms")
        .arg(args.checkpoint_interval_ms.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    let result = run_json(&mut s, "strom running-count")?;
    println!(
        "{:>4} {:>14} {:>14} {:>9} {:>12}",
        "id", "uploaded B", "total B", "share", "duration ms"
    );
    for c in &result.checkpoints {
        println!(
            "{:>4} {:>14} {:>14} {:>8.1}% {:>12}",
            c.id,
            c.bytes_written,
            c.full_size,
            100.0 * c.bytes_written as f64 / c.full_size.max(1) as f64,
            c.duration_ms
        );
    }
    let uploaded: u64 = result.checkpoints.iter().map(|c| c.bytes_written).sum();
    let last = result.checkpoints.last().map_or(0, |c| c.full_size);
    let full: u64 = result.checkpoints.iter().map(|c| c.full_size).sum();
    println!(
        "({} events at {:.0} ev/s, RocksDB, parallelism {}, a checkpoint every {} ms; uploaded {} B in all ({:.1}% of the {} B full checkpoints would have uploaded) for a final state of {} B)",
        result.events,
        result.events_per_sec,
        args.parallelism,
        args.checkpoint_interval_ms,
        uploaded,
        100.0 * uploaded as f64 / full.max(1) as f64,
        full,
        last
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
