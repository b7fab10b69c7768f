//! The operators no other module covers, against brute-force references, at parallelism 1, 2 and 4:
//! the stateless ones (row and columnar map, flat map, row and columnar filter, projection) chained
//! behind a `rebalance()` and a `broadcast()` edge; `union` of three streams into a keyed rolling
//! aggregate; a rolling `reduce` with a user function; user-defined aggregates inside tumbling and
//! session windows, next to the built-in ones; and the plan errors of `union` and `side_output`.
//!
//! Every job reads one scripted source subtask. Stateless and windowed results are compared with the
//! reference exactly, as multisets. The records of a union's three inputs interleave in an order no
//! test controls, so the rolling aggregate after it is checked against every order the union may
//! produce: each input's own order per key, interleaved in any way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, Scalar};
use arrow::compute::kernels::{cmp, numeric};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use strom::connectors::sinks::CollectSink;
use strom::operators::aggregate::{Agg, AggregateFunction};
use strom::operators::window::WindowAssigner;
use strom::plan::physical;
use strom::row::{Row, Value};
use strom::stream::{DataStream, StreamEnv};
use strom::{EngineConfig, Error, Result};
use strom_tests::{Event, event_schema, scripted_events, scripted_source, sorted};

const PARALLELISMS: [u32; 3] = [1, 2, 4];

fn job_env(name: &str, parallelism: u32) -> StreamEnv {
    StreamEnv::new(
        name,
        EngineConfig {
            parallelism,
            ..EngineConfig::default()
        },
    )
}

/// The scripted records, in script order: (key, ts, v).
fn records(events: &[Event]) -> Vec<(i64, i64, i64)> {
    events
        .iter()
        .filter_map(|e| match *e {
            Event::Record { key, ts, v } => Some((key, ts, v)),
            Event::Watermark(_) => None,
        })
        .collect()
}

/// The events with every `v` replaced by `f(v)`.
fn map_values(events: &[Event], f: impl Fn(i64) -> i64) -> Vec<Event> {
    events
        .iter()
        .map(|e| match *e {
            Event::Record { key, ts, v } => Event::Record { key, ts, v: f(v) },
            Event::Watermark(w) => Event::Watermark(w),
        })
        .collect()
}

fn int_schema(names: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Int64, false))
            .collect::<Vec<_>>(),
    ))
}

fn int(v: &Value) -> Result<i64> {
    v.as_i64()
        .ok_or_else(|| Error::user(format!("expected an integer, got {v:?}")))
}

fn ints(values: &[i64]) -> Row {
    values.iter().map(|&v| Value::Int(v)).collect()
}

// ---------------------------------------------------------------------------------------------------
// Stateless operators.

/// How many rows the flat map makes of a record with value `v`: 0, 1, 2 or 3.
fn copies(v: i64) -> i64 {
    v.rem_euclid(4)
}

/// The chain of stateless operators, run by the job and by the reference alike:
/// `map` (key, ts, v) -> (key, v, w = 3 v + key);
/// `map_batches` -> (key, v, w, s = v + w, m = v * key), with arrow kernels;
/// `flat_map` -> `copies(v)` rows (key, v, s + i, m, i) for i in 0..copies(v);
/// `filter` drops rows whose s is a multiple of 3; `filter_batches` keeps keys below 9;
/// `select(i, m, key, s)` reorders and drops v.
fn chain_reference(records: &[(i64, i64, i64)]) -> Vec<Row> {
    let mut out = Vec::new();
    for &(key, _ts, v) in records {
        let w = 3 * v + key;
        let (s, m) = (v + w, v * key);
        for i in 0..copies(v) {
            let s = s + i;
            if s.rem_euclid(3) != 0 && key < 9 {
                out.push(ints(&[i, m, key, s]));
            }
        }
    }
    sorted(out)
}

