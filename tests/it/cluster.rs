//! The distributed runtime as separate processes on loopback: the `strom` binary's `jobmanager`
//! and `taskmanager` roles, started by the tests, driven and observed through the REST API.
//!
//! - Exactly-once through failures: one JobManager (with a standby) and three TaskManagers run the
//!   Nexmark windows-and-join job into the exactly-once file sink; a TaskManager and later the
//!   leading JobManager are killed with SIGKILL mid-run; the committed output equals the
//!   brute-force reference exactly.
//! - Backpressure across processes: a throttled sink behind a network edge; the records in flight
//!   stay within what credit-based flow control allows and no process's memory grows.
//! - The REST API against `docs/openapi.yaml`.
//! - Rescaling past the number of source splits: restored at 3 from a savepoint at 2, a source
//!   subtask without a split checkpoints, holds no watermark back, and stops with the others; two
//!   stop requests are one stop; the last run's committed output equals the reference.
//!
//! The processes are started with `strom_tests::processes`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use strom::checkpoint::store::{CheckpointStore, LocalStore};
use strom::connectors::two_phase::ExactlyOnceFileSink;
use strom_tests::eo;
use strom_tests::processes::{
    Cluster, JobManagerAddr, agent, checkpoints_of, get, job_of, post, strom_binary,
};

const LONG: Duration = Duration::from_secs(240);

