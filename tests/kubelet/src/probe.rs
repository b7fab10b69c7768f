//! Startup, readiness and liveness probes: exec, httpGet and tcpSocket, with the delay, period,
//! timeout and thresholds of the pod spec. An exec probe runs on the host with the container's
//! environment (not inside its mount namespace).

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Readiness,
    Liveness,
}

/// What a probe needs to know about its container.
#[derive(Clone)]
pub struct Target {
    pub pod_ip: String,
    pub container: Container,
    pub env: Vec<(String, String)>,
    pub exec_binary: Option<std::path::PathBuf>,
}

/// Runs PROBE forever, sending `(kind, passing)` on every change of its thresholded result (the
/// first result included).
pub async fn run(kind: Kind, probe: Probe, target: Target, tx: mpsc::Sender<(Kind, bool)>) {
    let period = Duration::from_secs(positive(probe.period_seconds, 10));
    let timeout = Duration::from_secs(positive(probe.timeout_seconds, 1));
    let success_threshold = positive(probe.success_threshold, 1);
    let failure_threshold = positive(probe.failure_threshold, 3);
    tokio::time::sleep(Duration::from_secs(
        u64::try_from(probe.initial_delay_seconds.unwrap_or(0)).unwrap_or(0),
    ))
    .await;
    let (mut successes, mut failures, mut state) = (0u64, 0u64, None::<bool>);
    loop {
        let ok = matches!(
            tokio::time::timeout(timeout, check(&probe, &target)).await,
            Ok(Ok(()))
        );
        if ok {
            successes += 1;
            failures = 0;
        } else {
            failures += 1;
            successes = 0;
        }
        let next = if successes >= success_threshold {
            Some(true)
        } else if failures >= failure_threshold {
            Some(false)
        } else {
            state
        };
        if next != state {
            state = next;
            if let Some(passing) = next
                && tx.send((kind, passing)).await.is_err()
            {
                return;
            }
        }
        tokio::time::sleep(period).await;
    }
}

fn positive(v: Option<i32>, default: u64) -> u64 {
    v.and_then(|v| u64::try_from(v).ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

async fn check(probe: &Probe, target: &Target) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        let program = target
            .exec_binary
            .clone()
            .ok_or("exec probe: command not found")?;
        let status = tokio::process::Command::new(program)
            .args(command.iter().skip(1))
            .env_clear()
            .envs(target.env.iter().cloned())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| e.to_string())?;
        return if status.success() {
            Ok(())
        } else {
            Err(format!("exec probe exited with {status}"))
        };
    }
    if let Some(http) = &probe.http_get {
        let host = http.host.clone().unwrap_or_else(|| target.pod_ip.clone());
        let port = port(&http.port, &target.container)?;
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        if http.scheme.as_deref().is_some_and(|s| s != "HTTP") {
            return Err("httpGet probe: only HTTP is supported".into());
        }
        let addr: SocketAddr = format!("{host}:{port}")
            .parse()
            .map_err(|e| format!("httpGet probe address: {e}"))?;
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/strom\r\nConnection: close\r\n"
        );
        for h in http.http_headers.iter().flatten() {
            request.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
        let line = String::from_utf8_lossy(&head[..n]);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("httpGet probe: bad response {line:?}"))?;
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("httpGet probe: HTTP {code}"))
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = tcp.host.clone().unwrap_or_else(|| target.pod_ip.clone());
        let port = port(&tcp.port, &target.container)?;
        tokio::net::TcpStream::connect(format!("{host}:{port}"))
            .await
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    Err("only exec, httpGet and tcpSocket probes are supported by the test bed's kubelet".into())
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("bad port {n}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name}")),
    }
}
