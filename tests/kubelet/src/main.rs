//! `strom-kubelet`: the test bed's process kubelet.
//!
//! It registers one Node with the API server, keeps its Lease renewed, and runs every pod the
//! scheduler binds to that Node as local processes of the project's own binaries (an image name
//! names a binary). Each pod gets an address of its own in 127.0.0.0/8, its own mount and UTS
//! namespaces (hostname, `/etc/hosts` written from Services and EndpointSlices, volumes bound at
//! their mount paths), env and args as Kubernetes resolves them, probes, restarts by restartPolicy,
//! and SIGTERM then SIGKILL after the grace period on deletion. One process serves one Node; start
//! several for several Nodes. Killing one with SIGKILL kills its pods too (parent-death signal):
//! a lost Node.
//!
//! Not a production kubelet: no images, cgroups, resource limits or port translation; see
//! tests/testbed/README.md for what it does and does not do.

mod container;
mod dns;
mod env;
mod node;
mod pod;
mod probe;
mod volumes;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "The Strom test bed's process kubelet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Registers a Node and runs the pods bound to it until SIGTERM.
    Serve(Box<ServeArgs>),
    /// Internal: the first process of a container. Enters new mount and UTS namespaces, binds the
    /// pod's /etc/hosts and volumes, sets the hostname, then execs the container's program.
    RunContainer {
        /// The container's launch spec (JSON), written by `serve`.
        spec: PathBuf,
    },
}

#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Kubeconfig of the identity the kubelet acts as.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// The Node's name.
    #[arg(long)]
    pub node: String,
    /// The Node's /24 in 127.0.0.0/8, as its first three octets: the Node's address is `.1`, pods
    /// get `.2` to `.254`.
    #[arg(long, default_value = "127.1.1")]
    pub subnet: String,
    /// Working directory: pod volumes, launch specs, hosts files, container logs.
    #[arg(long)]
    pub dir: PathBuf,
    /// `IMAGE=BINARY`: the image (repository, without registry, tag or digest; or its last path
    /// segment) runs BINARY. Repeatable.
    #[arg(long = "image", value_parser = parse_image)]
    pub images: Vec<(String, PathBuf)>,
    /// Directories searched for a binary named like the image's last path segment, and for
    /// `command[0]` of a container.
    #[arg(long = "image-dir")]
    pub image_dirs: Vec<PathBuf>,
    /// What pods are told the API server is (`KUBERNETES_SERVICE_HOST`/`_PORT`).
    #[arg(long, default_value = "127.0.0.1")]
    pub api_host: String,
    #[arg(long)]
    pub api_port: u16,
    /// Node capacity.
    #[arg(long, default_value = "8")]
    pub cpu: String,
    #[arg(long, default_value = "16Gi")]
    pub memory: String,
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Extra Node labels, `KEY=VALUE`. Repeatable.
    #[arg(long = "label", value_parser = parse_kv)]
    pub labels: Vec<(String, String)>,
    /// Node taints, `KEY[=VALUE]:EFFECT`, registered with the Node (as the kubelet's
    /// `--register-with-taints`). Repeatable.
    #[arg(long = "taint", value_parser = parse_taint)]
    pub taints: Vec<k8s_openapi::api::core::v1::Taint>,
    /// First restart back-off of a crashing container (doubles up to 5 minutes; the kubelet's is
    /// 10 s, shorter here so that tests of restarts stay short).
    #[arg(long, default_value_t = 1)]
    pub restart_backoff_seconds: u64,
    /// How often the Node's Lease is renewed.
    #[arg(long, default_value_t = 10)]
    pub lease_renew_seconds: u64,
}

fn parse_image(s: &str) -> Result<(String, PathBuf), String> {
    let (image, bin) = s.split_once('=').ok_or("expected IMAGE=BINARY")?;
    Ok((image.to_string(), PathBuf::from(bin)))
}

fn parse_taint(s: &str) -> Result<k8s_openapi::api::core::v1::Taint, String> {
    let (kv, effect) = s.rsplit_once(':').ok_or("expected KEY[=VALUE]:EFFECT")?;
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!(
            "taint effect {effect:?}: expected NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    Ok(k8s_openapi::api::core::v1::Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
        time_added: None,
    })
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    Ok((k.to_string(), v.to_string()))
}

/// What every part of the kubelet shares.
pub struct Kubelet {
    pub client: kube::Client,
    pub args: ServeArgs,
    pub node_ip: Ipv4Addr,
    ips: Mutex<IpPool>,
    pub dns: dns::Dns,
    /// Process groups of running containers, so that SIGTERM to the kubelet stops them first.
    pub running: container::Running,
}

impl Kubelet {
    pub fn allocate_ip(&self, uid: &str) -> Result<Ipv4Addr> {
        lock(&self.ips).allocate(uid)
    }

    pub fn release_ip(&self, uid: &str) {
        lock(&self.ips).release(uid);
    }
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data consistent.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Pod addresses of one Node: `.2` to `.254` of its /24.
struct IpPool {
    prefix: [u8; 3],
    by_uid: HashMap<String, u8>,
}

impl IpPool {
    fn allocate(&mut self, uid: &str) -> Result<Ipv4Addr> {
        let [a, b, c] = self.prefix;
        if let Some(&d) = self.by_uid.get(uid) {
            return Ok(Ipv4Addr::new(a, b, c, d));
        }
        let used: std::collections::HashSet<u8> = self.by_uid.values().copied().collect();
        let d = (2..=254u8)
            .find(|d| !used.contains(d))
            .context("no free pod address left on this Node")?;
        self.by_uid.insert(uid.to_string(), d);
        Ok(Ipv4Addr::new(a, b, c, d))
    }

    fn release(&mut self, uid: &str) {
        self.by_uid.remove(uid);
    }
}

fn parse_subnet(s: &str) -> Result<[u8; 3]> {
    let octets: Vec<u8> = s
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("subnet {s:?}: expected three octets like 127.1.1"))?;
    match octets[..] {
        [127, b, c] => Ok([127, b, c]),
        _ => bail!("subnet {s:?}: expected three octets of 127.0.0.0/8, like 127.1.1"),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::RunContainer { spec } => container::run_container(&spec),
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_target(false)
                .init();
            // One thread: every container is forked from it, so the parent-death signal a
            // container carries fires exactly when the kubelet process dies.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(serve(*args))
        }
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let prefix = parse_subnet(&args.subnet)?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("read kubeconfig {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let kubelet = Arc::new(Kubelet {
        client: client.clone(),
        node_ip: Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 1),
        ips: Mutex::new(IpPool {
            prefix,
            by_uid: HashMap::new(),
        }),
        dns: dns::Dns::new(args.api_host.clone()),
        running: container::Running::default(),
        args,
    });

    node::register(&kubelet).await?;
    tracing::info!(node = %kubelet.args.node, address = %kubelet.node_ip, "node registered");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = node::heartbeat(kubelet.clone()) => r.context("node heartbeat"),
        r = dns::watch(kubelet.clone()) => r.context("service discovery"),
        r = pod::watch(kubelet.clone()) => r.context("pod watch"),
        _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping containers"); Ok(()) }
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping containers"); Ok(()) }
    };
    kubelet.running.terminate_all(Duration::from_secs(5)).await;
    result
}
