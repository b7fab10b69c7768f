//! The process kubelet (tests/kubelet) with the real control plane: Deployments become running
//! pods through the controller-manager and scheduler; pods get their env, volumes, own address,
//! hostname and Service names; probes, restarts and exit codes show in pod status; deletion stops
//! the processes (SIGTERM, then SIGKILL after the grace period) and the garbage collector removes
//! what a Deployment owned; a Node whose kubelet is killed takes its pods with it.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use strom_tests::testbed::{TestBed, eventually, run_ok};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ECHO_IMAGE: &str = "strom.test/strom-testbed-echo:dev";
/// Generous bound for the cluster to converge on a loaded 2-core machine.
const CONVERGE_SECS: u64 = 120;

/// GET http://ADDR/PATH from the test process: (status, body).
async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// The user the API server takes TOKEN for (a SelfSubjectReview), verifying it with CA.
fn who_am_i(bed: &TestBed, token: &str, ca: &str) -> String {
    let ca_file = bed.run_dir().join(format!("ca-{}.crt", std::process::id()));
    std::fs::write(&ca_file, ca).unwrap();
    let review = run_ok(
        std::process::Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "20", "-X", "POST"])
            .arg("--cacert")
            .arg(&ca_file)
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["-H", "Content-Type: application/json"])
            .args([
                "-d",
                r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
            ])
            .arg(format!(
                "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
                bed.var("STROM_TESTBED_API")
            )),
    );
    let review: Value = serde_json::from_str(&review).unwrap();
    review["status"]["userInfo"]["username"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// What NAME resolves to inside the pod at IP; None while it does not resolve (a Service
/// without ready pods has no names).
async fn resolve(ip: &str, name: &str) -> Option<String> {
    match http_get(&format!("{ip}:8080"), &format!("/resolve/{name}")).await {
        Some((200, body)) => Some(body),
        _ => None,
    }
}

async fn get_ok(ip: &str, path: &str) -> String {
    let (code, body) = http_get(&format!("{ip}:8080"), path)
        .await
        .unwrap_or_else(|| panic!("no answer from {ip}:8080{path}"));
    assert_eq!(code, 200, "GET {ip}:8080{path}: {body}");
    body
}

/// The echo container: binds its pod address (downward API), readiness on /ready.
fn echo_container(name: &str, args: &[&str]) -> Value {
    let mut all = vec!["--port", "8080"];
    all.extend_from_slice(args);
    json!({
        "name": name,
        "image": ECHO_IMAGE,
        "args": all,
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "ports": [{"name": "http", "containerPort": 8080}],
    })
}

fn pod(name: &str, spec: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
    }))
    .unwrap()
}