#[test]
fn exactly_once_through_a_lost_taskmanager_and_a_lost_leader() {
    let mut cluster = Cluster::new("failover");
    let (ha, storage, output) = (
        cluster.dir.join("ha"),
        cluster.dir.join("checkpoints"),
        cluster.dir.join("output"),
    );
    let bids: u64 = 60_000;
    let job = json!({
        "name": "auction-stats",
        "events": bids,
        // 30 s of event time: three windows, so results are committed along the way.
        "eventsPerSecond": 2_000,
        // Per source subtask: about 12 s of bids.
        "rateLimit": 1_700,
        "engine": {"parallelism": 3, "batchSize": 256},
        "checkpoints": {"storage": storage, "intervalMs": 300, "timeoutMs": 10_000, "retain": 2},
        "restart": {"strategy": "fixed-delay", "attempts": 20, "delayMs": 200},
        "output": {"kind": "files", "path": output},
    });
    let leader = cluster.jobmanager("jm-1", Some(&ha), Some(&job));
    // The leader is up before the standby starts, so that it is the one leading.
    cluster.until("the first JobManager to lead", LONG, || {
        get(&format!("http://{}/v1/overview", leader.rest))
    });
    let standby = cluster.jobmanager("jm-2", Some(&ha), Some(&job));
    for tm in ["tm-1", "tm-2", "tm-3"] {
        cluster.taskmanager(tm, &[&leader, &standby], 2);
    }

    // Running on all three, with checkpoints behind it.
    let running = cluster.until("the job to run on three TaskManagers", LONG, || {
        job_of(&leader, "job").filter(|j| {
            j["state"] == "RUNNING" && j["taskmanagers"].as_array().is_some_and(|t| t.len() == 3)
        })
    });
    assert_eq!(running["parallelism"], 3);
    cluster.until("two checkpoints", LONG, || {
        checkpoints_of(&leader, "job").filter(|c| c["completed"].as_u64() >= Some(2))
    });

    // A TaskManager dies: the job restarts from the latest checkpoint on the other two.
    cluster.kill("tm-3");
    let restarted = cluster.until("a restart on the remaining TaskManagers", LONG, || {
        job_of(&leader, "job").filter(|j| {
            j["state"] == "RUNNING"
                && j["restarts"].as_u64() >= Some(1)
                && j["taskmanagers"].as_array().is_some_and(|t| t.len() == 2)
        })
    });
    assert!(
        !restarted["taskmanagers"]
            .as_array()
            .unwrap()
            .contains(&json!("tm-3"))
    );
    let before = checkpoints_of(&leader, "job").unwrap()["completed"]
        .as_u64()
        .unwrap();
    cluster.until("a checkpoint after the restart", LONG, || {
        checkpoints_of(&leader, "job").filter(|c| c["completed"].as_u64() > Some(before))
    });
    let progress = job_of(&leader, "job").unwrap();
    assert_ne!(
        progress["state"], "FINISHED",
        "the run ended too early to test a leader's loss"
    );

    // The leader dies: the standby takes the job over from the latest checkpoint.
    cluster.kill("jm-1");
    cluster.until("the standby to lead and run the job", LONG, || {
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
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn vertex<'a>(job: &'a Value, name_contains: &str) -> &'a Value {
    job["vertices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap().contains(name_contains))
        .unwrap_or_else(|| panic!("no vertex '{name_contains}' in {job}"))
}

#[test]
fn a_throttled_sink_bounds_what_is_in_flight_across_processes() {
    let mut cluster = Cluster::new("backpressure");
    let jm = cluster.jobmanager("jm", None, None);
    let tm_metrics = cluster.taskmanager("tm-1", &[&jm], 1);
    cluster.taskmanager("tm-2", &[&jm], 1);
    let (capacity, batch, sink_rate) = (4u64, 1024u64, 5_000u64);
    // q0 behind a throttled sink: a rebalance edge, half of whose channels cross processes.
    let spec = json!({
        "name": "q0",
        "events": 1_000_000_000u64,
        "sinkRateLimit": sink_rate,
        "engine": {"parallelism": 2, "batchSize": batch, "channelCapacity": capacity},
    });
    cluster.until("the JobManager", LONG, || {
        get(&format!("http://{}/v1/overview", jm.rest))
    });
    let (status, submitted) = post(&format!("http://{}/v1/jobs?id=bp", jm.rest), &spec);
    assert_eq!(status, 201, "{submitted}");
    cluster.until("the job to run on both TaskManagers", LONG, || {
        job_of(&jm, "bp").filter(|j| {
            j["state"] == "RUNNING" && j["taskmanagers"].as_array().is_some_and(|t| t.len() == 2)
        })
    });
    let pids = [cluster.pid("jm"), cluster.pid("tm-1"), cluster.pid("tm-2")];
    // What credit-based flow control allows in flight: 4 channels (2 x 2), each at most its
    // producer's channel, the credits and the consumer's channel (3 x capacity batches) plus a
    // batch held at each end, and a batch in each subtask; metrics of the two sides arrive in
    // different heartbeats (200 ms apart at most), during which the sinks take 2 x rate x 0.2 s.
    let bound = 4 * (3 * capacity + 2) * batch + 4 * batch + 2 * sink_rate / 5 * 2;
    let mut first_rss: Option<Vec<u64>> = None;
    let mut max_in_flight = 0;
    let mut saw_backpressure = false;
    let mut saw_channels = false;
    let mut sink_records = 0;
    // 40 samples, half a second apart, after things settled.
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(500));
        let job = job_of(&jm, "bp").unwrap();
        assert_eq!(job["state"], "RUNNING", "{job}");
        let source = vertex(&job, "q0");
        let sink = vertex(&job, "throttle");
        let produced = source["recordsOut"].as_u64().unwrap();
        sink_records = sink["recordsIn"].as_u64().unwrap();
        max_in_flight = max_in_flight.max(produced.saturating_sub(sink_records));
        saw_backpressure |= source["backpressure"].as_f64().unwrap() > 0.5;
        // Every remote channel reports its flow control. (Whether a producer ends up waiting for
        // credit or for its local channel depends on which fills first; both are backpressure.)
        let channels = job["channels"].as_array().unwrap();
        saw_channels |= !channels.is_empty()
            && channels
                .iter()
                .all(|c| c["creditWaitMs"].is_u64() && c["frames"].as_u64() > Some(0));
        let rss: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
        if first_rss.is_none() {
            first_rss = Some(rss.clone());
        }
        for (i, (now, first)) in rss.iter().zip(first_rss.as_ref().unwrap()).enumerate() {
            assert!(
                *now < first + 64 * 1024,
                "process {i} grew from {first} KiB to {now} KiB under backpressure"
            );
        }
    }
    assert!(
        max_in_flight <= bound,
        "{max_in_flight} records in flight, flow control allows {bound}"
    );
    assert!(sink_records > 0, "the sink received nothing");
    assert!(saw_backpressure, "the source never showed backpressure");
    assert!(
        saw_channels,
        "the remote channels' flow control was never reported"
    );
    let metrics = agent()
        .get(&format!("http://{}/metrics", jm.rest))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("strom_vertex_backpressure_ratio{job=\"bp\""),
        "{metrics}"
    );
    let text = |url: String| {
        agent()
            .get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    };
    let tm = text(format!("http://{tm_metrics}/metrics"));
    for family in [
        "strom_records_out_total{job=\"bp\",vertex=\"q0\"",
        "strom_backpressured_seconds_total{job=\"bp\"",
        "strom_channel_credit_wait_seconds_total{channel=\"bp/1/",
        "strom_task_slots{taskmanager=\"tm-1\"} 1",
    ] {
        assert!(tm.contains(family), "{family} missing from\n{tm}");
    }
    let (status, _) = post(&format!("http://{}/v1/jobs/bp/cancel", jm.rest), &json!({}));
    assert_eq!(status, 202);
    cluster.until("the job to be cancelled", LONG, || {
        job_of(&jm, "bp").filter(|j| j["state"] == "CANCELED")
    });
}

