//! Event time end to end: an operator's watermark is the minimum over its inputs; an idle input
//! leaves that minimum (and rejoins it only once it has caught up); a bounded input fires every
//! remaining window when it ends. At parallelism 1, 2 and 4.
//!
//! Ordering is observed without the wall clock: scripted sources wait (a bounded number of polls)
//! for what the sink has seen, so a job can only get past such a wait if the watermark moved as it
//! must, and a wait that gives up is recorded and asserted afterwards rather than hanging.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use strom::connectors::collection::{CollectionSource, Item};
use strom::connectors::sinks::CollectSink;
use strom::connectors::{SinkBuilder, SourceBuilder};
use strom::operator::{Operator, Output, Source, SourceContext, SourcePoll};
use strom::operators::aggregate::Agg;
use strom::operators::window::WindowAssigner;
use strom::plan::{OperatorFactory, SourceFactory};
use strom::row::{Row, Value, batch_from_rows, rows_of};
use strom::stream::{DataStream, StreamEnv};
use strom::time::{MAX_WATERMARK, MIN_WATERMARK, Timestamp, WatermarkStrategy};
use strom::{EngineConfig, Result};
use strom_tests::{event_schema, sorted};

const PARALLELISMS: [u32; 3] = [1, 2, 4];

/// Window size of every test, ms.
const WINDOW: i64 = 1000;

/// How many times a waiting source polls its condition (about a millisecond apart) before giving
/// up: far longer than any wait takes when the engine is right, short enough to fail clearly.
const MAX_POLLS: u32 = 10_000;

const POLL: Duration = Duration::from_millis(1);

type Cond = Arc<dyn Fn() -> bool + Send + Sync>;

/// A flag a wait sets when it gives up.
#[derive(Clone, Default)]
struct GaveUp(Arc<AtomicBool>);

impl GaveUp {
    fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One step of a scripted source.
#[derive(Clone)]
enum Step {
    /// Records `(key, ts)`, `v` = 1.
    Rows(Vec<(i64, i64)>),
    /// A watermark of the source's own (for streams without a watermark strategy).
    Watermark(Timestamp),
    /// Returns `SourcePoll::Pending` (so that the source can become idle) until the condition
    /// holds, at most `MAX_POLLS` times.
    Await(Cond, GaveUp),
    /// Waits inside `poll` (so that the source stays active) until the condition holds, at most
    /// `MAX_POLLS` times.
    AwaitActive(Cond, GaveUp),
    /// Runs a closure (records what the test wants to know at this point).
    Run(Arc<dyn Fn() + Send + Sync>),
}

/// A source whose subtask 0 plays `steps`; the other subtasks end at once.
#[derive(Clone)]
struct Scripted {
    name: &'static str,
    steps: Vec<Step>,
}

struct Play {
    steps: Vec<Step>,
    next: usize,
    polls: u32,
    schema: SchemaRef,
}

fn rows_batch(schema: &SchemaRef, rows: &[(i64, i64)]) -> Result<RecordBatch> {
    let rows: Vec<Row> = rows
        .iter()
        .map(|&(key, ts)| vec![Value::Int(key), Value::Int(ts), Value::Int(1)])
        .collect();
    batch_from_rows(schema, &rows)
}

impl Source for Play {
    fn poll(&mut self, _ctx: &mut SourceContext) -> Result<SourcePoll> {
        loop {
            let Some(step) = self.steps.get(self.next) else {
                return Ok(SourcePoll::Finished);
            };
            match step {
                Step::Rows(rows) => {
                    self.next += 1;
                    return Ok(SourcePoll::Data(rows_batch(&self.schema, rows)?));
                }
                Step::Watermark(w) => {
                    self.next += 1;
                    return Ok(SourcePoll::Watermark(*w));
                }
                Step::Await(cond, gave_up) => {
                    if !cond() && self.polls < MAX_POLLS {
                        self.polls += 1;
                        return Ok(SourcePoll::Pending(POLL));
                    }
                    if !cond() {
                        gave_up.0.store(true, Ordering::SeqCst);
                    }
                    self.polls = 0;
                    self.next += 1;
                }
                Step::AwaitActive(cond, gave_up) => {
                    let mut polls = 0;
                    while !cond() && polls < MAX_POLLS {
                        std::thread::sleep(POLL);
                        polls += 1;
                    }
                    if !cond() {
                        gave_up.0.store(true, Ordering::SeqCst);
                    }
                    self.next += 1;
                }
                Step::Run(f) => {
                    f();
                    self.next += 1;
                }
            }
        }
    }
}

impl SourceBuilder for Scripted {
    fn name(&self) -> String {
        format!("scripted({})", self.name)
    }

