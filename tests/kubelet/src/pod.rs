//! Pods bound to this Node: one task per pod runs its containers, reports pod status and, on
//! deletion, stops the containers and confirms the deletion.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::container::{self, LaunchSpec};
use crate::probe::{self, Kind};
use crate::{Kubelet, dns, env, volumes};

/// Follows the pods bound to this Node and runs one task per pod.
pub async fn watch(k: Arc<Kubelet>) -> Result<()> {
    let api: Api<Pod> = Api::all(k.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", k.args.node));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut pods: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            Some(uid) = done_rx.recv() => { pods.remove(&uid); }
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                match event {
                    Err(e) => tracing::warn!(error = %e, "pod watch"),
                    Ok(watcher::Event::Init) => listed.clear(),
                    Ok(watcher::Event::InitApply(pod)) | Ok(watcher::Event::Apply(pod)) => {
                        let Some(uid) = pod.metadata.uid.clone() else { continue };
                        listed.insert(uid.clone());
                        match pods.get(&uid) {
                            Some(tx) => { let _ = tx.send(Some(pod)); }
                            None => {
                                let (tx, rx) = watch::channel(Some(pod));
                                pods.insert(uid.clone(), tx);
                                let (k, done) = (k.clone(), done_tx.clone());
                                tokio::spawn(async move {
                                    run_pod(k, rx).await;
                                    let _ = done.send(uid);
                                });
                            }
                        }
                    }
                    Ok(watcher::Event::Delete(pod)) => {
                        if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| pods.get(u)) {
                            let _ = tx.send(None);
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        // Pods that vanished while the watch was re-listing.
                        for (uid, tx) in &pods {
                            if !listed.contains(uid) {
                                let _ = tx.send(None);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn terminating(pod: &Option<Pod>) -> bool {
    pod.as_ref()
        .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
}

/// Grace period for stopping the pod's containers: the deletion's, else the spec's, else 30 s.
fn grace(pod: &Option<Pod>) -> i64 {
    pod.as_ref()
        .and_then(|p| {
            p.metadata.deletion_grace_period_seconds.or(p
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
        })
        .unwrap_or(30)
        .max(0)
}

async fn run_pod(k: Arc<Kubelet>, mut rx: watch::Receiver<Option<Pod>>) {
    let Some(pod) = rx.borrow_and_update().clone() else {
        return;
    };
    let who = name(&pod);
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    let finished = matches!(phase.as_deref(), Some("Succeeded" | "Failed"));
    if !terminating(&Some(pod.clone())) && !finished {
        tracing::info!(pod = %who, "starting");
        if let Err(e) = run_with_address(&k, pod.clone(), &mut rx).await {
            tracing::warn!(pod = %who, error = %format!("{e:#}"), "pod run ended with an error");
        }
    } else {
        // Nothing runs for it here; wait for its deletion.
        while !terminating(&rx.borrow_and_update().clone()) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
    confirm_deletion(&k, &pod).await;
    tracing::info!(pod = %who, "removed");
}

/// The kubelet's last word on a pod: delete it with grace 0 once its containers are gone.
async fn confirm_deletion(k: &Kubelet, pod: &Pod) {
    let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
        return;
    };
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match Api::<Pod>::namespaced(k.client.clone(), ns)
        .delete(name, &params)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %name, error = %e, "could not confirm the deletion"),
    }
}

/// Gives the pod an address, runs it, and frees what it held.
async fn run_with_address(
    k: &Arc<Kubelet>,
    pod: Pod,
    rx: &mut watch::Receiver<Option<Pod>>,
) -> Result<()> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ip = k.allocate_ip(&uid)?;
    let result = run(k, pod, ip.to_string(), rx).await;
    k.dns.remove_pod(&uid);
    k.release_ip(&uid);
    let _ = std::fs::remove_dir_all(k.args.dir.join("pods").join(&uid));
    result
}

/// A container's status as its supervisor last reported it.
type Statuses = BTreeMap<String, ContainerStatus>;

struct Reporter {
    k: Arc<Kubelet>,
    api: Api<Pod>,
    name: String,
    ip: String,
    start_time: Time,
    restart_policy: String,
    init_names: Vec<String>,
    names: Vec<String>,
    last: Value,
    transitions: BTreeMap<String, (String, Time)>,
}

impl Reporter {
    /// Posts the pod's status if it changed.
    async fn post(&mut self, init: &Statuses, main: &Statuses, initialized: bool) {
        let ordered = |names: &[String], s: &Statuses| -> Vec<ContainerStatus> {
            names.iter().filter_map(|n| s.get(n).cloned()).collect()
        };
        let main_list = ordered(&self.names, main);
        let all_started = main_list.len() == self.names.len()
            && main_list.iter().all(|c| {
                c.restart_count > 0 || c.state.as_ref().is_some_and(|s| s.waiting.is_none())
            });
        let all_terminated = main_list.len() == self.names.len()
            && main_list
                .iter()
                .all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()));
        let init_failed = init.values().any(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code != 0)
        }) && self.restart_policy == "Never";
        let phase = if init_failed {
            "Failed"
        } else if !initialized || !all_started {
            "Pending"
        } else if all_terminated && self.restart_policy != "Always" {
            let ok = main_list.iter().all(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.exit_code == 0)
            });
            if ok { "Succeeded" } else { "Failed" }
        } else {
            "Running"
        };
        let ready = phase == "Running" && main_list.iter().all(|c| c.ready);
        let now = Time(Timestamp::now());
        let mut conditions = Vec::new();
        for (type_, status) in [
            ("PodReadyToStartContainers", true),
            ("Initialized", initialized),
            ("ContainersReady", ready),
            ("Ready", ready),
        ] {
            let status = if status { "True" } else { "False" };
            let entry = self
                .transitions
                .entry(type_.to_string())
                .or_insert_with(|| (status.to_string(), now.clone()));
            if entry.0 != status {
                *entry = (status.to_string(), now.clone());
            }
            conditions
                .push(json!({"type": type_, "status": status, "lastTransitionTime": entry.1}));
        }
        let status = json!({
            "phase": phase,
            "hostIP": self.k.node_ip.to_string(),
            "hostIPs": [{"ip": self.k.node_ip.to_string()}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time,
            "conditions": conditions,
            "initContainerStatuses": ordered(&self.init_names, init),
            "containerStatuses": main_list,
        });
        if status == self.last {
            return;
        }
        match self
            .api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Strategic(json!({ "status": status })),
            )
            .await
        {
            Ok(_) => self.last = status,
            Err(kube::Error::Api(e)) if e.code == 404 => self.last = status,
            Err(e) => tracing::warn!(pod = %self.name, error = %e, "status update failed"),
        }
    }
}

