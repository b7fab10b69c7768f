//! Exactly-once end to end: a Nexmark job with a windowed aggregate and a window join writes through
//! the two-phase-commit file sink while failures are injected into its tasks; the committed files
//! must equal a brute-force computation from the generator's own rows, record for record (nothing
//! lost, nothing twice). And rescaling: stop with a savepoint at parallelism 4, restore at 2, stop
//! again, restore a relocated copy at 3; the result equals the uninterrupted one.

use std::path::Path;
use std::sync::Arc;

use strom::checkpoint::alignment::Mode;
use strom::checkpoint::storage::{SnapshotRef, copy_snapshot};
use strom::checkpoint::store::{CheckpointStore, LocalStore};
use strom::connectors::nexmark_source::NexmarkSource;
use strom::connectors::two_phase::ExactlyOnceFileSink;
use strom::runtime::recovery::{JobStatus, RestartStrategy, run_with};
use strom::runtime::{RestoreOptions, RunOptions, start_with};
use strom::stream::StreamEnv;
use strom::{EngineConfig, Error};
use strom_api::StateBackendKind;
use strom_tests::eo::{
    Chaos, Job, assert_same, build, checkpointing, committed, config, reference, temp_dir,
};
fn run_with_failures(name: &str, mode: Mode, backend: StateBackendKind) {
    let dir = temp_dir(name);
    let (bids, auctions) = (200_000, 12_000);
    let expected = reference(bids, auctions);
    assert!(expected.len() > 1000, "the reference joins enough rows");
    let output: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(dir.join("out")));
    let sink = ExactlyOnceFileSink::new(output.clone(), "results");
    // Failures at pseudo-random points of the bids' and the join's records (fixed seed).
    let mut rng = strom_tests::Lcg::new(7);
    let before = Chaos::new(vec![20_000 + rng.below(40_000), 90_000 + rng.below(60_000)]);
    let after = Chaos::new(vec![(expected.len() as u64 / 3) + rng.below(500)]);
    let job = Job {
        bids,
        auctions,
        parallelism: 2,
        rate: Some(150_000),
        chaos: Some((before.clone(), after.clone())),
        slow_ms: if mode == Mode::Unaligned { 8 } else { 0 },
        backend,
    };
    let graph = build(&job, sink.clone());
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(dir.join("checkpoints")));
    let options = RunOptions {
        checkpoints: Some(checkpointing(checkpoints.clone(), 40, mode)),
        restore: None,
        local_dir: Some(dir.join("local")),
    };
    let status = Arc::new(JobStatus::default());
    run_with(
        &graph,
        &options,
        RestartStrategy::FixedDelay {
            attempts: 5,
            delay_ms: 10,
        },
        &status,
        |_| {},
    )
    .unwrap();
    assert_eq!(
        before.fired() + after.fired(),
        3,
        "every failure was injected"
    );
    assert_eq!(status.restarts(), 3);
    assert!(
        status.last_failure().unwrap().contains("injected failure"),
        "{:?}",
        status.last_failure()
    );
    assert!(
        !status.restored_from().is_empty(),
        "at least one restart restored a checkpoint"
    );
    let completed = status.completed_checkpoints();
    assert!(completed.len() >= 3);
    if backend == StateBackendKind::Rocksdb {
        // RocksDB checkpoints are incremental: later ones reference files uploaded before.
        assert!(
            completed.iter().any(|c| c.full_size > c.bytes_written),
            "{completed:?}"
        );
    }
    assert_same(&committed(&sink, output.as_ref()), &expected);
    // Nothing is left staged, and at most `retain` checkpoints are kept.
    assert!(output.list("results/_staging/").unwrap().is_empty());
    let metadata: Vec<String> = checkpoints
        .list("chk-")
        .unwrap()
        .into_iter()
        .filter(|k| k.ends_with("_metadata"))
        .collect();
    assert!(!metadata.is_empty() && metadata.len() <= 2, "{metadata:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failures_change_nothing_in_the_committed_output_with_memory_state() {
    run_with_failures("memory", Mode::ExactlyOnce, StateBackendKind::Hashmap);
}

#[test]
fn failures_change_nothing_in_the_committed_output_with_rocksdb_state() {
    run_with_failures("rocksdb", Mode::ExactlyOnce, StateBackendKind::Rocksdb);
}

/// Unaligned checkpoints: in-flight records are part of the snapshot and replayed on restore.
#[test]
fn failures_change_nothing_with_unaligned_checkpoints() {
    run_with_failures("unaligned", Mode::Unaligned, StateBackendKind::Hashmap);
}

