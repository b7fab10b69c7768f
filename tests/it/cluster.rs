//! The distributed runtime as separate processes on loopback: the `strom` binary's `jobmanager`
//! and `taskmanager` roles, started by the tests, driven and observed through the REST API.
//!
//! - Exactly-once through failures: one JobManager (with a standby) and three TaskManagers run the
//!   Nexmark windows-and-join job into the exactly-once file sink; a TaskManager and later the
//!   leading JobManager are killed with SIGKILL mid-run; the committed output equals the
//!   brute-force reference exactly.
//! - Backpressure across processes: a throttled sink behind a network edge; the records in flight
//!   stay within what credit-based flow control allows and no process's memory grows.
//! - The REST API against `docs/openapi.yaml`.
//!
//! The binary is the one `cargo build --bins` puts next to the test executable (CI builds it
//! before the tests).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strom::checkpoint::store::{CheckpointStore, LocalStore};
use strom::connectors::two_phase::ExactlyOnceFileSink;
use strom_tests::eo;

/// The `strom` binary of this build.
fn strom_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-<hash> -> target/<profile>/strom
    let bin = exe.parent().unwrap().parent().unwrap().join("strom");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --bins)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Processes of one test, killed when it ends however it ends.
struct Cluster {
    dir: PathBuf,
    processes: BTreeMap<String, Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in self.processes.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct JobManagerAddr {
    rpc: String,
    rest: String,
}

impl Cluster {
    fn new(name: &str) -> Self {
        let dir = eo::temp_dir(&format!("cluster-{name}"));
        Self {
            dir,
            processes: BTreeMap::new(),
        }
    }

    fn spawn(&mut self, name: &str, role: &str, config: &str) {
        let file = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&file, config).unwrap();
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(strom_binary())
            .arg(role)
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.processes.insert(name.to_owned(), child);
    }

    /// Starts a JobManager; `job` (a spec, as JSON) runs in application mode with id "job".
    fn jobmanager(&mut self, name: &str, ha: Option<&Path>, job: Option<&Value>) -> JobManagerAddr {
        let addr = JobManagerAddr {
            rpc: format!("127.0.0.1:{}", free_port()),
            rest: format!("127.0.0.1:{}", free_port()),
        };
        let mut config = json!({
            "rpcAddress": addr.rpc,
            "restAddress": addr.rest,
            "heartbeatIntervalMs": 200,
            "heartbeatTimeoutMs": 2000,
        });
        if let Some(ha) = ha {
            config["highAvailability"] = json!({ "dir": ha });
        }
        if let Some(job) = job {
            config["job"] = job.clone();
        }
        self.spawn(name, "jobmanager", &serde_yaml::to_string(&config).unwrap());
        addr
    }

    fn taskmanager(&mut self, id: &str, jobmanagers: &[&JobManagerAddr], slots: u32) {
        let config = json!({
            "id": id,
            "rpcAddress": format!("127.0.0.1:{}", free_port()),
            "slots": slots,
            "jobmanagers": jobmanagers.iter().map(|j| j.rpc.clone()).collect::<Vec<_>>(),
            "localDir": self.dir.join(format!("{id}-local")),
        });
        self.spawn(id, "taskmanager", &serde_yaml::to_string(&config).unwrap());
    }

