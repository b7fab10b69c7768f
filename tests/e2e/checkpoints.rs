//! Checkpoints in S3: the S3 checkpoint store against the test bed's S3 server (contract, multipart
//! uploads, listings past one page, errors while the server is down), and the exactly-once job with
//! its checkpoints *and* its output in S3, with the server stopped in the middle of the run: the
//! checkpoints taken meanwhile fail and are abandoned, the earlier ones stay restorable, the job
//! keeps running, and once the server is back the committed output equals the reference.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use strom::checkpoint::alignment::Mode;
use strom::checkpoint::s3::{S3Config, S3Store};
use strom::checkpoint::storage::{LoadedSnapshot, latest_checkpoint};
use strom::checkpoint::store::{CheckpointStore, check_store_contract};
use strom::connectors::two_phase::ExactlyOnceFileSink;
use strom::runtime::{RunOptions, start_with};
use strom_api::StateBackendKind;
use strom_tests::eo::{Job, assert_same, build, checkpointing, committed, reference, temp_dir};
use strom_tests::testbed::TestBed;
use strom_tests::wait_until;

use crate::s3::SERVER;

fn store(test: &str) -> S3Store {
    let bed = TestBed::get();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let store = S3Store::new(S3Config {
        endpoint: Some(bed.var("STROM_TESTBED_S3_ENDPOINT").to_string()),
        region: bed.var("STROM_TESTBED_S3_REGION").to_string(),
        bucket: format!("{test}-{}-{nanos:x}", std::process::id()),
        prefix: "jobs/test".into(),
        path_style: true,
        access_key: Some(bed.var("STROM_TESTBED_S3_ACCESS_KEY").to_string()),
        secret_key: Some(bed.var("STROM_TESTBED_S3_SECRET_KEY").to_string()),
        multipart_threshold: 5 << 20,
        part_size: 5 << 20,
        operation_timeout_ms: 5_000,
    })
    .unwrap();
    store.ensure_bucket().unwrap();
    store
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_meets_the_contract_uploads_in_parts_and_lists_past_a_page() {
    let _server = SERVER.read().await;
    tokio::task::spawn_blocking(|| {
        let store = store("store");
        check_store_contract(&store).unwrap();
        // 12 MiB + 7 bytes: three parts of a multipart upload, read back byte-exact.
        let dir = temp_dir("s3-store");
        let big: Vec<u8> = (0..(12 << 20) + 7).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("big"), &big).unwrap();
        store
            .put_file("shared/x/000001.sst", &dir.join("big"))
            .unwrap();
        assert!(
            store
                .get_file("shared/x/000001.sst", &dir.join("back"))
                .unwrap()
        );
        assert!(std::fs::read(dir.join("back")).unwrap() == big);
        assert!(!store.get_file("shared/x/none", &dir.join("none")).unwrap());
        // More keys than one listing page (1000).
        for i in 0..1100 {
            store.put(&format!("many/{i:05}"), b"").unwrap();
        }
        let listed = store.list("many/").unwrap();
        assert_eq!(listed.len(), 1100);
        assert_eq!(listed[1099], "many/01099");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .unwrap();
}

/// Brings S3 back if the test fails while it is stopped.
struct StartOnDrop;

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        TestBed::get().script("s3ctl", &["start"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_job_in_s3_rides_out_the_server_stopping_mid_run() {
    let _server = SERVER.write().await;
    tokio::task::spawn_blocking(|| {
        let bed = TestBed::get();
        let store: Arc<dyn CheckpointStore> = Arc::new(store("eo"));
        let (bids, auctions) = (160_000, 10_000);
        let expected = reference(bids, auctions);
        let sink = ExactlyOnceFileSink::new(store.clone(), "output");
        let job = Job {
            bids,
            auctions,
            parallelism: 2,
            rate: Some(16_000),
            chaos: None,
            slow_ms: 0,
            backend: StateBackendKind::Hashmap,
        };
        let graph = build(&job, sink.clone());
        // Keep every checkpoint, so that the one from before the outage can be checked after it.
        let mut checkpoints = checkpointing(store.clone(), 200, Mode::ExactlyOnce);
        checkpoints.retain = 1000;
        let options = RunOptions {
            checkpoints: Some(checkpoints),
            restore: None,
            local_dir: Some(temp_dir("s3-eo")),
        };
        let handle = start_with(&graph, &options).unwrap();
        let stats = handle.checkpoints().clone();
        wait_until("two checkpoints in S3", 60, || {
            (stats.completed() >= 2).then_some(())
        });
        let before = latest_checkpoint(&store).unwrap().unwrap();

        let restart = StartOnDrop;
        bed.script("s3ctl", &["stop"]);
        wait_until("two checkpoints to fail while S3 is down", 60, || {
            (stats.failed() >= 2).then_some(())
        });
        assert!(
            !handle.is_finished(),
            "the job keeps running without its checkpoint storage"
        );
        assert!(
            stats.last_failure().unwrap().contains("S3"),
            "{:?}",
            stats.last_failure()
        );
        let completed_while_down = stats.completed();
        drop(restart); // starts S3 again

        handle.join().unwrap();
        // The last checkpoint from before the outage is intact and restorable.
        let loaded = LoadedSnapshot::load(before.clone()).unwrap();
        assert_eq!(loaded.metadata.operators.len(), graph.nodes.len());
        assert!(
            stats.completed() > completed_while_down,
            "checkpoints complete again once S3 is back"
        );
        assert_same(&committed(&sink, store.as_ref()), &expected);
        assert!(store.list("output/_staging/").unwrap().is_empty());
    })
    .await
    .unwrap();
}
