//! The runtime's plumbing: planning and chaining, partitioning, plan errors, backpressure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use strom::connectors::SinkBuilder;
use strom::connectors::sinks::CollectSink;
use strom::operator::{Operator, Output, Source, SourceContext, SourcePoll};
use strom::operators::aggregate::Agg;
use strom::operators::window::WindowAssigner;
use strom::plan::{OperatorFactory, SourceFactory, physical};
use strom::row::Value;
use strom::stream::StreamEnv;
use strom::{EngineConfig, Error};
use strom_tests::{scripted_events, scripted_source};

#[test]
fn forward_edges_are_chained_and_key_by_is_a_hash_edge() {
    let env = StreamEnv::new(
        "plan",
        EngineConfig {
            parallelism: 2,
            ..EngineConfig::default()
        },
    );
    let events = scripted_events(1, 10, 3, 0, 0, 5);
    env.from_source(scripted_source("events", &events, 4), None)
        .select(&["key", "v"])
        .filter("positive", |r| r[1].as_i64().unwrap_or(0) > 0)
        .key_by(&["key"])
        .aggregate(&[Agg::sum("v", "total")])
        .set_parallelism(3)
        .sink(CollectSink::new());
    let graph = env.build().unwrap();
    let plan = physical::plan(&graph).unwrap();
    let text = physical::explain(&graph, &plan);
    assert_eq!(
        text,
        "task 0 [p=2]: collection(events) -> select(key, v) -> filter(positive)\n\
         task 1 [p=3]: rolling(sum(v) as total) -> collect\n  input 0 <- task 0 HASH[key]\n"
    );
}

#[test]
fn plan_errors_name_the_operator_and_the_field() {
    let events = scripted_events(1, 10, 3, 0, 0, 5);
    let check = |build: &dyn Fn(&StreamEnv), expected: &[&str]| {
        let env = StreamEnv::new("bad", EngineConfig::default());
        build(&env);
        let message = env.build().unwrap_err().to_string();
        for part in expected {
            assert!(message.contains(part), "'{message}' lacks '{part}'");
        }
    };
    check(
        &|env| {
            env.from_source(scripted_source("events", &events, 4), None)
                .select(&["key", "price"]);
        },
        &["select(key, price)", "unknown field 'price'"],
    );
    check(
        &|env| {
            let s = env.from_source(scripted_source("events", &events, 4), None);
            let floats = s.map(
                "to-float",
                Arc::new(Schema::new(vec![Field::new("f", DataType::Float64, false)])),
                |r| Ok(vec![Value::Float(r[2].as_f64().unwrap_or(0.0))]),
            );
            floats.key_by(&["f"]).aggregate(&[Agg::count("n")]);
        },
        &["key_by(f)", "field 'f' has type Float64"],
    );
    check(
        &|env| {
            env.from_source(scripted_source("events", &events, 4), None)
                .key_by(&["key"])
                .window(WindowAssigner::tumbling(Duration::from_secs(1)))
                .aggregate(&[Agg::count("n")]);
        },
        &["window(tumbling 1000ms", "without watermarks"],
    );
    check(
        &|env| {
            env.from_source(scripted_source("events", &events, 4), None)
                .with_event_time("ts")
                .key_by(&["key"])
                .window(WindowAssigner::tumbling(Duration::from_secs(1)))
                .aggregate(&[Agg::sum("nope", "x")]);
        },
        &["sum(nope) as x", "unknown field 'nope'"],
    );
    let env = StreamEnv::new(
        "bad",
        EngineConfig {
            parallelism: 300,
            ..EngineConfig::default()
        },
    );
    env.from_source(scripted_source("events", &events, 4), None)
        .sink(CollectSink::new());
    assert!(matches!(env.execute(), Err(Error::Config(_))));
}

/// Produces `batches` batches of `rows` rows, counting how many it has handed out.
struct Counting {
    produced: Arc<AtomicU64>,
    batches: u64,
    rows: usize,
}

