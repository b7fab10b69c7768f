//! `strom-operator`: runs the FlinkJob controller while it holds the leader Lease, and serves
//! `/metrics` and `/healthz`. Settings come from flags or `STROM_OPERATOR_*` variables (the Helm
//! chart sets the variables).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser;
use kube_lease_manager::LeaseManagerBuilder;
use strom_operator::controller::{self, Context};
use strom_operator::metrics::Metrics;
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The Strom Kubernetes operator: FlinkJob resources to running jobs"
)]
struct Args {
    /// Namespaces whose FlinkJobs this operator runs, comma-separated; empty: all.
    #[arg(
        long,
        env = "STROM_OPERATOR_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    watch_namespaces: Vec<String>,
    /// Where `/metrics` and `/healthz` are served.
    #[arg(
        long,
        env = "STROM_OPERATOR_METRICS_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    metrics_address: SocketAddr,
    /// Leader election: the Lease, its namespace, and this replica's identity.
    #[arg(
        long,
        env = "STROM_OPERATOR_LEASE_NAME",
        default_value = "strom-operator"
    )]
    lease_name: String,
    #[arg(
        long,
        env = "STROM_OPERATOR_LEASE_NAMESPACE",
        default_value = "default"
    )]
    lease_namespace: String,
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a leader's Lease is valid without renewal.
    #[arg(long, env = "STROM_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::default());
    serve(args.metrics_address, metrics.clone()).await?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .unwrap_or_else(|_| format!("strom-operator-{}", std::process::id()))
    });
    let lease = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(args.lease_seconds)
        .with_grace(args.lease_seconds.div_ceil(3))
        .build()
        .await
        .context("leader election")?;
    let (mut leading, lease_task) = lease.watch().await;
    info!(identity, lease = args.lease_name, "waiting to lead");
    while !*leading.borrow_and_update() {
        leading.changed().await.context("leader election ended")?;
    }
    info!(identity, "leading");
    metrics.set_leader(true);
    let ctx = Arc::new(Context::new(client, metrics.clone(), Some(identity)));
    let mut lost = leading.clone();
    let shutdown = async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => info!("interrupted: stopping"),
            _ = async { while lost.changed().await.is_ok() && *lost.borrow() {} } => {
                error!("lost the leader Lease: stopping");
            }
        }
    };
    controller::run(
        ctx,
        args.watch_namespaces
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect(),
        shutdown,
    )
    .await
    .context("the controller")?;
    let still_leading = *leading.borrow();
    metrics.set_leader(false);
    drop(leading);
    // Dropping the last receiver releases the Lease, so a standby takes over at once.
    let _ = lease_task.await;
    if !still_leading {
        anyhow::bail!("lost the leader Lease");
    }
    Ok(())
}

async fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    info!(%address, "serving /metrics and /healthz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!("metrics server: {e}");
        }
    });
    Ok(())
}