/// A pid from a container status's `strom://<pid>` id.
fn pid_of(status: &k8s_openapi::api::core::v1::ContainerStatus) -> u32 {
    status
        .container_id
        .as_deref()
        .and_then(|id| id.strip_prefix("strom://"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no strom:// container id in {status:?}"))
}

/// The process is running (not a zombie) and is the echo binary.
fn echo_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    matches!(state, Some(Some(s)) if s != 'Z')
        && String::from_utf8_lossy(&cmdline).contains("strom-testbed-echo")
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn ip(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

/// Creates the pod NAME (labelled `app: NAME`) with SPEC.
async fn create_pod(pods: &Api<Pod>, name: &str, spec: Value) {
    pods.create(&PostParams::default(), &pod(name, spec))
        .await
        .unwrap();
}

/// The test bed, a client, a fresh namespace named after the test, and its pods.
async fn setup(prefix: &str) -> (&'static TestBed, kube::Client, String, Api<Pod>) {
    let bed = TestBed::get();
    let client = bed.kube().await;
    let ns = bed.namespace(prefix).await;
    let pods = Api::namespaced(client.clone(), &ns);
    (bed, client, ns, pods)
}

async fn wait_pod(pods: &Api<Pod>, name: &str, what: &str, f: impl Fn(&Pod) -> bool) -> Pod {
    let deadline = std::time::Instant::now() + Duration::from_secs(CONVERGE_SECS);
    loop {
        let pod = pods.get_opt(name).await.unwrap();
        if let Some(p) = pod.as_ref().filter(|p| f(p)) {
            return p.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up after {CONVERGE_SECS} s waiting for pod {name}: {what}; its status: {}",
            serde_json::to_string_pretty(&pod.and_then(|p| p.status)).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn deployment_runs_pods_with_env_volumes_and_service_names_and_deletion_stops_them() {
    let (bed, client, ns, pods) = setup("kubelet-deploy").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "settings"},
            "data": {"greeting": "hello from a ConfigMap", "conf.yaml": "parallelism: 4\n"}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "creds"},
                "stringData": {"password": "s3cr3t"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let mut container =
        echo_container("echo", &["--message", "replica $(POD_NAME) of $(GREETING)"]);
    container["env"].as_array_mut().unwrap().extend([
        json!({"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}}),
        json!({"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}),
        json!({"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}),
        json!({"name": "WHO", "value": "$(POD_NAME)@$(NODE)"}),
    ]);
    container["volumeMounts"] = json!([
        {"name": "conf", "mountPath": "/etc/strom-echo/conf", "readOnly": true},
        {"name": "creds", "mountPath": "/etc/strom-echo/creds"},
    ]);
    container["readinessProbe"] =
        json!({"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1});
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "echo"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "echo"}},
            "template": {
                "metadata": {"labels": {"app": "echo"}},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [container],
                    "volumes": [
                        {"name": "conf", "configMap": {"name": "settings"}},
                        {"name": "creds", "secret": {"secretName": "creds"}},
                    ],
                },
            },
        },
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "echo"},
                "spec": {"selector": {"app": "echo"}, "ports": [{"port": 8080, "targetPort": 8080}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let running = eventually("2 Running, Ready echo pods", CONVERGE_SECS, || async {
        let list = pods
            .list(&ListParams::default().labels("app=echo"))
            .await
            .unwrap();
        (list.items.len() == 2 && list.items.iter().all(|p| phase(p) == "Running" && ready(p)))
            .then_some(list.items)
    })
    .await;
    // Owned by the Deployment's ReplicaSet, placed by the scheduler, each with its own address.
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(rs.items.len(), 1);
    let rs_name = rs.items[0].metadata.name.clone().unwrap();
    let ips: BTreeSet<String> = running.iter().map(ip).collect();
    assert_eq!(ips.len(), 2, "distinct pod addresses: {ips:?}");
    for p in &running {
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("ReplicaSet", rs_name.as_str())
        );
        let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
        assert!(node.starts_with("strom-node-"), "{node}");
        let octet = bed.var("STROM_TESTBED_POD_OCTET");
        assert!(ip(p).starts_with(&format!("127.{octet}.")), "{}", ip(p));
    }

    let names: BTreeSet<String> = running
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    for p in &running {
        let (ip, name) = (ip(p), p.metadata.name.clone().unwrap());
        let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
        // Env: downward API, ConfigMap and Secret keys, $(VAR) references, the API server.
        assert_eq!(get_ok(&ip, "/env/POD_NAME").await, name);
        assert_eq!(get_ok(&ip, "/env/GREETING").await, "hello from a ConfigMap");
        assert_eq!(get_ok(&ip, "/env/PASSWORD").await, "s3cr3t");
        assert_eq!(get_ok(&ip, "/env/WHO").await, format!("{name}@{node}"));
        assert_eq!(
            get_ok(&ip, "/env/KUBERNETES_SERVICE_HOST").await,
            "127.0.0.1"
        );
        assert_eq!(
            get_ok(&ip, "/env/KUBERNETES_SERVICE_PORT").await,
            bed.var("STROM_TESTBED_API_PORT")
        );
        // Volumes at their mount paths, and the service-account token every pod gets.
        assert_eq!(
            get_ok(&ip, "/file/etc/strom-echo/conf/conf.yaml").await,
            "parallelism: 4\n"
        );
        assert_eq!(
            get_ok(&ip, "/file/etc/strom-echo/creds/password").await,
            "s3cr3t"
        );
        assert_eq!(
            get_ok(
                &ip,
                "/file/var/run/secrets/kubernetes.io/serviceaccount/namespace"
            )
            .await,
            ns
        );
        let token = get_ok(
            &ip,
            "/file/var/run/secrets/kubernetes.io/serviceaccount/token",
        )
        .await;
        let ca = get_ok(
            &ip,
            "/file/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        )
        .await;
        // In-cluster credentials work: the API server, verified with the pod's CA, takes the
        // pod's token as its namespace's default ServiceAccount.
        assert_eq!(
            who_am_i(bed, &token, &ca),
            format!("system:serviceaccount:{ns}:default")
        );
        // Its own hostname; Service names resolve to the ready pods' addresses, in every form.
        assert_eq!(get_ok(&ip, "/hostname").await, name);
        let all: Vec<&str> = ips.iter().map(String::as_str).collect();
        for service_name in [
            "echo",
            &format!("echo.{ns}"),
            &format!("echo.{ns}.svc"),
            &format!("echo.{ns}.svc.cluster.local"),
        ] {
            assert_eq!(
                get_ok(&ip, &format!("/resolve/{service_name}")).await,
                all.join(","),
                "{service_name}"
            );
        }
        // One pod reaches the Service by name.
        let answer = get_ok(&ip, &format!("/get/echo.{ns}.svc:8080/env/POD_NAME")).await;
        assert!(names.contains(&answer), "{answer} not one of {names:?}");
    }
    // The mounts stayed inside the pods' own mount namespaces.
    assert!(!std::path::Path::new("/etc/strom-echo/conf/conf.yaml").exists());
    assert!(
        !std::fs::read_to_string("/etc/hosts")
            .unwrap()
            .contains("svc.cluster.local")
    );

    // Deleting the Deployment: the garbage collector removes the ReplicaSet and its pods, the
    // kubelet stops the processes with SIGTERM.
    let pids: Vec<(String, u32)> = running
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap(),
                pid_of(
                    &p.status
                        .as_ref()
                        .unwrap()
                        .container_statuses
                        .as_ref()
                        .unwrap()[0],
                ),
            )
        })
        .collect();
    for (_, pid) in &pids {
        assert!(echo_alive(*pid), "pid {pid} runs before the deletion");
    }
    deployments
        .delete("echo", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the ReplicaSet and pods garbage-collected",
        CONVERGE_SECS,
        || async {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .unwrap();
            let pods = pods.list(&ListParams::default()).await.unwrap();
            (rs.items.is_empty() && pods.items.is_empty()).then_some(())
        },
    )
    .await;
    for (name, pid) in &pids {
        assert!(!echo_alive(*pid), "pid {pid} of {name} still runs");
        let log = bed.container_logs(&ns, name, "echo");
        assert!(
            log.contains(&format!("replica {name} of hello from a ConfigMap")),
            "{log}"
        );
        assert!(log.contains("echo: exiting on SIGTERM"), "{log}");
    }
}

#[tokio::test]
async fn restart_policy_exit_codes_and_liveness_show_in_pod_status() {
    let (bed, _, ns, pods) = setup("kubelet-restarts").await;
    // OnFailure, exiting 3: restarted, with the last termination in status.
    create_pod(
        &pods,
        "crashes",
        json!({
            "restartPolicy": "OnFailure",
            "containers": [echo_container("main", &["--exit-after-ms", "200", "--exit-code", "3"])],
        }),
    )
    .await;
    // Never, exiting 0 / 2: Succeeded / Failed with the exit code.
    create_pod(
        &pods,
        "succeeds",
        json!({
            "restartPolicy": "Never",
            "containers": [echo_container("main", &["--exit-after-ms", "100", "--exit-code", "0"])],
        }),
    )
    .await;
    create_pod(
        &pods,
        "fails",
        json!({
            "restartPolicy": "Never",
            "containers": [echo_container("main", &["--exit-after-ms", "100", "--exit-code", "2"])],
        }),
    )
    .await;
    // A liveness probe on a port nobody listens on: killed and restarted (restartPolicy Always).
    let mut unhealthy = echo_container("main", &[]);
    unhealthy["livenessProbe"] =
        json!({"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2});
    create_pod(
        &pods,
        "unhealthy",
        json!({
            "terminationGracePeriodSeconds": 2,
            "containers": [unhealthy],
        }),
    )
    .await;
    // Init containers run first, each to its end: one that succeeds lets the main container start;
    // one that fails under restartPolicy Never fails the pod, and the main container never runs.
    create_pod(
        &pods,
        "initialised",
        json!({
            "initContainers": [echo_container("setup", &["--exit-after-ms", "100", "--exit-code", "0"])],
            "containers": [echo_container("main", &[])],
        }),
    )
    .await;
    create_pod(
        &pods,
        "init-fails",
        json!({
            "restartPolicy": "Never",
            "initContainers": [echo_container("setup", &["--exit-after-ms", "100", "--exit-code", "7"])],
            "containers": [echo_container("main", &[])],
        }),
    )
    .await;
    // An image no binary stands for: waiting with the reason a kubelet gives.
    create_pod(
        &pods,
        "no-image",
        json!({
            "containers": [{"name": "main", "image": "strom.test/does-not-exist:1"}],
        }),
    )
    .await;

    let restarts = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |c| c[0].restart_count)
    };
    let crashed = wait_pod(&pods, "crashes", "restarted twice", |p| restarts(p) >= 2).await;
    let last = crashed
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .last_state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    assert_ne!(phase(&crashed), "Failed");

    let succeeded = wait_pod(&pods, "succeeds", "Succeeded", |p| phase(p) == "Succeeded").await;
    let t = succeeded.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    let failed = wait_pod(&pods, "fails", "Failed", |p| phase(p) == "Failed").await;
    let s = &failed.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(s.state.clone().unwrap().terminated.unwrap().exit_code, 2);
    assert_eq!(s.restart_count, 0);

    let unhealthy = wait_pod(&pods, "unhealthy", "restarted by its liveness probe", |p| {
        restarts(p) >= 1
    })
    .await;
    let last = unhealthy.status.unwrap().container_statuses.unwrap()[0]
        .last_state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    // Stopped by SIGTERM (echo exits 0 on it) after the probe failed: not a crash of its own.
    assert_eq!(last.exit_code, 0);
    assert!(
        bed.container_logs(&ns, "unhealthy", "main")
            .contains("echo: exiting on SIGTERM")
    );

    let waiting = wait_pod(&pods, "no-image", "ErrImagePull", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|c| {
                c[0].state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("ErrImagePull")
            })
    })
    .await;
    assert_eq!(phase(&waiting), "Pending");

    let init_state = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .and_then(|c| c[0].state.clone())
            .and_then(|s| s.terminated)
            .map(|t| t.exit_code)
    };
    let initialised = wait_pod(
        &pods,
        "initialised",
        "Running after its init container",
        |p| phase(p) == "Running",
    )
    .await;
    assert_eq!(init_state(&initialised), Some(0));
    assert!(
        bed.container_logs(&ns, "initialised", "setup")
            .contains("echo: exiting with 0")
    );
    let failed_init = wait_pod(&pods, "init-fails", "Failed by its init container", |p| {
        phase(p) == "Failed"
    })
    .await;
    assert_eq!(init_state(&failed_init), Some(7));
    assert_eq!(
        bed.container_logs(&ns, "init-fails", "main"),
        "",
        "the main container never ran"
    );
}

#[tokio::test]
async fn readiness_probe_decides_ready_and_service_membership() {
    let (_, client, ns, pods) = setup("kubelet-ready").await;
    let probed = |name: &str| {
        let mut c = echo_container("main", &[]);
        c["readinessProbe"] = json!({"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1, "timeoutSeconds": 5, "failureThreshold": 1});
        let mut p = pod(name, json!({"containers": [c]}));
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        p
    };
    for name in ["web-a", "web-b"] {
        pods.create(&PostParams::default(), &probed(name))
            .await
            .unwrap();
    }
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let a = wait_pod(&pods, "web-a", "Ready", ready).await;
    let b = wait_pod(&pods, "web-b", "Ready", ready).await;
    let (ip_a, ip_b) = (ip(&a), ip(&b));
    let both = [ip_a.clone(), ip_b.clone()]
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(",");
    eventually("web resolving to both pods", CONVERGE_SECS, || async {
        (resolve(&ip_a, "web").await.as_deref() == Some(both.as_str())).then_some(())
    })
    .await;
    // b reports not ready: its Ready condition drops and the Service stops naming it.
    get_ok(&ip_b, "/set-ready/false").await;
    wait_pod(&pods, "web-b", "not Ready", |p| {
        !ready(p) && phase(p) == "Running"
    })
    .await;
    eventually("web resolving to a only", CONVERGE_SECS, || async {
        (resolve(&ip_a, "web").await.as_deref() == Some(ip_a.as_str())).then_some(())
    })
    .await;
    get_ok(&ip_b, "/set-ready/true").await;
    wait_pod(&pods, "web-b", "Ready again", ready).await;
    eventually(
        "web resolving to both pods again",
        CONVERGE_SECS,
        || async { (resolve(&ip_a, "web").await.as_deref() == Some(both.as_str())).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_container_ignoring_sigterm_is_killed_after_the_grace_period() {
    let (bed, _, ns, pods) = setup("kubelet-grace").await;
    create_pod(
        &pods,
        "stubborn",
        json!({
            "terminationGracePeriodSeconds": 2,
            "containers": [echo_container("main", &["--ignore-sigterm"])],
        }),
    )
    .await;
    let p = wait_pod(&pods, "stubborn", "Running", |p| phase(p) == "Running").await;
    let pid = pid_of(&p.status.unwrap().container_statuses.unwrap()[0]);
    assert!(echo_alive(pid));
    // Watch the pod to its end: the kubelet reports how the container ended before it confirms
    // the deletion.
    let mut events = std::pin::pin!(kube::runtime::watcher(
        pods.clone(),
        kube::runtime::watcher::Config::default().fields("metadata.name=stubborn"),
    ));
    pods.delete("stubborn", &DeleteParams::default())
        .await
        .unwrap();
    use futures::StreamExt;
    let mut last_exit = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(CONVERGE_SECS);
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("pod deleted in time");
        match event.unwrap().unwrap() {
            kube::runtime::watcher::Event::Apply(p)
            | kube::runtime::watcher::Event::InitApply(p) => {
                if let Some(t) = p
                    .status
                    .and_then(|s| s.container_statuses)
                    .and_then(|c| c[0].state.clone())
                    .and_then(|s| s.terminated)
                {
                    last_exit = Some((t.exit_code, t.signal));
                }
            }
            kube::runtime::watcher::Event::Delete(_) => break,
            _ => {}
        }
    }
    assert_eq!(
        last_exit,
        Some((137, Some(9))),
        "SIGKILL after the grace period"
    );
    assert!(!echo_alive(pid));
    let log = bed.container_logs(&ns, "stubborn", "main");
    assert!(
        log.contains("echo: SIGTERM received") && !log.contains("exiting on SIGTERM"),
        "{log}"
    );
}

#[tokio::test]
async fn a_lost_node_takes_its_pods_with_it_and_they_are_rescheduled() {
    let (bed, client, ns, pods) = setup("kubelet-lost").await;
    // A Node of this test's own, so that losing it disturbs no other test.
    let node = format!("strom-lost-{}", std::process::id());
    let dir = bed.run_dir().join("nodes").join(&node);
    std::fs::create_dir_all(&dir).unwrap();
    let mut kubelet = std::process::Command::new(bed.var("STROM_TESTBED_KUBELET"))
        .args([
            "serve",
            "--node",
            &node,
            "--subnet",
            &format!(
                "127.{}.{}",
                bed.var("STROM_TESTBED_POD_OCTET"),
                100 + std::process::id() % 100
            ),
        ])
        .arg("--kubeconfig")
        .arg(bed.var("KUBECONFIG"))
        .arg("--dir")
        .arg(&dir)
        .arg("--image-dir")
        .arg(bed.var("STROM_TESTBED_IMAGE_DIR"))
        .args(["--api-port", bed.var("STROM_TESTBED_API_PORT")])
        // Only this test's pod may land there: other tests' pods must not die with it.
        .args(["--taint", "strom.test/lost-node=true:NoSchedule"])
        .stdout(std::fs::File::create(dir.join("kubelet.log")).unwrap())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("the new Node Ready", CONVERGE_SECS, || async {
        let n = nodes.get_opt(&node).await.unwrap()?;
        n.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
    // A Deployment whose one replica tolerates the new Node's taint and prefers the Node: the
    // scheduler puts it there.
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "survivor"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "survivor"}},
            "template": {
                "metadata": {"labels": {"app": "survivor"}},
                "spec": {
                    "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]},
                    }]}},
                    "tolerations": [{"key": "strom.test/lost-node", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [echo_container("main", &[])],
                },
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let running_on = |wanted: Option<String>| {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=survivor"))
                .await
                .unwrap();
            list.items.into_iter().find(|p| {
                phase(p) == "Running"
                    && ready(p)
                    && p.metadata.deletion_timestamp.is_none()
                    && match &wanted {
                        Some(n) => p.spec.as_ref().unwrap().node_name.as_ref() == Some(n),
                        None => true,
                    }
            })
        }
    };
    let first = eventually("the replica Running on the new Node", CONVERGE_SECS, || {
        running_on(Some(node.clone()))
    })
    .await;
    let pid = pid_of(
        &first
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0],
    );
    assert_eq!(get_ok(&ip(&first), "/healthz").await, "ok");

    kubelet.kill().unwrap(); // SIGKILL: no chance to stop anything itself
    kubelet.wait().unwrap();
    eventually(
        "the pod's process gone with its kubelet",
        CONVERGE_SECS,
        || async { (!echo_alive(pid)).then_some(()) },
    )
    .await;
    assert!(
        http_get(&format!("{}:8080", ip(&first)), "/healthz")
            .await
            .is_none()
    );

    // The real control plane notices: the Node's Ready condition goes Unknown (no Lease renewals),
    // the pod is evicted, and the ReplicaSet's replacement runs on a Node that is still there.
    eventually("the lost Node marked not Ready", CONVERGE_SECS, || async {
        let n = nodes.get(&node).await.unwrap();
        n.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status != "True")
            .then_some(())
    })
    .await;
    let replacement = eventually(
        "a replacement Running on another Node",
        CONVERGE_SECS,
        || async {
            running_on(None)
                .await
                .filter(|p| p.spec.as_ref().unwrap().node_name.as_ref() != Some(&node))
        },
    )
    .await;
    assert_ne!(replacement.metadata.uid, first.metadata.uid);
    assert_eq!(
        get_ok(&ip(&replacement), "/env/POD_NAME").await,
        replacement.metadata.name.clone().unwrap()
    );

    // What stays behind for want of a kubelet: the evicted pod, Terminating on the lost Node.
    let evicted = pods
        .get(first.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    assert!(
        evicted.metadata.deletion_timestamp.is_some(),
        "the pod on the lost Node was evicted"
    );
    pods.delete(
        first.metadata.name.as_deref().unwrap(),
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    nodes.delete(&node, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn crd_with_a_cel_rule_is_established_and_rejects_a_bad_object_with_its_message() {
    let bed = TestBed::get();
    let ns = bed.namespace("crd-cel").await;
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.strom.test
spec:
  group: smoke.strom.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [replicas, minReplicas]
            properties:
              replicas: {type: integer}
              minReplicas: {type: integer}
            x-kubernetes-validations:
            - rule: self.minReplicas <= self.replicas
              message: minReplicas must not exceed replicas
"#;
    let apply = |yaml: &str| {
        strom_tests::testbed::output_with_stdin(bed.kubectl().args(["apply", "-f", "-"]), yaml)
    };
    let out = apply(crd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_ok(bed.kubectl().args([
        "wait",
        "--for",
        "condition=Established",
        "--timeout",
        "60s",
        "crd/widgets.smoke.strom.test",
    ]));
    let widget = |name: &str, replicas: u32, min: u32| {
        format!(
            "apiVersion: smoke.strom.test/v1\nkind: Widget\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{replicas: {replicas}, minReplicas: {min}}}\n"
        )
    };
    let bad = apply(&widget("bad", 1, 3));
    assert!(
        !bad.status.success(),
        "the CEL rule admitted a violating Widget"
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("minReplicas must not exceed replicas"),
        "{stderr}"
    );
    let good = apply(&widget("good", 3, 1));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let got = run_ok(bed.kubectl().args([
        "-n",
        &ns,
        "get",
        "widgets",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]));
    assert_eq!(got, "good");
}

#[tokio::test]
async fn helm_installs_and_uninstalls_a_chart() {
    let (bed, client, ns, pods) = setup("helm").await;
    let chart = bed.run_dir().join(format!("charts/{ns}/echo"));
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: echo\nversion: 0.1.0\nkubeVersion: \">=1.30.0-0\"\n",
    )
    .unwrap();
    std::fs::write(chart.join("values.yaml"), "replicas: 1\ngreeting: hi\n").unwrap();
    std::fs::write(chart.join("templates/resources.yaml"), format!(r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: {{{{ .Release.Name }}}}-settings}}
data: {{greeting: {{{{ .Values.greeting | quote }}}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {{{{ .Release.Name }}}}}}
spec:
  replicas: {{{{ .Values.replicas }}}}
  selector: {{matchLabels: {{app: {{{{ .Release.Name }}}}}}}}
  template:
    metadata: {{labels: {{app: {{{{ .Release.Name }}}}}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: echo
        image: {ECHO_IMAGE}
        args: ["--port", "8080"]
        env:
        - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
        - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: {{{{ .Release.Name }}}}-settings, key: greeting}}}}}}
        readinessProbe: {{httpGet: {{path: /ready, port: 8080}}, periodSeconds: 1}}
"#)).unwrap();
    // --wait: helm itself waits for the Deployment's pods to be ready (the kubelet's readiness).
    run_ok(bed.helm().args(["install", "demo"]).arg(&chart).args([
        "-n",
        &ns,
        "--set",
        "replicas=2",
        "--set",
        "greeting=hello from helm",
        "--wait",
        "--timeout",
        "120s",
    ]));
    let list = pods
        .list(&ListParams::default().labels("app=demo"))
        .await
        .unwrap();
    assert_eq!(list.items.iter().filter(|p| ready(p)).count(), 2);
    for p in &list.items {
        assert_eq!(get_ok(&ip(p), "/env/GREETING").await, "hello from helm");
    }
    let status = run_ok(bed.helm().args(["status", "demo", "-n", &ns, "-o", "json"]));
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["info"]["status"], "deployed");

    run_ok(bed.helm().args([
        "uninstall",
        "demo",
        "-n",
        &ns,
        "--wait",
        "--timeout",
        "120s",
    ]));
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("demo-settings")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .get_opt("demo")
            .await
            .unwrap()
            .is_none()
    );
    eventually("the chart's pods gone", CONVERGE_SECS, || async {
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    let releases = run_ok(bed.helm().args(["list", "-n", &ns, "-q"]));
    assert_eq!(releases.trim(), "");
}

/// `up` names a component that fails to start and shows the tail of its own log. The failing
/// component here is a script standing in for etcd that writes a line and exits: what is tested is
/// the report, not etcd.
#[test]
fn up_reports_a_component_that_fails_to_start_with_its_log() {
    let dir = std::env::temp_dir().join(format!("strom-testbed-fail-{}", std::process::id()));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
    ] {
        let path = bin.join(tool);
        std::fs::write(
            &path,
            "#!/bin/sh\necho \"$0: cannot open data dir: permission denied (test)\" >&2\nexit 3\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = std::process::Command::new(strom_tests::testbed::scripts_dir().join("up"))
        .env("STROM_TESTBED_RUN", dir.join("run"))
        .env("STROM_TESTBED_BIN", &bin)
        .env("STROM_TESTBED_TIMEOUT", "20")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "up succeeded with a broken etcd: {stderr}"
    );
    assert!(
        stderr.contains("etcd exited while waiting for healthy /health"),
        "{stderr}"
    );
    assert!(stderr.contains("etcd failed"), "{stderr}");
    assert!(
        stderr.contains("etcd: cannot open data dir: permission denied (test)"),
        "{stderr}"
    );
    // Nothing is left running; down cleans up the kept logs.
    run_ok(
        std::process::Command::new(strom_tests::testbed::scripts_dir().join("down"))
            .env("STROM_TESTBED_RUN", dir.join("run")),
    );
    assert!(!dir.join("run").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