/// The physical plan of a stateless-chain job: the source, then the whole chain and the sink in one
/// task at `p`, fed over a `partitioning` edge.
fn assert_chained(env: &StreamEnv, p: u32, partitioning: &str) {
    let graph = env.build().unwrap();
    let text = physical::explain(&graph, &physical::plan(&graph).unwrap());
    assert_eq!(
        text,
        format!(
            "task 0 [p=1]: collection(events)\n\
             task 1 [p={p}]: map(widen) -> map(sum-product) -> flat_map(repeat) -> \
             filter(not-multiple-of-3) -> filter(small-key) -> select(i, m, key, s) -> collect\n  \
             input 0 <- task 0 {partitioning}\n"
        )
    );
}

fn column(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    Ok(batch.column(batch.schema().index_of(name)?).clone())
}

/// The chain behind `input`, all of it at `parallelism`.
fn stateless_chain(input: &DataStream, parallelism: u32) -> DataStream {
    let widened = int_schema(&["key", "v", "w"]);
    let computed = int_schema(&["key", "v", "w", "s", "m"]);
    let repeated = int_schema(&["key", "v", "s", "m", "i"]);
    let out = computed.clone();
    input
        .map("widen", widened, |r| {
            let (key, v) = (int(&r[0])?, int(&r[2])?);
            Ok(ints(&[key, v, 3 * v + key]))
        })
        .set_parallelism(parallelism)
        .map_batches("sum-product", computed, move |batch| {
            let (key, v, w) = (
                column(&batch, "key")?,
                column(&batch, "v")?,
                column(&batch, "w")?,
            );
            let s = numeric::add(&v, &w)?;
            let m = numeric::mul(&v, &key)?;
            Ok(RecordBatch::try_new(out.clone(), vec![key, v, w, s, m])?)
        })
        .flat_map("repeat", repeated, |r, out| {
            let (key, v, s, m) = (int(&r[0])?, int(&r[1])?, int(&r[3])?, int(&r[4])?);
            for i in 0..copies(v) {
                out.push(ints(&[key, v, s + i, m, i]));
            }
            Ok(())
        })
        .filter("not-multiple-of-3", |r| {
            r[2].as_i64().is_some_and(|s| s.rem_euclid(3) != 0)
        })
        .filter_batches("small-key", |batch| {
            let nine = Scalar::new(Int64Array::from(vec![9]));
            Ok(cmp::lt(&column(batch, "key")?, &nine)?)
        })
        .select(&["i", "m", "key", "s"])
}

#[test]
fn stateless_operators_chained_behind_a_rebalance_match_the_reference() {
    for seed in [3, 17] {
        let events = scripted_events(seed, 2500, 12, 50, 20, 40);
        let expected = chain_reference(&records(&events));
        assert!(expected.len() > 1000, "the chain keeps enough rows");
        for p in PARALLELISMS {
            let env = job_env("stateless", p);
            let sink = CollectSink::new();
            let source = env
                .from_source(scripted_source("events", &events, 7), None)
                .set_parallelism(1);
            // The chain runs at p, fed round-robin.
            stateless_chain(&source.rebalance(), p).sink(sink.clone());
            assert_chained(&env, p, "REBALANCE");
            env.execute().unwrap();
            let got = sink.sorted_rows().unwrap();
            assert_eq!(got.len(), expected.len(), "seed {seed} p={p}: row count");
            assert_eq!(got, expected, "seed {seed} p={p}");
        }
    }
}

#[test]
fn every_subtask_behind_a_broadcast_edge_sees_every_record() {
    let events = scripted_events(5, 1500, 8, 30, 10, 50);
    let once = chain_reference(&records(&events));
    for p in PARALLELISMS {
        let env = job_env("broadcast", p);
        let sink = CollectSink::new();
        let source = env
            .from_source(scripted_source("events", &events, 9), None)
            .set_parallelism(1);
        stateless_chain(&source.broadcast(), p).sink(sink.clone());
        assert_chained(&env, p, "BROADCAST");
        env.execute().unwrap();
        let expected = sorted(
            once.iter()
                .flat_map(|r| std::iter::repeat_n(r.clone(), p as usize))
                .collect(),
        );
        let got = sink.sorted_rows().unwrap();
        assert_eq!(got.len(), expected.len(), "p={p}: row count");
        assert_eq!(got, expected, "p={p}");
    }
}

