//! Container processes: how one is launched (the `run-container` step that builds its namespaces),
//! how it is stopped, and the registry of running process groups.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::lock;

/// Everything `run-container` needs, written by the kubelet next to the pod's volumes.
#[derive(Debug, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub hostname: String,
    /// Bound over `/etc/hosts`.
    pub hosts: PathBuf,
    pub mounts: Vec<Mount>,
    pub working_dir: Option<PathBuf>,
    pub program: PathBuf,
    pub args: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// The container's first process: runs as the kubelet's child, in its own process group, with the
/// container's environment already set. Never returns on success (execs the program).
pub fn run_container(spec_path: &Path) -> Result<()> {
    // Die with the kubelet: a kubelet killed with SIGKILL is a lost Node, and its pods go with it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if nix::unistd::getppid() == Pid::from_raw(1) {
        bail!("the kubelet exited before the container started");
    }
    let text = std::fs::read_to_string(spec_path)
        .with_context(|| format!("read {}", spec_path.display()))?;
    let spec: LaunchSpec = serde_json::from_str(&text)?;

    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
        .context("unshare mount and UTS namespaces")?;
    // Nothing mounted here may leak back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make / private")?;
    nix::unistd::sethostname(&spec.hostname).context("set the hostname")?;
    bind(&spec.hosts, Path::new("/etc/hosts"), false)?;
    for m in &spec.mounts {
        if m.source.is_dir() {
            std::fs::create_dir_all(&m.target)
                .with_context(|| format!("create mount point {}", m.target.display()))?;
        } else if !m.target.exists() {
            if let Some(parent) = m.target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&m.target, b"")
                .with_context(|| format!("create mount point {}", m.target.display()))?;
        }
        bind(&m.source, &m.target, m.read_only)?;
    }
    if let Some(dir) = &spec.working_dir {
        std::fs::create_dir_all(dir)?;
        std::env::set_current_dir(dir)
            .with_context(|| format!("change to working dir {}", dir.display()))?;
    }
    let err = std::process::Command::new(&spec.program)
        .args(&spec.args)
        .exec();
    bail!("exec {}: {err}", spec.program.display())
}

fn bind(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind {} on {}", source.display(), target.display()))?;
    if read_only {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .with_context(|| format!("remount {} read-only", target.display()))?;
    }
    Ok(())
}

/// Starts a container: this binary's `run-container` step in a new process group, with exactly
/// `env`, output appended to `log`.
pub fn spawn(
    spec_path: &Path,
    env: &[(String, String)],
    log: &Path,
) -> Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("find the kubelet's own binary")?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open log {}", log.display()))?;
    let err = out.try_clone()?;
    let child = tokio::process::Command::new(exe)
        .arg("run-container")
        .arg(spec_path)
        .env_clear()
        .envs(
            env.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("spawn the container")?;
    Ok(child)
}

/// Sends SIGNAL to the container's process group (its first process leads it).
pub fn signal(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // The group may already be gone; that is the outcome wanted.
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Process groups of the containers running now.
#[derive(Default)]
pub struct Running(Mutex<HashSet<u32>>);

impl Running {
    pub fn add(&self, pid: u32) {
        lock(&self.0).insert(pid);
    }

    pub fn remove(&self, pid: u32) {
        lock(&self.0).remove(&pid);
    }

    /// SIGTERM to every container, SIGKILL to what is left after `grace`.
    pub async fn terminate_all(&self, grace: Duration) {
        let pids: Vec<u32> = lock(&self.0).iter().copied().collect();
        for &pid in &pids {
            signal(pid, Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline
            && pids
                .iter()
                .any(|&p| Path::new(&format!("/proc/{p}")).exists())
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for &pid in &pids {
            signal(pid, Signal::SIGKILL);
        }
    }
}

/// The binary an image runs: `--image` entries by repository or last path segment, then a file of
/// that segment's name in an `--image-dir`.
pub fn image_binary(args: &crate::ServeArgs, image: &str) -> Option<PathBuf> {
    let repo = image_repository(image);
    let segment = repo.rsplit('/').next().unwrap_or(repo);
    if let Some((_, bin)) = args
        .images
        .iter()
        .find(|(name, _)| name == repo || name == segment)
    {
        return Some(bin.clone());
    }
    find_in(&args.image_dirs, segment)
}

/// `command[0]` of a container: a project binary of that name first, then the host's PATH.
pub fn command_binary(args: &crate::ServeArgs, command: &str) -> Option<PathBuf> {
    let name = Path::new(command).file_name()?.to_str()?;
    if let Some(bin) = find_in(&args.image_dirs, name) {
        return Some(bin);
    }
    if command.contains('/') {
        return Path::new(command).is_file().then(|| PathBuf::from(command));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn find_in(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// `registry.example:5000/team/app:1.2@sha256:...` → `team/app`.
fn image_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let image = match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    };
    match image.split_once('/') {
        Some((registry, rest))
            if registry.contains('.') || registry.contains(':') || registry == "localhost" =>
        {
            rest
        }
        _ => image,
    }
}

#[cfg(test)]
mod tests {
    use super::image_repository;

    #[test]
    fn repository_drops_registry_tag_and_digest() {
        assert_eq!(image_repository("strom"), "strom");
        assert_eq!(image_repository("strom:0.1.0"), "strom");
        assert_eq!(image_repository("ghcr.io/strom/strom:dev"), "strom/strom");
        assert_eq!(image_repository("localhost:5000/a/b:1@sha256:00"), "a/b");
        assert_eq!(image_repository("team/app@sha256:00"), "team/app");
    }
}
