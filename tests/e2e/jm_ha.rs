//! JobManager high availability on a Kubernetes Lease, against the test bed's real API server:
//! `strom jobmanager` and `strom taskmanager` run as plain processes on 127.0.0.1 (not as pods),
//! the JobManagers contend for one Lease through the API server (KUBECONFIG).
//!
//! Two JobManagers share a Lease, one TaskManager knows both. The first holds the Lease and runs
//! the exactly-once job; the standby serves nothing. The leader is killed with SIGKILL after a
//! completed checkpoint: the standby takes the Lease once it expires, restores the job from its
//! latest checkpoint and finishes it; the committed output equals the brute-force reference. Then
//! the Lease is taken from the new leader, which exits with a failure status, saying why.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use strom::checkpoint::store::{CheckpointStore, LocalStore};
use strom::connectors::two_phase::ExactlyOnceFileSink;
use strom_tests::eo;
use strom_tests::processes::{Cluster, checkpoints_of, get, job_of};
use strom_tests::testbed::TestBed;

const LONG: Duration = Duration::from_secs(240);

/// The Lease's holder as the API server has it.
fn holder(rt: &tokio::runtime::Runtime, api: &Api<Lease>, name: &str) -> Option<String> {
    rt.block_on(api.get_opt(name))
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

#[test]
fn a_standby_jobmanager_takes_the_lease_and_the_job_over_exactly_once() {
    let bed = TestBed::get();
    let kubeconfig = bed.var("KUBECONFIG");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(bed.kube());
    let namespace = "default";
    let lease_name = format!("strom-jm-ha-{}", std::process::id());
    let leases: Api<Lease> = Api::namespaced(client, namespace);

    let mut cluster = Cluster::new("jm-ha");
    let (storage, output, records) = (
        cluster.dir.join("checkpoints"),
        cluster.dir.join("output"),
        cluster.dir.join("records"),
    );
    let bids: u64 = 40_000;
    let job = json!({
        "name": "auction-stats",
        "events": bids,
        "eventsPerSecond": 2_000,
        // Per source subtask: about 20 s of bids.
        "rateLimit": 1_000,
        "engine": {"parallelism": 2, "batchSize": 256},
        "checkpoints": {"storage": storage, "intervalMs": 300, "timeoutMs": 10_000, "retain": 2},
        "restart": {"strategy": "fixed-delay", "attempts": 20, "delayMs": 200},
        "output": {"kind": "files", "path": output},
    });
    let ha = json!({
        "lease": {
            "name": lease_name,
            "namespace": namespace,
            "durationSeconds": 6,
            "graceSeconds": 2,
        },
        "storage": records,
    });
    let leader = cluster.jobmanager_with(
        "jm-1",
        Some(&ha),
        Some(&job),
        &[("KUBECONFIG", kubeconfig), ("STROM_HA_IDENTITY", "jm-1")],
    );
    // It serves only once it holds the Lease.
    cluster.until("the first JobManager to lead", LONG, || {
        get(&format!("http://{}/v1/overview", leader.rest))
    });
    assert_eq!(
        holder(&rt, &leases, &lease_name).as_deref(),
        Some("jm-1"),
        "{}",
        cluster.logs()
    );
    let standby = cluster.jobmanager_with(
        "jm-2",
        Some(&ha),
        Some(&job),
        &[("KUBECONFIG", kubeconfig), ("STROM_HA_IDENTITY", "jm-2")],
    );
    cluster.taskmanager("tm-1", &[&leader, &standby], 2);

    cluster.until("the job to run with a checkpoint behind it", LONG, || {
        let job = job_of(&leader, "job")?;
        let checkpoints = checkpoints_of(&leader, "job")?;
        (job["state"] == "RUNNING" && checkpoints["completed"].as_u64() >= Some(1)).then_some(())
    });
    cluster.until("the standby to contend", LONG, || {
        cluster.log("jm-2").contains("standing by").then_some(())
    });
    assert!(
        get(&format!("http://{}/v1/overview", standby.rest)).is_none(),
        "the standby serves REST while the first JobManager leads"
    );
    assert_eq!(holder(&rt, &leases, &lease_name).as_deref(), Some("jm-1"));
    let progress = job_of(&leader, "job").unwrap();
    assert_ne!(
        progress["state"], "FINISHED",
        "the run ended too early to test a leader's loss"
    );

    // The leader dies without a word: the standby takes the Lease once it expires and resumes
    // the job from its latest checkpoint.
    cluster.kill("jm-1");
    cluster.until("the standby to hold the Lease", LONG, || {
        (holder(&rt, &leases, &lease_name).as_deref() == Some("jm-2")).then_some(())
    });
    cluster.until("the standby to run the job", LONG, || {
        job_of(&standby, "job").filter(|j| j["state"] == "RUNNING")
    });
    let done = cluster.until("the job to finish", LONG, || {
        job_of(&standby, "job").filter(|j| {
            let s = j["state"].as_str().unwrap_or("");
            s == "FINISHED" || s == "FAILED"
        })
    });
    assert_eq!(done["state"], "FINISHED", "{done}");

    let store: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(&output));
    let sink = ExactlyOnceFileSink::new(store.clone(), strom::cluster::RESULTS_DIR);
    let committed = eo::committed(&sink, store.as_ref());
    let expected = eo::auction_stats_reference(bids);
    eo::assert_same(&committed, &expected);

    // Someone else takes the Lease: the leader exits with a failure status and says why.
    let now = serde_json::to_value(MicroTime(k8s_openapi::jiff::Timestamp::now())).unwrap();
    rt.block_on(leases.patch(
        &lease_name,
        &PatchParams::default(),
        &Patch::Merge(json!({
            "spec": {"holderIdentity": "intruder", "renewTime": now, "leaseDurationSeconds": 600}
        })),
    ))
    .unwrap();
    let deposed = std::time::Instant::now();
    let status = loop {
        if let Some(status) = cluster.exited("jm-2") {
            break status;
        }
        assert!(
            deposed.elapsed() < LONG,
            "the deposed leader did not exit{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "{status}");
    let log = cluster.log("jm-2");
    assert!(
        log.contains("lost leadership") && log.contains("intruder"),
        "{log}"
    );

    rt.block_on(leases.delete(&lease_name, &DeleteParams::default()))
        .unwrap();
}