// ---------------------------------------------------------------------------------------------------
// User-defined aggregates.

/// The number of distinct values of `v` (column 2); the accumulator holds them, sorted.
struct DistinctV;

impl AggregateFunction for DistinctV {
    fn output_type(&self) -> DataType {
        DataType::Int64
    }

    fn create(&self) -> Row {
        Vec::new()
    }

    fn add(&self, acc: &mut Row, input: &Row) -> Result<()> {
        insert_distinct(acc, int(&input[2])?);
        Ok(())
    }

    fn merge(&self, acc: &mut Row, other: Row) -> Result<()> {
        for v in &other {
            insert_distinct(acc, int(v)?);
        }
        Ok(())
    }

    fn result(&self, acc: &Row) -> Result<Value> {
        Ok(Value::Int(acc.len() as i64))
    }
}

/// Inserts `v` into the sorted distinct values `acc` unless it is there.
fn insert_distinct(acc: &mut Row, v: i64) {
    let position = acc.binary_search_by_key(&v, |x| x.as_i64().unwrap_or(i64::MIN));
    if let Err(i) = position {
        acc.insert(i, Value::Int(v));
    }
}

/// The sum of the squares of `v` (column 2).
struct SumOfSquares;

impl AggregateFunction for SumOfSquares {
    fn output_type(&self) -> DataType {
        DataType::Int64
    }

    fn create(&self) -> Row {
        vec![Value::Int(0)]
    }

    fn add(&self, acc: &mut Row, input: &Row) -> Result<()> {
        let v = int(&input[2])?;
        acc[0] = Value::Int(int(&acc[0])? + v * v);
        Ok(())
    }

    fn merge(&self, acc: &mut Row, other: Row) -> Result<()> {
        acc[0] = Value::Int(int(&acc[0])? + int(&other[0])?);
        Ok(())
    }

    fn result(&self, acc: &Row) -> Result<Value> {
        Ok(acc[0].clone())
    }
}

fn distinct_count(values: &[i64]) -> i64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.dedup();
    v.len() as i64
}

fn sum_of_squares(values: &[i64]) -> i64 {
    values.iter().map(|v| v * v).sum()
}

// ---------------------------------------------------------------------------------------------------
// Union into a rolling aggregate.

const INPUTS: i64 = 3;

/// The aggregates after the union: built-in ones around the two user-defined ones.
fn rolling_aggs() -> Vec<Agg> {
    vec![
        Agg::count("n"),
        Agg::sum("v", "total"),
        Agg::udf(Arc::new(DistinctV), "distinct"),
        Agg::max("v", "hi"),
        Agg::udf(Arc::new(SumOfSquares), "squares"),
        Agg::min("v", "lo"),
    ]
}

/// Runs three scripted inputs through a union into a rolling aggregate keyed by `key`. With
/// `keyed_inputs`, the union runs at `p` and each input is hash-partitioned into it; otherwise it
/// runs at the inputs' parallelism of 1.
fn run_union(inputs: &[Vec<Event>], p: u32, keyed_inputs: bool) -> Vec<Row> {
    let env = job_env("union", p);
    let sink = CollectSink::new();
    let streams: Vec<DataStream> = inputs
        .iter()
        .enumerate()
        .map(|(i, events)| {
            let s = env
                .from_source(scripted_source(&format!("in{i}"), events, 5 + 2 * i), None)
                .set_parallelism(1);
            if keyed_inputs {
                s.key_by(&["key"]).stream().clone()
            } else {
                s
            }
        })
        .collect();
    let mut union = streams[0].union(&streams[1..]);
    if keyed_inputs {
        union = union.set_parallelism(p);
    }
    union
        .key_by(&["key"])
        .aggregate(&rolling_aggs())
        .set_parallelism(p)
        .sink(sink.clone());
    env.execute().unwrap();
    sink.rows().unwrap()
}