    fn schema(&self) -> SchemaRef {
        event_schema()
    }

    fn factory(self) -> SourceFactory {
        Arc::new(move |info| {
            let steps = if info.index == 0 {
                self.steps.clone()
            } else {
                Vec::new()
            };
            Ok(Box::new(Play {
                steps,
                next: 0,
                polls: 0,
                schema: event_schema(),
            }) as Box<dyn Source>)
        })
    }
}

/// A source that keeps producing: one record `(key, i * WINDOW + 100)` for window `i = 0, 1, ..`,
/// with a pending poll between records, until `stop` is set (then one more window) or it has
/// produced `MAX_POLLS` windows (then it records that it gave up).
#[derive(Clone)]
struct Ticker {
    key: i64,
    stop: Arc<AtomicBool>,
    produced: Arc<AtomicU64>,
    gave_up: GaveUp,
}

struct Tick {
    spec: Ticker,
    next: u64,
    pause: bool,
    last: bool,
}

impl Source for Tick {
    fn poll(&mut self, _ctx: &mut SourceContext) -> Result<SourcePoll> {
        if self.pause {
            self.pause = false;
            return Ok(SourcePoll::Pending(POLL));
        }
        if self.last {
            return Ok(SourcePoll::Finished);
        }
        if self.spec.stop.load(Ordering::SeqCst) {
            self.last = true;
        } else if self.next >= u64::from(MAX_POLLS) {
            self.spec.gave_up.0.store(true, Ordering::SeqCst);
            return Ok(SourcePoll::Finished);
        }
        let ts = self.next as i64 * WINDOW + 100;
        self.next += 1;
        self.spec.produced.store(self.next, Ordering::SeqCst);
        self.pause = true;
        Ok(SourcePoll::Data(rows_batch(
            &event_schema(),
            &[(self.spec.key, ts)],
        )?))
    }
}

impl SourceBuilder for Ticker {
    fn name(&self) -> String {
        "ticker".into()
    }

    fn schema(&self) -> SchemaRef {
        event_schema()
    }

    fn factory(self) -> SourceFactory {
        Arc::new(move |info| {
            let mut tick = Tick {
                spec: self.clone(),
                next: 0,
                pause: false,
                last: false,
            };
            if info.index != 0 {
                tick.last = true;
            }
            Ok(Box::new(tick) as Box<dyn Source>)
        })
    }
}

/// A sink of parallelism 1 that keeps the rows it receives and publishes its watermark (the
/// minimum over every window subtask), for sources to wait on.
#[derive(Clone)]
struct Recorder {
    rows: Arc<Mutex<Vec<Row>>>,
    watermark: Arc<AtomicI64>,
}

impl Recorder {
    fn new() -> Self {
        Self {
            rows: Arc::default(),
            watermark: Arc::new(AtomicI64::new(MIN_WATERMARK)),
        }
    }

    fn watermark(&self) -> Timestamp {
        self.watermark.load(Ordering::SeqCst)
    }

    /// Waits for the sink's watermark to reach `w`.
    fn reached(&self, w: Timestamp) -> Cond {
        let me = self.clone();
        Arc::new(move || me.watermark() >= w)
    }

    /// The window ends of the results received so far.
    fn fired_ends(&self) -> Vec<i64> {
        let mut ends: Vec<i64> = self
            .rows
            .lock()
            .unwrap()
            .iter()
            .map(|r| r[2].as_i64().unwrap())
            .collect();
        ends.sort_unstable();
        ends.dedup();
        ends
    }

    fn sorted_rows(&self) -> Vec<Row> {
        sorted(self.rows.lock().unwrap().clone())
    }
}

impl Operator for Recorder {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        self.rows.lock().unwrap().extend(rows_of(&batch)?);
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, _out: &mut Output) -> Result<()> {
        self.watermark.store(watermark, Ordering::SeqCst);
        Ok(())
    }
}