/// The OpenAPI document, and a validator of one operation's answers.
struct Contract {
    doc: Value,
    called: std::collections::BTreeSet<(String, String)>,
}

impl Contract {
    fn load() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
        let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        Self {
            doc,
            called: Default::default(),
        }
    }

    /// Calls `method template` (with `path` filled in) and checks the answer against the
    /// document: the status must be documented for the operation and the body must match its
    /// schema. Returns (status, body).
    fn call(
        &mut self,
        base: &str,
        method: &str,
        template: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("http://{base}{path}");
        let mut response = match (method, body) {
            ("get", _) => agent().get(&url).call().unwrap(),
            ("post", Some(b)) => agent().post(&url).send_json(b).unwrap(),
            ("post", None) => agent().post(&url).send_empty().unwrap(),
            _ => unreachable!(),
        };
        let status = response.status().as_u16();
        let json: Value = response.body_mut().read_json().unwrap();
        let operation = &self.doc["paths"][template][method];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        let schema =
            &operation["responses"][status.to_string()]["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} answered {status}, which the document does not list: {json}"
        );
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::validator_for(&root).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} ({status}) does not match the document: {errors:?}\n{json}"
        );
        self.called.insert((method.to_owned(), template.to_owned()));
        (status, json)
    }
}

#[test]
fn the_rest_api_keeps_to_its_openapi_document() {
    let mut cluster = Cluster::new("rest");
    let jm = cluster.jobmanager("jm", None, None);
    cluster.taskmanager("tm-1", &[&jm], 2);
    let mut api = Contract::load();
    let base = jm.rest.clone();
    cluster.until("the JobManager", LONG, || {
        get(&format!("http://{base}/v1/overview"))
    });
    cluster.until("the TaskManager to register", LONG, || {
        get(&format!("http://{base}/v1/overview")).filter(|(_, o)| o["taskmanagers"] == 1)
    });
    let (_, overview) = api.call(&base, "get", "/v1/overview", "/v1/overview", None);
    assert_eq!(overview["slotsTotal"], 2);
    let (_, tms) = api.call(&base, "get", "/v1/taskmanagers", "/v1/taskmanagers", None);
    assert_eq!(tms["taskmanagers"][0]["id"], "tm-1");

    let storage = cluster.dir.join("checkpoints");
    let spec = json!({
        "name": "q5",
        "events": 1_000_000_000u64,
        "rateLimit": 20_000,
        "engine": {"parallelism": 2, "batchSize": 512},
        "checkpoints": {"storage": storage, "intervalMs": 200},
    });
    let (status, submitted) = api.call(&base, "post", "/v1/jobs", "/v1/jobs?id=q5", Some(&spec));
    assert_eq!((status, submitted["id"].as_str()), (201, Some("q5")));
    let (status, error) = api.call(&base, "post", "/v1/jobs", "/v1/jobs?id=q5", Some(&spec));
    assert_eq!(status, 400, "a second job with the same id: {error}");
    let mut bad = spec.clone();
    bad["engine"]["parallelism"] = json!(0);
    let (status, error) = api.call(&base, "post", "/v1/jobs", "/v1/jobs", Some(&bad));
    assert_eq!(status, 400);
    assert!(
        error["error"].as_str().unwrap().contains("parallelism"),
        "{error}"
    );
    let (status, _) = api.call(
        &base,
        "post",
        "/v1/jobs",
        "/v1/jobs",
        Some(&json!({"nme": "q5"})),
    );
    assert_eq!(status, 400);

    // Running, counting, checkpointing.
    cluster.until("records and a checkpoint", LONG, || {
        let job = job_of(&jm, "q5")?;
        let checkpoints = checkpoints_of(&jm, "q5")?;
        (job["state"] == "RUNNING"
            && vertex(&job, "bids")["recordsOut"].as_u64() > Some(0)
            && checkpoints["completed"].as_u64() > Some(0))
        .then_some(())
    });
    let (_, job) = api.call(&base, "get", "/v1/jobs/{id}", "/v1/jobs/q5", None);
    assert_eq!(job["parallelism"], 2);
    assert!(
        job["vertices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["parallelism"] == 2)
    );
    let (_, list) = api.call(&base, "get", "/v1/jobs", "/v1/jobs", None);
    assert_eq!(list["jobs"][0]["state"], "RUNNING");
    let (_, checkpoints) = api.call(
        &base,
        "get",
        "/v1/jobs/{id}/checkpoints",
        "/v1/jobs/q5/checkpoints",
        None,
    );
    let first = &checkpoints["history"][0];
    assert!(first["fullSize"].as_u64() > Some(0), "{checkpoints}");
    assert!(
        storage
            .join(first["path"].as_str().unwrap())
            .join("_metadata")
            .exists()
    );
    let (_, config) = api.call(
        &base,
        "get",
        "/v1/jobs/{id}/config",
        "/v1/jobs/q5/config",
        None,
    );
    assert_eq!(config["name"], "q5");
    assert_eq!(config["engine"]["parallelism"], 2);
    assert_eq!(config["rateLimit"], 20_000);

    // A savepoint while it runs.
    let (status, triggered) = api.call(
        &base,
        "post",
        "/v1/jobs/{id}/savepoints",
        "/v1/jobs/q5/savepoints",
        Some(&json!({})),
    );
    assert_eq!(status, 202);
    let request = triggered["requestId"].as_str().unwrap().to_owned();
    let status_path = format!("/v1/jobs/q5/savepoints/{request}");
    let savepoint = cluster.until("the savepoint", LONG, || {
        get(&format!("http://{base}{status_path}")).filter(|(_, s)| s["status"] != "IN_PROGRESS")
    });
    assert_eq!(savepoint.1["status"], "COMPLETED", "{}", savepoint.1);
    let (_, savepoint) = api.call(
        &base,
        "get",
        "/v1/jobs/{id}/savepoints/{request}",
        &status_path,
        None,
    );
    let location = savepoint["location"].as_str().unwrap();
    assert!(
        storage.join(location).join("_metadata").exists(),
        "{savepoint}"
    );
    let (status, _) = api.call(
        &base,
        "get",
        "/v1/jobs/{id}/savepoints/{request}",
        "/v1/jobs/q5/savepoints/999",
        None,
    );
    assert_eq!(status, 404);

    // Too few slots: the job waits, visibly, until a TaskManager brings them; then it is
    // cancelled.
    let mut big = spec.clone();
    big["engine"]["parallelism"] = json!(3);
    big["checkpoints"] = Value::Null;
    api.call(&base, "post", "/v1/jobs", "/v1/jobs?id=big", Some(&big));
    let waiting = cluster.until("the big job to wait", LONG, || {
        job_of(&jm, "big").filter(|j| j["state"] == "WAITING_FOR_RESOURCES")
    });
    assert!(
        waiting["message"]
            .as_str()
            .unwrap()
            .contains("needs 3 slots"),
        "{waiting}"
    );
    let (status, _) = api.call(
        &base,
        "post",
        "/v1/jobs/{id}/savepoints",
        "/v1/jobs/big/savepoints",
        None,
    );
    assert_eq!(status, 409, "a savepoint of a job that does not run");
    // Slots arrive: it runs.
    cluster.taskmanager("tm-2", &[&jm], 3);
    let big = cluster.until("the big job to run", LONG, || {
        job_of(&jm, "big").filter(|j| j["state"] == "RUNNING")
    });
    assert_eq!(big["taskmanagers"], json!(["tm-2"]), "{big}");
    let (status, _) = api.call(
        &base,
        "post",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/big/cancel",
        None,
    );
    assert_eq!(status, 202);
    cluster.until("the big job to be cancelled", LONG, || {
        job_of(&jm, "big").filter(|j| j["state"] == "CANCELED")
    });
    let (status, _) = api.call(
        &base,
        "post",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/big/cancel",
        None,
    );
    assert_eq!(status, 409, "cancelling a cancelled job");
    let (status, _) = api.call(
        &base,
        "post",
        "/v1/jobs/{id}/stop",
        "/v1/jobs/big/stop",
        None,
    );
    assert_eq!(status, 409);

    // Stop with a savepoint: the job finishes after it.
    let (status, triggered) = api.call(
        &base,
        "post",
        "/v1/jobs/{id}/stop",
        "/v1/jobs/q5/stop",
        None,
    );
    assert_eq!(status, 202);
    let request = triggered["requestId"].as_str().unwrap().to_owned();
    let stopped = cluster.until("the stop", LONG, || {
        get(&format!("http://{base}/v1/jobs/q5/savepoints/{request}"))
            .filter(|(_, s)| s["status"] != "IN_PROGRESS")
    });
    assert_eq!(stopped.1["status"], "COMPLETED", "{}", stopped.1);
    assert_eq!(stopped.1["stop"], true);
    cluster.until("the stopped job to finish", LONG, || {
        job_of(&jm, "q5").filter(|j| j["state"] == "FINISHED")
    });
    let (_, checkpoints) = api.call(
        &base,
        "get",
        "/v1/jobs/{id}/checkpoints",
        "/v1/jobs/q5/checkpoints",
        None,
    );
    let savepoints = checkpoints["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["savepoint"] == true)
        .count();
    assert_eq!(savepoints, 2, "{checkpoints}");

    // Disposing of the first savepoint: metadata and objects gone; then it, a checkpoint and a
    // location that is not '<storage>#<dir>' are refused.
    let disposal = |location: String| json!({ "location": location });
    let savepoint_location = format!("{}#{location}", storage.display());
    assert!(storage.join(location).join("_metadata").exists());
    let (status, disposed) = api.call(
        &base,
        "post",
        "/v1/savepoints/disposal",
        "/v1/savepoints/disposal",
        Some(&disposal(savepoint_location.clone())),
    );
    assert_eq!(status, 200, "{disposed}");
    assert_eq!(disposed["disposed"], savepoint_location.as_str());
    assert!(disposed["objects"].as_u64() > Some(1), "{disposed}");
    assert!(
        !storage.join(location).exists(),
        "{location} still holds {:?}",
        std::fs::read_dir(storage.join(location)).map(|d| d.count())
    );
    let (status, again) = api.call(
        &base,
        "post",
        "/v1/savepoints/disposal",
        "/v1/savepoints/disposal",
        Some(&disposal(savepoint_location.clone())),
    );
    assert_eq!(status, 409, "{again}");
    let checkpoint = newest_checkpoint(&storage).expect("a retained checkpoint");
    let (status, refused) = api.call(
        &base,
        "post",
        "/v1/savepoints/disposal",
        "/v1/savepoints/disposal",
        Some(&disposal(format!("{}#{checkpoint}", storage.display()))),
    );
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("checkpoint"),
        "{refused}"
    );
    assert!(storage.join(&checkpoint).join("_metadata").exists());
    for bad in [
        disposal(storage.join(location).display().to_string()),
        disposal(format!("{}#", storage.display())),
        json!({ "path": savepoint_location }),
    ] {
        let (status, error) = api.call(
            &base,
            "post",
            "/v1/savepoints/disposal",
            "/v1/savepoints/disposal",
            Some(&bad),
        );
        assert_eq!(status, 400, "{bad}: {error}");
    }

    // Unknown jobs.
    for (method, template, path) in [
        ("get", "/v1/jobs/{id}", "/v1/jobs/nope"),
        (
            "get",
            "/v1/jobs/{id}/checkpoints",
            "/v1/jobs/nope/checkpoints",
        ),
        ("get", "/v1/jobs/{id}/config", "/v1/jobs/nope/config"),
        ("post", "/v1/jobs/{id}/cancel", "/v1/jobs/nope/cancel"),
        ("post", "/v1/jobs/{id}/stop", "/v1/jobs/nope/stop"),
    ] {
        let (status, _) = api.call(&base, method, template, path, None);
        assert_eq!(status, 404, "{method} {path}");
    }
    let (_, overview) = api.call(&base, "get", "/v1/overview", "/v1/overview", None);
    assert_eq!(
        (
            overview["jobsFinished"].as_u64(),
            overview["jobsCancelled"].as_u64()
        ),
        (Some(1), Some(1))
    );

    // Prometheus.
    let metrics = agent()
        .get(&format!("http://{base}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    for family in [
        "strom_job_restarts_total",
        "strom_checkpoints_completed_total",
        "strom_checkpoints_failed_total",
        "strom_checkpoint_last_duration_seconds",
        "strom_checkpoint_last_size_bytes",
        "strom_state_size_bytes",
        "strom_vertex_records_out_per_second",
        "strom_vertex_backpressure_ratio",
    ] {
        assert!(metrics.contains(family), "{family} missing from\n{metrics}");
    }
    api.called.insert(("get".into(), "/metrics".into()));

    // Every documented operation was exercised.
    let documented: std::collections::BTreeSet<(String, String)> = api.doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| *m == "get" || *m == "post")
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let missed: Vec<_> = documented.difference(&api.called).collect();
    assert!(missed.is_empty(), "not exercised: {missed:?}");
}

/// The newest complete checkpoint directory in a local storage.
fn newest_checkpoint(storage: &Path) -> Option<String> {
    checkpoint_ids(storage)
        .last()
        .map(|id| format!("chk-{id:010}"))
}

/// Ids of the complete checkpoints in a local storage, in order.
fn checkpoint_ids(storage: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(storage)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.path().join("_metadata").exists())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .collect();
    ids.sort();
    ids
}