/// Runs `job` from `restore` (if any) until the bids source has produced `until` records, then
/// stops it with a savepoint; `None` runs it to its end.
fn run_segment(
    job: &Job,
    sink: &ExactlyOnceFileSink,
    checkpoints: &Arc<dyn CheckpointStore>,
    local: &Path,
    restore: Option<SnapshotRef>,
    until: Option<u64>,
) -> Option<SnapshotRef> {
    let graph = build(job, sink.clone());
    let options = RunOptions {
        checkpoints: Some(checkpointing(checkpoints.clone(), 0, Mode::ExactlyOnce)),
        restore: restore.map(|snapshot| RestoreOptions {
            snapshot,
            allow_non_restored_state: false,
        }),
        local_dir: Some(local.to_owned()),
    };
    let handle = start_with(&graph, &options).unwrap();
    let Some(until) = until else {
        handle.join().unwrap();
        return None;
    };
    strom_tests::wait_until("the bids source to make progress", 120, || {
        let produced: u64 = handle
            .metrics()
            .tasks
            .iter()
            .filter(|t| t.is_source)
            .map(|t| t.records_in())
            .sum();
        (produced >= until).then_some(())
    });
    let savepoint = handle.stop_with_savepoint().unwrap();
    handle.join().unwrap();
    Some(savepoint)
}

#[test]
fn stop_with_savepoint_at_4_then_restore_at_2_then_at_3_equals_an_uninterrupted_run() {
    rescale("rescale-memory", StateBackendKind::Hashmap);
}

/// The same with RocksDB: restores at another parallelism copy key-group ranges out of the
/// savepoint's RocksDB files.
#[test]
fn rescaling_with_rocksdb_state_equals_an_uninterrupted_run() {
    rescale("rescale-rocksdb", StateBackendKind::Rocksdb);
}

