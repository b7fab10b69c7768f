//! The operator under faults, on the test bed: its own process killed (SIGKILL, restarted by the
//! kubelet) at each step of a rescale, and a TaskManager pod deleted while the job runs. The job
//! converges every time, and the exactly-once output of all its runs equals the reference.
//!
//! Each step is held open by the test, so that the kill lands in it and nowhere else: the
//! TaskManagers are frozen (SIGSTOP, a few seconds, well inside the JobManager's heartbeat timeout)
//! so that a savepoint cannot complete, the operator is frozen so that it cannot see what the
//! JobManager did meanwhile, and the Nodes are cordoned so that a new run cannot start.

use std::process::Command;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{Value, json};
use strom_api::crd::FlinkJob;
use strom_tests::eo;
use strom_tests::testbed::{TestBed, eventually, run_ok};

use crate::operator::{
    CONVERGE, apply, auction_stats, committed, condition, install_with, is_true, merge, running_at,
    savepoints_in_s3, until,
};
use crate::s3::SERVER;

/// Helm arguments for a short operator Lease (4 s), so that a restarted or standby operator takes
/// over soon after the leader died or froze.
const SHORT_LEASE: [&str; 4] = [
    "--set",
    "env[0].name=STROM_OPERATOR_LEASE_SECONDS",
    "--set-string",
    "env[0].value=4",
];

/// Pods of one component (`operator`, `jobmanager`, `taskmanager`) in the namespace.
async fn pods_of(pods: &Api<Pod>, component: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/component={component}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The running container's process and its restart count, from the `strom://<pid>` container id.
fn process(pod: &Pod) -> Option<(u32, i32)> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    status.state.as_ref()?.running.as_ref()?;
    let pid = status
        .container_id
        .as_deref()?
        .strip_prefix("strom://")?
        .parse()
        .ok()?;
    Some((pid, status.restart_count))
}

fn signal(pid: u32, sig: &str) {
    let done = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(done.success(), "kill -s {sig} {pid}");
}

/// Processes held stopped (SIGSTOP) until dropped, even when the test fails.
struct Frozen(Vec<u32>);