impl SinkBuilder for Recorder {
    fn name(&self) -> String {
        "recorder".into()
    }

    fn parallelism(&self) -> Option<u32> {
        Some(1)
    }

    fn factory(self, _schema: &SchemaRef) -> Result<OperatorFactory> {
        Ok(Arc::new(move |_| {
            Ok(Box::new(self.clone()) as Box<dyn Operator>)
        }))
    }
}

fn env(name: &str, parallelism: u32) -> StreamEnv {
    StreamEnv::new(
        name,
        EngineConfig {
            parallelism,
            ..EngineConfig::default()
        },
    )
}

/// Per key tumbling `WINDOW` count of `input` into `results`, late records into the returned
/// collector.
fn count_windows(input: &DataStream, results: &Recorder) -> CollectSink {
    let late = CollectSink::new();
    let counts = input
        .key_by(&["key"])
        .window(WindowAssigner::tumbling(Duration::from_millis(
            WINDOW as u64,
        )))
        .side_output_late_data("late")
        .aggregate(&[Agg::count("n")]);
    counts.sink(results.clone());
    counts.side_output("late").sink(late.clone());
    late
}

/// Every record counted in its window: rows (key, window_start, window_end, n).
fn reference(records: &[(i64, i64)]) -> Vec<Row> {
    let mut counts: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for &(key, ts) in records {
        *counts.entry((key, ts - ts.rem_euclid(WINDOW))).or_default() += 1;
    }
    let rows = counts
        .into_iter()
        .map(|((key, start), n)| {
            vec![
                Value::Int(key),
                Value::Int(start),
                Value::Int(start + WINDOW),
                Value::Int(n),
            ]
        })
        .collect();
    sorted(rows)
}

fn late_row(key: i64, ts: i64) -> Row {
    vec![Value::Int(key), Value::Int(ts), Value::Int(1)]
}

/// What the sink had seen at a point of a source's script: (its watermark, window ends fired).
type Probe = Arc<Mutex<Vec<(Timestamp, Vec<i64>)>>>;

fn probe(probes: &Probe, sink: &Recorder) -> Step {
    let (probes, sink) = (probes.clone(), sink.clone());
    Step::Run(Arc::new(move || {
        probes
            .lock()
            .unwrap()
            .push((sink.watermark(), sink.fired_ends()));
    }))
}

#[test]
fn a_window_fires_only_once_every_input_has_passed_it() {
    // `fast` runs through ten windows to watermark 9999 and ends. `slow` holds its watermark at
    // 999, then 5999, and has records in windows `fast` has long passed: they are counted, not
    // late, because the union's watermark is the minimum of the two.
    let fast_records: Vec<(i64, i64)> = (0..10)
        .flat_map(|w| [(1, w * WINDOW + 100), (2, w * WINDOW + 500)])
        .collect();
    let slow_early = vec![(3, 200), (1, 300)];
    let slow_later = vec![(3, 1500), (1, 4200), (2, 5999), (2, 9000)];
    for p in PARALLELISMS {
        let sink = Recorder::new();
        let fast_done = Arc::new(AtomicBool::new(false));
        let mut fast_steps = Vec::new();
        for w in 0..10 {
            fast_steps.push(Step::Rows(fast_records[2 * w..2 * w + 2].to_vec()));
            fast_steps.push(Step::Watermark(w as i64 * WINDOW + WINDOW - 1));
        }
        let done = fast_done.clone();
        fast_steps.push(Step::Run(Arc::new(move || {
            done.store(true, Ordering::SeqCst)
        })));
        let probes: Probe = Arc::default();
        let gave_up = GaveUp::default();
        let (s, done) = (sink.clone(), fast_done.clone());
        let slow_steps = vec![
            Step::Rows(slow_early.clone()),
            Step::Watermark(999),
            // Until `fast` is through and the first window has fired everywhere.
            Step::Await(
                Arc::new(move || done.load(Ordering::SeqCst) && s.watermark() >= 999),
                gave_up.clone(),
            ),
            probe(&probes, &sink),
            Step::Rows(slow_later.clone()),
            Step::Watermark(5999),
            Step::Await(sink.reached(5999), gave_up.clone()),
            probe(&probes, &sink),
        ];
        let env = env("min-watermark", p);
        let fast = env
            .from_source(
                Scripted {
                    name: "fast",
                    steps: fast_steps,
                },
                None,
            )
            .with_event_time("ts");
        let slow = env
            .from_source(
                Scripted {
                    name: "slow",
                    steps: slow_steps,
                },
                None,
            )
            .with_event_time("ts");
        let late = count_windows(&fast.union(&[slow]), &sink);
        env.execute().unwrap();

        let what = format!("p={p}");
        assert!(!gave_up.get(), "{what}: a wait of the slow source gave up");
        let probes = probes.lock().unwrap().clone();
        assert_eq!(
            probes,
            vec![
                (999, vec![1000]),
                (5999, vec![1000, 2000, 3000, 4000, 5000, 6000])
            ],
            "{what}: windows fire exactly when the slower input's watermark passes them"
        );
        let all: Vec<_> = [fast_records.clone(), slow_early.clone(), slow_later.clone()].concat();
        assert_eq!(sink.sorted_rows(), reference(&all), "{what}");
        assert!(late.is_empty(), "{what}: nothing is late");
        assert_eq!(sink.watermark(), MAX_WATERMARK, "{what}");
    }
}

