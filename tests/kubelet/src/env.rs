//! A container's environment and arguments, resolved the way the kubelet resolves them: `envFrom`,
//! then `env` in order (literal values with `$(VAR)` references to what came before; values from
//! the downward API, ConfigMaps and Secrets), then `$(VAR)` references in command and args.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret};
use kube::api::Api;

use crate::Kubelet;

/// The environment every container starts with, before its own.
fn base(k: &Kubelet, pod: &Pod) -> Vec<(String, String)> {
    let port = k.args.api_port.to_string();
    vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), "/root".into()),
        ("HOSTNAME".into(), hostname(pod)),
        ("KUBERNETES_SERVICE_HOST".into(), k.args.api_host.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone()),
        (
            "KUBERNETES_PORT".into(),
            format!("tcp://{}:{port}", k.args.api_host),
        ),
    ]
}

/// The pod's hostname: `spec.hostname`, else its name.
pub fn hostname(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default()
}

/// Resolves a container's environment. `pod_ip` is the address the pod was given (its status may
/// not carry it yet).
pub async fn resolve(
    k: &Kubelet,
    pod: &Pod,
    pod_ip: &str,
    container: &Container,
) -> Result<Vec<(String, String)>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = base(k, pod);
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            if let Some(cm) = get_opt::<ConfigMap>(k, ns, &r.name, optional).await? {
                for (key, value) in cm.data.unwrap_or_default() {
                    set(&mut env, format!("{prefix}{key}"), value);
                }
            }
        }
        if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            if let Some(secret) = get_opt::<Secret>(k, ns, &r.name, optional).await? {
                for (key, value) in secret.data.unwrap_or_default() {
                    set(&mut env, format!("{prefix}{key}"), utf8(value.0, &key)?);
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = value_of(k, pod, pod_ip, ns, var, &env).await? {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

async fn value_of(
    k: &Kubelet,
    pod: &Pod,
    pod_ip: &str,
    ns: &str,
    var: &EnvVar,
    env: &[(String, String)],
) -> Result<Option<String>> {
    let Some(from) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), env)));
    };
    if let Some(f) = &from.field_ref {
        return field(k, pod, pod_ip, &f.field_path)
            .map(Some)
            .with_context(|| format!("env {}", var.name));
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional.unwrap_or(false);
        let cm = get_opt::<ConfigMap>(k, ns, &r.name, optional).await?;
        let value = cm.and_then(|cm| cm.data.and_then(|mut d| d.remove(&r.key)));
        return match value {
            Some(v) => Ok(Some(v)),
            None if optional => Ok(None),
            None => bail!(
                "env {}: ConfigMap {ns}/{} has no key {}",
                var.name,
                r.name,
                r.key
            ),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional.unwrap_or(false);
        let secret = get_opt::<Secret>(k, ns, &r.name, optional).await?;
        let value = secret.and_then(|s| s.data.and_then(|mut d| d.remove(&r.key)));
        return match value {
            Some(v) => Ok(Some(utf8(v.0, &r.key)?)),
            None if optional => Ok(None),
            None => bail!(
                "env {}: Secret {ns}/{} has no key {}",
                var.name,
                r.name,
                r.key
            ),
        };
    }
    bail!(
        "env {}: only fieldRef, configMapKeyRef and secretKeyRef are supported by the test bed's kubelet",
        var.name
    )
}

/// A downward-API field of the pod.
pub fn field(k: &Kubelet, pod: &Pod, pod_ip: &str, path: &str) -> Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let from_map = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_default()
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => k.node_ip.to_string(),
        "metadata.labels" => render_map(meta.labels.as_ref()),
        "metadata.annotations" => render_map(meta.annotations.as_ref()),
        other => {
            let bracketed = |prefix: &str| {
                other
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix("['"))
                    .and_then(|rest| rest.strip_suffix("']"))
            };
            if let Some(key) = bracketed("metadata.labels") {
                from_map(&meta.labels, key)
            } else if let Some(key) = bracketed("metadata.annotations") {
                from_map(&meta.annotations, key)
            } else {
                return Err(anyhow!("unsupported fieldRef {other:?}"));
            }
        }
    };
    Ok(value)
}

fn render_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}

/// A namespaced object by name; None if it is missing and `optional`, an error if it is missing
/// otherwise.
pub async fn get_opt<K>(k: &Kubelet, ns: &str, name: &str, optional: bool) -> Result<Option<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let found = Api::<K>::namespaced(k.client.clone(), ns)
        .get_opt(name)
        .await
        .with_context(|| format!("get {} {ns}/{name}", K::kind(&Default::default())))?;
    match found {
        Some(obj) => Ok(Some(obj)),
        None if optional => Ok(None),
        None => bail!("{} {ns}/{name} not found", K::kind(&Default::default())),
    }
}

fn utf8(bytes: Vec<u8>, key: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| anyhow!("key {key} is not UTF-8"))
}

/// Kubernetes' `$(VAR)` expansion: a reference to a defined variable is replaced, `$$` is a
/// literal `$`, anything else is left as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
            && let Some((_, value)) = env.iter().rev().find(|(n, _)| n == &body[..end])
        {
            out.push_str(value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expands_defined_references_only() {
        let env = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x y".to_string()),
        ];
        assert_eq!(expand("--a=$(A) --b=$(B)", &env), "--a=1 --b=x y");
        assert_eq!(expand("$(C) $$(A) $ $(A", &env), "$(C) $(A) $ $(A");
    }
}
