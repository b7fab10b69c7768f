//! The exactly-once test job shared by the `it` and `e2e` tests: Nexmark bids counted per auction in
//! 10 s tumbling windows, window-joined with the auctions, written through the two-phase-commit
//! file sink; a brute-force reference from the generator's rows; failure injection; and reading
//! back what the sink committed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use strom::checkpoint::alignment::Mode;
use strom::checkpoint::coordinator::CheckpointConfig;
use strom::checkpoint::store::CheckpointStore;
use strom::connectors::nexmark::{self, NexmarkConfig};
use strom::connectors::nexmark_source::NexmarkSource;
use strom::connectors::two_phase::ExactlyOnceFileSink;
use strom::operators::aggregate::Agg;
use strom::operators::window::WindowAssigner;
use strom::runtime::checkpointing::CheckpointOptions;
use strom::stream::StreamEnv;
use strom::time::WatermarkStrategy;
use strom::{EngineConfig, Error};
use strom_api::StateBackendKind;

pub const WINDOW_MS: i64 = 10_000;

/// (auction, window_start, window_end, bids, max price, seller, auction time)
pub type Out = (i64, i64, i64, i64, i64, i64, i64);

pub fn config() -> NexmarkConfig {
    NexmarkConfig {
        events_per_second: 20_000,
        ..NexmarkConfig::default()
    }
}

/// The job's result computed from the generator's rows.
pub fn reference(bids: u64, auctions: u64) -> BTreeMap<Out, usize> {
    reference_with(&config(), bids, auctions)
}

/// [`reference`] for another generator configuration (the event-time rate).
/// What the built-in `auction-stats` job over BIDS bids (and a tenth as many auctions) at 2 000
/// events/s of event time must commit, computed by brute force.
pub fn auction_stats_reference(bids: u64) -> BTreeMap<Out, usize> {
    let expected = reference_with(
        &NexmarkConfig {
            events_per_second: 2_000,
            ..NexmarkConfig::default()
        },
        bids,
        bids / 10,
    );
    assert!(!expected.is_empty());
    expected
}

pub fn reference_with(cfg: &NexmarkConfig, bids: u64, auctions: u64) -> BTreeMap<Out, usize> {
    let cfg = cfg.clone();
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
pub struct Chaos {
    seen: AtomicU64,
    points: Vec<(u64, AtomicBool)>,
}

impl Chaos {
    pub fn new(points: Vec<u64>) -> Arc<Self> {
        Arc::new(Self {
            seen: AtomicU64::new(0),
            points: points
                .into_iter()
                .map(|p| (p, AtomicBool::new(false)))
                .collect(),
        })
    }

    pub fn check(&self, rows: u64) -> strom::Result<()> {
        let before = self.seen.fetch_add(rows, Ordering::Relaxed);
        for (p, fired) in &self.points {
            if before < *p && *p <= before + rows && !fired.swap(true, Ordering::Relaxed) {
                return Err(Error::user(format!("injected failure at record {p}")));
            }
        }
        Ok(())
    }

    pub fn fired(&self) -> usize {
        self.points
            .iter()
            .filter(|(_, f)| f.load(Ordering::Relaxed))
            .count()
    }
}

pub struct Job {
    pub bids: u64,
    pub auctions: u64,
    pub parallelism: u32,
    pub rate: Option<u64>,
    pub chaos: Option<(Arc<Chaos>, Arc<Chaos>)>,
    /// Milliseconds a stage before the aggregate spends on each batch (backpressure).
    pub slow_ms: u64,
    pub backend: StateBackendKind,
}

pub fn build(job: &Job, sink: ExactlyOnceFileSink) -> strom::plan::LogicalGraph {
    let env = StreamEnv::new(
        "exactly-once",
        EngineConfig {
            parallelism: job.parallelism,
            batch_size: 512,
            state_backend: job.backend,
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

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strom-eo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn checkpointing(
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
pub fn committed(sink: &ExactlyOnceFileSink, store: &dyn CheckpointStore) -> BTreeMap<Out, usize> {
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

pub fn assert_same(actual: &BTreeMap<Out, usize>, expected: &BTreeMap<Out, usize>) {
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
