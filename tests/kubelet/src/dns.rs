//! Service discovery without kube-proxy or a DNS server: every pod's `/etc/hosts` (bound over the
//! real one in its mount namespace) names the ready endpoints of every Service, as cluster DNS
//! would: `svc.ns.svc.cluster.local`, `svc.ns.svc`, `svc.ns`, and `svc` within the pod's own
//! namespace; `host.svc.ns.svc.cluster.local` for pods whose `hostname` and `subdomain` put them
//! behind a headless Service (StatefulSets); the pod's own hostname.
//!
//! Endpoints are chosen here, from Services' selectors and pods' Ready condition (or every pod with
//! an address under `publishNotReadyAddresses`), not read from EndpointSlices: the API server
//! rejects loopback addresses in EndpointSlices, and test-bed pods live in 127.0.0.0/8. A Service's
//! names resolve to its pods' addresses, not to its ClusterIP (nothing routes that here), so clients
//! must dial the target port: the test bed has no port translation.
//!
//! The files are rewritten in place (a rename would leave the bind mount on the old file) whenever
//! Services or pods change.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;

use crate::{Kubelet, lock};

/// A pod on this Node whose hosts file the kubelet keeps.
#[derive(Debug, Clone)]
pub struct PodHosts {
    pub path: PathBuf,
    pub namespace: String,
    pub hostname: String,
    pub subdomain: Option<String>,
    pub ip: String,
}

/// What service discovery needs of a Service.
struct ServiceInfo {
    selector: BTreeMap<String, String>,
    publish_not_ready: bool,
}

/// What service discovery needs of any pod in the cluster.
struct PodInfo {
    labels: BTreeMap<String, String>,
    ip: String,
    ready: bool,
    hostname: Option<String>,
    subdomain: Option<String>,
}

type Key = (String, String);

#[derive(Default)]
struct State {
    /// Pods on this Node, by uid.
    local: BTreeMap<String, PodHosts>,
    services: BTreeMap<Key, ServiceInfo>,
    pods: BTreeMap<Key, PodInfo>,
}

pub struct Dns {
    api_host: String,
    state: Mutex<State>,
    changed: Notify,
}

impl Dns {
    pub fn new(api_host: String) -> Self {
        Self {
            api_host,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    /// Writes the pod's hosts file now and keeps it current until `remove_pod`.
    pub fn add_pod(&self, uid: &str, pod: PodHosts) -> Result<()> {
        let mut state = lock(&self.state);
        std::fs::write(&pod.path, self.render(&state, &pod))?;
        state.local.insert(uid.to_string(), pod);
        Ok(())
    }

    pub fn remove_pod(&self, uid: &str) {
        lock(&self.state).local.remove(uid);
    }

    fn render(&self, state: &State, pod: &PodHosts) -> String {
        let mut out = String::from(
            "# Written by strom-kubelet from Services and pods.\n\
             127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        );
        let own = match &pod.subdomain {
            Some(sub) => format!(
                "{h}.{sub}.{ns}.svc.cluster.local {h}",
                h = pod.hostname,
                ns = pod.namespace
            ),
            None => pod.hostname.clone(),
        };
        let _ = writeln!(out, "{}\t{own}", pod.ip);
        let api = if pod.namespace == "default" {
            "kubernetes "
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{}\t{api}kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local",
            self.api_host
        );
        for ((ns, service), info) in &state.services {
            let short = if *ns == pod.namespace {
                format!(" {service}")
            } else {
                String::new()
            };
            for ((pod_ns, _), p) in &state.pods {
                if pod_ns != ns || !(p.ready || info.publish_not_ready) {
                    continue;
                }
                if !info.selector.is_empty()
                    && info
                        .selector
                        .iter()
                        .all(|(k, v)| p.labels.get(k) == Some(v))
                {
                    let _ = writeln!(
                        out,
                        "{}\t{service}.{ns}.svc.cluster.local {service}.{ns}.svc {service}.{ns}{short}",
                        p.ip
                    );
                }
                if let (Some(h), Some(sub)) = (&p.hostname, &p.subdomain)
                    && sub == service
                {
                    let _ = writeln!(
                        out,
                        "{}\t{h}.{service}.{ns}.svc.cluster.local {h}.{service}.{ns}.svc",
                        p.ip
                    );
                }
            }
        }
        out
    }

    fn rewrite_all(&self) {
        let state = lock(&self.state);
        for pod in state.local.values() {
            let text = self.render(&state, pod);
            if std::fs::read_to_string(&pod.path).ok().as_deref() != Some(text.as_str())
                && let Err(e) = overwrite(&pod.path, text.as_bytes())
            {
                tracing::warn!(path = %pod.path.display(), error = %e, "hosts file not written");
            }
        }
    }
}

/// Replaces a file's contents in place (the pods' mount namespaces hold its inode, so a rename
/// would not reach them) without truncating it first: a resolver reading meanwhile sees the old
/// contents or the new, possibly followed by a tail of old lines, never an empty file.
fn overwrite(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(data)?;
    f.set_len(data.len() as u64)
}

fn key(meta: &kube::api::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn service_info(s: &Service) -> ServiceInfo {
    let spec = s.spec.clone().unwrap_or_default();
    ServiceInfo {
        selector: spec.selector.unwrap_or_default(),
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    }
}

/// None for a pod without an address or on its way out.
fn pod_info(p: &Pod) -> Option<PodInfo> {
    let status = p.status.as_ref()?;
    let ip = status.pod_ip.clone()?;
    if p.metadata.deletion_timestamp.is_some()
        || matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
    {
        return None;
    }
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let spec = p.spec.as_ref();
    Some(PodInfo {
        labels: p.metadata.labels.clone().unwrap_or_default(),
        ip,
        ready,
        hostname: spec.and_then(|s| s.hostname.clone()),
        subdomain: spec.and_then(|s| s.subdomain.clone()),
    })
}

/// Follows Services and pods in every namespace, rewriting the local pods' hosts files.
pub async fn watch(k: Arc<Kubelet>) -> Result<()> {
    let writer = async {
        loop {
            k.dns.changed.notified().await;
            k.dns.rewrite_all();
        }
    };
    tokio::select! {
        r = follow(&k, |s| &mut s.services, |s: &Service| Some(service_info(s))) => r?,
        r = follow(&k, |s| &mut s.pods, pod_info) => r?,
        () = writer => {}
    }
    Ok(())
}

/// Keeps MAP (a part of the state) equal to INFO of every object of kind K, waking the writer on
/// each change. INFO None leaves an object out.
async fn follow<K, V>(
    k: &Arc<Kubelet>,
    map: fn(&mut State) -> &mut BTreeMap<Key, V>,
    info: fn(&K) -> Option<V>,
) -> Result<()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    watcher(Api::<K>::all(k.client.clone()), watcher::Config::default())
        .default_backoff()
        .try_for_each(|event| {
            let mut state = lock(&k.dns.state);
            let map = map(&mut state);
            match event {
                watcher::Event::Init => map.clear(),
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    match info(&o) {
                        Some(v) => map.insert(key(o.meta()), v),
                        None => map.remove(&key(o.meta())),
                    };
                }
                watcher::Event::Delete(o) => {
                    map.remove(&key(o.meta()));
                }
                watcher::Event::InitDone => {}
            }
            drop(state);
            k.dns.changed.notify_one();
            std::future::ready(Ok(()))
        })
        .await?;
    Ok(())
}