impl Frozen {
    fn new(pids: Vec<u32>) -> Self {
        for &pid in &pids {
            signal(pid, "STOP");
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // The process may be gone (killed meanwhile).
            let _ = Command::new("kill")
                .args(["-s", "CONT", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Every Node cordoned until dropped, even when the test fails: no new pod can start.
struct Cordoned(Vec<String>);

impl Cordoned {
    async fn new(bed: &TestBed) -> Self {
        let nodes: Api<Node> = Api::all(bed.kube().await);
        let names: Vec<String> = nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        for n in &names {
            run_ok(bed.kubectl().args(["cordon", n]));
        }
        Cordoned(names)
    }
}

impl Drop for Cordoned {
    fn drop(&mut self) {
        let bed = TestBed::get();
        for n in &self.0 {
            let _ = bed
                .kubectl()
                .args(["uncordon", n])
                .stdout(std::process::Stdio::null())
                .status();
        }
    }
}

/// The operator's pod: its process, restart count and name.
async fn operator(pods: &Api<Pod>) -> (u32, i32, String) {
    eventually("the operator to run", CONVERGE, || async {
        let pod = pods_of(pods, "operator").await.into_iter().next()?;
        let (pid, restarts) = process(&pod)?;
        Some((pid, restarts, pod.metadata.name?))
    })
    .await
}

/// SIGKILLs the operator's process (already frozen or not) and waits for the kubelet to restart it.
async fn kill_operator(pods: &Api<Pod>, (pid, restarts, name): (u32, i32, String)) {
    signal(pid, "KILL");
    eventually("the operator to be restarted", CONVERGE, || async {
        let pod = pods.get(&name).await.ok()?;
        let (new, count) = process(&pod)?;
        (new != pid && count > restarts).then_some(())
    })
    .await;
}

/// The pids of the job's TaskManagers.
async fn taskmanagers(pods: &Api<Pod>, expected: usize) -> Vec<u32> {
    eventually("the TaskManagers to run", CONVERGE, || async {
        let pids: Vec<u32> = pods_of(pods, "taskmanager")
            .await
            .iter()
            .filter_map(|p| process(p).map(|(pid, _)| pid))
            .collect();
        (pids.len() == expected).then_some(pids)
    })
    .await
}

/// The job as the (leading) JobManager's REST API reports it; a standby knows no jobs.
async fn job_on_jobmanager(pods: &Api<Pod>, job_id: &str) -> Option<Value> {
    for jm in pods_of(pods, "jobmanager").await {
        let Some(ip) = jm.status.and_then(|s| s.pod_ip) else {
            continue;
        };
        let url = format!("http://{ip}:8081/v1/jobs/{job_id}");
        let answer = tokio::task::spawn_blocking(move || strom_tests::processes::get(&url))
            .await
            .ok()?;
        if let Some((200, body)) = answer {
            return Some(body);
        }
    }
    None
}

async fn status(api: &Api<FlinkJob>, name: &str) -> Value {
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()["status"].clone()
}

/// Waits for the rescale to PARALLELISM to finish and checks that it went through a savepoint
/// of the run at FROM, which the new run restored.
async fn rescaled(
    api: &Api<FlinkJob>,
    name: &str,
    from: i64,
    parallelism: i64,
    runs: i64,
) -> String {
    let fj = until(api, name, &format!("the rescale to {parallelism}"), |f| {
        running_at(f, parallelism)
    })
    .await;
    let status = &fj["status"];
    assert_eq!(status["runs"], runs, "{status}");
    let savepoint = status["lastSavepoint"]["location"].as_str().unwrap();
    assert!(savepoint.contains("#savepoints/"), "{status}");
    assert_eq!(status["lastSavepoint"]["parallelism"], from, "{status}");
    assert_eq!(status["run"]["restoredFrom"], savepoint, "{status}");
    assert!(status["lastRescaleDowntimeMs"].as_i64().unwrap() > 0);
    savepoint.to_owned()
}

#[tokio::test]
async fn the_operator_killed_at_each_step_of_a_rescale_and_a_lost_taskmanager_lose_nothing() {
    let _s3 = SERVER.read().await;
    let bed = TestBed::get();
    let ns = install_with(bed, "opfault", &SHORT_LEASE).await;
    let client = bed.kube().await;
    let api: Api<FlinkJob> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let name = "faults";
    // Four source splits (one per subtask at the first start); every rescale below keeps at
    // least one per subtask. Slow enough (100 bids/s per subtask) to run through every step.
    let bids = 100_000;
    let mut manifest = auction_stats(bed, &ns, name, bids, Some(100));
    manifest["spec"]["job"]["parallelism"] = json!(4);
    apply(&api, &manifest).await;
    let fj = until(&api, name, "the job to run at parallelism 4", |f| {
        running_at(f, 4)
    })
    .await;
    let job_id = fj["status"]["jobId"].as_str().unwrap().to_owned();

    // A TaskManager pod deleted: its Deployment replaces it, and the JobManager restarts the job
    // from its latest checkpoint once the new TaskManager has registered.
    let victim = pods_of(&pods, "taskmanager").await[0]
        .metadata
        .name
        .clone()
        .unwrap();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let recovered = eventually(
        "the job to recover on a new TaskManager",
        CONVERGE,
        || async {
            let job = job_on_jobmanager(&pods, &job_id).await?;
            (job["state"] == "RUNNING" && job["restarts"].as_u64()? >= 1).then_some(job)
        },
    )
    .await;
    assert!(
        !recovered["taskmanagers"].to_string().contains(&victim),
        "{recovered}"
    );
    until(&api, name, "the FlinkJob to be Ready again", |f| {
        running_at(f, 4)
    })
    .await;

    // 1. Killed while stopping: the stop is recorded (and perhaps asked), the savepoint cannot
    //    complete (TaskManagers frozen). The new operator finds the request or the finished job.
    let tms = Frozen::new(taskmanagers(&pods, 4).await);
    let op = operator(&pods).await;
    run_ok(
        bed.kubectl()
            .args(["scale", &format!("fj/{name}"), "--replicas", "3", "-n", &ns]),
    );
    let seen = until(&api, name, "the stop to be recorded", |f| {
        f["status"]["upgrade"]["phase"] == "stopping"
    })
    .await;
    kill_operator(&pods, op).await;
    drop(tms);
    eprintln!(
        "killed while stopping, request {}",
        seen["status"]["upgrade"]["requestId"]
    );
    let first = rescaled(&api, name, 4, 3, 2).await;

    // 2. Killed after the savepoint completed and the job finished, before the operator saw
    //    either: frozen from the moment it recorded the request until the old job is FINISHED.
    let tms = Frozen::new(taskmanagers(&pods, 3).await);
    let op = operator(&pods).await;
    run_ok(
        bed.kubectl()
            .args(["scale", &format!("fj/{name}"), "--replicas", "2", "-n", &ns]),
    );
    let seen = until(&api, name, "the stop request to be recorded", |f| {
        f["status"]["upgrade"]["requestId"].is_string()
    })
    .await;
    let old_job = seen["status"]["run"]["jobId"].as_str().unwrap().to_owned();
    let frozen_operator = Frozen::new(vec![op.0]);
    drop(tms);
    eventually(
        "the old job to finish with its savepoint",
        CONVERGE,
        || async {
            let job = job_on_jobmanager(&pods, &old_job).await?;
            (job["state"] == "FINISHED").then_some(())
        },
    )
    .await;
    assert_eq!(status(&api, name).await["upgrade"]["phase"], "stopping");
    kill_operator(&pods, op).await;
    drop(frozen_operator);
    let second = rescaled(&api, name, 3, 2, 3).await;
    assert_ne!(first, second);

    // 3. Killed while deploying: the old run is gone, the new one cannot start (Nodes cordoned).
    let cordoned = Cordoned::new(bed).await;
    let op = operator(&pods).await;
    run_ok(
        bed.kubectl()
            .args(["scale", &format!("fj/{name}"), "--replicas", "4", "-n", &ns]),
    );
    until(&api, name, "the new run to be deploying", |f| {
        f["status"]["upgrade"]["phase"] == "deploying"
    })
    .await;
    kill_operator(&pods, op).await;
    drop(cordoned);
    let third = rescaled(&api, name, 2, 4, 4).await;
    assert_ne!(second, third);

    // Every savepoint the rescales went through is in S3.
    assert_eq!(
        savepoints_in_s3(bed, &ns, &format!("{name}-ckpt")).len(),
        3,
        "{first} {second} {third}"
    );

    // An upgrade in savepoint mode (not a rescale): the rate limit lifted, from a savepoint.
    merge(
        &api,
        name,
        json!({"spec": {"job": {"args": {"rateLimit": null}}}}),
    )
    .await;
    let fj = until(&api, name, "the job to finish after the upgrade", |f| {
        f["status"]["lifecycleState"] == "Finished"
    })
    .await;
    let status = &fj["status"];
    assert_eq!(status["runs"], 5, "{status}");
    let restored = status["run"]["restoredFrom"].as_str().unwrap();
    assert!(restored.contains("#savepoints/"), "{status}");
    assert_eq!(status["lastSavepoint"]["location"], restored, "{status}");
    assert_eq!(status["restoredFrom"].as_array().unwrap().len(), 4);

    // Every record of every run, through every fault, exactly once.
    eo::assert_same(
        &committed(bed, &ns, name),
        &eo::auction_stats_reference(bids),
    );
}

/// The holder of a Lease in the namespace.
async fn lease_holder(bed: &TestBed, ns: &str, lease: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(bed.kube().await, ns);
    leases.get(lease).await.ok()?.spec?.holder_identity
}

/// Whether a snapshot location (`s3://<bucket>/<prefix>#<dir>`) is complete in the S3 server.
fn in_s3(bed: &TestBed, location: &str) -> bool {
    let path = location
        .strip_prefix("s3://")
        .unwrap()
        .replacen('#', "/", 1);
    std::path::Path::new(bed.var("STROM_TESTBED_S3_DATA"))
        .join(path)
        .join("_metadata")
        .exists()
}

#[tokio::test]
async fn two_operators_two_jobmanagers_savepoint_history_and_a_rolled_back_upgrade_lose_nothing() {
    let _s3 = SERVER.read().await;
    let bed = TestBed::get();
    let ns = install_with(
        bed,
        "opha",
        &[&SHORT_LEASE[..], &["--set", "replicas=2"]].concat(),
    )
    .await;
    let client = bed.kube().await;
    let api: Api<FlinkJob> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let name = "ha";
    let bids = 60_000;
    let mut manifest = auction_stats(bed, &ns, name, bids, Some(100));
    let spec = &mut manifest["spec"];
    spec["serviceAccount"] = json!("strom-jobmanager");
    spec["jobManager"] = json!({"replicas": 2});
    spec["savepoints"] = json!({"intervalSeconds": 2, "history": 2});
    spec["rollbackOnFailure"] = json!(true);
    spec["progressDeadlineSeconds"] = json!(40);
    apply(&api, &manifest).await;
    until(&api, name, "the job to run", |f| running_at(f, 2)).await;
    assert_eq!(pods_of(&pods, "jobmanager").await.len(), 2);

    // Periodic savepoints; the history keeps two, the older ones are disposed of in S3 first.
    let seen = std::sync::Mutex::new(Vec::<String>::new());
    let remember = |f: &Value| {
        if let Some(l) = f["status"]["lastSavepoint"]["location"].as_str() {
            let mut seen = seen.lock().unwrap();
            if !seen.iter().any(|s| s == l) {
                seen.push(l.to_owned());
            }
        }
    };
    until(&api, name, "four periodic savepoints", |f| {
        remember(f);
        seen.lock().unwrap().len() >= 4
    })
    .await;
    let early: Vec<String> = seen.lock().unwrap()[..2].to_vec();
    let fj = until(&api, name, "the oldest savepoints to be disposed of", |f| {
        remember(f);
        f["status"]["savepointHistory"]
            .as_array()
            .is_some_and(|h| h.len() <= 2)
            && early.iter().all(|l| !in_s3(bed, l))
    })
    .await;
    for kept in fj["status"]["savepointHistory"].as_array().unwrap() {
        let location = kept["location"].as_str().unwrap();
        assert!(in_s3(bed, location), "{location} is in the history");
    }

    // The leading operator frozen: the standby takes the Lease and carries on (a new savepoint);
    // thawed, the old leader finds the Lease gone and exits instead of acting.
    let lease = format!("{ns}-strom-operator");
    let leader = lease_holder(bed, &ns, &lease).await.unwrap();
    let (pid, restarts) = process(&pods.get(&leader).await.unwrap()).unwrap();
    let frozen = Frozen::new(vec![pid]);
    eventually("the standby operator to lead", CONVERGE, || async {
        let holder = lease_holder(bed, &ns, &lease).await?;
        (holder != leader).then_some(())
    })
    .await;
    let before = seen.lock().unwrap().len();
    until(&api, name, "a savepoint under the new leader", |f| {
        remember(f);
        seen.lock().unwrap().len() > before
    })
    .await;
    drop(frozen);
    let exited = eventually("the deposed operator to exit", CONVERGE, || async {
        let pod = pods.get(&leader).await.ok()?;
        let status = pod.status?.container_statuses?.into_iter().next()?;
        (status.restart_count > restarts).then_some(status)
    })
    .await;
    let code = exited
        .last_state
        .and_then(|s| s.terminated)
        .map(|t| t.exit_code);
    assert!(code.is_some_and(|c| c != 0), "{code:?}");
    // Their metrics say the same: one leader, which has taken savepoints; the other stands by.
    let leader_now = lease_holder(bed, &ns, &lease).await.unwrap();
    let scraped = eventually("both operators' metrics", CONVERGE, || async {
        let mut texts = Vec::new();
        for pod in pods_of(&pods, "operator").await {
            let ip = pod.status.as_ref()?.pod_ip.clone()?;
            let text = tokio::task::spawn_blocking(move || {
                let mut r = strom_tests::processes::agent()
                    .get(&format!("http://{ip}:8080/metrics"))
                    .call()
                    .ok()?;
                r.body_mut().read_to_string().ok()
            })
            .await
            .ok()??;
            texts.push((pod.metadata.name?, text));
        }
        (texts.len() == 2).then_some(texts)
    })
    .await;
    for (pod, text) in &scraped {
        let leading = *pod == leader_now;
        let gauge = format!("strom_operator_leader {}", i32::from(leading));
        assert!(text.contains(&gauge), "{pod}: {text}");
        if leading {
            assert!(
                text.contains("strom_operator_actions_total{action=\"savepoint\"}"),
                "{text}"
            );
            assert!(
                text.contains("strom_operator_reconciliations_total"),
                "{text}"
            );
        }
    }

    // The leading JobManager frozen, then killed: the standby takes its Lease once it expires and
    // restores the job. (Killed alone, the kubelet restarts it in the same pod, which holds the
    // Lease under the same identity and simply carries on.)
    let jm_lease = format!("{name}-jobmanager-leader");
    let jm_leader = lease_holder(bed, &ns, &jm_lease).await.unwrap();
    let jm = pods.get(&jm_leader).await.unwrap();
    let (jm_pid, _) = process(&jm).unwrap();
    let job_id = fj["status"]["run"]["jobId"].as_str().unwrap().to_owned();
    let frozen = Frozen::new(vec![jm_pid]);
    eventually("the standby JobManager to lead", CONVERGE, || async {
        let holder = lease_holder(bed, &ns, &jm_lease).await?;
        (holder != jm_leader).then_some(())
    })
    .await;
    signal(jm_pid, "KILL");
    drop(frozen);
    let before = seen.lock().unwrap().len();
    until(&api, name, "the job to run under the new JobManager", |f| {
        remember(f);
        running_at(f, 2) && seen.lock().unwrap().len() > before
    })
    .await;
    let job = eventually("the job on the new leader", CONVERGE, || async {
        job_on_jobmanager(&pods, &job_id).await
    })
    .await;
    assert_eq!(job["state"], "RUNNING", "{job}");

    // An upgrade that cannot run (no such image): past the deadline it is rolled back to the last
    // stable spec, from the upgrade's savepoint; the failing spec is not retried.
    merge(
        &api,
        name,
        json!({"spec": {"image": "strom.test/no-such-binary:dev"}}),
    )
    .await;
    let fj = until(&api, name, "the failed upgrade to be rolled back", |f| {
        condition(f, "Stalled").is_some_and(|c| c["reason"] == "RolledBack")
            && f["status"]["jobState"] == "RUNNING"
    })
    .await;
    let status = &fj["status"];
    assert!(status["run"]["rolledBackFrom"].is_string(), "{status}");
    let restored = status["run"]["restoredFrom"].as_str().unwrap();
    assert!(restored.contains("#savepoints/"), "{status}");
    assert_eq!(status["run"]["spec"]["image"], "strom.test/strom:dev");
    let deployed: Vec<String> = pods_of(&pods, "taskmanager")
        .await
        .iter()
        .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
        .collect();
    assert!(
        deployed.iter().all(|i| i == "strom.test/strom:dev"),
        "{deployed:?}"
    );

    // Fixed (and the rate limit lifted): a new upgrade from a savepoint, to the end.
    merge(
        &api,
        name,
        json!({"spec": {"image": "strom.test/strom:dev", "job": {"args": {"rateLimit": null}}}}),
    )
    .await;
    let fj = until(&api, name, "the job to finish", |f| {
        f["status"]["lifecycleState"] == "Finished"
    })
    .await;
    assert!(!is_true(&fj, "Stalled"), "{}", fj["status"]);
    eo::assert_same(
        &committed(bed, &ns, name),
        &eo::auction_stats_reference(bids),
    );
}