fn rescale(name: &str, backend: StateBackendKind) {
    let dir = temp_dir(name);
    let (bids, auctions) = (150_000, 9_000);
    let expected = reference(bids, auctions);
    let output: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(dir.join("out")));
    let sink = ExactlyOnceFileSink::new(output.clone(), "results");
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(dir.join("checkpoints")));
    let job = |parallelism| Job {
        bids,
        auctions,
        parallelism,
        rate: Some(100_000),
        chaos: None,
        slow_ms: 0,
        backend,
    };
    let first = run_segment(
        &job(4),
        &sink,
        &checkpoints,
        &dir.join("local-4"),
        None,
        Some(30_000),
    )
    .unwrap();
    assert!(first.dir.starts_with("savepoints/"), "{}", first.dir);
    let second = run_segment(
        &job(2),
        &sink,
        &checkpoints,
        &dir.join("local-2"),
        Some(first),
        Some(90_000),
    )
    .unwrap();
    // A savepoint is self-contained: a copy elsewhere (another store) restores the same.
    let elsewhere: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(dir.join("moved")));
    let moved = SnapshotRef {
        store: elsewhere,
        dir: "archive/before-p3".into(),
    };
    copy_snapshot(&second, &moved).unwrap();
    std::fs::remove_dir_all(dir.join("checkpoints")).unwrap();
    run_segment(
        &job(3),
        &sink,
        &checkpoints,
        &dir.join("local-3"),
        Some(moved),
        None,
    );
    assert_same(&committed(&sink, output.as_ref()), &expected);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn restoring_state_of_a_removed_operator_needs_allow_non_restored_state() {
    let dir = temp_dir("non-restored");
    let output: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(dir.join("out")));
    let sink = ExactlyOnceFileSink::new(output.clone(), "results");
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(dir.join("checkpoints")));
    let job = Job {
        bids: 100_000,
        auctions: 6_000,
        parallelism: 2,
        rate: Some(50_000),
        chaos: None,
        slow_ms: 0,
        backend: StateBackendKind::Hashmap,
    };
    let savepoint =
        run_segment(&job, &sink, &checkpoints, &dir.join("l"), None, Some(5_000)).unwrap();
    // The same job without the join and its sink: their state has nowhere to go.
    let env = StreamEnv::new("smaller", EngineConfig::default());
    env.from_source(NexmarkSource::bids(config(), Some(10)), None)
        .uid("bids")
        .sink(strom::connectors::sinks::DiscardSink::new());
    let graph = env.build().unwrap();
    let options = |allow| RunOptions {
        checkpoints: None,
        restore: Some(RestoreOptions {
            snapshot: savepoint.clone(),
            allow_non_restored_state: allow,
        }),
        local_dir: Some(dir.join("l2")),
    };
    let error = start_with(&graph, &options(false)).err().unwrap();
    let message = error.to_string();
    assert!(matches!(error, Error::Restore(_)), "{message}");
    assert!(
        message.contains("bids-per-auction") && message.contains("allowNonRestoredState"),
        "{message}"
    );
    start_with(&graph, &options(true)).unwrap().join().unwrap();
    // Another number of key groups cannot take the state.
    let env = StreamEnv::new(
        "other-key-groups",
        EngineConfig {
            max_parallelism: 64,
            ..EngineConfig::default()
        },
    );
    env.from_source(NexmarkSource::bids(config(), Some(10)), None)
        .uid("bids")
        .sink(strom::connectors::sinks::DiscardSink::new());
    let error = start_with(&env.build().unwrap(), &options(true))
        .err()
        .unwrap();
    assert!(error.to_string().contains("maxParallelism 128"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The generated keyed events (datagen) resume from their positions too: stopped with a savepoint
/// at parallelism 2 and restored at 3, a windowed count equals the one computed from the events.
#[test]
fn datagen_positions_restore_at_another_parallelism() {
    use std::collections::BTreeMap;
    use std::time::Duration;
    use strom::connectors::datagen::KeyedEvents;
    use strom::operators::aggregate::Agg;
    use strom::operators::window::WindowAssigner;
    use strom::time::WatermarkStrategy;

    let dir = temp_dir("datagen");
    let events = 600_000;
    let output: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(dir.join("out")));
    let sink = ExactlyOnceFileSink::new(output.clone(), "counts");
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(dir.join("ckpt")));
    let graph = |parallelism| {
        let env = StreamEnv::new(
            "datagen",
            EngineConfig {
                parallelism,
                batch_size: 1000,
                ..EngineConfig::default()
            },
        );
        let source = env
            .from_source(
                KeyedEvents::new(events),
                Some(WatermarkStrategy::ascending("ts")),
            )
            .uid("events");
        let schema = source.schema().clone();
        source
            .map_batches("slow", schema, |b| {
                std::thread::sleep(Duration::from_millis(2));
                Ok(b)
            })
            .key_by(&["key"])
            .window(WindowAssigner::tumbling(Duration::from_secs(1)))
            .aggregate(&[Agg::count("n")])
            .uid("count")
            .sink(sink.clone())
            .uid("sink");
        env.build().unwrap()
    };
    let options = |restore: Option<strom::checkpoint::storage::SnapshotRef>| RunOptions {
        checkpoints: Some(strom_tests::eo::checkpointing(
            checkpoints.clone(),
            0,
            Mode::ExactlyOnce,
        )),
        restore: restore.map(|snapshot| RestoreOptions {
            snapshot,
            allow_non_restored_state: false,
        }),
        local_dir: Some(dir.join("local")),
    };
    let first = start_with(&graph(2), &options(None)).unwrap();
    strom_tests::wait_until("the events source to make progress", 120, || {
        let produced: u64 = first
            .metrics()
            .tasks
            .iter()
            .filter(|t| t.is_source)
            .map(|t| t.records_in())
            .sum();
        (produced >= events / 3).then_some(())
    });
    let savepoint = first.stop_with_savepoint().unwrap();
    first.join().unwrap();
    start_with(&graph(3), &options(Some(savepoint)))
        .unwrap()
        .join()
        .unwrap();

    let batch = KeyedEvents::new(events).batch(0..events).unwrap();
    let keys = batch
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap();
    let ts = batch
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::TimestampMillisecondArray>()
        .unwrap();
    let mut expected: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for i in 0..batch.num_rows() {
        let end = ts.value(i).div_euclid(1000) * 1000 + 1000;
        *expected.entry((keys.value(i), end)).or_insert(0) += 1;
    }
    let mut actual: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for key in sink.committed().unwrap() {
        let bytes = output.get(&key).unwrap().unwrap();
        for line in String::from_utf8(bytes).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let row = (
                v["key"].as_i64().unwrap(),
                v["window_end"].as_i64().unwrap(),
            );
            assert!(
                actual.insert(row, v["n"].as_i64().unwrap()).is_none(),
                "{row:?} twice"
            );
        }
    }
    assert_eq!(actual.len(), expected.len());
    assert!(actual == expected, "counts differ from the events");
    let _ = std::fs::remove_dir_all(&dir);
}
