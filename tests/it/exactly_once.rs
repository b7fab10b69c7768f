//! Exactly-once end to end: a Nexmark job with a windowed aggregate and a window join writes through
//! the two-phase-commit file sink while failures are injected into its tasks; the committed files
//! must equal a brute-force computation from the generator's own rows, record for record (nothing
//! lost, nothing twice). And rescaling: stop with a savepoint at parallelism 4, restore at 2, stop
//! again, restore a relocated copy at 3; the result equals the uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use strom::checkpoint::alignment::Mode;
use strom::checkpoint::coordinator::CheckpointConfig;
use strom::checkpoint::storage::{SnapshotRef, copy_snapshot};
use strom::checkpoint::store::{CheckpointStore, LocalStore};
use strom::connectors::nexmark::{self, NexmarkConfig};
use strom::connectors::nexmark_source::NexmarkSource;
use strom::connectors::two_phase::ExactlyOnceFileSink;
use strom::operators::aggregate::Agg;
use strom::operators::window::WindowAssigner;
use strom::runtime::checkpointing::CheckpointOptions;
use strom::runtime::recovery::{JobStatus, RestartStrategy, run_with};
use strom::runtime::{RestoreOptions, RunOptions, start_with};
use strom::stream::StreamEnv;
use strom::time::WatermarkStrategy;
use strom::{EngineConfig, Error};

const WINDOW_MS: i64 = 10_000;

/// (auction, window_start, window_end, bids, max price, seller, auction time)
type Out = (i64, i64, i64, i64, i64, i64, i64);

fn config() -> NexmarkConfig {
    NexmarkConfig {
        events_per_second: 20_000,
        ..NexmarkConfig::default()
    }
}

/// The job's result computed from the generator's rows.
fn reference(bids: u64, auctions: u64) -> BTreeMap<Out, usize> {
    let cfg = config();
    let mut per_window: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for k in 0..bids {
        let b = nexmark::bid(&cfg, k);
        let start = b.date_time.div_euclid(WINDOW_MS) * WINDOW_MS;
        let e = per_window
            .entry((b.auction, start))
            .or_insert((0, i64::MIN));
        e.0 += 1;
        e.1 = e.1.max(b.price);
    }
    let mut out = BTreeMap::new();
    for k in 0..auctions {
        let a = nexmark::auction(&cfg, k);
        let start = a.date_time.div_euclid(WINDOW_MS) * WINDOW_MS;
        if let Some((n, max)) = per_window.get(&(a.id, start)) {
            let row = (
                a.id,
                start,
                start + WINDOW_MS,
                *n,
                *max,
                a.seller,
                a.date_time,
            );
            *out.entry(row).or_insert(0) += 1;
        }
    }
    out
}

/// Fails the job once at each of its points (counted in records seen over all attempts).
struct Chaos {
    seen: AtomicU64,
    points: Vec<(u64, AtomicBool)>,
}

impl Chaos {
    fn new(points: Vec<u64>) -> Arc<Self> {
        Arc::new(Self {
            seen: AtomicU64::new(0),
            points: points
                .into_iter()
                .map(|p| (p, AtomicBool::new(false)))
                .collect(),
        })
    }

    fn check(&self, rows: u64) -> strom::Result<()> {
        let before = self.seen.fetch_add(rows, Ordering::Relaxed);
        for (p, fired) in &self.points {
            if before < *p && *p <= before + rows && !fired.swap(true, Ordering::Relaxed) {
                return Err(Error::user(format!("injected failure at record {p}")));
            }
        }
        Ok(())
    }

    fn fired(&self) -> usize {
        self.points
            .iter()
            .filter(|(_, f)| f.load(Ordering::Relaxed))
            .count()
    }
}

struct Job {
    bids: u64,
    auctions: u64,
    parallelism: u32,
    rate: Option<u64>,
    chaos: Option<(Arc<Chaos>, Arc<Chaos>)>,
    /// Milliseconds a stage before the aggregate spends on each batch (backpressure).
    slow_ms: u64,
}