/// Checks the rolling output of the union against the inputs: per key, the counts are 1..=n; the
/// differences of the running sums give the key's values in the order the aggregate saw them, which
/// must interleave the inputs' own orders (input `i` has the values congruent to `i` modulo 3); and
/// each row's aggregates are those of the values seen so far.
fn check_union(inputs: &[Vec<Event>], got: Vec<Row>, what: &str) {
    let mut per_input: BTreeMap<(i64, i64), Vec<i64>> = BTreeMap::new();
    let mut total = 0;
    for events in inputs {
        for (key, _, v) in records(events) {
            per_input
                .entry((key, v.rem_euclid(INPUTS)))
                .or_default()
                .push(v);
            total += 1;
        }
    }
    assert_eq!(got.len(), total, "{what}: one row per record");
    let mut per_key: BTreeMap<i64, Vec<Vec<i64>>> = BTreeMap::new();
    for row in got {
        let row: Vec<i64> = row.iter().map(|v| v.as_i64().unwrap()).collect();
        per_key.entry(row[0]).or_default().push(row[1..].to_vec());
    }
    for (key, mut rows) in per_key {
        rows.sort_by_key(|r| r[0]);
        let mut seen: Vec<i64> = Vec::new();
        let mut running = 0;
        for (i, r) in rows.iter().enumerate() {
            let (n, sum, distinct, hi, squares, lo) = (r[0], r[1], r[2], r[3], r[4], r[5]);
            assert_eq!(n, i as i64 + 1, "{what}: key {key}: counts");
            seen.push(sum - running);
            running = sum;
            assert_eq!(distinct, distinct_count(&seen), "{what}: key {key} n={n}");
            assert_eq!(hi, *seen.iter().max().unwrap(), "{what}: key {key} n={n}");
            assert_eq!(squares, sum_of_squares(&seen), "{what}: key {key} n={n}");
            assert_eq!(lo, *seen.iter().min().unwrap(), "{what}: key {key} n={n}");
        }
        for input in 0..INPUTS {
            let order: Vec<i64> = seen
                .iter()
                .copied()
                .filter(|v| v.rem_euclid(INPUTS) == input)
                .collect();
            let expected = per_input.remove(&(key, input)).unwrap_or_default();
            assert_eq!(order, expected, "{what}: key {key}: order of input {input}");
        }
    }
    assert!(
        per_input.is_empty(),
        "{what}: keys never seen: {:?}",
        per_input.keys()
    );
}

