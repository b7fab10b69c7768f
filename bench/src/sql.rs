//! `--mode sql`: the Nexmark queries as Flink SQL (`bench/sql/nexmark/`), the same script text on
//! Strom (`strom sql`) and on Flink 2.3 (`bench/flink/run.sh sql`), over the same generated input:
//! both engines read the `nexmark` connector (`tables-generated.sql`), Strom's generator and its
//! Java twin, row for row the same, and write to a `blackhole` sink. Events/s counts the events
//! of every kind the script's tables hold (`events.num`) over each engine's run time. That both
//! engines compute the same rows is what `tests/it/flink_sql.rs` checks, query by query.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::{Args, RunResult, repo_root, run_json};

/// The run of median time (the upper median of an even count), with the largest peak memory of
/// all runs.
fn median(mut runs: Vec<RunResult>) -> RunResult {
    let peak = runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
    runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let mut m = runs.swap_remove(runs.len() / 2);
    m.peak_rss_kib = peak;
    m
}

/// How many events a query reads: the stateless ones more, the regular joins of q4 and q7 (which
/// keep every bid, on both engines) fewer.
fn events_for(args: &Args, query: &str) -> u64 {
    match query {
        "q0" | "q1" | "q2" => args.stateless_events,
        "q4" | "q7" => args.sql_join_events,
        _ => args.windowed_events,
    }
}

/// The script both engines run for `query`: the generated tables, then the query into a
/// blackhole.
fn script(query: &str, events: u64, rate: u64) -> anyhow::Result<String> {
    let dir = repo_root().join("bench/sql/nexmark");
    let read = |name: &str| {
        let path = dir.join(format!("{name}.sql"));
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let text = format!("{}\n\n{}", read("tables-generated")?, read(query)?);
    Ok(text
        .replace("${EVENTS}", &events.to_string())
        .replace("${RATE}", &rate.to_string())
        .replace("${SINK}", "'connector' = 'blackhole'"))
}

pub(crate) fn compare(args: &Args, strom: &Path, flink: &Path) -> anyhow::Result<()> {
    println!(
        "{:<6} {:>11} {:>14} {:>14} {:>7} {:>11} {:>11}",
        "query", "events", "strom ev/s", "flink ev/s", "ratio", "strom MiB", "flink MiB"
    );
    let dir = std::env::temp_dir().join(format!("strom-bench-sql-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut ratios = Vec::new();
    for query in &args.sql_queries {
        let events = events_for(args, query);
        let file = dir.join(format!("{query}.sql"));
        std::fs::write(&file, script(query, events, args.events_per_second)?)?;
        let strom_run = || {
            let mut s = Command::new(strom);
            s.arg("sql").arg(&file).args(["--json", "--quiet"]);
            s.args(["--state-backend", &args.strom_state]);
            s.arg("--parallelism").arg(args.parallelism.to_string());
            run_json(&mut s, &format!("strom sql {query}"))
        };
        let flink_run = || {
            let mut f = Command::new("bash");
            f.arg(flink).arg("sql").arg(&file);
            f.arg("--parallelism").arg(args.parallelism.to_string());
            run_json(&mut f, &format!("flink sql {query}"))
        };
        let (mut strom_runs, mut flink_runs) = (Vec::new(), Vec::new());
        for _ in 0..args.runs.max(1) {
            strom_runs.push(strom_run()?);
            flink_runs.push(flink_run()?);
        }
        let (strom_result, flink_result) = (median(strom_runs), median(flink_runs));
        let (strom_rate, flink_rate) = (
            events as f64 / strom_result.seconds,
            events as f64 / flink_result.seconds,
        );
        ratios.push((query.clone(), strom_rate / flink_rate));
        println!(
            "{:<6} {:>11} {:>14.0} {:>14.0} {:>6.1}x {:>11.0} {:>11.0}",
            query,
            events,
            strom_rate,
            flink_rate,
            strom_rate / flink_rate,
            strom_result.peak_rss_kib as f64 / 1024.0,
            flink_result.peak_rss_kib as f64 / 1024.0,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "({} run(s) per engine and query, median time, largest peak memory; parallelism {}; \
         Strom {} state, Flink 2.3 MiniCluster, heap state, object reuse; \
         events of every kind at {} per event-time second; Strom's time is its whole run, \
         Flink's the job's net run time without planning and MiniCluster start-up)",
        args.runs.max(1),
        args.parallelism,
        args.strom_state,
        args.events_per_second
    );
    Ok(())
}
