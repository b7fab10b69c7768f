//! `strom-bench`: runs each benchmark job on Strom and on Apache Flink 2.3 with the same input on
//! this machine, one after the other in one run, checks that both computed the same result (row
//! count and checksum), and prints events/s, the ratio Strom/Flink and peak memory of each.
//!
//! Each run is its own process (so peak memory is the job's own); Flink runs on a local MiniCluster
//! through `bench/flink/run.sh`, whose start-up is excluded from its time as Strom's is from Strom's.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::Parser;
use serde::Deserialize;

#[derive(Parser)]
#[command(about = "Strom against Apache Flink, same jobs, same input, same machine")]
struct Args {
    /// Jobs to run (windowed-count, q0, q1, q2, q5, q7).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "windowed-count,q0,q1,q2,q5,q7"
    )]
    jobs: Vec<String>,
    /// Parallelism of both engines.
    #[arg(long, default_value_t = 2)]
    parallelism: u32,
    /// Input records for the windowed count.
    #[arg(long, default_value_t = 50_000_000)]
    count_events: u64,
    /// Bids for the stateless Nexmark queries (q0, q1, q2).
    #[arg(long, default_value_t = 20_000_000)]
    stateless_events: u64,
    /// Bids for the windowed Nexmark queries (q5, q7).
    #[arg(long, default_value_t = 10_000_000)]
    windowed_events: u64,
    /// Nexmark event-time rate for both engines.
    #[arg(long, default_value_t = 1_000_000)]
    events_per_second: u64,
    /// Flink's state backend.
    #[arg(long, default_value = "heap")]
    flink_state: String,
    /// The strom binary (default: next to this one).
    #[arg(long)]
    strom: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct RunResult {
    events: u64,
    seconds: f64,
    events_per_sec: f64,
    results: Option<u64>,
    checksum: Option<u64>,
    peak_rss_kib: u64,
}

fn run_json(command: &mut Command, what: &str) -> anyhow::Result<RunResult> {
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
        "(parallelism {}; Flink 2.3 MiniCluster, {} state; events/s over the job's run excluding process and cluster start-up)",
        args.parallelism, args.flink_state
    );
    if !mismatches.is_empty() {
        bail!("results differ:\n{}", mismatches.join("\n"));
    }
    Ok(())
}