#[test]
fn restore_from_latest_takes_the_newest_complete_checkpoint_of_a_storage() {
    let mut cluster = Cluster::new("latest");
    let jm = cluster.jobmanager("jm", None, None);
    cluster.taskmanager("tm-1", &[&jm], 2);
    cluster.until("the TaskManager to register", LONG, || {
        get(&format!("http://{}/v1/overview", jm.rest)).filter(|(_, o)| o["taskmanagers"] == 1)
    });
    let spec = |storage: &Path, restore: Option<String>| {
        json!({
            "name": "q5",
            "events": 30_000,
            "rateLimit": 10_000,
            "engine": {"parallelism": 2, "batchSize": 256},
            "checkpoints": {"storage": storage, "intervalMs": 200, "retain": 100},
            "restoreFrom": restore,
        })
    };
    let ended = |id: &str| {
        let id = id.to_owned();
        let jm = &jm;
        move || {
            job_of(jm, &id).filter(|j| {
                let s = j["state"].as_str().unwrap_or("");
                s == "FINISHED" || s == "FAILED" || s == "CANCELED"
            })
        }
    };
    let (run1, run2, run3) = (
        cluster.dir.join("run-1"),
        cluster.dir.join("run-2"),
        cluster.dir.join("run-3"),
    );

    // A first run leaves checkpoints behind; then a newer one that never completed.
    let (status, _) = post(
        &format!("http://{}/v1/jobs?id=run-1", jm.rest),
        &spec(&run1, None),
    );
    assert_eq!(status, 201);
    let done = cluster.until("the first run to end", LONG, ended("run-1"));
    assert_eq!(done["state"], "FINISHED", "{done}");
    let ids = checkpoint_ids(&run1);
    assert!(ids.len() >= 2, "{ids:?}");
    let newest = *ids.last().unwrap();
    let half = run1.join(format!("chk-{:010}/state", newest + 1));
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("q5-0"), b"never completed").unwrap();

    // A new run in a new storage restores the first run's newest complete checkpoint: its own
    // checkpoints continue the numbering from there.
    let latest = format!("{}#latest", run1.display());
    let (status, _) = post(
        &format!("http://{}/v1/jobs?id=run-2", jm.rest),
        &spec(&run2, Some(latest)),
    );
    assert_eq!(status, 201);
    let done = cluster.until("the second run to end", LONG, ended("run-2"));
    assert_eq!(done["state"], "FINISHED", "{done}");
    let ids = checkpoint_ids(&run2);
    assert_eq!(ids.first(), Some(&(newest + 1)), "{ids:?}");

    // `latest` of a storage without a complete checkpoint (here the job's own): the job fails,
    // naming the storage.
    let (status, _) = post(
        &format!("http://{}/v1/jobs?id=run-3", jm.rest),
        &spec(&run3, Some("latest".into())),
    );
    assert_eq!(status, 201);
    let failed = cluster.until("the third run to end", LONG, ended("run-3"));
    assert_eq!(failed["state"], "FAILED", "{failed}");
    let failure = failed["failure"].as_str().unwrap();
    assert!(
        failure.contains(&format!("no complete checkpoint in {}", run3.display())),
        "{failure}"
    );
}