    /// SIGKILL: no chance to clean up.
    fn kill(&mut self, name: &str) {
        let mut child = self.processes.remove(name).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn pid(&self, name: &str) -> u32 {
        self.processes[name].id()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for name in self.processes.keys() {
            let text = std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("\n--- {name}\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Polls `probe` every 100 ms until it returns something; gives up (failing with the logs)
    /// after `limit`, a bound on a stuck test, not an expectation of speed.
    fn until<T>(&self, what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(v) = probe() {
                return v;
            }
            assert!(
                started.elapsed() < limit,
                "gave up waiting for {what}{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GET `url`, (status, JSON body); `None` if nothing answers.
fn get(url: &str) -> Option<(u16, Value)> {
    let mut response = agent().get(url).call().ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_json::<Value>().ok()?;
    Some((status, body))
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let mut response = agent().post(url).send_json(body).unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_json::<Value>().unwrap())
}

fn job_of(jm: &JobManagerAddr, id: &str) -> Option<Value> {
    get(&format!("http://{}/v1/jobs/{id}", jm.rest))
        .filter(|(s, _)| *s == 200)
        .map(|(_, v)| v)
}

fn checkpoints_of(jm: &JobManagerAddr, id: &str) -> Option<Value> {
    get(&format!("http://{}/v1/jobs/{id}/checkpoints", jm.rest))
        .filter(|(s, _)| *s == 200)
        .map(|(_, v)| v)
}

const LONG: Duration = Duration::from_secs(240);

#[test]
fn exactly_once_through_a_lost_taskmanager_and_a_lost_leader() {
    let mut cluster = Cluster::new("failover");
    let (ha, storage, output) = (
        cluster.dir.join("ha"),
        cluster.dir.join("checkpoints"),
        cluster.dir.join("output"),
    );
    let bids: u64 = 60_000;
    let job = json!({
        "name": "auction-stats",
        "events": bids,
        // 30 s of event time: three windows, so results are committed along the way.
        "eventsPerSecond": 2_000,
        // Per source subtask: about 12 s of bids.
        "rateLimit": 1_700,
        "engine": {"parallelism": 3, "batchSize": 256},
        "checkpoints": {"storage": storage, "intervalMs": 300, "timeoutMs": 10_000, "retain": 2},
        "restart": {"strategy": "fixed-delay", "attempts": 20, "delayMs": 200},
        "output": {"kind": "files", "path": output},
    });
    let leader = cluster.jobmanager("jm-1", Some(&ha), Some(&job));
    // The leader is up before the standby starts, so that it is the one leading.
    cluster.until("the first JobManager to lead", LONG, || {
        get(&format!("http://{}/v1/overview", leader.rest))
    });
    let standby = cluster.jobmanager("jm-2", Some(&ha), Some(&job));
    for tm in ["tm-1", "tm-2", "tm-3"] {
        cluster.taskmanager(tm, &[&leader, &standby], 2);
    }

    // Running on all three, with checkpoints behind it.
    let running = cluster.until("the job to run on three TaskManagers", LONG, || {
        job_of(&leader, "job").filter(|j| {
            j["state"] == "RUNNING" && j["taskmanagers"].as_array().is_some_and(|t| t.len() == 3)
        })
    });
    assert_eq!(running["parallelism"], 3);
    cluster.until("two checkpoints", LONG, || {
        checkpoints_of(&leader, "job").filter(|c| c["completed"].as_u64() >= Some(2))
    });

    // A TaskManager dies: the job restarts from the latest checkpoint on the other two.
    cluster.kill("tm-3");
    let restarted = cluster.until("a restart on the remaining TaskManagers", LONG, || {
        job_of(&leader, "job").filter(|j| {
            j["state"] == "RUNNING"
                && j["restarts"].as_u64() >= Some(1)
                && j["taskmanagers"].as_array().is_some_and(|t| t.len() == 2)
        })
    });
    assert!(
        !restarted["taskmanagers"]
            .as_array()
            .unwrap()
            .contains(&json!("tm-3"))
    );
    let before = checkpoints_of(&leader, "job").unwrap()["completed"]
        .as_u64()
        .unwrap();
    cluster.until("a checkpoint after the restart", LONG, || {
        checkpoints_of(&leader, "job").filter(|c| c["completed"].as_u64() > Some(before))
    });
    let progress = job_of(&leader, "job").unwrap();
    assert_ne!(progress["state"], "FINISHED", "the run ended too early to test a leader's loss");

    // The leader dies: the standby takes the job over from the latest checkpoint.
    cluster.kill("jm-1");
    let taken_over = cluster.until("the standby to lead and run the job", LONG, || {
        job_of(&standby, "job").filter(|j| j["state"] == "RUNNING")
    });
    assert_eq!(taken_over["attempt"], 1, "{taken_over}");
    let done = cluster.until("the job to finish", LONG, || {
        job_of(&standby, "job").filter(|j| {
            let s = j["state"].as_str().unwrap_or("");
            s == "FINISHED" || s == "FAILED"
        })
    });
    assert_eq!(done["state"], "FINISHED", "{done}");

    let store: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(&output));
    let sink = ExactlyOnceFileSink::new(store.clone(), strom::cluster::RESULTS_DIR);
    let committed = eo::committed(&sink, store.as_ref());
    let expected = eo::reference_with(
        &strom::connectors::nexmark::NexmarkConfig {
            events_per_second: 2_000,
            ..strom::connectors::nexmark::NexmarkConfig::default()
        },
        bids,
        bids / 10,
    );
    assert!(!expected.is_empty());
    eo::assert_same(&committed, &expected);
}
