//! Processes of the distributed runtime for tests: the `strom` binary's `jobmanager` and
//! `taskmanager` roles started on loopback, killed when the test ends, and the REST calls that
//! drive and observe them. Shared by the integration tests (`it/cluster.rs`) and the end-to-end
//! ones that need real processes beside the test bed (`e2e/jm_ha.rs`).
//!
//! The binary is the one `cargo build --bins` puts next to the test executable (CI builds it
//! before the tests).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::eo;

/// The `strom` binary of this build.
pub fn strom_binary() -> PathBuf {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Processes of one test, killed when it ends however it ends.
pub struct Cluster {
    pub dir: PathBuf,
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

pub struct JobManagerAddr {
    pub rpc: String,
    pub rest: String,
}

impl Cluster {
    pub fn new(name: &str) -> Self {
        let dir = eo::temp_dir(&format!("cluster-{name}"));
        Self {
            dir,
            processes: BTreeMap::new(),
        }
    }

    pub fn spawn(&mut self, name: &str, role: &str, config: &str) {
        self.spawn_with(name, role, config, &[]);
    }

    /// Starts `strom ROLE --config <config>` with extra environment variables.
    pub fn spawn_with(&mut self, name: &str, role: &str, config: &str, env: &[(&str, &str)]) {
        let file = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&file, config).unwrap();
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(strom_binary())
            .arg(role)
            .arg("--config")
            .arg(&file)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.processes.insert(name.to_owned(), child);
    }

    /// Starts a JobManager; `job` (a spec, as JSON) runs in application mode with id "job".
    pub fn jobmanager(
        &mut self,
        name: &str,
        ha: Option<&Path>,
        job: Option<&Value>,
    ) -> JobManagerAddr {
        let ha = ha.map(|dir| json!({ "dir": dir }));
        self.jobmanager_with(name, ha.as_ref(), job, &[])
    }

    /// Starts a JobManager with `ha` as its `highAvailability` and extra environment variables.
    pub fn jobmanager_with(
        &mut self,
        name: &str,
        ha: Option<&Value>,
        job: Option<&Value>,
        env: &[(&str, &str)],
    ) -> JobManagerAddr {
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
            config["highAvailability"] = ha.clone();
        }
        if let Some(job) = job {
            config["job"] = job.clone();
        }
        self.spawn_with(
            name,
            "jobmanager",
            &serde_yaml::to_string(&config).unwrap(),
            env,
        );
        addr
    }

    /// Starts a TaskManager; returns the address of its `/metrics`.
    pub fn taskmanager(&mut self, id: &str, jobmanagers: &[&JobManagerAddr], slots: u32) -> String {
        let metrics = format!("127.0.0.1:{}", free_port());
        let config = json!({
            "id": id,
            "rpcAddress": format!("127.0.0.1:{}", free_port()),
            "metricsAddress": metrics,
            "slots": slots,
            "jobmanagers": jobmanagers.iter().map(|j| j.rpc.clone()).collect::<Vec<_>>(),
            "localDir": self.dir.join(format!("{id}-local")),
        });
        self.spawn(id, "taskmanager", &serde_yaml::to_string(&config).unwrap());
        metrics
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self, name: &str) {
        let mut child = self.processes.remove(name).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Whether `name` has exited, and with what status.
    pub fn exited(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        self.processes.get_mut(name)?.try_wait().unwrap()
    }

    /// The whole log of `name`.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    pub fn pid(&self, name: &str) -> u32 {
        self.processes[name].id()
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in self.processes.keys() {
            let text =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
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
    pub fn until<T>(&self, what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
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

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GET `url`, (status, JSON body); `None` if nothing answers.
pub fn get(url: &str) -> Option<(u16, Value)> {
    let mut response = agent().get(url).call().ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_json::<Value>().ok()?;
    Some((status, body))
}

pub fn post(url: &str, body: &Value) -> (u16, Value) {
    let mut response = agent().post(url).send_json(body).unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_json::<Value>().unwrap())
}

pub fn job_of(jm: &JobManagerAddr, id: &str) -> Option<Value> {
    get(&format!("http://{}/v1/jobs/{id}", jm.rest))
        .filter(|(s, _)| *s == 200)
        .map(|(_, v)| v)
}

pub fn checkpoints_of(jm: &JobManagerAddr, id: &str) -> Option<Value> {
    get(&format!("http://{}/v1/jobs/{id}/checkpoints", jm.rest))
        .filter(|(s, _)| *s == 200)
        .map(|(_, v)| v)
}
