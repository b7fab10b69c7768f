//! Service discovery without kube-proxy or a DNS server: every pod's `/etc/hosts` (bound over the
//! real one in its mount namespace) names the ready endpoints of every Service, as cluster DNS
//! would: `svc.ns.svc.cluster.local`, `svc.ns.svc`, `svc.ns`, and `svc` within the pod's own
//! namespace; `host.svc.ns.svc.cluster.local` for endpoints with a hostname (StatefulSet pods
//! behind a headless Service); the pod's own name. A ClusterIP Service's names resolve to its
//! endpoints' pod addresses, not to the ClusterIP (nothing routes that here), so clients must dial
//! the target port: the test bed has no port translation.
//!
//! The files are rewritten in place (a rename would leave the bind mount on the old file) whenever
//! Services or EndpointSlices change.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;

use crate::{Kubelet, lock};

#[derive(Debug, Clone)]
pub struct PodHosts {
    pub path: PathBuf,
    pub namespace: String,
    pub hostname: String,
    pub subdomain: Option<String>,
    pub ip: String,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, PodHosts>,
    /// (namespace, name) of every Service.
    services: BTreeMap<(String, String), ()>,
    /// (namespace, slice name) → (service name, [(address, hostname)]) of ready endpoints.
    slices: BTreeMap<(String, String), (String, Vec<(String, Option<String>)>)>,
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
        let text = self.render(&lock(&self.state), &pod);
        std::fs::write(&pod.path, text)?;
        lock(&self.state).pods.insert(uid.to_string(), pod);
        Ok(())
    }

    pub fn remove_pod(&self, uid: &str) {
        lock(&self.state).pods.remove(uid);
    }

    fn render(&self, state: &State, pod: &PodHosts) -> String {
        let mut out = String::from(
            "# Written by strom-kubelet from Services and EndpointSlices.\n\
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
        for ((ns, _), (service, endpoints)) in &state.slices {
            if !state.services.contains_key(&(ns.clone(), service.clone())) {
                continue;
            }
            let short = if *ns == pod.namespace {
                format!(" {service}")
            } else {
                String::new()
            };
            for (address, hostname) in endpoints {
                let _ = writeln!(
                    out,
                    "{address}\t{service}.{ns}.svc.cluster.local {service}.{ns}.svc {service}.{ns}{short}"
                );
                if let Some(h) = hostname {
                    let _ = writeln!(
                        out,
                        "{address}\t{h}.{service}.{ns}.svc.cluster.local {h}.{service}.{ns}.svc"
                    );
                }
            }
        }
        out
    }

    fn rewrite_all(&self) {
        let state = lock(&self.state);
        for pod in state.pods.values() {
            let text = self.render(&state, pod);
            if std::fs::read_to_string(&pod.path).ok().as_deref() != Some(text.as_str()) {
                // In place: the pod's mount namespace holds this inode.
                if let Err(e) = std::fs::write(&pod.path, text) {
                    tracing::warn!(path = %pod.path.display(), error = %e, "hosts file not written");
                }
            }
        }
    }
}

/// Follows Services and EndpointSlices in every namespace, rewriting the pods' hosts files.
pub async fn watch(k: Arc<Kubelet>) -> Result<()> {
    let services = watcher(
        Api::<Service>::all(k.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .try_for_each(|event| {
        let k = k.clone();
        async move {
            let mut state = lock(&k.dns.state);
            match event {
                watcher::Event::Init => state.services.clear(),
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                    state.services.insert(key(&s.metadata), ());
                }
                watcher::Event::Delete(s) => {
                    state.services.remove(&key(&s.metadata));
                }
                watcher::Event::InitDone => {}
            }
            drop(state);
            k.dns.changed.notify_one();
            Ok(())
        }
    });
    let slices = watcher(
        Api::<EndpointSlice>::all(k.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .try_for_each(|event| {
        let k = k.clone();
        async move {
            let mut state = lock(&k.dns.state);
            match event {
                watcher::Event::Init => state.slices.clear(),
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                    let service = s
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name").cloned());
                    if let Some(service) = service {
                        let ready = s
                            .endpoints
                            .iter()
                            .flatten()
                            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                            .flat_map(|e| {
                                e.addresses
                                    .iter()
                                    .map(|a| (a.clone(), e.hostname.clone()))
                                    .collect::<Vec<_>>()
                            })
                            .collect();
                        state.slices.insert(key(&s.metadata), (service, ready));
                    }
                }
                watcher::Event::Delete(s) => {
                    state.slices.remove(&key(&s.metadata));
                }
                watcher::Event::InitDone => {}
            }
            drop(state);
            k.dns.changed.notify_one();
            Ok(())
        }
    });
    let writer = async {
        loop {
            k.dns.changed.notified().await;
            k.dns.rewrite_all();
        }
    };
    tokio::select! {
        r = services => r?,
        r = slices => r?,
        () = writer => {}
    }
    Ok(())
}

fn key(meta: &kube::api::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}
