//! Windows against a brute-force reference: every assigner, triggers, allowed lateness and the late
//! side output, over out-of-order and late input, at parallelism 1, 2 and 4.
//!
//! The reference replays the scripted input in order and simulates the window semantics directly
//! (every window of every key re-examined at every watermark); the job's output must equal it exactly
//! as a multiset, at every parallelism.

use std::collections::BTreeMap;
use std::time::Duration;

use strom::connectors::sinks::CollectSink;
use strom::operators::aggregate::Agg;
use strom::operators::window::{TimeWindow, Trigger, WindowAssigner, WindowFunction};
use strom::row::{Row, Value};
use strom::stream::StreamEnv;
use strom::{EngineConfig, Result};
use strom_tests::{Event, scripted_events, scripted_source, sorted};

const PARALLELISMS: [u32; 3] = [1, 2, 4];

#[derive(Clone, Copy, Debug)]
enum Assign {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
}

impl Assign {
    fn windows(&self, ts: i64) -> Vec<(i64, i64)> {
        match *self {
            Assign::Tumbling(size) => {
                let start = ts - ts.rem_euclid(size);
                vec![(start, start + size)]
            }
            Assign::Sliding(size, slide) => {
                // Every window [s, s + size) with s a multiple of slide that contains ts.
                let mut out = Vec::new();
                let mut s = ts - ts.rem_euclid(slide);
                while s + size > ts {
                    out.push((s, s + size));
                    s -= slide;
                }
                out
            }
            Assign::Session(gap) => vec![(ts, ts + gap)],
        }
    }

    fn operator(&self) -> WindowAssigner {
        let ms = |v: i64| Duration::from_millis(v as u64);
        match *self {
            Assign::Tumbling(size) => WindowAssigner::tumbling(ms(size)),
            Assign::Sliding(size, slide) => WindowAssigner::sliding(ms(size), ms(slide)),
            Assign::Session(gap) => WindowAssigner::session(ms(gap)),
        }
    }
}

/// count, sum, min, max, avg of `v`.
fn result_row(key: i64, w: (i64, i64), values: &[i64]) -> Row {
    let sum: i64 = values.iter().sum();
    vec![
        Value::Int(key),
        Value::Int(w.0),
        Value::Int(w.1),
        Value::Int(values.len() as i64),
        Value::Int(sum),
        Value::Int(*values.iter().min().unwrap()),
        Value::Int(*values.iter().max().unwrap()),
        Value::Float(sum as f64 / values.len() as f64),
    ]
}

/// Flink's window semantics, simulated plainly: (results, late records).
fn reference(events: &[Event], assign: Assign, lateness: i64) -> (Vec<Row>, Vec<Row>) {
    let mut wm = i64::MIN;
    // Live windows: (key, start, end) -> values.
    let mut live: BTreeMap<(i64, i64, i64), Vec<i64>> = BTreeMap::new();
    let mut out = Vec::new();
    let mut late = Vec::new();
    let cleanup = |end: i64| end - 1 + lateness;
    for e in events {
        match *e {
            Event::Record { key, ts, v } => {
                let mut skipped = true;
                for w in assign.windows(ts) {
                    if cleanup(w.1) <= wm {
                        continue;
                    }
                    skipped = false;
                    let w = if let Assign::Session(_) = assign {
                        // Merge with every live session of the key it touches, to a fixpoint.
                        let (mut start, mut end) = w;
                        let mut merged_values = Vec::new();
                        loop {
                            let touching: Vec<_> = live
                                .keys()
                                .filter(|(k, s, e)| *k == key && *s <= end && *e >= start)
                                .copied()
                                .collect();
                            if touching.is_empty() {
                                break;
                            }
                            for t in touching {
                                start = start.min(t.1);
                                end = end.max(t.2);
                                merged_values.extend(live.remove(&t).unwrap());
                            }
                        }
                        live.insert((key, start, end), merged_values);
                        (start, end)
                    } else {
                        w
                    };
                    let values = live.entry((key, w.0, w.1)).or_default();
                    values.push(v);
                    if w.1 - 1 <= wm {
                        // A late record within the allowed lateness fires its window again.
                        out.push(result_row(key, w, values));
                    }
                }
                if skipped && ts + lateness <= wm {
                    late.push(vec![Value::Int(key), Value::Int(ts), Value::Int(v)]);
                }
            }
            Event::Watermark(w) => {
                let new = w.max(wm);
                fire(&mut live, &mut out, wm, new, lateness);
                wm = new;
            }
        }
    }
    fire(&mut live, &mut out, wm, i64::MAX, lateness);
    (sorted(out), sorted(late))
}

