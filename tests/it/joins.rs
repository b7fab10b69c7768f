//! Window joins (tumbling, sliding, session) and interval joins against brute-force references, over
//! out-of-order and late input, at parallelism 1, 2 and 4; and the plan errors of both joins.
//!
//! Both sides come from one scripted source subtask (split by a `side` column), so they carry the
//! same watermarks. A two-input operator's watermark is the minimum over its inputs, and how far one
//! input runs ahead of the other depends on thread scheduling; but the source feeds both sides in
//! lockstep through bounded channels, so the lag is a few watermarks at most. The script therefore
//! makes lateness unambiguous: a record is either well ahead of the last watermark before it (on
//! time whatever the other input's progress) or far behind the watermark `LAG` steps earlier (late
//! whatever it). The references replay the script with each record's own last watermark, and the
//! output must equal them exactly, as must the number of records dropped as late.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use strom::connectors::collection::{CollectionSource, Item};
use strom::connectors::sinks::CollectSink;
use strom::operators::join::{IntervalJoin, LateCounter};
use strom::operators::window::WindowAssigner;
use strom::row::{Row, Value, batch_from_rows};
use strom::stream::{DataStream, StreamEnv};
use strom::time::MIN_WATERMARK;
use strom::{EngineConfig, Error};
use strom_api::StateBackendKind;

const PARALLELISMS: [u32; 3] = [1, 2, 4];
/// Watermarks advance by this much per step of the script.
const STEP: i64 = 10;
/// How many watermarks one input of the join may be ahead of the other (a generous bound).
const LAG: i64 = 16;
/// Late records are this far behind the watermark `LAG` steps back: more than any window size,
/// session gap or interval bound used here.
const MARGIN: i64 = 200;
const START: i64 = 1_000_000;

/// A small deterministic generator (64-bit LCG, high bits out).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// One scripted record with the watermark that preceded it in the script.
#[derive(Debug, Clone, Copy)]
struct Rec {
    left: bool,
    key: i64,
    ts: i64,
    v: i64,
    /// The last watermark before the record (its own input's watermark when it arrives).
    wm: i64,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Record(Rec),
    Watermark(i64),
}

/// `steps` steps; each has up to 7 records and ends with a watermark `STEP` ms on. On-time records
/// are 2 to 61 ms ahead of the last watermark (out of order among themselves); about one in twelve,
/// once there is history, is more than `MARGIN` behind the watermark `LAG` steps back.
fn script(seed: u64, steps: i64, keys: u64) -> Vec<Step> {
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    let mut wm = MIN_WATERMARK;
    for m in 0..steps {
        let base = START + m * STEP;
        for _ in 0..rng.below(8) {
            let ts = if m > LAG + 2 && rng.below(12) == 0 {
                base - LAG * STEP - MARGIN - rng.below(100) as i64
            } else {
                base + 2 + rng.below(60) as i64
            };
            out.push(Step::Record(Rec {
                left: rng.below(2) == 0,
                key: rng.below(keys) as i64,
                ts,
                v: rng.below(1000) as i64,
                wm,
            }));
        }
        wm = base + STEP;
        out.push(Step::Watermark(wm));
    }
    out
}

fn records(steps: &[Step]) -> Vec<Rec> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Record(r) => Some(*r),
            Step::Watermark(_) => None,
        })
        .collect()
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// The script as one source subtask (`side, key, ts, v`), split into the left `(key, ts, v)` and the
/// right `(key, ts, tag)` streams, both with event time `ts`.
fn sides(env: &StreamEnv, steps: &[Step], event_time: bool) -> (DataStream, DataStream) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("side", DataType::Int64, false),
        Field::new("key", DataType::Int64, false),
        Field::new("ts", ts_type(), false),
        Field::new("v", DataType::Int64, false),
    ]));
    let mut items = Vec::new();
    let mut pending: Vec<Row> = Vec::new();
    let flush = |pending: &mut Vec<Row>, items: &mut Vec<Item>| {
        for chunk in pending.chunks(4) {
            items.push(Item::Batch(batch_from_rows(&schema, chunk).unwrap()));
        }
        pending.clear();
    };
    for step in steps {
        match step {
            Step::Record(r) => pending.push(vec![
                Value::Int(i64::from(!r.left)),
                Value::Int(r.key),
                Value::Int(r.ts),
                Value::Int(r.v),
            ]),
            Step::Watermark(w) => {
                flush(&mut pending, &mut items);
                items.push(Item::Watermark(*w));
            }
        }
    }
    flush(&mut pending, &mut items);
    let mut src = env.from_source(CollectionSource::new("script", schema.clone(), items), None);
    if event_time {
        src = src.with_event_time("ts");
    }
    let left = src
        .filter("left", |r| r[0] == Value::Int(0))
        .select(&["key", "ts", "v"]);
    let right_schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("ts", ts_type(), false),
        Field::new("tag", DataType::Utf8, false),
    ]));
    let right = src
        .filter("right", |r| r[0] == Value::Int(1))
        .map("tag", right_schema, |r| {
            Ok(vec![
                r[1].clone(),
                r[2].clone(),
                Value::Str(format!("r{:?}", r[3])),
            ])
        });
    (left, right)
}

