//! Process functions against references computed from the scripted input, at parallelism 1, 2 and 4:
//! a keyed process function with event-time timers (registered, deleted, firing in watermark order)
//! and processing-time timers that fire when the input ends, and connected streams, keyed and not.
//!
//! The keyed test is exact: every process subtask reads the one source subtask over one channel, so
//! records and watermarks reach it in script order, and the reference replays the script. A two-input
//! operator sees its inputs interleaved in an order no test controls, so the connected-stream tests
//! emit only what does not depend on it: an echo of every record, and totals reported by timers that
//! fire when the input ends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use strom::connectors::collection::{CollectionSource, Item};
use strom::connectors::sinks::CollectSink;
use strom::operators::process::{CoProcessFunction, KeyedContext, KeyedProcessFunction};
use strom::row::{Row, Value, batch_from_rows};
use strom::state::{KeyedStateBackend, ListState, MapState, ValueState};
use strom::stream::{DataStream, StreamEnv};
use strom::time::{MAX_WATERMARK, MIN_WATERMARK, TimeDomain, Timestamp};
use strom::{EngineConfig, Error, Result};

const PARALLELISMS: [u32; 3] = [1, 2, 4];
/// The event-time timer fires this long after a key's first record.
const DELAY: i64 = 10;
/// A timer this far after the first record is registered and must be deleted before it fires.
const GUARD: i64 = 1_000_000_000;
/// Processing-time timers are set this far out: the wall clock never reaches them during a test.
const FAR: i64 = i64::MAX / 2;

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

#[derive(Debug, Clone, Copy)]
enum Step {
    /// side (0 or 1), key, ts, v
    Record(i64, i64, i64, i64),
    Watermark(i64),
}

/// `n` records over `keys` keys and two sides, out of order by up to 30 ms, about one in twenty
/// behind the watermark; a watermark (40 ms behind the largest time seen) after about every eighth.
fn script(seed: u64, n: usize, keys: u64) -> Vec<Step> {
    let mut rng = Lcg(seed);
    let mut steps = Vec::new();
    let (mut base, mut max_seen, mut wm) = (1_000_000i64, i64::MIN, MIN_WATERMARK);
    for _ in 0..n {
        base += rng.below(6) as i64;
        let ts = if wm > MIN_WATERMARK && rng.below(20) == 0 {
            wm - rng.below(50) as i64
        } else {
            base - rng.below(31) as i64
        };
        max_seen = max_seen.max(ts);
        let (side, key, v) = (
            rng.below(2) as i64,
            rng.below(keys) as i64,
            rng.below(100) as i64,
        );
        steps.push(Step::Record(side, key, ts, v));
        if rng.below(8) == 0 && max_seen - 40 > wm {
            wm = max_seen - 40;
            steps.push(Step::Watermark(wm));
        }
    }
    steps
}

fn source_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("side", DataType::Int64, false),
        Field::new("key", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("v", DataType::Int64, false),
    ]))
}

/// The script as one source subtask: records in batches of up to 5, watermarks in place; event time
/// is the `ts` column and the only watermarks are the scripted ones.
fn source(env: &StreamEnv, steps: &[Step]) -> DataStream {
    let schema = source_schema();
    let mut items = Vec::new();
    let mut pending: Vec<Row> = Vec::new();
    let flush = |pending: &mut Vec<Row>, items: &mut Vec<Item>| {
        for chunk in pending.chunks(5) {
            items.push(Item::Batch(batch_from_rows(&schema, chunk).unwrap()));
        }
        pending.clear();
    };
    for step in steps {
        match *step {
            Step::Record(side, key, ts, v) => pending.push(vec![
                Value::Int(side),
                Value::Int(key),
                Value::Int(ts),
                Value::Int(v),
            ]),
            Step::Watermark(w) => {
                flush(&mut pending, &mut items);
                items.push(Item::Watermark(w));
            }
        }
    }
    flush(&mut pending, &mut items);
    env.from_source(
        CollectionSource::new("script", source_schema(), items),
        None,
    )
    .with_event_time("ts")
}