fn fire(
    live: &mut BTreeMap<(i64, i64, i64), Vec<i64>>,
    out: &mut Vec<Row>,
    old: i64,
    new: i64,
    lateness: i64,
) {
    for (&(key, start, end), values) in live.iter() {
        if end - 1 > old && end - 1 <= new {
            out.push(result_row(key, (start, end), values));
        }
    }
    live.retain(|&(_, _, end), _| end - 1 + lateness > new);
}

fn aggs() -> Vec<Agg> {
    vec![
        Agg::count("n"),
        Agg::sum("v", "total"),
        Agg::min("v", "lo"),
        Agg::max("v", "hi"),
        Agg::avg("v", "mean"),
    ]
}

/// Runs the window job at `parallelism`, the source batching `per_batch` records at a time:
/// (results, late records).
fn run(
    events: &[Event],
    assign: Assign,
    lateness: i64,
    parallelism: u32,
    per_batch: usize,
) -> Result<(Vec<Row>, Vec<Row>)> {
    let env = StreamEnv::new(
        "windows",
        EngineConfig {
            parallelism,
            ..EngineConfig::default()
        },
    );
    let source = env
        .from_source(scripted_source("events", events, per_batch), None)
        .set_parallelism(1);
    let stream = source.with_event_time("ts");
    let results = CollectSink::new();
    let late = CollectSink::new();
    let windowed = stream
        .key_by(&["key"])
        .window(assign.operator())
        .allowed_lateness(Duration::from_millis(lateness as u64))
        .side_output_late_data("late")
        .aggregate(&aggs())
        .set_parallelism(parallelism);
    windowed.sink(results.clone());
    windowed.side_output("late").sink(late.clone());
    env.execute()?;
    Ok((results.sorted_rows()?, late.sorted_rows()?))
}

fn check(assign: Assign, lateness: i64, jitter: u64) {
    check_batched(assign, lateness, jitter, 13, 7);
}

/// [`check`] over `keys` keys, the source batching `per_batch` records at a time.
fn check_batched(assign: Assign, lateness: i64, jitter: u64, keys: u64, per_batch: usize) {
    for seed in [7, 21, 99] {
        let events = scripted_events(seed, 3000, keys, jitter, 60, 25);
        let (expected, expected_late) = reference(&events, assign, lateness);
        assert!(expected.len() > 50, "the input exercises the windows");
        assert!(!expected_late.is_empty(), "the input has late records");
        for p in PARALLELISMS {
            let (got, late) = run(&events, assign, lateness, p, per_batch).unwrap();
            let what = format!(
                "{assign:?} lateness {lateness} seed {seed} p={p} keys {keys} batch {per_batch}"
            );
            assert_eq!(got.len(), expected.len(), "{what}: result count");
            assert_eq!(got, expected, "{what}");
            assert_eq!(late, expected_late, "{what}: late records");
        }
    }
}

#[test]
fn tumbling_windows_match_the_reference() {
    check(Assign::Tumbling(100), 0, 150);
}

#[test]
fn tumbling_windows_with_allowed_lateness_fire_again_for_late_records() {
    check(Assign::Tumbling(100), 40, 150);
}

#[test]
fn sliding_windows_match_the_reference() {
    check(Assign::Sliding(200, 50), 0, 400);
    check(Assign::Sliding(200, 50), 30, 400);
}

#[test]
fn session_windows_merge_like_the_reference() {
    check(Assign::Session(25), 0, 300);
    check(Assign::Session(25), 50, 300);
}

/// Every record between two watermarks in one batch, over three keys: a batch holds runs of one
/// key, out of order, that merge into sessions among themselves (chains included) before they
/// meet the sessions in state.
#[test]
fn session_windows_merged_within_large_batches_match_the_reference() {
    check_batched(Assign::Session(25), 0, 150, 3, 25);
    check_batched(Assign::Session(40), 0, 300, 1, 25);
}

/// A full-window function: every key's window as the sorted list of its values.
struct ListValues;

impl WindowFunction for ListValues {
    fn apply(
        &self,
        key: &Row,
        window: TimeWindow,
        elements: &arrow::record_batch::RecordBatch,
        out: &mut Vec<Row>,
    ) -> Result<()> {
        let mut values: Vec<i64> = strom::row::rows_of(elements)?
            .iter()
            .map(|r| r[2].as_i64().unwrap_or(0))
            .collect();
        values.sort_unstable();
        let joined = values
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        out.push(vec![
            key[0].clone(),
            Value::Int(window.start),
            Value::Str(joined),
        ]);
        Ok(())
    }
}