fn build(job: &Job, sink: ExactlyOnceFileSink) -> strom::plan::LogicalGraph {
    let env = StreamEnv::new(
        "exactly-once",
        EngineConfig {
            parallelism: job.parallelism,
            batch_size: 512,
            ..EngineConfig::default()
        },
    );
    let mut bids_source = NexmarkSource::bids(config(), Some(job.bids));
    let mut auctions_source = NexmarkSource::auctions(config(), Some(job.auctions));
    if let Some(rate) = job.rate {
        bids_source = bids_source.with_rate_limit(rate);
        auctions_source = auctions_source.with_rate_limit((rate / 15).max(1));
    }
    let mut bids = env
        .from_source(bids_source, Some(WatermarkStrategy::ascending("date_time")))
        .uid("bids")
        .select(&["auction", "price", "date_time"]);
    if let Some((before, _)) = &job.chaos {
        let chaos = before.clone();
        let schema = bids.schema().clone();
        bids = bids.map_batches("chaos", schema, move |b| {
            chaos.check(b.num_rows() as u64)?;
            Ok(b)
        });
    }
    if job.slow_ms > 0 {
        // A slow stage behind a rebalance: its input channels back up, so barriers queue behind
        // records and unaligned checkpoints carry in-flight records.
        let pause = Duration::from_millis(job.slow_ms);
        let schema = bids.schema().clone();
        bids = bids
            .rebalance()
            .map_batches("slow", schema, move |b| {
                std::thread::sleep(pause);
                Ok(b)
            })
            .uid("slow");
    }
    let counts = bids
        .key_by(&["auction"])
        .window(WindowAssigner::tumbling(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .aggregate(&[Agg::count("n"), Agg::max("price", "max_price")])
        .uid("bids-per-auction");
    let auctions = env
        .from_source(
            auctions_source,
            Some(WatermarkStrategy::ascending("date_time")),
        )
        .uid("auctions")
        .select(&["id", "seller", "date_time"]);
    let mut joined = counts
        .join(&auctions)
        .where_key(&["auction"])
        .equal_to(&["id"])
        .window(WindowAssigner::tumbling(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .apply()
        .uid("auction-join")
        .select(&[
            "auction",
            "window_start",
            "window_end",
            "n",
            "max_price",
            "seller",
            "date_time",
        ]);
    if let Some((_, after)) = &job.chaos {
        let chaos = after.clone();
        let schema = joined.schema().clone();
        joined = joined.map_batches("chaos-after-join", schema, move |b| {
            chaos.check(b.num_rows() as u64)?;
            Ok(b)
        });
    }
    joined.sink(sink).uid("sink");
    env.build().unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strom-eo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn checkpointing(
    store: Arc<dyn CheckpointStore>,
    interval_ms: u64,
    mode: Mode,
) -> CheckpointOptions {
    CheckpointOptions {
        config: CheckpointConfig {
            interval_ms,
            timeout_ms: 60_000,
            max_concurrent: 1,
            min_pause_ms: 0,
        },
        mode,
        store,
        retain: 2,
    }
}

/// Every committed row, counted.
fn committed(sink: &ExactlyOnceFileSink, store: &dyn CheckpointStore) -> BTreeMap<Out, usize> {
    let mut out = BTreeMap::new();
    for key in sink.committed().unwrap() {
        let bytes = store.get(&key).unwrap().unwrap();
        for line in String::from_utf8(bytes).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let f = |name: &str| {
                v[name]
                    .as_i64()
                    .unwrap_or_else(|| panic!("{name} in {line}"))
            };
            let row = (
                f("auction"),
                f("window_start"),
                f("window_end"),
                f("n"),
                f("max_price"),
                f("seller"),
                f("date_time"),
            );
            *out.entry(row).or_insert(0) += 1;
        }
    }
    out
}

fn assert_same(actual: &BTreeMap<Out, usize>, expected: &BTreeMap<Out, usize>) {
    let missing: Vec<_> = expected
        .iter()
        .filter(|(k, n)| actual.get(*k) != Some(n))
        .take(5)
        .collect();
    let extra: Vec<_> = actual
        .iter()
        .filter(|(k, n)| expected.get(*k) != Some(n))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "committed output differs from the reference ({} vs {} distinct rows)\nexpected but not (or not so often) committed: {missing:?}\ncommitted unexpectedly (or too often): {extra:?}",
        actual.len(),
        expected.len()
    );
}

fn run_with_failures(name: &str, mode: Mode) {
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
    assert!(status.completed_checkpoints().len() >= 3);
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
    run_with_failures("memory", Mode::ExactlyOnce);
}

/// Unaligned checkpoints: in-flight records are part of the snapshot and replayed on restore.
#[test]
fn failures_change_nothing_with_unaligned_checkpoints() {
    run_with_failures("unaligned", Mode::Unaligned);
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
    let dir = temp_dir("rescale");
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