/// A scripted source that becomes idle after 50 ms without records.
fn idle_source(env: &StreamEnv, steps: Vec<Step>) -> DataStream {
    env.from_source(
        Scripted {
            name: "idle",
            steps,
        },
        Some(WatermarkStrategy::ascending("ts").with_idleness(Duration::from_millis(50))),
    )
}

fn ticker(env: &StreamEnv, ticker: &Ticker) -> DataStream {
    env.from_source(ticker.clone(), Some(WatermarkStrategy::ascending("ts")))
}

fn ticker_records(ticker: &Ticker) -> Vec<(i64, i64)> {
    (0..ticker.produced.load(Ordering::SeqCst) as i64)
        .map(|i| (ticker.key, i * WINDOW + 100))
        .collect()
}

#[test]
fn an_idle_input_does_not_hold_back_the_watermark() {
    // The idle source's watermark stays at 599. Windows of the active source can only fire (and
    // the idle source stop waiting) because the idle source leaves the minimum.
    let idle_records = vec![(100, 500), (100, 600)];
    for p in PARALLELISMS {
        let sink = Recorder::new();
        let gave_up = GaveUp::default();
        let active = Ticker {
            key: 1,
            stop: Arc::default(),
            produced: Arc::default(),
            gave_up: GaveUp::default(),
        };
        let stop = active.stop.clone();
        let steps = vec![
            Step::Rows(idle_records.clone()),
            Step::Await(sink.reached(2 * WINDOW + 99), gave_up.clone()),
            Step::Run(Arc::new(move || stop.store(true, Ordering::SeqCst))),
        ];
        let env = env("idleness", p);
        let input = ticker(&env, &active).union(&[idle_source(&env, steps)]);
        let late = count_windows(&input, &sink);
        env.execute().unwrap();

        let what = format!("p={p}");
        assert!(
            !gave_up.get(),
            "{what}: no window of the active input fired while the other input was idle"
        );
        assert!(!active.gave_up.get(), "{what}");
        let all = [ticker_records(&active), idle_records.clone()].concat();
        assert_eq!(sink.sorted_rows(), reference(&all), "{what}");
        assert!(late.is_empty(), "{what}: nothing is late");
    }
}

