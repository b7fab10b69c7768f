//! The Node object and its heartbeat (a Lease in `kube-node-lease`, plus the Ready condition).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Kubelet;

const LEASE_NAMESPACE: &str = "kube-node-lease";

fn status(k: &Kubelet) -> NodeStatus {
    let now = Time(Timestamp::now());
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu", k.args.cpu.clone()),
        ("memory", k.args.memory.clone()),
        ("pods", k.args.max_pods.to_string()),
        ("ephemeral-storage", "100Gi".to_string()),
    ]
    .into_iter()
    .map(|(name, q)| (name.to_string(), Quantity(q)))
    .collect();
    NodeStatus {
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        conditions: Some(vec![
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "strom-kubelet is posting ready status",
            ),
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "no memory pressure",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "no PID pressure",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: k.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: k.args.node.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: 0 }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.into(),
            boot_id: String::new(),
            container_runtime_version: format!("strom-process://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: String::new(),
            kube_proxy_version: String::new(),
            kubelet_version: format!("v0.0.0-strom-kubelet-{}", env!("CARGO_PKG_VERSION")),
            machine_id: String::new(),
            operating_system: std::env::consts::OS.into(),
            os_image: "strom test bed".into(),
            system_uuid: String::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the Node, or takes over an existing one of the same name (a restarted kubelet).
pub async fn register(k: &Kubelet) -> Result<()> {
    let nodes: Api<Node> = Api::all(k.client.clone());
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), k.args.node.clone()),
        (
            "kubernetes.io/os".to_string(),
            std::env::consts::OS.to_string(),
        ),
        ("kubernetes.io/arch".to_string(), go_arch().to_string()),
        ("strom.test/process-kubelet".to_string(), "true".to_string()),
    ]);
    labels.extend(k.args.labels.iter().cloned());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(k.args.node.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!k.args.taints.is_empty()).then(|| k.args.taints.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            nodes
                .patch(
                    &k.args.node,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"labels": labels}, "spec": {"unschedulable": null}}),
                    ),
                )
                .await
                .context("update the existing Node")?;
        }
        Err(e) => return Err(e).context("create the Node"),
    }
    post_status(k).await
}

async fn post_status(k: &Kubelet) -> Result<()> {
    Api::<Node>::all(k.client.clone())
        .patch_status(
            &k.args.node,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status(k) })),
        )
        .await
        .context("post the Node's status")?;
    Ok(())
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Renews the Node's Lease every `lease_renew_seconds` and posts Ready every few renewals, as the
/// node lifecycle controller expects; transient API errors are retried on the next beat.
pub async fn heartbeat(k: Arc<Kubelet>) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(k.client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(k.client.clone());
    let mut beat: u64 = 0;
    loop {
        if let Err(e) = renew(&k, &leases, &nodes).await {
            tracing::warn!(error = %e, "lease renewal failed");
        }
        if beat % 4 == 3
            && let Err(e) = post_status(&k).await
        {
            tracing::warn!(error = %e, "node status update failed");
        }
        beat += 1;
        tokio::time::sleep(Duration::from_secs(k.args.lease_renew_seconds)).await;
    }
}

async fn renew(k: &Kubelet, leases: &Api<Lease>, nodes: &Api<Node>) -> Result<()> {
    let spec = LeaseSpec {
        holder_identity: Some(k.args.node.clone()),
        lease_duration_seconds: Some(40),
        renew_time: Some(MicroTime(Timestamp::now())),
        ..Default::default()
    };
    match leases.get_opt(&k.args.node).await? {
        Some(_) => {
            leases
                .patch(
                    &k.args.node,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": spec })),
                )
                .await?;
        }
        None => {
            let node = nodes.get(&k.args.node).await?;
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(k.args.node.clone()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: k.args.node.clone(),
                        uid: node.metadata.uid.unwrap_or_default(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}