fn env(name: &str) -> StreamEnv {
    StreamEnv::new(
        name,
        EngineConfig {
            parallelism: 1,
            ..EngineConfig::default()
        },
    )
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

fn int(v: &Value) -> Result<i64> {
    v.as_i64()
        .ok_or_else(|| Error::user(format!("{v:?} is not an integer")))
}

// ---------------------------------------------------------------------------------------------------
// A keyed process function.

fn keyed_output() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Int64, false),
        Field::new("c", DataType::Int64, false),
        Field::new("d", DataType::Int64, false),
    ]))
}

/// Per key: collects the values of a period that starts with the key's first record and ends with an
/// event-time timer `DELAY` ms after it, which emits `[key, "count", n, sum, timer time, watermark]`.
/// A guard timer set with it is deleted when it fires. A processing-time timer, moved with every
/// record, reports `[key, "total", records, timer offset, even values, odd values]` at the end.
#[derive(Clone, Default)]
struct CountAfterFirst {
    first: Option<ValueState<i64>>,
    values: Option<ListState<i64>>,
    total: Option<ValueState<i64>>,
    parity: Option<MapState<i64, i64>>,
}

impl CountAfterFirst {
    #[allow(clippy::type_complexity)]
    fn handles(
        &self,
    ) -> Result<(
        ValueState<i64>,
        ListState<i64>,
        ValueState<i64>,
        MapState<i64, i64>,
    )> {
        match (&self.first, &self.values, &self.total, &self.parity) {
            (Some(f), Some(v), Some(t), Some(p)) => {
                Ok((f.clone(), v.clone(), t.clone(), p.clone()))
            }
            _ => Err(Error::user("used before open")),
        }
    }
}

impl KeyedProcessFunction for CountAfterFirst {
    fn open<S: KeyedStateBackend>(&mut self, state: &mut S) -> Result<()> {
        self.first = Some(state.value_state("first"));
        self.values = Some(state.list_state("values"));
        self.total = Some(state.value_state("total"));
        self.parity = Some(state.map_state("parity"));
        Ok(())
    }

    fn process_element<S: KeyedStateBackend>(
        &mut self,
        row: &Row,
        ctx: &mut KeyedContext<'_, S>,
        _out: &mut Vec<Row>,
    ) -> Result<()> {
        let (first, values, total, parity) = self.handles()?;
        if ctx.key() != &row[1..2] {
            return Err(Error::user("the context's key is not the record's"));
        }
        let ts = ctx
            .timestamp()
            .ok_or_else(|| Error::user("no event time"))?;
        if ts != int(&row[2])? {
            return Err(Error::user("the context's timestamp is not the record's"));
        }
        if ctx.get(&first)?.is_none() {
            ctx.put(&first, ts)?;
            ctx.register_event_time_timer(ts + DELAY);
            ctx.register_event_time_timer(ts + GUARD);
        }
        let v = int(&row[3])?;
        ctx.list_add(&values, v)?;
        let n = ctx.upsert(
            &total,
            || 0,
            |t| {
                *t += 1;
                *t
            },
        )?;
        ctx.delete_processing_time_timer(FAR + n - 1);
        ctx.register_processing_time_timer(FAR + n);
        let p = v.rem_euclid(2);
        let seen = ctx.map_get(&parity, &p)?.unwrap_or(0);
        ctx.map_put(&parity, p, seen + 1)
    }

    fn on_timer<S: KeyedStateBackend>(
        &mut self,
        time: Timestamp,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_, S>,
        out: &mut Vec<Row>,
    ) -> Result<()> {
        let (first, values, total, parity) = self.handles()?;
        let key = ctx.key()[0].clone();
        match domain {
            TimeDomain::EventTime => {
                if ctx.timestamp() != Some(time) {
                    return Err(Error::user("an event-time timer's timestamp is its time"));
                }
                let Some(f) = ctx.take(&first)? else {
                    return Err(Error::user(format!("timer at {time} without a period")));
                };
                if time != f + DELAY {
                    return Err(Error::user(format!("unexpected timer at {time}")));
                }
                ctx.delete_event_time_timer(f + GUARD);
                let values = ctx.list_take(&values)?;
                out.push(vec![
                    key,
                    "count".into(),
                    Value::Int(values.len() as i64),
                    Value::Int(values.iter().sum()),
                    Value::Int(time),
                    Value::Int(ctx.current_watermark()),
                ]);
            }
            TimeDomain::ProcessingTime => {
                if ctx.timestamp().is_some() {
                    return Err(Error::user("a processing-time timer has no event time"));
                }
                let n = ctx.take(&total)?.unwrap_or(0);
                let counts: BTreeMap<i64, i64> = ctx.map_entries(&parity)?.into_iter().collect();
                ctx.map_clear(&parity)?;
                out.push(vec![
                    key,
                    "total".into(),
                    Value::Int(n),
                    Value::Int(time - FAR),
                    Value::Int(counts.get(&0).copied().unwrap_or(0)),
                    Value::Int(counts.get(&1).copied().unwrap_or(0)),
                ]);
            }
        }
        Ok(())
    }
}