#[test]
fn full_window_functions_see_every_record_of_the_window() {
    use arrow::datatypes::{DataType, Field, Schema};
    let events = scripted_events(11, 2000, 9, 100, 50, 20);
    // Reference: the tumbling reference's windows, with the values listed.
    let mut wm = i64::MIN;
    let mut live: BTreeMap<(i64, i64), Vec<i64>> = BTreeMap::new();
    let mut expected = Vec::new();
    let size = 80;
    let emit =
        |live: &mut BTreeMap<(i64, i64), Vec<i64>>, old: i64, new: i64, expected: &mut Vec<Row>| {
            for (&(key, start), values) in live.iter() {
                if start + size - 1 > old && start + size - 1 <= new {
                    let mut v = values.clone();
                    v.sort_unstable();
                    let joined = v.iter().map(i64::to_string).collect::<Vec<_>>().join(" ");
                    expected.push(vec![Value::Int(key), Value::Int(start), Value::Str(joined)]);
                }
            }
            live.retain(|&(_, start), _| start + size - 1 > new);
        };
    for e in &events {
        match *e {
            Event::Record { key, ts, v } => {
                let start = ts - ts.rem_euclid(size);
                if start + size - 1 > wm {
                    live.entry((key, start)).or_default().push(v);
                }
            }
            Event::Watermark(w) => {
                let new = w.max(wm);
                emit(&mut live, wm, new, &mut expected);
                wm = new;
            }
        }
    }
    emit(&mut live, wm, i64::MAX, &mut expected);
    let expected = sorted(expected);

    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("start", DataType::Int64, false),
        Field::new("values", DataType::Utf8, false),
    ]));
    for p in PARALLELISMS {
        let env = StreamEnv::new(
            "full-window",
            EngineConfig {
                parallelism: p,
                ..EngineConfig::default()
            },
        );
        let sink = CollectSink::new();
        env.from_source(scripted_source("events", &events, 5), None)
            .set_parallelism(1)
            .with_event_time("ts")
            .key_by(&["key"])
            .window(WindowAssigner::tumbling(Duration::from_millis(size as u64)))
            .process("list", schema.clone(), ListValues)
            .sink(sink.clone());
        env.execute().unwrap();
        assert_eq!(sink.sorted_rows().unwrap(), expected, "p={p}");
    }
}

#[test]
fn count_windows_group_each_keys_records_in_arrival_order() {
    let events = scripted_events(3, 1500, 7, 50, 20, 30);
    let n = 4usize;
    let mut per_key: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for e in &events {
        if let Event::Record { key, v, .. } = e {
            per_key.entry(*key).or_default().push(*v);
        }
    }
    let mut expected = Vec::new();
    for (key, values) in &per_key {
        for chunk in values.chunks(n).filter(|c| c.len() == n) {
            expected.push(vec![
                Value::Int(*key),
                Value::Int(n as i64),
                Value::Int(chunk.iter().sum()),
            ]);
        }
    }
    let expected = sorted(expected);
    for p in PARALLELISMS {
        let env = StreamEnv::new(
            "count-window",
            EngineConfig {
                parallelism: p,
                ..EngineConfig::default()
            },
        );
        let sink = CollectSink::new();
        env.from_source(scripted_source("events", &events, 9), None)
            .set_parallelism(1)
            .key_by(&["key"])
            .count_window(n as u64)
            .aggregate(&[Agg::count("n"), Agg::sum("v", "total")])
            .select(&["key", "n", "total"])
            .sink(sink.clone());
        env.execute().unwrap();
        assert_eq!(sink.sorted_rows().unwrap(), expected, "p={p}");
    }
}