#[test]
fn an_idle_input_does_not_hold_back_an_ended_one() {
    // The other input has ended (its watermark is the maximum): once the remaining input is idle,
    // every window fires, though that input has not ended.
    let ended_records: Vec<(i64, i64)> = (0..5).map(|w| (1, w * WINDOW + 100)).collect();
    let idle_records = vec![(100, 500), (100, 600)];
    for p in PARALLELISMS {
        let sink = Recorder::new();
        let gave_up = GaveUp::default();
        let probes: Probe = Arc::default();
        let steps = vec![
            Step::Rows(idle_records.clone()),
            Step::Await(sink.reached(MAX_WATERMARK), gave_up.clone()),
            probe(&probes, &sink),
        ];
        let env = env("idleness-ended", p);
        let ended = env.from_source(
            CollectionSource::new(
                "ended",
                event_schema(),
                vec![Item::Batch(
                    rows_batch(&event_schema(), &ended_records).unwrap(),
                )],
            ),
            Some(WatermarkStrategy::ascending("ts")),
        );
        let late = count_windows(&ended.union(&[idle_source(&env, steps)]), &sink);
        env.execute().unwrap();

        let what = format!("p={p}");
        assert!(
            !gave_up.get(),
            "{what}: the windows did not fire while the remaining input was idle"
        );
        let expected = reference(&[ended_records.clone(), idle_records.clone()].concat());
        assert_eq!(
            probes.lock().unwrap().clone(),
            vec![(MAX_WATERMARK, vec![1000, 2000, 3000, 4000, 5000])],
            "{what}"
        );
        assert_eq!(sink.sorted_rows(), expected, "{what}");
        assert!(late.is_empty(), "{what}: nothing is late");
    }
}

#[test]
fn an_input_back_from_idleness_rejoins_the_minimum_once_it_has_caught_up() {
    // The idle input comes back with a record behind the watermark (late) and stays active
    // without catching up: it must not hold the watermark back, so the active input's windows
    // keep firing while it waits.
    for p in PARALLELISMS {
        let sink = Recorder::new();
        let gave_up = GaveUp::default();
        let active = Ticker {
            key: 1,
            stop: Arc::default(),
            produced: Arc::default(),
            gave_up: GaveUp::default(),
        };
        let resumed_at = Arc::new(AtomicI64::new(MAX_WATERMARK));
        let (stop, resumed) = (active.stop.clone(), resumed_at.clone());
        let (s, r) = (sink.clone(), resumed_at.clone());
        let steps = vec![
            Step::Rows(vec![(100, 500)]),
            // Idle: the first window fires everywhere.
            Step::Await(sink.reached(WINDOW - 1), gave_up.clone()),
            {
                let s = sink.clone();
                Step::Run(Arc::new(move || {
                    resumed.store(s.watermark(), Ordering::SeqCst)
                }))
            },
            Step::Rows(vec![(100, 700)]),
            Step::AwaitActive(
                Arc::new(move || {
                    s.watermark() >= r.load(Ordering::SeqCst).saturating_add(3 * WINDOW)
                }),
                gave_up.clone(),
            ),
            Step::Run(Arc::new(move || stop.store(true, Ordering::SeqCst))),
        ];
        let env = env("idleness-rejoin", p);
        let input = ticker(&env, &active).union(&[idle_source(&env, steps)]);
        let late = count_windows(&input, &sink);
        env.execute().unwrap();

        let what = format!("p={p}");
        assert!(
            !gave_up.get(),
            "{what}: the input back from idleness held the watermark back (resumed at {})",
            resumed_at.load(Ordering::SeqCst)
        );
        assert!(!active.gave_up.get(), "{what}");
        let all = [ticker_records(&active), vec![(100, 500)]].concat();
        assert_eq!(sink.sorted_rows(), reference(&all), "{what}");
        assert_eq!(
            late.sorted_rows().unwrap(),
            vec![late_row(100, 700)],
            "{what}"
        );
    }
}

#[test]
fn a_bounded_input_fires_every_remaining_window_when_it_ends() {
    // No watermark at all until the end of the input.
    let records: Vec<(i64, i64)> = (0..300).map(|i| (i % 7, i * 37 % 9000)).collect();
    for p in PARALLELISMS {
        let sink = Recorder::new();
        let env = env("end-of-input", p);
        let input = env
            .from_source(
                Scripted {
                    name: "bounded",
                    steps: records.chunks(50).map(|c| Step::Rows(c.to_vec())).collect(),
                },
                None,
            )
            .with_event_time("ts");
        let late = count_windows(&input, &sink);
        env.execute().unwrap();
        let expected = reference(&records);
        assert!(expected.len() > 40);
        assert_eq!(sink.sorted_rows(), expected, "p={p}");
        assert!(late.is_empty());
        assert_eq!(sink.watermark(), MAX_WATERMARK);
    }
}