fn waiting(container: &Container, reason: &str, message: Option<String>) -> ContainerStatus {
    ContainerStatus {
        name: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        image_id: String::new(),
        ready: false,
        started: Some(false),
        restart_count: 0,
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run(
    k: &Arc<Kubelet>,
    pod: Pod,
    ip: String,
    rx: &mut watch::Receiver<Option<Pod>>,
) -> Result<()> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let dir = k.args.dir.join("pods").join(&uid);
    let logs = k
        .args
        .dir
        .join("logs")
        .join(format!("{ns}_{pod_name}_{uid}"));
    std::fs::create_dir_all(&dir)?;
    let mut reporter = Reporter {
        k: k.clone(),
        api: Api::namespaced(k.client.clone(), &ns),
        name: pod_name.clone(),
        ip: ip.clone(),
        start_time: Time(Timestamp::now()),
        restart_policy: spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
        init_names: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect(),
        names: spec.containers.iter().map(|c| c.name.clone()).collect(),
        last: Value::Null,
        transitions: BTreeMap::new(),
    };
    let mut init: Statuses = BTreeMap::new();
    let mut main: Statuses = spec
        .containers
        .iter()
        .map(|c| (c.name.clone(), waiting(c, "ContainerCreating", None)))
        .collect();
    reporter
        .post(&init, &main, spec.init_containers.is_none())
        .await;

    // Volumes and the hosts file; a missing ConfigMap or Secret is retried, as the kubelet does.
    let volumes = loop {
        match volumes::prepare(k, &pod, &ip, &dir.join("volumes")).await {
            Ok(v) => break v,
            Err(e) => {
                let message = format!("{e:#}");
                for c in &spec.containers {
                    main.insert(
                        c.name.clone(),
                        waiting(c, "CreateContainerConfigError", Some(message.clone())),
                    );
                }
                reporter.post(&init, &main, false).await;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = rx.changed() => {}
                }
                if terminating(&rx.borrow_and_update().clone()) {
                    return Ok(());
                }
            }
        }
    };
    let hosts = dir.join("hosts");
    k.dns.add_pod(
        &uid,
        dns::PodHosts {
            path: hosts.clone(),
            namespace: ns.clone(),
            hostname: env::hostname(&pod),
            subdomain: spec.subdomain.clone(),
            ip: ip.clone(),
        },
    )?;
    let base = Supervisor {
        k: k.clone(),
        pod: pod.clone(),
        ip: ip.clone(),
        volumes,
        hosts,
        dir: dir.clone(),
        logs,
        restart_policy: reporter.restart_policy.clone(),
        init: false,
    };

    // Init containers, one after the other, each to a successful exit.
    let (tx, mut updates) = mpsc::channel::<ContainerStatus>(64);
    let (stop_tx, stop_rx) = watch::channel::<Option<i64>>(None);
    for c in spec.init_containers.iter().flatten() {
        let sup = Supervisor {
            init: true,
            ..base.clone()
        };
        let mut task = tokio::spawn(sup.supervise(c.clone(), tx.clone(), stop_rx.clone()));
        let ok = loop {
            tokio::select! {
                r = &mut task => break matches!(r, Ok(true)),
                Some(s) = updates.recv() => {
                    init.insert(s.name.clone(), s);
                    reporter.post(&init, &main, false).await;
                }
                _ = rx.changed() => {
                    if terminating(&rx.borrow_and_update().clone()) {
                        let _ = stop_tx.send(Some(grace(&rx.borrow().clone())));
                        let _ = task.await;
                        return Ok(());
                    }
                }
            }
        };
        while let Ok(s) = updates.try_recv() {
            init.insert(s.name.clone(), s);
        }
        reporter.post(&init, &main, false).await;
        if !ok {
            // Failed for good (restartPolicy Never): the pod is Failed; wait for its deletion.
            while !terminating(&rx.borrow_and_update().clone()) {
                if rx.changed().await.is_err() {
                    break;
                }
            }
            return Ok(());
        }
    }

    let mut tasks = Vec::new();
    for c in &spec.containers {
        let sup = base.clone();
        tasks.push(tokio::spawn(sup.supervise(
            c.clone(),
            tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(tx);
    loop {
        tokio::select! {
            Some(s) = updates.recv() => {
                main.insert(s.name.clone(), s);
                reporter.post(&init, &main, true).await;
            }
            changed = rx.changed() => {
                let current = rx.borrow_and_update().clone();
                if changed.is_err() || terminating(&current) {
                    let grace = grace(&current);
                    tracing::info!(pod = %pod_name, grace, "stopping containers");
                    let _ = stop_tx.send(Some(grace));
                    break;
                }
            }
        }
    }
    // Report the containers' last states until every supervisor is done.
    while let Some(s) = updates.recv().await {
        main.insert(s.name.clone(), s);
        reporter.post(&init, &main, true).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// Runs one container: starts it, probes it, restarts it by the pod's restartPolicy with a
/// doubling back-off, stops it on request.
#[derive(Clone)]
struct Supervisor {
    k: Arc<Kubelet>,
    pod: Pod,
    ip: String,
    volumes: BTreeMap<String, PathBuf>,
    hosts: PathBuf,
    dir: PathBuf,
    logs: PathBuf,
    restart_policy: String,
    init: bool,
}

enum Ended {
    Exited(std::process::ExitStatus),
    Stopped(std::process::ExitStatus),
}

impl Supervisor {
    /// Returns whether the container finally exited 0 (what an init container must do).
    async fn supervise(
        self,
        c: Container,
        tx: mpsc::Sender<ContainerStatus>,
        mut stop: watch::Receiver<Option<i64>>,
    ) -> bool {
        let mut restarts: i32 = 0;
        let mut backoff = Duration::from_secs(self.k.args.restart_backoff_seconds.max(1));
        let mut last_state: Option<ContainerState> = None;
        loop {
            let mut status = waiting(&c, "ContainerCreating", None);
            status.restart_count = restarts;
            status.last_state = last_state.clone();
            let launched = self.launch(&c, restarts).await;
            let (mut child, env, program) = match launched {
                Ok(v) => v,
                Err((reason, e)) => {
                    status.state = waiting(&c, reason, Some(format!("{e:#}"))).state;
                    let _ = tx.send(status).await;
                    if self.pause(&mut stop, backoff).await {
                        return false;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(300));
                    continue;
                }
            };
            let pid = child.id().unwrap_or(0);
            self.k.running.add(pid);
            let started_at = Time(Timestamp::now());
            let container_id = format!("strom://{pid}");
            status.container_id = Some(container_id.clone());
            status.image_id = format!("strom-binary://{}", program.display());
            status.state = Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(started_at.clone()),
                }),
                ..Default::default()
            });
            let target = probe::Target {
                pod_ip: self.ip.clone(),
                container: c.clone(),
                env,
                exec_binary: None,
            };
            let (probe_tx, mut probes) = mpsc::channel(8);
            let mut probe_tasks = Vec::new();
            let spawn_probe =
                |kind: Kind,
                 p: &Option<k8s_openapi::api::core::v1::Probe>,
                 tasks: &mut Vec<tokio::task::JoinHandle<()>>| {
                    if let Some(p) = p.clone() {
                        let mut target = target.clone();
                        target.exec_binary = p
                            .exec
                            .as_ref()
                            .and_then(|e| e.command.as_ref()?.first().cloned())
                            .and_then(|cmd| container::command_binary(&self.k.args, &cmd));
                        tasks.push(tokio::spawn(probe::run(kind, p, target, probe_tx.clone())));
                    }
                };
            let has_startup = !self.init && c.startup_probe.is_some();
            if has_startup {
                spawn_probe(Kind::Startup, &c.startup_probe, &mut probe_tasks);
            } else if !self.init {
                spawn_probe(Kind::Readiness, &c.readiness_probe, &mut probe_tasks);
                spawn_probe(Kind::Liveness, &c.liveness_probe, &mut probe_tasks);
            }
            status.started = Some(!has_startup);
            status.ready = !self.init && !has_startup && c.readiness_probe.is_none();
            let _ = tx.send(status.clone()).await;

            let ended = loop {
                tokio::select! {
                    exit = child.wait() => {
                        match exit {
                            Ok(s) => break Ended::Exited(s),
                            Err(e) => {
                                tracing::warn!(error = %e, "wait for container");
                                break Ended::Exited(std::os::unix::process::ExitStatusExt::from_raw(255 << 8));
                            }
                        }
                    }
                    Some((kind, passing)) = probes.recv() => match (kind, passing) {
                        (Kind::Readiness, ready) => {
                            if status.ready != ready {
                                status.ready = ready;
                                let _ = tx.send(status.clone()).await;
                            }
                        }
                        (Kind::Startup, true) => {
                            status.started = Some(true);
                            status.ready = c.readiness_probe.is_none();
                            let _ = tx.send(status.clone()).await;
                            spawn_probe(Kind::Readiness, &c.readiness_probe, &mut probe_tasks);
                            spawn_probe(Kind::Liveness, &c.liveness_probe, &mut probe_tasks);
                        }
                        (Kind::Liveness | Kind::Startup, false) => {
                            tracing::info!(container = %c.name, ?kind, "probe failed: restarting the container");
                            let grace = self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
                            let s = terminate(&mut child, pid, grace).await;
                            break Ended::Exited(s);
                        }
                        (Kind::Liveness, true) => {}
                    },
                    r = stop.changed() => {
                        let grace = if r.is_ok() { (*stop.borrow()).unwrap_or(30) } else { 0 };
                        let s = terminate(&mut child, pid, grace).await;
                        break Ended::Stopped(s);
                    }
                }
            };
            for t in probe_tasks {
                t.abort();
            }
            self.k.running.remove(pid);
            let (exit, stopped) = match ended {
                Ended::Exited(s) => (s, false),
                Ended::Stopped(s) => (s, true),
            };
            let mut terminated = terminated_state(exit, started_at, &container_id);
            if terminated.exit_code != 0 {
                // terminationMessagePolicy FallbackToLogsOnError: the log's tail says why.
                terminated.message =
                    log_tail(&self.logs.join(&c.name).join(format!("{restarts}.log")));
            }
            let exit_code = terminated.exit_code;
            let state = ContainerState {
                terminated: Some(terminated),
                ..Default::default()
            };
            status.ready = false;
            status.started = Some(false);
            let restart = !stopped
                && match self.restart_policy.as_str() {
                    "Always" => !self.init || exit_code != 0,
                    "OnFailure" => exit_code != 0,
                    _ => false,
                };
            if !restart {
                status.state = Some(state);
                let _ = tx.send(status).await;
                if stopped || self.init {
                    return exit_code == 0;
                }
                // Done for good: stay until the pod is stopped.
                let _ = stop.wait_for(|s| s.is_some()).await;
                return exit_code == 0;
            }
            tracing::info!(container = %c.name, exit_code, ?backoff, "container exited: restarting after back-off");
            status.state = waiting(
                &c,
                "CrashLoopBackOff",
                Some(format!(
                    "back-off {}s restarting failed container {}",
                    backoff.as_secs(),
                    c.name
                )),
            )
            .state;
            status.last_state = Some(state.clone());
            let _ = tx.send(status).await;
            last_state = Some(state);
            if self.pause(&mut stop, backoff).await {
                return false;
            }
            backoff = (backoff * 2).min(Duration::from_secs(300));
            restarts += 1;
        }
    }

    /// Sleeps for `d`; true if the pod is being stopped meanwhile.
    async fn pause(&self, stop: &mut watch::Receiver<Option<i64>>, d: Duration) -> bool {
        if stop.borrow().is_some() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => false,
            _ = stop.wait_for(|s| s.is_some()) => true,
        }
    }

    /// Resolves what the container runs and starts it.
    async fn launch(
        &self,
        c: &Container,
        restarts: i32,
    ) -> Result<
        (tokio::process::Child, Vec<(String, String)>, PathBuf),
        (&'static str, anyhow::Error),
    > {
        let env = env::resolve(&self.k, &self.pod, &self.ip, c)
            .await
            .map_err(|e| ("CreateContainerConfigError", e))?;
        let image = c.image.clone().unwrap_or_default();
        let command = c.command.clone().unwrap_or_default();
        let args: Vec<String> = c.args.clone().unwrap_or_default();
        let (program, argv) = match command.split_first() {
            Some((first, rest)) => {
                let program = container::command_binary(&self.k.args, first).ok_or_else(|| {
                    (
                        "RunContainerError",
                        anyhow::anyhow!(
                            "command {first:?} is neither a project binary nor on the host's PATH"
                        ),
                    )
                })?;
                (
                    program,
                    rest.iter().chain(args.iter()).cloned().collect::<Vec<_>>(),
                )
            }
            None => {
                let program = container::image_binary(&self.k.args, &image).ok_or_else(|| {
                    (
                        "ErrImagePull",
                        anyhow::anyhow!(
                            "no binary for image {image:?} (see --image and --image-dir)"
                        ),
                    )
                })?;
                (program, args)
            }
        };
        let argv: Vec<String> = argv.iter().map(|a| env::expand(a, &env)).collect();
        let mounts =
            volumes::mounts(c, &self.volumes).map_err(|e| ("CreateContainerConfigError", e))?;
        let spec = LaunchSpec {
            hostname: env::hostname(&self.pod),
            hosts: self.hosts.clone(),
            mounts,
            working_dir: c.working_dir.as_ref().map(PathBuf::from),
            program: program.clone(),
            args: argv,
        };
        let spec_path = self.dir.join(format!("{}.launch.json", c.name));
        let write = serde_json::to_vec_pretty(&spec)
            .context("encode launch spec")
            .and_then(|bytes| std::fs::write(&spec_path, bytes).context("write launch spec"));
        write.map_err(|e| ("RunContainerError", e))?;
        let log = self.logs.join(&c.name).join(format!("{restarts}.log"));
        let child =
            container::spawn(&spec_path, &env, &log).map_err(|e| ("RunContainerError", e))?;
        Ok((child, env, program))
    }
}

/// SIGTERM to the container's process group; SIGKILL once `grace` seconds pass.
async fn terminate(
    child: &mut tokio::process::Child,
    pid: u32,
    grace: i64,
) -> std::process::ExitStatus {
    container::signal(pid, Signal::SIGTERM);
    let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(s)) => {
            // The leader is gone; take the rest of its group with it.
            container::signal(pid, Signal::SIGKILL);
            s
        }
        _ => {
            container::signal(pid, Signal::SIGKILL);
            child
                .wait()
                .await
                .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(9))
        }
    }
}

fn terminated_state(
    exit: std::process::ExitStatus,
    started_at: Time,
    container_id: &str,
) -> ContainerStateTerminated {
    use std::os::unix::process::ExitStatusExt;
    let (exit_code, signal) = match (exit.code(), exit.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (255, None),
    };
    ContainerStateTerminated {
        exit_code,
        signal,
        reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.into()),
        started_at: Some(started_at),
        finished_at: Some(Time(Timestamp::now())),
        container_id: Some(container_id.to_string()),
        message: None,
    }
}

/// The last lines of a container's log (at most 2 KiB), as the kubelet reports them for a
/// container that failed.
fn log_tail(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let tail = &text[text.len().saturating_sub(2048)..];
    let tail = String::from_utf8_lossy(tail).trim().to_string();
    (!tail.is_empty()).then_some(tail)
}