#[test]
fn a_count_trigger_fires_time_windows_early() {
    // Tumbling event-time windows with Count(3): a firing every third record of a key in a window,
    // cumulative (not purging), and nothing at the window end.
    let events = scripted_events(5, 1200, 5, 0, 0, 10);
    let size = 100;
    let mut per_window: BTreeMap<(i64, i64), Vec<i64>> = BTreeMap::new();
    let mut expected = Vec::new();
    for e in &events {
        if let Event::Record { key, ts, v } = *e {
            let start = ts - ts.rem_euclid(size);
            let values = per_window.entry((key, start)).or_default();
            values.push(v);
            if values.len().is_multiple_of(3) {
                expected.push(vec![
                    Value::Int(key),
                    Value::Int(start),
                    Value::Int(values.len() as i64),
                    Value::Int(values.iter().sum()),
                ]);
            }
        }
    }
    let expected = sorted(expected);
    for p in PARALLELISMS {
        let env = StreamEnv::new(
            "count-trigger",
            EngineConfig {
                parallelism: p,
                ..EngineConfig::default()
            },
        );
        let sink = CollectSink::new();
        env.from_source(scripted_source("events", &events, 4), None)
            .set_parallelism(1)
            .with_event_time("ts")
            .key_by(&["key"])
            .window(WindowAssigner::tumbling(Duration::from_millis(size as u64)))
            .trigger(Trigger::Count(3))
            .aggregate(&[Agg::count("n"), Agg::sum("v", "total")])
            .select(&["key", "window_start", "n", "total"])
            .sink(sink.clone());
        env.execute().unwrap();
        assert_eq!(sink.sorted_rows().unwrap(), expected, "p={p}");
    }
}

#[test]
fn processing_time_windows_count_every_record_once() {
    let events = scripted_events(9, 2000, 11, 10, 5, 50);
    let mut expected: BTreeMap<i64, i64> = BTreeMap::new();
    for e in &events {
        if let Event::Record { key, .. } = e {
            *expected.entry(*key).or_default() += 1;
        }
    }
    for p in PARALLELISMS {
        let env = StreamEnv::new(
            "processing-time",
            EngineConfig {
                parallelism: p,
                ..EngineConfig::default()
            },
        );
        let sink = CollectSink::new();
        env.from_source(scripted_source("events", &events, 16), None)
            .set_parallelism(1)
            .key_by(&["key"])
            .window(WindowAssigner::tumbling_processing_time(
                Duration::from_secs(3600),
            ))
            .aggregate(&[Agg::count("n")])
            .sink(sink.clone());
        env.execute().unwrap();
        let mut got: BTreeMap<i64, i64> = BTreeMap::new();
        for row in sink.rows().unwrap() {
            *got.entry(row[0].as_i64().unwrap()).or_default() += row[3].as_i64().unwrap();
        }
        assert_eq!(got, expected, "p={p}");
    }
}

#[test]
fn rolling_aggregates_emit_the_running_value_per_record() {
    let events = scripted_events(13, 1000, 6, 0, 0, 100);
    let mut running: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let mut expected = Vec::new();
    for e in &events {
        if let Event::Record { key, v, .. } = *e {
            let r = running.entry(key).or_insert((0, i64::MIN));
            r.0 += v;
            r.1 = r.1.max(v);
            expected.push(vec![Value::Int(key), Value::Int(r.0), Value::Int(r.1)]);
        }
    }
    let expected = sorted(expected);
    for p in PARALLELISMS {
        let env = StreamEnv::new(
            "rolling",
            EngineConfig {
                parallelism: p,
                ..EngineConfig::default()
            },
        );
        let sink = CollectSink::new();
        env.from_source(scripted_source("events", &events, 8), None)
            .set_parallelism(1)
            .key_by(&["key"])
            .aggregate(&[Agg::sum("v", "total"), Agg::max("v", "hi")])
            .sink(sink.clone());
        env.execute().unwrap();
        assert_eq!(sink.sorted_rows().unwrap(), expected, "p={p}");
    }
}

/// A watermark that fires a window for each of 10 000 keys sends the results downstream in
/// batches of at most 4096 rows, not as one batch of all of them.
#[test]
fn windows_fired_together_leave_in_bounded_batches() {
    let keys = 10_000i64;
    let events: Vec<Event> = (0..keys)
        .map(|key| Event::Record {
            key,
            ts: 1_000 + key % 50,
            v: key,
        })
        .collect();
    let env = StreamEnv::new(
        "fired-batches",
        EngineConfig {
            parallelism: 1,
            ..EngineConfig::default()
        },
    );
    let results = CollectSink::new();
    env.from_source(scripted_source("events", &events, 1_000), None)
        .with_event_time("ts")
        .key_by(&["key"])
        .window(Assign::Tumbling(100).operator())
        .aggregate(&aggs())
        .sink(results.clone());
    env.execute().unwrap();
    let sizes: Vec<usize> = results.batches().iter().map(|b| b.num_rows()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), keys as usize);
    assert!(sizes.iter().all(|&n| n <= 4096), "{sizes:?}");
    let expected: Vec<Row> = sorted(
        (0..keys)
            .map(|key| result_row(key, (1_000, 1_100), &[key]))
            .collect(),
    );
    assert_eq!(results.sorted_rows().unwrap(), expected);
}