impl Source for Counting {
    fn poll(&mut self, _ctx: &mut SourceContext) -> strom::Result<SourcePoll> {
        let n = self.produced.load(Ordering::SeqCst);
        if n == self.batches {
            return Ok(SourcePoll::Finished);
        }
        self.produced.fetch_add(1, Ordering::SeqCst);
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let values =
            arrow::array::Int64Array::from_iter_values((0..self.rows as i64).map(|i| i + n as i64));
        Ok(SourcePoll::Data(RecordBatch::try_new(
            schema,
            vec![Arc::new(values)],
        )?))
    }
}

struct CountingSource {
    produced: Arc<AtomicU64>,
    batches: u64,
}

impl strom::connectors::SourceBuilder for CountingSource {
    fn name(&self) -> String {
        "counting".into()
    }
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]))
    }
    fn factory(self) -> SourceFactory {
        Arc::new(move |_| {
            Ok(Box::new(Counting {
                produced: self.produced.clone(),
                batches: self.batches,
                rows: 1024,
            }) as Box<dyn Source>)
        })
    }
}

/// A sink that takes one batch only when the test hands it a permit, and records how far ahead
/// of it the source got each time.
struct GatedSink {
    permits: crossbeam_channel::Receiver<()>,
    consumed: Arc<AtomicU64>,
    produced: Arc<AtomicU64>,
    max_ahead: Arc<AtomicU64>,
}

impl Operator for GatedSink {
    fn process(
        &mut self,
        _input: usize,
        _batch: RecordBatch,
        _out: &mut Output,
    ) -> strom::Result<()> {
        let _ = self.permits.recv();
        let consumed = self.consumed.fetch_add(1, Ordering::SeqCst) + 1;
        let ahead = self
            .produced
            .load(Ordering::SeqCst)
            .saturating_sub(consumed);
        self.max_ahead.fetch_max(ahead, Ordering::SeqCst);
        Ok(())
    }
}

struct Gated(GatedSink);

impl SinkBuilder for Gated {
    fn name(&self) -> String {
        "gated".into()
    }
    fn parallelism(&self) -> Option<u32> {
        Some(1)
    }
    fn factory(self, _schema: &arrow::datatypes::SchemaRef) -> strom::Result<OperatorFactory> {
        let sink = std::sync::Mutex::new(Some(self.0));
        Ok(Arc::new(move |_| {
            let s = sink.lock().unwrap().take().expect("one subtask");
            Ok(Box::new(s) as Box<dyn Operator>)
        }))
    }
}

#[test]
fn a_slow_sink_holds_the_source_back_instead_of_buffering() {
    // A map between source and sink, not chained to the sink, so two channels are in the path.
    let produced = Arc::new(AtomicU64::new(0));
    let consumed = Arc::new(AtomicU64::new(0));
    let max_ahead = Arc::new(AtomicU64::new(0));
    let (permit_tx, permits) = crossbeam_channel::unbounded();
    let capacity = 2;
    let env = StreamEnv::new(
        "backpressure",
        EngineConfig {
            parallelism: 1,
            channel_capacity: capacity,
            ..EngineConfig::default()
        },
    );
    let batches = 400;
    env.from_source(
        CountingSource {
            produced: produced.clone(),
            batches,
        },
        None,
    )
    .select(&["x"])
    .rebalance()
    .select(&["x"])
    .disable_chaining()
    .sink(Gated(GatedSink {
        permits,
        consumed: consumed.clone(),
        produced: produced.clone(),
        max_ahead: max_ahead.clone(),
    }));
    let job = strom::runtime::start(&env.build().unwrap()).unwrap();
    // Hand out permits one at a time; after each, the source may be ahead by at most what the
    // channels and the tasks in between can hold, however slowly the sink goes.
    for _ in 0..batches {
        permit_tx.send(()).unwrap();
    }
    job.join().unwrap();
    assert_eq!(consumed.load(Ordering::SeqCst), batches);
    // Two channels of `capacity` batches, plus one batch in hand in each of the three tasks.
    let bound = 2 * capacity as u64 + 3;
    assert!(
        max_ahead.load(Ordering::SeqCst) <= bound,
        "source ran {} batches ahead, bound {bound}",
        max_ahead.load(Ordering::SeqCst)
    );
}