fn env(name: &str) -> StreamEnv {
    env_on(name, StateBackendKind::Hashmap)
}

fn env_on(name: &str, state_backend: StateBackendKind) -> StreamEnv {
    StreamEnv::new(
        name,
        EngineConfig {
            parallelism: 1,
            channel_capacity: 2,
            state_backend,
            ..EngineConfig::default()
        },
    )
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

/// A joined row: `key, ts, v, right_key, right_ts, tag`.
fn joined(l: &Rec, r: &Rec) -> Row {
    vec![
        Value::Int(l.key),
        Value::Int(l.ts),
        Value::Int(l.v),
        Value::Int(r.key),
        Value::Int(r.ts),
        Value::Str(format!("r{:?}", Value::Int(r.v))),
    ]
}

/// Runs `build` over the script at every parallelism; checks the output and the late count.
fn check(
    name: &str,
    steps: &[Step],
    expected: &[Row],
    expected_late: u64,
    build: impl Fn(&DataStream, &DataStream, &LateCounter) -> DataStream,
) {
    let runs = PARALLELISMS.map(|p| (p, StateBackendKind::Hashmap));
    check_runs(name, steps, expected, expected_late, &runs, build);
}

/// Runs `build` over the script at each of `runs`' parallelism and state backend; checks the
/// output and the late count.
fn check_runs(
    name: &str,
    steps: &[Step],
    expected: &[Row],
    expected_late: u64,
    runs: &[(u32, StateBackendKind)],
    build: impl Fn(&DataStream, &DataStream, &LateCounter) -> DataStream,
) {
    assert!(expected.len() > 100, "{name}: only {} rows", expected.len());
    assert!(
        expected_late > 10,
        "{name}: only {expected_late} late records"
    );
    for &(p, backend) in runs {
        let env = env_on(name, backend);
        let (left, right) = sides(&env, steps, true);
        let late = LateCounter::new();
        let sink = CollectSink::new();
        build(&left, &right, &late)
            .set_parallelism(p)
            .sink(sink.clone());
        env.execute().unwrap();
        let rows = sink.sorted_rows().unwrap();
        assert_eq!(
            rows.len(),
            expected.len(),
            "{name} at parallelism {p} on {backend:?}"
        );
        assert_eq!(rows, expected, "{name} at parallelism {p} on {backend:?}");
        assert_eq!(
            late.get(),
            expected_late,
            "{name} late records at parallelism {p} on {backend:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Window joins.

#[derive(Clone, Copy, Debug)]
enum Assign {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
}

impl Assign {
    /// The windows `[start, end)` that contain `ts`.
    fn windows(self, ts: i64) -> Vec<(i64, i64)> {
        match self {
            Assign::Tumbling(size) => {
                let start = ts - ts.rem_euclid(size);
                vec![(start, start + size)]
            }
            Assign::Sliding(size, slide) => (0..)
                .map(|i| ts - ts.rem_euclid(slide) - i * slide)
                .take_while(|s| s + size > ts)
                .map(|s| (s, s + size))
                .collect(),
            Assign::Session(gap) => vec![(ts, ts + gap)],
        }
    }

    fn assigner(self) -> WindowAssigner {
        let ms = |v: i64| Duration::from_millis(v as u64);
        match self {
            Assign::Tumbling(size) => WindowAssigner::tumbling(ms(size)),
            Assign::Sliding(size, slide) => WindowAssigner::sliding(ms(size), ms(slide)),
            Assign::Session(gap) => WindowAssigner::session(ms(gap)),
        }
    }
}

/// Every pair of a left and a right record of one key in one window; a record's window is dropped
/// if its last millisecond is at or behind the record's watermark. Sessions are the connected
/// stretches of the kept records' `[ts, ts + gap)` per key. Returns the rows and the number of
/// records that lost every window.
fn window_join_reference(recs: &[Rec], assign: Assign) -> (Vec<Row>, u64) {
    let mut late = 0;
    // (key, window) -> (lefts, rights)
    let mut windows: BTreeMap<(i64, i64, i64), (Vec<Rec>, Vec<Rec>)> = BTreeMap::new();
    let mut kept: BTreeMap<i64, Vec<Rec>> = BTreeMap::new();
    for r in recs {
        let live: Vec<(i64, i64)> = assign
            .windows(r.ts)
            .into_iter()
            .filter(|&(_, end)| end - 1 > r.wm)
            .collect();
        if live.is_empty() {
            late += 1;
            continue;
        }
        match assign {
            Assign::Session(_) => kept.entry(r.key).or_default().push(*r),
            _ => {
                for (start, end) in live {
                    let w = windows.entry((r.key, start, end)).or_default();
                    if r.left { &mut w.0 } else { &mut w.1 }.push(*r);
                }
            }
        }
    }
    if let Assign::Session(gap) = assign {
        for (key, mut recs) in kept {
            recs.sort_by_key(|r| r.ts);
            let mut session: Option<(i64, i64)> = None;
            for r in recs {
                let (start, end) = match session {
                    Some((s, e)) if r.ts <= e => (s, e.max(r.ts + gap)),
                    _ => (r.ts, r.ts + gap),
                };
                session = Some((start, end));
                let w = windows.entry((key, start, 0)).or_default();
                if r.left { &mut w.0 } else { &mut w.1 }.push(r);
            }
        }
    }
    let mut out = Vec::new();
    for (lefts, rights) in windows.values() {
        for l in lefts {
            for r in rights {
                out.push(joined(l, r));
            }
        }
    }
    (sorted(out), late)
}

fn check_window_join(name: &str, seed: u64, assign: Assign) {
    let steps = script(seed, 400, 6);
    let (expected, late) = window_join_reference(&records(&steps), assign);
    check(name, &steps, &expected, late, |left, right, counter| {
        left.join(right)
            .where_key(&["key"])
            .equal_to(&["key"])
            .window(assign.assigner())
            .count_late(counter)
            .apply()
    });
}

#[test]
fn tumbling_window_join_matches_the_reference() {
    check_window_join("tumbling", 21, Assign::Tumbling(50));
}

#[test]
fn sliding_window_join_matches_the_reference() {
    check_window_join("sliding", 22, Assign::Sliding(60, 20));
}

#[test]
fn session_window_join_matches_the_reference() {
    check_window_join("session", 23, Assign::Session(15));
}

// ---------------------------------------------------------------------------------------------------
// Interval joins.

/// Every pair of a left record at `t` and a right record of its key at `t + lower ..= t + upper`,
/// neither of them behind its watermark; and the number of records that were.
fn interval_join_reference(recs: &[Rec], lower: i64, upper: i64) -> (Vec<Row>, u64) {
    let on_time = |r: &&Rec| r.ts >= r.wm;
    let late = recs.iter().filter(|r| !on_time(r)).count() as u64;
    let mut out = Vec::new();
    for l in recs.iter().filter(on_time).filter(|r| r.left) {
        for r in recs.iter().filter(on_time).filter(|r| !r.left) {
            if l.key == r.key && l.ts + lower <= r.ts && r.ts <= l.ts + upper {
                out.push(joined(l, r));
            }
        }
    }
    (sorted(out), late)
}

#[test]
fn interval_join_matches_the_reference() {
    let steps = script(31, 400, 6);
    let (expected, late) = interval_join_reference(&records(&steps), -15, 25);
    check(
        "interval",
        &steps,
        &expected,
        late,
        |left, right, counter| {
            left.key_by(&["key"]).interval_join_with(
                &right.key_by(&["key"]),
                IntervalJoin::between(-15, 25).count_late(counter),
            )
        },
    );
}

#[test]
fn interval_join_on_rocksdb_matches_the_reference() {
    let steps = script(34, 400, 6);
    let (expected, late) = interval_join_reference(&records(&steps), -15, 25);
    let runs = [
        (1, StateBackendKind::Rocksdb),
        (3, StateBackendKind::Rocksdb),
    ];
    check_runs(
        "interval-rocksdb",
        &steps,
        &expected,
        late,
        &runs,
        |left, right, counter| {
            left.key_by(&["key"]).interval_join_with(
                &right.key_by(&["key"]),
                IntervalJoin::between(-15, 25).count_late(counter),
            )
        },
    );
}

#[test]
fn interval_join_with_exclusive_bounds_matches_the_reference() {
    let steps = script(32, 400, 6);
    let (expected, late) = interval_join_reference(&records(&steps), 1, 19);
    check(
        "interval-exclusive",
        &steps,
        &expected,
        late,
        |left, right, counter| {
            left.key_by(&["key"]).interval_join_with(
                &right.key_by(&["key"]),
                IntervalJoin::between(0, 20)
                    .lower_exclusive()
                    .upper_exclusive()
                    .count_late(counter),
            )
        },
    );
}

#[test]
fn interval_join_with_negative_bounds_matches_the_reference() {
    let steps = script(33, 300, 4);
    let (expected, late) = interval_join_reference(&records(&steps), -30, -5);
    check(
        "interval-before",
        &steps,
        &expected,
        late,
        |left, right, counter| {
            left.key_by(&["key"]).interval_join_with(
                &right.key_by(&["key"]),
                IntervalJoin::between(-30, -5).count_late(counter),
            )
        },
    );
}

// ---------------------------------------------------------------------------------------------------
// Plan errors.

fn plan_error(event_time: bool, build: impl Fn(&DataStream, &DataStream) -> DataStream) -> String {
    let env = env("plan-error");
    let (left, right) = sides(&env, &script(1, 5, 2), event_time);
    build(&left, &right).sink(CollectSink::new());
    match env.build() {
        Err(e @ Error::Plan { .. }) => e.to_string(),
        other => panic!("expected a plan error, got {other:?}"),
    }
}

#[test]
fn window_join_without_event_time_is_rejected() {
    let message = plan_error(false, |l, r| {
        l.join(r)
            .where_key(&["key"])
            .equal_to(&["key"])
            .window(WindowAssigner::tumbling(Duration::from_millis(50)))
            .apply()
    });
    assert!(message.contains("window_join(tumbling 50ms)"), "{message}");
    assert!(message.contains("event time"), "{message}");
}

#[test]
fn window_join_with_an_unknown_key_field_is_rejected() {
    let message = plan_error(true, |l, r| {
        l.join(r)
            .where_key(&["key"])
            .equal_to(&["nope"])
            .window(WindowAssigner::sliding(
                Duration::from_millis(60),
                Duration::from_millis(20),
            ))
            .apply()
    });
    assert!(
        message.contains("window_join(sliding 60ms/20ms)"),
        "{message}"
    );
    assert!(
        message.contains("'nope'") && message.contains("right input"),
        "{message}"
    );
}

#[test]
fn window_join_with_processing_time_windows_is_rejected() {
    let message = plan_error(true, |l, r| {
        l.join(r)
            .where_key(&["key"])
            .equal_to(&["key"])
            .window(WindowAssigner::tumbling_processing_time(
                Duration::from_millis(50),
            ))
            .apply()
    });
    assert!(
        message.contains("window_join(tumbling 50ms processing-time)"),
        "{message}"
    );
}

#[test]
fn interval_join_with_keys_of_different_types_is_rejected() {
    let message = plan_error(true, |l, r| {
        l.key_by(&["key"]).interval_join(&r.key_by(&["tag"]), -5, 5)
    });
    assert!(message.contains("interval_join([-5ms, 5ms])"), "{message}");
    assert!(
        message.contains("'tag'") && message.contains("'key'"),
        "{message}"
    );
}

#[test]
fn interval_join_without_event_time_is_rejected() {
    let message = plan_error(false, |l, r| {
        l.key_by(&["key"]).interval_join(&r.key_by(&["key"]), 0, 10)
    });
    assert!(message.contains("interval_join([0ms, 10ms])"), "{message}");
    assert!(message.contains("event time"), "{message}");
}

#[test]
fn interval_join_with_an_empty_interval_is_rejected() {
    let message = plan_error(true, |l, r| {
        l.key_by(&["key"]).interval_join_with(
            &r.key_by(&["key"]),
            IntervalJoin::between(5, 5).upper_exclusive(),
        )
    });
    assert!(message.contains("interval_join([5ms, 5ms))"), "{message}");
}