#[test]
fn a_union_of_three_streams_feeds_a_keyed_rolling_aggregate() {
    // Input i carries values congruent to i modulo 3, few enough that they repeat within a key.
    let inputs: Vec<Vec<Event>> = (0..INPUTS)
        .map(|i| {
            let events = scripted_events(40 + i as u64, 700, 6, 20, 10, 30);
            map_values(&events, |v| INPUTS * v.rem_euclid(9) + i - 10)
        })
        .collect();
    for p in PARALLELISMS {
        for keyed_inputs in [false, true] {
            let got = run_union(&inputs, p, keyed_inputs);
            check_union(&inputs, got, &format!("p={p} keyed inputs {keyed_inputs}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Rolling reduce.

#[test]
fn rolling_reduce_emits_the_running_maximum_row_per_record_in_key_order() {
    let events = scripted_events(23, 2000, 7, 40, 20, 50);
    // Running value per key: the first record with the largest v so far.
    let mut best: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
    let mut per_key: BTreeMap<i64, Vec<Row>> = BTreeMap::new();
    for (key, ts, v) in records(&events) {
        let b = best.entry(key).or_insert((key, ts, v));
        if v > b.2 {
            *b = (key, ts, v);
        }
        per_key.entry(key).or_default().push(ints(&[b.0, b.1, b.2]));
    }
    let expected = sorted(per_key.values().flatten().cloned().collect());
    for p in PARALLELISMS {
        let env = job_env("reduce", p);
        let sink = CollectSink::new();
        env.from_source(scripted_source("events", &events, 6), None)
            .set_parallelism(1)
            .key_by(&["key"])
            .reduce("max-v", |running, next| {
                Ok(if int(&next[2])? > int(&running[2])? {
                    next.clone()
                } else {
                    running.clone()
                })
            })
            .set_parallelism(p)
            .sink(sink.clone());
        env.execute().unwrap();
        assert_eq!(sink.sorted_rows().unwrap(), expected, "p={p}");
        // A key's rows come from one subtask, through its own sink subtask, in input order.
        let mut got_per_key: BTreeMap<i64, Vec<Row>> = BTreeMap::new();
        for row in sink.rows().unwrap() {
            got_per_key
                .entry(row[0].as_i64().unwrap())
                .or_default()
                .push(row);
        }
        assert_eq!(got_per_key, per_key, "p={p}: per-key order");
    }
}

// ---------------------------------------------------------------------------------------------------
// User-defined aggregates in windows.

#[derive(Clone, Copy, Debug)]
enum Assign {
    Tumbling(i64),
    Session(i64),
}

impl Assign {
    fn assigner(self) -> WindowAssigner {
        match self {
            Assign::Tumbling(size) => WindowAssigner::tumbling(Duration::from_millis(size as u64)),
            Assign::Session(gap) => WindowAssigner::session(Duration::from_millis(gap as u64)),
        }
    }
}

/// The aggregates of the window tests: user-defined ones between built-in ones.
fn window_aggs() -> Vec<Agg> {
    vec![
        Agg::count("n"),
        Agg::udf(Arc::new(DistinctV), "distinct"),
        Agg::sum("v", "total"),
        Agg::udf(Arc::new(SumOfSquares), "squares"),
        Agg::avg("v", "mean"),
    ]
}

fn window_row(key: i64, (start, end): (i64, i64), values: &[i64]) -> Row {
    let sum: i64 = values.iter().sum();
    vec![
        Value::Int(key),
        Value::Int(start),
        Value::Int(end),
        Value::Int(values.len() as i64),
        Value::Int(distinct_count(values)),
        Value::Int(sum),
        Value::Int(sum_of_squares(values)),
        Value::Float(sum as f64 / values.len() as f64),
    ]
}

/// Event-time windows replayed plainly: a window collects the values of its key's records until the
/// watermark passes its end, then fires; it stays (and fires again for each record it takes) until
/// the watermark passes its end plus `lateness`, after which records for it are dropped. A session
/// starts as `[ts, ts + gap)` and absorbs every live session of its key that it touches.
fn window_reference(events: &[Event], assign: Assign, lateness: i64) -> Vec<Row> {
    let mut wm = i64::MIN;
    let mut live: BTreeMap<(i64, i64, i64), Vec<i64>> = BTreeMap::new();
    let mut out = Vec::new();
    let fire_until =
        |live: &mut BTreeMap<(i64, i64, i64), Vec<i64>>, out: &mut Vec<Row>, old: i64, new: i64| {
            for (&(key, start, end), values) in live.iter() {
                if end - 1 > old && end - 1 <= new {
                    out.push(window_row(key, (start, end), values));
                }
            }
            live.retain(|&(_, _, end), _| end - 1 + lateness > new);
        };
    for e in events {
        match *e {
            Event::Record { key, ts, v } => {
                let (mut start, mut end) = match assign {
                    Assign::Tumbling(size) => {
                        let start = ts - ts.rem_euclid(size);
                        (start, start + size)
                    }
                    Assign::Session(gap) => (ts, ts + gap),
                };
                if end - 1 + lateness <= wm {
                    continue;
                }
                let mut values = Vec::new();
                if let Assign::Session(_) = assign {
                    loop {
                        let touching: Vec<(i64, i64, i64)> = live
                            .keys()
                            .filter(|&&(k, s, e)| k == key && s <= end && e >= start)
                            .copied()
                            .collect();
                        if touching.is_empty() {
                            break;
                        }
                        for t in touching {
                            start = start.min(t.1);
                            end = end.max(t.2);
                            values.extend(live.remove(&t).unwrap_or_default());
                        }
                    }
                }
                let window = live.entry((key, start, end)).or_default();
                window.extend(values);
                window.push(v);
                if end - 1 <= wm {
                    out.push(window_row(key, (start, end), window));
                }
            }
            Event::Watermark(w) => {
                let new = w.max(wm);
                fire_until(&mut live, &mut out, wm, new);
                wm = new;
            }
        }
    }
    fire_until(&mut live, &mut out, wm, i64::MAX);
    sorted(out)
}

fn check_windows(assign: Assign, lateness: i64) {
    for seed in [8, 31] {
        // Few distinct values, so that windows hold repeated ones.
        let events = map_values(&scripted_events(seed, 2500, 5, 250, 60, 25), |v| {
            v.rem_euclid(7) - 3
        });
        let expected = window_reference(&events, assign, lateness);
        assert!(expected.len() > 100, "the input exercises the windows");
        assert!(
            expected.iter().any(|r| r[4] < r[3]),
            "some window holds a value twice"
        );
        for p in PARALLELISMS {
            let env = job_env("udf-windows", p);
            let sink = CollectSink::new();
            env.from_source(scripted_source("events", &events, 7), None)
                .set_parallelism(1)
                .with_event_time("ts")
                .key_by(&["key"])
                .window(assign.assigner())
                .allowed_lateness(Duration::from_millis(lateness as u64))
                .aggregate(&window_aggs())
                .set_parallelism(p)
                .sink(sink.clone());
            env.execute().unwrap();
            let got = sink.sorted_rows().unwrap();
            let what = format!("{assign:?} lateness {lateness} seed {seed} p={p}");
            assert_eq!(got.len(), expected.len(), "{what}: result count");
            assert_eq!(got, expected, "{what}");
        }
    }
}

#[test]
fn user_defined_aggregates_in_tumbling_windows_match_the_reference() {
    check_windows(Assign::Tumbling(300), 0);
    check_windows(Assign::Tumbling(300), 80);
}

#[test]
fn user_defined_aggregates_merge_in_session_windows() {
    check_windows(Assign::Session(40), 0);
    check_windows(Assign::Session(40), 70);
}

// ---------------------------------------------------------------------------------------------------
// Plan errors.

fn plan_error(env: &StreamEnv) -> String {
    match env.execute() {
        Err(e @ Error::Plan { .. }) => e.to_string(),
        other => panic!("expected a plan error, got {other:?}"),
    }
}

#[test]
fn a_union_of_streams_with_different_schemas_is_rejected() {
    let events = scripted_events(1, 20, 3, 0, 0, 5);
    let env = job_env("bad-union", 2);
    let a = env.from_source(scripted_source("a", &events, 4), None);
    let b = env.from_source(scripted_source("b", &events, 4), None);
    let c = env
        .from_source(scripted_source("c", &events, 4), None)
        .select(&["key", "v"]);
    a.union(&[b, c]).sink(CollectSink::new());
    let message = plan_error(&env);
    assert!(message.contains("operator 'union'"), "{message}");
    assert!(message.contains("schemas differ"), "{message}");
}

#[test]
fn a_sink_on_a_missing_side_output_names_the_operator() {
    let events = scripted_events(1, 20, 3, 0, 0, 5);

    // An operator without side outputs.
    let env = job_env("bad-side-output", 2);
    env.from_source(scripted_source("events", &events, 4), None)
        .map("identity", event_schema(), Ok)
        .side_output("nope")
        .sink(CollectSink::new());
    let message = plan_error(&env);
    assert!(message.contains("operator 'map(identity)'"), "{message}");
    assert!(message.contains("no side output named 'nope'"), "{message}");

    // A window operator with a late-data side output under another name.
    let env = job_env("bad-side-output", 2);
    let windowed = env
        .from_source(scripted_source("events", &events, 4), None)
        .with_event_time("ts")
        .key_by(&["key"])
        .window(WindowAssigner::tumbling(Duration::from_millis(100)))
        .side_output_late_data("late")
        .aggregate(&[Agg::count("n")]);
    windowed.sink(CollectSink::new());
    windowed.side_output("late").sink(CollectSink::new());
    windowed.side_output("nope").sink(CollectSink::new());
    let message = plan_error(&env);
    assert!(
        message.contains("operator 'window(tumbling 100ms; count(*) as n)'"),
        "{message}"
    );
    assert!(message.contains("no side output named 'nope'"), "{message}");
}