#[test]
fn a_bad_configuration_is_refused_at_start_with_the_reason() {
    let dir = eo::temp_dir("cluster-config");
    let cases = [
        ("taskmanager", "slots: 2\n", "jobmanagers"),
        (
            "taskmanager",
            "jobmanagers: [127.0.0.1:1]\nslots: 0\n",
            "slots",
        ),
        (
            "taskmanager",
            "jobmanagers: [127.0.0.1:1]\nslot: 2\n",
            "unknown field `slot`",
        ),
        (
            "jobmanager",
            "restAddress: localhost\n",
            "restAddress 'localhost'",
        ),
        (
            "jobmanager",
            "job: {name: q5, engine: {parallelism: 0}}\n",
            "parallelism",
        ),
    ];
    for (i, (role, yaml, reason)) in cases.into_iter().enumerate() {
        let file = dir.join(format!("{i}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let out = Command::new(strom_binary())
            .arg(role)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{role} started with {yaml}");
        assert!(stderr.contains(reason), "{role} with {yaml}: {stderr}");
    }
    // The environment overrides the file: a valid file made invalid by a variable.
    let file = dir.join("env.yaml");
    std::fs::write(&file, "jobmanagers: [127.0.0.1:1]\n").unwrap();
    let out = Command::new(strom_binary())
        .args(["taskmanager", "--config"])
        .arg(&file)
        .env("STROM_SLOTS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("slots must be at least 1"));
}

/// The savepoint requests of a job's history.
fn savepoints_of(jm: &JobManagerAddr, id: &str) -> Vec<Value> {
    checkpoints_of(jm, id).unwrap()["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["savepoint"] == true)
        .cloned()
        .collect()
}

#[test]
fn a_source_subtask_without_a_split_checkpoints_and_stops_with_the_others() {
    let mut cluster = Cluster::new("splitless");
    let jm = cluster.jobmanager("jm", None, None);
    cluster.taskmanager("tm-1", &[&jm], 2);
    cluster.taskmanager("tm-2", &[&jm], 2);
    cluster.until("both TaskManagers to register", LONG, || {
        get(&format!("http://{}/v1/overview", jm.rest)).filter(|(_, o)| o["taskmanagers"] == 2)
    });
    let output = cluster.dir.join("output");
    let store: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(&output));
    let sink = ExactlyOnceFileSink::new(store.clone(), strom::cluster::RESULTS_DIR);
    let files = || sink.committed().unwrap().len();
    let bids: u64 = 200_000;
    // 2,000 events per event-time second: a 10 s window closes about every 18,400 bids.
    let spec = |run: &str, parallelism: u32, rate: Option<u64>, restore: Option<String>| {
        json!({
            "name": "auction-stats",
            "events": bids,
            "eventsPerSecond": 2_000,
            "rateLimit": rate,
            "engine": {"parallelism": parallelism, "batchSize": 256},
            "checkpoints": {"storage": cluster.dir.join(run), "intervalMs": 300, "timeoutMs": 30_000},
            "output": {"kind": "files", "path": output},
            "restoreFrom": restore,
        })
    };
    let submit = |id: &str, spec: &Value| {
        let (status, body) = post(&format!("http://{}/v1/jobs?id={id}", jm.rest), spec);
        assert_eq!(status, 201, "{body}");
    };
    let ended = |id: &str| {
        job_of(&jm, id).filter(|j| {
            let s = j["state"].as_str().unwrap_or("");
            s == "FINISHED" || s == "FAILED" || s == "CANCELED"
        })
    };
    let savepoint = |id: &str, request: &str| {
        cluster
            .until("the savepoint", LONG, || {
                get(&format!(
                    "http://{}/v1/jobs/{id}/savepoints/{request}",
                    jm.rest
                ))
                .filter(|(_, s)| s["status"] != "IN_PROGRESS")
            })
            .1
    };

    // At 2, two splits per source; stopped with a savepoint early in the first window.
    submit("p2", &spec("p2", 2, Some(3_000), None));
    cluster.until("bids at parallelism 2", LONG, || {
        job_of(&jm, "p2")
            .filter(|j| vertex(j, "nexmark(bids)")["recordsOut"].as_u64() >= Some(10_000))
    });
    let (status, stop) = post(&format!("http://{}/v1/jobs/p2/stop", jm.rest), &json!({}));
    assert_eq!(status, 202, "{stop}");
    let first = savepoint("p2", stop["requestId"].as_str().unwrap());
    assert_eq!(first["status"], "COMPLETED", "{first}");
    let done = cluster.until("the job at 2 to end", LONG, || ended("p2"));
    assert_eq!(done["state"], "FINISHED", "{done}");
    let first = format!(
        "{}#{}",
        cluster.dir.join("p2").display(),
        first["location"].as_str().unwrap()
    );
    let before = files();

    // At 3, one subtask of each source has no split. It takes part in checkpoints, and it holds
    // no watermark back: windows close and their results are committed while the job runs.
    submit("p3", &spec("p3", 3, Some(3_000), Some(first)));
    let running = cluster.until("the job at 3 to run", LONG, || {
        job_of(&jm, "p3").filter(|j| j["state"] == "RUNNING" || j["state"] == "FAILED")
    });
    assert_eq!(running["state"], "RUNNING", "{running}");
    assert_eq!(vertex(&running, "nexmark(bids)")["parallelism"], 3);
    cluster.until("results committed at 3", LONG, || {
        let checkpoints = checkpoints_of(&jm, "p3")?;
        (checkpoints["completed"].as_u64() >= Some(1) && files() > before).then_some(())
    });
    let progress = job_of(&jm, "p3").unwrap();
    assert_eq!(progress["state"], "RUNNING", "the run at 3 ended too early");

    // Stopped twice (an operator that lost the first answer asks again): one stop, one savepoint.
    // A savepoint without stop is refused meanwhile.
    let (status, stop) = post(&format!("http://{}/v1/jobs/p3/stop", jm.rest), &json!({}));
    assert_eq!(status, 202, "{stop}");
    let (status, again) = post(
        &format!("http://{}/v1/jobs/p3/savepoints", jm.rest),
        &json!({"stop": true}),
    );
    assert_eq!(status, 202, "{again}");
    assert_eq!(
        again["requestId"], stop["requestId"],
        "a second stop is the same request"
    );
    let (status, refused) = post(
        &format!("http://{}/v1/jobs/p3/savepoints", jm.rest),
        &json!({}),
    );
    assert_eq!(status, 409, "a savepoint while stopping: {refused}");
    let request = stop["requestId"].as_str().unwrap();
    let second = savepoint("p3", request);
    assert_eq!(second["status"], "COMPLETED", "{second}");
    let done = cluster.until("the stopped job at 3 to finish", LONG, || ended("p3"));
    assert_eq!(done["state"], "FINISHED", "{done}");
    let location = second["location"].as_str().unwrap();
    assert!(
        cluster
            .dir
            .join("p3")
            .join(location)
            .join("_metadata")
            .exists(),
        "{second}"
    );
    let savepoints = savepoints_of(&jm, "p3");
    assert_eq!(savepoints.len(), 1, "{savepoints:?}");
    assert_eq!(savepoints[0]["path"], location);

    // At 4 (two subtasks per source without a split), unthrottled, to the end.
    let second = format!("{}#{location}", cluster.dir.join("p3").display());
    submit("p4", &spec("p4", 4, None, Some(second)));
    let done = cluster.until("the job at 4 to end", LONG, || ended("p4"));
    assert_eq!(done["state"], "FINISHED", "{done}");

    let expected = eo::auction_stats_reference(bids);
    eo::assert_same(&eo::committed(&sink, store.as_ref()), &expected);
}
