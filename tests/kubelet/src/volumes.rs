//! Pod volumes as directories under the pod's own dir, bound at their mount paths by
//! `run-container`: emptyDir, hostPath, configMap, secret, downwardAPI and projected (which is what
//! every pod's service-account token, CA certificate and namespace arrive by).
//! Written once when the pod starts; later changes to a ConfigMap or Secret are not synced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount,
};
use kube::api::{Api, PostParams};

use crate::Kubelet;
use crate::container::Mount;

/// Writes every volume of the pod under `dir`; returns each volume's source path by name.
pub async fn prepare(
    k: &Kubelet,
    pod: &Pod,
    pod_ip: &str,
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = BTreeMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = dir.join(&v.name);
        let ctx = || format!("volume {}", v.name);
        if let Some(host) = &v.host_path {
            out.insert(v.name.clone(), PathBuf::from(&host.path));
            continue;
        }
        std::fs::create_dir_all(&path).with_context(ctx)?;
        if v.empty_dir.is_some() {
        } else if let Some(cm) = &v.config_map {
            let name = cm.name.as_str();
            let optional = cm.optional.unwrap_or(false);
            if let Some(data) = config_map(k, ns, name, optional).await.with_context(ctx)? {
                write_keys(&path, &data, cm.items.as_deref()).with_context(ctx)?;
            }
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.as_deref().unwrap_or_default();
            let optional = s.optional.unwrap_or(false);
            if let Some(data) = secret(k, ns, name, optional).await.with_context(ctx)? {
                write_keys(&path, &data, s.items.as_deref()).with_context(ctx)?;
            }
        } else if let Some(d) = &v.downward_api {
            write_downward(k, pod, pod_ip, &path, d.items.as_deref()).with_context(ctx)?;
        } else if let Some(p) = &v.projected {
            for source in p.sources.iter().flatten() {
                if let Some(cm) = &source.config_map {
                    let optional = cm.optional.unwrap_or(false);
                    if let Some(data) = config_map(k, ns, &cm.name, optional)
                        .await
                        .with_context(ctx)?
                    {
                        write_keys(&path, &data, cm.items.as_deref()).with_context(ctx)?;
                    }
                }
                if let Some(s) = &source.secret {
                    let optional = s.optional.unwrap_or(false);
                    if let Some(data) = secret(k, ns, &s.name, optional).await.with_context(ctx)? {
                        write_keys(&path, &data, s.items.as_deref()).with_context(ctx)?;
                    }
                }
                if let Some(d) = &source.downward_api {
                    write_downward(k, pod, pod_ip, &path, d.items.as_deref()).with_context(ctx)?;
                }
                if let Some(t) = &source.service_account_token {
                    let token = token(k, pod, t.audience.clone(), t.expiration_seconds)
                        .await
                        .with_context(ctx)?;
                    write_file(&path.join(&t.path), token.as_bytes()).with_context(ctx)?;
                }
            }
        } else {
            bail!(
                "volume {}: only emptyDir, hostPath, configMap, secret, downwardAPI and projected \
                 volumes are supported by the test bed's kubelet",
                v.name
            );
        }
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// The container's volume mounts as bind mounts.
pub fn mounts(container: &Container, volumes: &BTreeMap<String, PathBuf>) -> Result<Vec<Mount>> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let base = volumes
                .get(&m.name)
                .with_context(|| format!("volumeMount {}: no volume of that name", m.name))?;
            let source = match m.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => {
                    let p = base.join(sub);
                    if !p.exists() {
                        std::fs::create_dir_all(&p)?;
                    }
                    p
                }
                _ => base.clone(),
            };
            Ok(Mount {
                source,
                target: PathBuf::from(&m.mount_path),
                read_only: m.read_only.unwrap_or(false),
            })
        })
        .collect()
}

/// A ConfigMap's keys (text and binary) as bytes.
async fn config_map(
    k: &Kubelet,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
    let found = crate::env::get_opt::<ConfigMap>(k, ns, name, optional).await?;
    Ok(found.map(|cm| {
        let text = cm.data.unwrap_or_default().into_iter();
        let binary = cm.binary_data.unwrap_or_default().into_iter();
        text.map(|(k, v)| (k, v.into_bytes()))
            .chain(binary.map(|(k, v)| (k, v.0)))
            .collect()
    }))
}

/// A Secret's keys as bytes.
async fn secret(
    k: &Kubelet,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
    let found = crate::env::get_opt::<Secret>(k, ns, name, optional).await?;
    Ok(found.map(|s| {
        let data = s.data.unwrap_or_default().into_iter();
        let text = s.string_data.unwrap_or_default().into_iter();
        data.map(|(k, v)| (k, v.0))
            .chain(text.map(|(k, v)| (k, v.into_bytes())))
            .collect()
    }))
}

/// A token for the pod's service account, bound to the pod (the TokenRequest API).
async fn token(
    k: &Kubelet,
    pod: &Pod,
    audience: Option<String>,
    expiration_seconds: Option<i64>,
) -> Result<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audience.into_iter().collect()),
            expiration_seconds: Some(expiration_seconds.unwrap_or(3607)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let response: TokenRequest = Api::<ServiceAccount>::namespaced(k.client.clone(), ns)
        .create_subresource("token", &sa, &PostParams::default(), &request)
        .await
        .with_context(|| format!("request a token for ServiceAccount {ns}/{sa}"))?;
    response
        .status
        .and_then(|s| s.token)
        .context("the token request returned no token")
}

fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> Result<()> {
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                let value = data
                    .get(&item.key)
                    .with_context(|| format!("no key {}", item.key))?;
                write_file(&dir.join(&item.path), value)?;
            }
        }
        _ => {
            for (key, value) in data {
                write_file(&dir.join(key), value)?;
            }
        }
    }
    Ok(())
}

fn write_downward(
    k: &Kubelet,
    pod: &Pod,
    pod_ip: &str,
    dir: &Path,
    items: Option<&[DownwardAPIVolumeFile]>,
) -> Result<()> {
    for item in items.into_iter().flatten() {
        let Some(f) = &item.field_ref else {
            bail!("downwardAPI {}: only fieldRef is supported", item.path);
        };
        let value = crate::env::field(k, pod, pod_ip, &f.field_path)?;
        write_file(&dir.join(&item.path), value.as_bytes())?;
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, data).with_context(|| format!("write {}", path.display()))
}
