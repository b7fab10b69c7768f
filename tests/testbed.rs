//! The test bed (`tests/testbed/`) as the end-to-end tests see it: a real Kubernetes control plane
//! with the process kubelet, an S3 server and a Kafka broker, all on 127.0.0.1.
//!
//! `TestBed::get()` reads the running test bed's `env` file (`$STROM_TESTBED_RUN/env`, default
//! `/tmp/strom-testbed/env`), starting one with `tests/testbed/up` first when none is running.
//! It stays up after the tests; `tests/testbed/down` stops it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

#[derive(Debug)]
pub struct TestBed {
    run: PathBuf,
    vars: HashMap<String, String>,
}

impl TestBed {
    /// The running test bed, started first if needed. Panics (failing the test) if it cannot start.
    pub fn get() -> &'static TestBed {
        static BED: OnceLock<TestBed> = OnceLock::new();
        BED.get_or_init(|| {
            let run = PathBuf::from(
                std::env::var("STROM_TESTBED_RUN").unwrap_or_else(|_| "/tmp/strom-testbed".into()),
            );
            if run.join("env").exists() && !all_alive(&run) {
                // Left behind by a test bed that did not stop cleanly: clear it, start afresh.
                let status = Command::new(scripts_dir().join("down"))
                    .env("STROM_TESTBED_RUN", &run)
                    .status()
                    .expect("run tests/testbed/down");
                assert!(status.success(), "tests/testbed/down failed: {status}");
            }
            if !run.join("env").exists() {
                let status = Command::new(scripts_dir().join("up"))
                    .env("STROM_TESTBED_RUN", &run)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("run tests/testbed/up");
                assert!(status.success(), "tests/testbed/up failed: {status}");
            }
            let text = std::fs::read_to_string(run.join("env")).expect("read the test bed's env");
            TestBed {
                vars: parse_env(&text),
                run,
            }
        })
    }

    /// A variable from the test bed's env file (`STROM_TESTBED_*`, `KUBECONFIG`, ...).
    pub fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("the test bed's env file has no {name}"))
    }

    pub fn run_dir(&self) -> &Path {
        &self.run
    }

    /// `kubectl` against the test bed, as the admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(Path::new(self.var("STROM_TESTBED_BIN")).join("kubectl"));
        cmd.env("KUBECONFIG", self.var("KUBECONFIG"));
        cmd
    }

    /// `helm` against the test bed, as the admin.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(Path::new(self.var("STROM_TESTBED_BIN")).join("helm"));
        cmd.env("KUBECONFIG", self.var("KUBECONFIG"))
            .env("HELM_CACHE_HOME", self.run.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.run.join("helm/config"))
            .env("HELM_DATA_HOME", self.run.join("helm/data"));
        cmd
    }

    /// A Kubernetes client for the admin user.
    pub async fn kube(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.var("KUBECONFIG"))
            .expect("read the test bed's kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kube config from the test bed's kubeconfig");
        kube::Client::try_from(config).expect("kube client")
    }

    /// Runs a test-bed script (`tests/testbed/NAME ARGS...`) against this run dir; panics on failure.
    pub fn script(&self, name: &str, args: &[&str]) -> String {
        let out = Command::new(scripts_dir().join(name))
            .args(args)
            .env("STROM_TESTBED_RUN", &self.run)
            .output()
            .unwrap_or_else(|e| panic!("run tests/testbed/{name}: {e}"));
        assert!(
            out.status.success(),
            "tests/testbed/{name} {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Runs COMMAND with INPUT on its stdin and returns what it did (status, stdout, stderr).
pub fn output_with_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs COMMAND, panics with its stderr unless it succeeds, returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every component in the run dir's pid files is still the process that was started (pid and start
/// time, as lib.sh records them).
fn all_alive(run: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(run.join("pids")) else {
        return false;
    };
    entries.flatten().all(|e| {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let mut parts = text.split_whitespace();
        let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
            return false;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Field 22 (start time) is the 20th after the parenthesised command name.
        stat.rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(19))
            == Some(start)
    })
}

/// `tests/testbed/` in the source tree.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed")
}

/// Parses `export NAME='value'` lines (the form `up` writes; values never contain a quote).
fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

impl TestBed {
    /// A fresh namespace for one test (`PREFIX-<n>`), created now; left behind for inspection
    /// (`tests/testbed/down` removes everything).
    pub async fn namespace(&self, prefix: &str) -> String {
        use k8s_openapi::api::core::v1::Namespace;
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000;
        let name = format!("{prefix}-{stamp}-{}", N.fetch_add(1, Ordering::SeqCst));
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
        }))
        .unwrap();
        kube::Api::<Namespace>::all(self.kube().await)
            .create(&Default::default(), &ns)
            .await
            .expect("create a namespace");
        name
    }

    /// Every log file of a container, oldest restart first, concatenated (what `kubectl logs
    /// --previous` and `kubectl logs` would show, together). The process kubelet keeps them under
    /// `nodes/<node>/logs/<ns>_<pod>_<uid>/<container>/<restart>.log`.
    pub fn container_logs(&self, namespace: &str, pod: &str, container: &str) -> String {
        let mut files: Vec<(u32, PathBuf)> = Vec::new();
        let prefix = format!("{namespace}_{pod}_");
        for node in std::fs::read_dir(self.run.join("nodes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for dir in std::fs::read_dir(node.path().join("logs"))
                .into_iter()
                .flatten()
                .flatten()
            {
                if !dir.file_name().to_string_lossy().starts_with(&prefix) {
                    continue;
                }
                for f in std::fs::read_dir(dir.path().join(container))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if let Some(n) = name.strip_suffix(".log").and_then(|n| n.parse().ok()) {
                        files.push((n, f.path()));
                    }
                }
            }
        }
        files.sort();
        files
            .iter()
            .map(|(_, p)| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }
}

/// Polls CHECK every 250 ms until it returns Some, failing the test with WHAT after LIMIT seconds.
/// A bound on waiting for the cluster to converge, never a measurement.
pub async fn eventually<T, F, Fut>(what: &str, limit_secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(limit_secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up after {limit_secs} s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
