//! The operator end to end on the test bed: `helm install` of charts/strom (the operator runs as a
//! pod of the process kubelet, from the `strom-operator` binary), a `FlinkJob` applied, its
//! JobManager and TaskManager pods running the `strom` binary, checkpoints, savepoints and the
//! exactly-once output in the test bed's S3. Every transition is read back from the API server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use strom::checkpoint::store::{CheckpointStore, LocalStore};
use strom::connectors::two_phase::ExactlyOnceFileSink;
use strom_api::crd::FlinkJob;
use strom_tests::eo;
use strom_tests::testbed::{TestBed, eventually, run_ok};

use crate::s3::SERVER;

/// Bound for the cluster to converge on a loaded 2-core machine (never a measurement).
pub(crate) const CONVERGE: u64 = 180;

/// The CRD, a namespace of its own, the S3 credentials Secret, and the operator installed by Helm
/// watching that namespace only.
pub(crate) async fn install(bed: &TestBed, prefix: &str) -> String {
    install_with(bed, prefix, &[]).await
}

/// [`install`] with more `helm install` arguments.
pub(crate) async fn install_with(bed: &TestBed, prefix: &str, helm_args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    run_ok(
        bed.kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(root.join("crds/flinkjob.yaml")),
    );
    run_ok(bed.kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/flinkjobs.strom.dev",
    ]));
    let ns = bed.namespace(prefix).await;
    crate::s3::client()
        .create_bucket()
        .bucket(bucket(&ns))
        .send()
        .await
        .unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3"},
        "stringData": {
            "accessKey": bed.var("STROM_TESTBED_S3_ACCESS_KEY"),
            "secretKey": bed.var("STROM_TESTBED_S3_SECRET_KEY"),
        }
    }))
    .unwrap();
    Api::<Secret>::namespaced(bed.kube().await, &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    run_ok(
        bed.helm()
            .args(["install", &ns])
            .arg(root.join("charts/strom"))
            .args(["-n", &ns, "--skip-crds", "--wait", "--timeout", "120s"])
            .args(["--set", "image.repository=strom.test/strom-operator"])
            .args(["--set", "image.tag=dev"])
            .args(["--set", &format!("watchNamespaces={{{ns}}}")])
            .args(helm_args),
    );
    ns
}

pub(crate) fn bucket(ns: &str) -> String {
    format!("op-{ns}")
}

/// A FlinkJob running `auction-stats` (bids → 10 s count and max per auction → join with the
/// auctions) into the exactly-once file sink in S3, checkpointing to S3.
pub(crate) fn auction_stats(
    bed: &TestBed,
    ns: &str,
    name: &str,
    bids: u64,
    rate: Option<u64>,
) -> Value {
    json!({
        "apiVersion": "strom.dev/v1alpha1",
        "kind": "FlinkJob",
        "metadata": {"name": name},
        "spec": {
            "image": "strom.test/strom:dev",
            "job": {
                "name": "auction-stats",
                "parallelism": 2,
                "args": {
                    "events": bids,
                    "eventsPerSecond": 2000,
                    "rateLimit": rate,
                    "output": {"kind": "files", "path": format!("s3://{}/{name}-out", bucket(ns))},
                },
            },
            "checkpointing": {
                "storage": format!("s3://{}/{name}-ckpt", bucket(ns)),
                "intervalMs": 500,
                "endpoint": bed.var("STROM_TESTBED_S3_ENDPOINT"),
                "credentialsSecret": "s3",
            },
            "progressDeadlineSeconds": 150,
        }
    })
}

pub(crate) async fn apply(api: &Api<FlinkJob>, manifest: &Value) {
    let name = manifest["metadata"]["name"].as_str().unwrap();
    api.patch(
        name,
        &PatchParams::apply("e2e-test").force(),
        &Patch::Apply(manifest),
    )
    .await
    .unwrap();
}

pub(crate) async fn merge(api: &Api<FlinkJob>, name: &str, patch: Value) {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

pub(crate) fn condition<'a>(fj: &'a Value, kind: &str) -> Option<&'a Value> {
    fj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

pub(crate) fn is_true(fj: &Value, kind: &str) -> bool {
    condition(fj, kind).is_some_and(|c| c["status"] == "True")
}

/// Waits until the FlinkJob's status satisfies CHECK and is current (observedGeneration).
pub(crate) async fn until(
    api: &Api<FlinkJob>,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let last = std::sync::Mutex::new(Value::Null);
    let found = tokio::time::timeout(
        std::time::Duration::from_secs(CONVERGE + 5),
        eventually(what, CONVERGE, || async {
            let fj = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            *last.lock().unwrap() = fj["status"].clone();
            let current = fj["status"]["observedGeneration"] == fj["metadata"]["generation"];
            (current && check(&fj)).then_some(fj)
        }),
    )
    .await;
    match found {
        Ok(fj) => fj,
        Err(_) => panic!("{what}: last status {}", last.lock().unwrap()),
    }
}

pub(crate) fn running_at(fj: &Value, parallelism: i64) -> bool {
    is_true(fj, "Ready")
        && fj["status"]["lifecycleState"] == "Running"
        && fj["status"]["parallelism"] == parallelism
        && fj["status"]["upgrade"].is_null()
}