/// Replays the script: records update their key's period, watermarks fire the due timers in
/// (time, key) order, the end of input fires the rest and then the processing-time timers.
fn keyed_reference(steps: &[Step]) -> Vec<Row> {
    #[derive(Default)]
    struct Key {
        first: Option<i64>,
        values: Vec<i64>,
        total: i64,
        parity: [i64; 2],
    }
    let mut keys: BTreeMap<i64, Key> = BTreeMap::new();
    let mut timers: BTreeSet<(i64, i64)> = BTreeSet::new();
    let mut out = Vec::new();
    let fire = |limit: i64,
                timers: &mut BTreeSet<(i64, i64)>,
                keys: &mut BTreeMap<i64, Key>,
                out: &mut Vec<Row>| {
        while let Some(&(t, k)) = timers.first() {
            if t > limit {
                break;
            }
            timers.pop_first();
            let state = keys.get_mut(&k).unwrap();
            state.first = None;
            let values = std::mem::take(&mut state.values);
            out.push(vec![
                Value::Int(k),
                "count".into(),
                Value::Int(values.len() as i64),
                Value::Int(values.iter().sum()),
                Value::Int(t),
                Value::Int(limit),
            ]);
        }
    };
    for step in steps {
        match *step {
            Step::Record(_, k, ts, v) => {
                let state = keys.entry(k).or_default();
                if state.first.is_none() {
                    state.first = Some(ts);
                    timers.insert((ts + DELAY, k));
                }
                state.values.push(v);
                state.total += 1;
                state.parity[v.rem_euclid(2) as usize] += 1;
            }
            Step::Watermark(w) => fire(w, &mut timers, &mut keys, &mut out),
        }
    }
    fire(MAX_WATERMARK, &mut timers, &mut keys, &mut out);
    for (k, state) in &keys {
        out.push(vec![
            Value::Int(*k),
            "total".into(),
            Value::Int(state.total),
            Value::Int(state.total),
            Value::Int(state.parity[0]),
            Value::Int(state.parity[1]),
        ]);
    }
    sorted(out)
}

#[test]
fn keyed_process_function_timers_match_the_reference() {
    let steps = script(7, 3000, 13);
    let expected = keyed_reference(&steps);
    assert!(expected.len() > 200, "{} rows", expected.len());
    for p in PARALLELISMS {
        let env = env("keyed-process");
        let sink = CollectSink::new();
        source(&env, &steps)
            .key_by(&["key"])
            .process(
                "count-after-first",
                keyed_output(),
                CountAfterFirst::default(),
            )
            .set_parallelism(p)
            .sink(sink.clone());
        env.execute().unwrap();
        assert_eq!(sink.sorted_rows().unwrap(), expected, "parallelism {p}");
    }
}

// ---------------------------------------------------------------------------------------------------
// Connected streams.

fn co_output() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, true),
        Field::new("kind", DataType::Utf8, false),
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Int64, false),
    ]))
}

