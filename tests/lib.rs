//! Support for Strom's integration tests: deterministic input generation and small helpers. The
//! reference computations live next to the tests that use them, written for clarity, not speed.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod eo;
pub mod processes;
pub mod testbed;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use strom::connectors::collection::{CollectionSource, Item};
use strom::row::{Row, Value, batch_from_rows};

/// A tiny deterministic generator (64-bit LCG, high bits out), so tests need no extra crates.
#[derive(Debug, Clone)]
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(
            seed.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        )
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// One step of a scripted event-time input.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Record { key: i64, ts: i64, v: i64 },
    Watermark(i64),
}

/// Schema of scripted records: `key Int64, ts Timestamp(ms), v Int64`.
pub fn event_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("v", DataType::Int64, false),
    ]))
}

/// `n` records over `keys` keys with timestamps drifting forward and jittered by up to `jitter` ms
/// (so out of order), and a watermark of `max_seen - bound` after every `every` records, so that
/// records more than `bound` behind are late.
pub fn scripted_events(
    seed: u64,
    n: usize,
    keys: u64,
    jitter: u64,
    bound: i64,
    every: usize,
) -> Vec<Event> {
    let mut rng = Lcg::new(seed);
    let mut events = Vec::with_capacity(n + n / every.max(1) + 1);
    let mut base = 1_000_000i64;
    let mut max_seen = i64::MIN;
    for i in 0..n {
        base += rng.below(20) as i64;
        let ts = base - rng.below(jitter + 1) as i64;
        let key = rng.below(keys) as i64;
        let v = rng.below(1000) as i64 - 300;
        max_seen = max_seen.max(ts);
        events.push(Event::Record { key, ts, v });
        if (i + 1) % every.max(1) == 0 {
            events.push(Event::Watermark(max_seen - bound));
        }
    }
    events
}

/// The scripted events as a collection source: records batched between watermarks, `per_batch` at a
/// time, watermarks in place.
pub fn scripted_source(name: &str, events: &[Event], per_batch: usize) -> CollectionSource {
    let schema = event_schema();
    let mut items = Vec::new();
    let mut pending: Vec<Row> = Vec::new();
    let flush = |pending: &mut Vec<Row>, items: &mut Vec<Item>| {
        for chunk in pending.chunks(per_batch.max(1)) {
            items.push(Item::Batch(
                batch_from_rows(&schema, chunk).expect("rows fit the schema"),
            ));
        }
        pending.clear();
    };
    for e in events {
        match e {
            Event::Record { key, ts, v } => {
                pending.push(vec![Value::Int(*key), Value::Int(*ts), Value::Int(*v)])
            }
            Event::Watermark(w) => {
                flush(&mut pending, &mut items);
                items.push(Item::Watermark(*w));
            }
        }
    }
    flush(&mut pending, &mut items);
    CollectionSource::new(name, event_schema(), items)
}

/// Sorts rows for comparison as multisets.
pub fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    rows
}

/// Polls `check` every 20 ms until it returns `Some`, failing the test with `what` after
/// `limit_secs`: a bound on waiting for progress, never a measurement.
pub fn wait_until<T>(what: &str, limit_secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(limit_secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up after {limit_secs} s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
