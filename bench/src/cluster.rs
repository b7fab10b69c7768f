//! `--mode cluster`: the cost of the network. Each job runs three ways on this machine, one after
//! the other: on the embedded runtime (`strom run`), on a JobManager with two TaskManager
//! processes over loopback gRPC (submitted through the REST API, timed from submission to
//! `FINISHED`, so deployment is included), and on Flink's MiniCluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{Args, events_for, run_json, strom_run_to};

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(
    strom: &Path,
    dir: &Path,
    name: &str,
    role: &str,
    config: &Value,
) -> anyhow::Result<Child> {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, serde_json::to_string(config)?)?;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    Command::new(strom)
        .arg(role)
        .arg("--config")
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting the {role}"))
}

fn get(url: &str) -> Option<Value> {
    let mut r = ureq::get(url).call().ok()?;
    r.body_mut().read_json().ok()
}

fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if started.elapsed() > limit {
            bail!("gave up waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Peak resident memory of a process so far, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) fn compare(args: &Args, strom: &Path, flink: &Path) -> anyhow::Result<()> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("strom-bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (rpc, rest) = (
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
    );
    let mut processes = Processes(Vec::new());
    processes.0.push(spawn(
        strom,
        &dir,
        "jm",
        "jobmanager",
        &json!({"rpcAddress": rpc, "restAddress": rest}),
    )?);
    for tm in ["tm-1", "tm-2"] {
        processes.0.push(spawn(
            strom,
            &dir,
            tm,
            "taskmanager",
            &json!({
                "id": tm,
                "rpcAddress": format!("127.0.0.1:{}", free_port()?),
                "slots": args.parallelism,
                "jobmanagers": [rpc],
                "localDir": dir.join(tm),
            }),
        )?);
    }
    let tm_pids: Vec<u32> = processes.0[1..].iter().map(Child::id).collect();
    wait_for("two TaskManagers", Duration::from_secs(60), || {
        get(&format!("http://{rest}/v1/overview")).filter(|o| o["taskmanagers"] == 2)
    })?;

    println!(
        "{:<15} {:>11} {:>14} {:>14} {:>14} {:>9} {:>9} {:>12}",
        "job",
        "events",
        "embedded ev/s",
        "cluster ev/s",
        "flink ev/s",
        "cl/emb",
        "cl/flink",
        "TM peak MiB"
    );
    for (n, job) in args.jobs.iter().enumerate() {
        let events = events_for(args, job);
        // Both Strom runs discard their results (the cluster has no checksum sink across
        // processes); Flink computes its checksum as in the compare mode.
        let embedded = strom_run_to(args, strom, job, None, "discard")?;

        let mut spec = json!({
            "name": job,
            "events": events,
            "engine": {"parallelism": args.parallelism, "stateBackend": args.strom_state},
        });
        if job != "windowed-count" {
            spec["seed"] = json!(0);
            spec["eventsPerSecond"] = json!(args.events_per_second);
        }
        let id = format!("bench-{n}");
        let started = Instant::now();
        let mut response = ureq::post(&format!("http://{rest}/v1/jobs?id={id}"))
            .send_json(&spec)
            .with_context(|| format!("submitting {job}"))?;
        let _: Value = response.body_mut().read_json()?;
        let end = wait_for(&format!("{job} to end"), Duration::from_secs(3600), || {
            get(&format!("http://{rest}/v1/jobs/{id}")).filter(|j| {
                matches!(
                    j["state"].as_str(),
                    Some("FINISHED" | "FAILED" | "CANCELED")
                )
            })
        })?;
        let seconds = started.elapsed().as_secs_f64();
        if end["state"] != "FINISHED" {
            bail!(
                "{job} on the cluster ended {}: {}",
                end["state"],
                end["failure"]
            );
        }
        let cluster_rate = events as f64 / seconds;

        let mut f = Command::new("bash");
        f.arg(flink).arg(job).arg("--state").arg(&args.flink_state);
        f.arg("--events")
            .arg(events.to_string())
            .arg("--parallelism")
            .arg(args.parallelism.to_string());
        if job != "windowed-count" {
            f.arg("--seed")
                .arg("0")
                .arg("--events-per-second")
                .arg(args.events_per_second.to_string());
        }
        let flink_result = run_json(&mut f, &format!("flink {job}"))?;
        let tm_peak = tm_pids.iter().map(|p| peak_rss_kib(*p)).max().unwrap_or(0);
        println!(
            "{:<15} {:>11} {:>14.0} {:>14.0} {:>14.0} {:>8.2}x {:>8.2}x {:>12.0}",
            job,
            events,
            embedded.events_per_sec,
            cluster_rate,
            flink_result.events_per_sec,
            cluster_rate / embedded.events_per_sec,
            cluster_rate / flink_result.events_per_sec,
            tm_peak as f64 / 1024.0,
        );
    }
    println!(
        "(parallelism {}: the cluster spreads it over 2 TaskManager processes, one subtask of each vertex per process, so every keyed or rebalanced edge crosses loopback gRPC for half its records; cluster time runs from REST submission to FINISHED; both Strom runs discard their results, Flink checksums them; TM peak is the larger TaskManager's high-water mark so far)",
        args.parallelism
    );
    Ok(())
}