/// The two sides of the script: left `(key, ts, v)`, right `(rkey, rts, w)`.
fn sides(env: &StreamEnv, steps: &[Step]) -> (DataStream, DataStream) {
    let src = source(env, steps);
    let left = src
        .filter("left", |r| r[0] == Value::Int(0))
        .select(&["key", "ts", "v"]);
    let right_schema = Arc::new(Schema::new(vec![
        Field::new("rkey", DataType::Int64, false),
        Field::new(
            "rts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("w", DataType::Int64, false),
    ]));
    let right = src
        .filter("right", |r| r[0] == Value::Int(1))
        .map("rename", right_schema, |r| Ok(r[1..].to_vec()))
        .with_event_time("rts");
    (left, right)
}

/// Echoes every record as `[key, "L" | "R", ts, value]` and counts per key (or per subtask when not
/// keyed); timers that fire only when the input ends report `[key, "sum", left, right]` (event time)
/// and `[key, "proc", left + right, watermark is the end]` (processing time).
#[derive(Clone, Default)]
struct EchoAndCount {
    keyed: bool,
    counts: Option<ValueState<(i64, i64)>>,
}

impl EchoAndCount {
    fn element<S: KeyedStateBackend>(
        &self,
        side: usize,
        row: &Row,
        ctx: &mut KeyedContext<'_, S>,
        out: &mut Vec<Row>,
    ) -> Result<()> {
        let counts = self
            .counts
            .clone()
            .ok_or_else(|| Error::user("used before open"))?;
        let key = if self.keyed {
            if ctx.key() != &row[0..1] {
                return Err(Error::user("the context's key is not the record's"));
            }
            ctx.key()[0].clone()
        } else {
            if !ctx.key().is_empty() || !ctx.key_bytes().is_empty() {
                return Err(Error::user("a stream that is not keyed has no key"));
            }
            Value::Null
        };
        if ctx.timestamp() != row[1].as_i64() {
            return Err(Error::user("the context's timestamp is not the record's"));
        }
        out.push(vec![
            key,
            if side == 0 { "L" } else { "R" }.into(),
            row[1].clone(),
            row[2].clone(),
        ]);
        let new = ctx.get(&counts)?.is_none();
        ctx.upsert(
            &counts,
            || (0, 0),
            |c| {
                if side == 0 { c.0 += 1 } else { c.1 += 1 }
            },
        )?;
        if new {
            ctx.register_event_time_timer(MAX_WATERMARK - 1);
            ctx.register_processing_time_timer(FAR);
        }
        Ok(())
    }
}

impl CoProcessFunction for EchoAndCount {
    fn open<S: KeyedStateBackend>(&mut self, state: &mut S) -> Result<()> {
        self.counts = Some(state.value_state("counts"));
        Ok(())
    }

    fn process_element1<S: KeyedStateBackend>(
        &mut self,
        row: &Row,
        ctx: &mut KeyedContext<'_, S>,
        out: &mut Vec<Row>,
    ) -> Result<()> {
        self.element(0, row, ctx, out)
    }

    fn process_element2<S: KeyedStateBackend>(
        &mut self,
        row: &Row,
        ctx: &mut KeyedContext<'_, S>,
        out: &mut Vec<Row>,
    ) -> Result<()> {
        self.element(1, row, ctx, out)
    }

    fn on_timer<S: KeyedStateBackend>(
        &mut self,
        _time: Timestamp,
        domain: TimeDomain,
        ctx: &mut KeyedContext<'_, S>,
        out: &mut Vec<Row>,
    ) -> Result<()> {
        let counts = self
            .counts
            .clone()
            .ok_or_else(|| Error::user("used before open"))?;
        let key = ctx.key().first().cloned().unwrap_or(Value::Null);
        let (l, r) = ctx.get(&counts)?.unwrap_or_default();
        out.push(match domain {
            TimeDomain::EventTime => vec![key, "sum".into(), Value::Int(l), Value::Int(r)],
            TimeDomain::ProcessingTime => vec![
                key,
                "proc".into(),
                Value::Int(l + r),
                Value::Int(i64::from(ctx.current_watermark() == MAX_WATERMARK)),
            ],
        });
        Ok(())
    }
}

/// Echo rows and per-key (left, right) counts of the script.
fn co_reference(steps: &[Step], keyed: bool) -> (Vec<Row>, BTreeMap<i64, (i64, i64)>) {
    let mut echo = Vec::new();
    let mut counts: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for step in steps {
        if let Step::Record(side, key, ts, v) = *step {
            let k = if keyed { Value::Int(key) } else { Value::Null };
            echo.push(vec![
                k,
                if side == 0 { "L" } else { "R" }.into(),
                Value::Int(ts),
                Value::Int(v),
            ]);
            let c = counts.entry(key).or_default();
            if side == 0 { c.0 += 1 } else { c.1 += 1 }
        }
    }
    (sorted(echo), counts)
}

#[test]
fn keyed_connect_shares_state_and_timers_per_key() {
    let steps = script(11, 2000, 9);
    let (echo, counts) = co_reference(&steps, true);
    let mut expected = echo;
    for (k, (l, r)) in &counts {
        expected.push(vec![
            Value::Int(*k),
            "sum".into(),
            Value::Int(*l),
            Value::Int(*r),
        ]);
        expected.push(vec![
            Value::Int(*k),
            "proc".into(),
            Value::Int(l + r),
            Value::Int(1),
        ]);
    }
    let expected = sorted(expected);
    for p in PARALLELISMS {
        let env = env("keyed-connect");
        let (left, right) = sides(&env, &steps);
        let sink = CollectSink::new();
        left.key_by(&["key"])
            .connect(&right.key_by(&["rkey"]))
            .process(
                "echo",
                co_output(),
                EchoAndCount {
                    keyed: true,
                    counts: None,
                },
            )
            .set_parallelism(p)
            .sink(sink.clone());
        env.execute().unwrap();
        assert_eq!(sink.sorted_rows().unwrap(), expected, "parallelism {p}");
    }
}

#[test]
fn unkeyed_connect_keeps_state_per_subtask() {
    let steps = script(12, 1500, 5);
    let (echo, counts) = co_reference(&steps, false);
    let (left, right) = counts
        .values()
        .fold((0, 0), |(l, r), (a, b)| (l + a, r + b));
    for p in PARALLELISMS {
        let env = env("connect");
        let (l, r) = sides(&env, &steps);
        let sink = CollectSink::new();
        l.connect(&r)
            .process(
                "echo",
                co_output(),
                EchoAndCount {
                    keyed: false,
                    counts: None,
                },
            )
            .set_parallelism(p)
            .sink(sink.clone());
        env.execute().unwrap();
        let rows = sink.sorted_rows().unwrap();
        let (echoes, others): (Vec<Row>, Vec<Row>) = rows
            .into_iter()
            .partition(|r| r[1] == "L".into() || r[1] == "R".into());
        assert_eq!(echoes, echo, "parallelism {p}");
        let (mut sum, mut proc) = ((0, 0), 0);
        let (mut sums, mut procs) = (0, 0);
        for r in &others {
            assert_eq!(r[0], Value::Null);
            let (a, b) = (r[2].as_i64().unwrap(), r[3].as_i64().unwrap());
            match r[1].as_str().unwrap() {
                "sum" => {
                    sums += 1;
                    sum = (sum.0 + a, sum.1 + b);
                }
                "proc" => {
                    procs += 1;
                    proc += a;
                    assert_eq!(b, 1, "processing-time timers fire after the last watermark");
                }
                other => panic!("unexpected row kind {other}"),
            }
        }
        assert_eq!(sum, (left, right), "parallelism {p}");
        assert_eq!(proc, left + right, "parallelism {p}");
        assert!(sums >= 1 && sums <= p && procs == sums, "parallelism {p}");
    }
}

#[test]
fn keyed_connect_rejects_keys_of_different_types() {
    let env = env("bad-connect");
    let (left, right) = sides(&env, &script(1, 10, 2));
    let right = right.map(
        "text",
        Arc::new(Schema::new(vec![Field::new("tag", DataType::Utf8, false)])),
        |r| Ok(vec![Value::Str(format!("{:?}", r[0]))]),
    );
    left.key_by(&["key"])
        .connect(&right.key_by(&["tag"]))
        .process("echo", co_output(), EchoAndCount::default())
        .sink(CollectSink::new());
    let message = env.build().unwrap_err().to_string();
    assert!(message.contains("co_process(echo)"), "{message}");
    assert!(
        message.contains("'tag'") && message.contains("'key'"),
        "{message}"
    );
}

#[test]
fn failing_process_function_names_the_operator() {
    #[derive(Clone)]
    struct Fails;
    impl KeyedProcessFunction for Fails {
        fn process_element<S: KeyedStateBackend>(
            &mut self,
            _row: &Row,
            _ctx: &mut KeyedContext<'_, S>,
            _out: &mut Vec<Row>,
        ) -> Result<()> {
            Err(Error::user("no thanks"))
        }
    }
    let env = env("failing");
    source(&env, &script(3, 20, 2))
        .key_by(&["key"])
        .process("fails", keyed_output(), Fails)
        .sink(CollectSink::new());
    let message = env.execute().unwrap_err().to_string();
    assert!(
        message.contains("process(fails)") && message.contains("no thanks"),
        "{message}"
    );
}