/// The committed rows of the exactly-once sink, read from the S3 server's files.
pub(crate) fn committed(
    bed: &TestBed,
    ns: &str,
    name: &str,
) -> std::collections::BTreeMap<eo::Out, usize> {
    let dir = PathBuf::from(bed.var("STROM_TESTBED_S3_DATA"))
        .join(bucket(ns))
        .join(format!("{name}-out"));
    let store: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(&dir));
    let sink = ExactlyOnceFileSink::new(store.clone(), strom::cluster::RESULTS_DIR);
    eo::committed(&sink, store.as_ref())
}

/// Savepoint directories (with `_metadata`) under a checkpoint prefix in S3.
pub(crate) fn savepoints_in_s3(bed: &TestBed, ns: &str, prefix: &str) -> Vec<PathBuf> {
    let root = PathBuf::from(bed.var("STROM_TESTBED_S3_DATA"))
        .join(bucket(ns))
        .join(prefix);
    let mut found = Vec::new();
    for run in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for sp in std::fs::read_dir(run.path().join("savepoints"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if sp.path().join("_metadata").exists() {
                found.push(sp.path());
            }
        }
    }
    found
}

#[tokio::test]
async fn a_flinkjob_runs_rescales_suspends_resumes_and_upgrades_exactly_once() {
    let _s3 = SERVER.read().await;
    let bed = TestBed::get();
    let ns = install(bed, "op").await;
    let client = bed.kube().await;
    let api: Api<FlinkJob> = Api::namespaced(client.clone(), &ns);
    let name = "stats";
    // 60 000 bids, 30 s of event time (three windows); slow enough (150 bids/s per source subtask)
    // that every step below happens while the job runs; the last upgrade lifts the limit.
    let bids = 60_000;
    // Four source splits at the first start (one per subtask); rescaled to 3 and to 1, every
    // subtask keeps at least one.
    let mut manifest = auction_stats(bed, &ns, name, bids, Some(100));
    manifest["spec"]["job"]["parallelism"] = json!(4);
    apply(&api, &manifest).await;

    let fj = until(&api, name, "the job to run at parallelism 4", |f| {
        running_at(f, 4)
    })
    .await;
    assert_eq!(fj["status"]["runs"], 1);
    assert!(
        fj["metadata"]["finalizers"]
            .to_string()
            .contains("strom.dev/finalizer")
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let listed = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
        .await
        .unwrap();
    let components: Vec<String> = listed
        .items
        .iter()
        .map(|p| p.metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"].clone())
        .collect();
    assert_eq!(
        components.iter().filter(|c| *c == "jobmanager").count(),
        1,
        "{components:?}"
    );
    assert_eq!(
        components.iter().filter(|c| *c == "taskmanager").count(),
        4,
        "{components:?}"
    );

    // kubectl scale goes through the scale subresource: a savepoint, and a new run from it.
    run_ok(
        bed.kubectl()
            .args(["scale", &format!("fj/{name}"), "--replicas", "3", "-n", &ns]),
    );
    let fj = until(&api, name, "the rescale to 3", |f| running_at(f, 3)).await;
    let status = &fj["status"];
    assert_eq!(status["runs"], 2);
    let savepoint = status["lastSavepoint"]["location"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        savepoint.starts_with(&format!("s3://{}/{name}-ckpt/", bucket(&ns))),
        "{savepoint}"
    );
    assert_eq!(status["run"]["restoredFrom"], savepoint.as_str());
    assert!(
        status["lastRescaleDowntimeMs"].as_i64().unwrap() > 0,
        "{status}"
    );
    assert_eq!(status["lastSavepoint"]["parallelism"], 4);

    run_ok(
        bed.kubectl()
            .args(["scale", &format!("fj/{name}"), "--replicas", "1", "-n", &ns]),
    );
    let fj = until(&api, name, "the rescale to 1", |f| running_at(f, 1)).await;
    assert_eq!(fj["status"]["runs"], 3);
    assert_ne!(
        fj["status"]["lastSavepoint"]["location"],
        savepoint.as_str()
    );
    manifest["spec"]["job"]["parallelism"] = json!(1);

    // Suspend: a savepoint, and no pods; resume: from that savepoint.
    merge(&api, name, json!({"spec": {"job": {"state": "suspended"}}})).await;
    let fj = until(&api, name, "the job to be suspended", |f| {
        f["status"]["lifecycleState"] == "Suspended" && is_true(f, "Ready")
    })
    .await;
    let resume_from = fj["status"]["resumeFrom"].as_str().unwrap().to_owned();
    assert_eq!(
        fj["status"]["lastSavepoint"]["location"],
        resume_from.as_str()
    );
    eventually("the job's pods to go", CONVERGE, || async {
        let left = pods
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
            .await
            .ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    merge(&api, name, json!({"spec": {"job": {"state": "running"}}})).await;
    let fj = until(&api, name, "the job to resume", |f| running_at(f, 1)).await;
    assert_eq!(fj["status"]["run"]["restoredFrom"], resume_from.as_str());

    // An upgrade in last-state mode: the newest checkpoint, and the rate limit lifted.
    merge(
        &api,
        name,
        json!({"spec": {"job": {"upgradeMode": "last-state", "args": {"rateLimit": null}}}}),
    )
    .await;
    let fj = until(
        &api,
        name,
        "the job to finish after the last-state upgrade",
        |f| f["status"]["lifecycleState"] == "Finished",
    )
    .await;
    let status = &fj["status"];
    let restored = status["run"]["restoredFrom"].as_str().unwrap();
    assert!(restored.ends_with("#latest"), "{status}");
    let lineage = status["restoredFrom"].as_array().unwrap();
    assert_eq!(lineage.len(), 4, "{status}");

    // Every record of every run, exactly once: the committed output is the reference.
    eo::assert_same(
        &committed(bed, &ns, name),
        &eo::auction_stats_reference(bids),
    );

    // Deleting it: the finalizer lets it go, the pods go with it.
    api.delete(name, &DeleteParams::default()).await.unwrap();
    eventually("the FlinkJob to be gone", CONVERGE, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

#[test]
fn the_chart_lints_clean_watching_everything_or_a_list_of_namespaces() {
    let bed = TestBed::get();
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/strom");
    for values in [&[][..], &["--set", "watchNamespaces={team-a,team-b}"]] {
        let out = run_ok(
            bed.helm()
                .args(["lint", "--strict"])
                .arg(&chart)
                .args(values),
        );
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[tokio::test]
async fn upgrades_without_state_and_deletion_with_a_savepoint() {
    let _s3 = SERVER.read().await;
    let bed = TestBed::get();
    let ns = install(bed, "opdel").await;
    let api: Api<FlinkJob> = Api::namespaced(bed.kube().await, &ns);
    let name = "endless";
    let mut manifest = auction_stats(bed, &ns, name, 10_000_000, Some(200));
    manifest["spec"]["job"]["upgradeMode"] = json!("stateless");
    manifest["spec"]["savepoints"] = json!({"savepointOnDelete": true});
    apply(&api, &manifest).await;
    until(&api, name, "the job to run", |f| running_at(f, 2)).await;

    // Stateless: a new run that starts empty (no savepoint taken, nothing restored).
    merge(&api, name, json!({"spec": {"restartNonce": 1}})).await;
    let fj = until(&api, name, "the stateless upgrade", |f| {
        running_at(f, 2) && f["status"]["runs"] == 2
    })
    .await;
    assert!(
        fj["status"]["run"]["restoredFrom"].is_null(),
        "{}",
        fj["status"]
    );
    assert!(fj["status"]["lastSavepoint"].is_null());

    api.delete(name, &DeleteParams::default()).await.unwrap();
    eventually(
        "the FlinkJob to be gone after its savepoint",
        CONVERGE,
        || async { api.get_opt(name).await.ok()?.is_none().then_some(()) },
    )
    .await;
    let taken = savepoints_in_s3(bed, &ns, &format!("{name}-ckpt"));
    assert_eq!(taken.len(), 1, "{taken:?}");
}

#[tokio::test]
async fn flinkjobs_that_cannot_run_are_stalled_with_their_reason() {
    let bed = TestBed::get();
    let ns = install(bed, "opbad").await;
    let api: Api<FlinkJob> = Api::namespaced(bed.kube().await, &ns);
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "unknown-arg",
            json!({"job": {"args": {"colour": "red"}}}),
            "InvalidSpec",
            "job.args.colour",
        ),
        (
            "few-slots",
            json!({"job": {"parallelism": 4}, "taskManager": {"replicas": 1, "slots": 2}}),
            "InvalidSpec",
            "needs 4 slots",
        ),
        (
            "engine-key",
            json!({"engine": {"parallelism": 8}}),
            "InvalidSpec",
            "engine.parallelism",
        ),
        (
            "no-image",
            json!({"image": "strom.test/no-such-binary:dev", "progressDeadlineSeconds": 10}),
            "DeployTimeout",
            "ErrImagePull",
        ),
        (
            "no-such-job",
            json!({"job": {"name": "no-such-job"}, "progressDeadlineSeconds": 10}),
            "",
            "no-such-job",
        ),
    ];
    for (name, overlay, _, _) in &cases {
        let mut m = auction_stats(bed, &ns, name, 1000, Some(100));
        strom_operator::resources::merge(&mut m["spec"], overlay);
        apply(&api, &m).await;
    }
    for (name, _, reason, message) in &cases {
        let fj = until(&api, name, &format!("{name} to be Stalled"), |f| {
            is_true(f, "Stalled")
        })
        .await;
        let stalled = condition(&fj, "Stalled").unwrap();
        if !reason.is_empty() {
            assert_eq!(stalled["reason"], *reason, "{name}: {stalled}");
        }
        let text = stalled["message"].as_str().unwrap();
        assert!(text.contains(message), "{name}: {text}");
        assert!(!is_true(&fj, "Ready"), "{name}");
        assert_eq!(fj["status"]["error"], text, "{name}");
    }
}
