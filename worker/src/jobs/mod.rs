//! Jobs built into the worker binary, run by name (`strom run q5`, and later a `FlinkJob`'s
//! `spec.job.name`): the Nexmark queries on the DataStream API and the keyed windowed count that the
//! benchmarks compare with Apache Flink. Each is defined exactly like its Flink peer in
//! `bench/flink/src/`, so that both engines compute the same rows from the same input.

pub mod checksum;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Int64Array};
use arrow::compute::kernels::cmp::eq;
use arrow::compute::kernels::numeric::rem;
use arrow::compute::kernels::numeric::{div, mul};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use self::checksum::{ChecksumSink, RowHash};
use crate::connectors::datagen::KeyedEvents;
use crate::connectors::nexmark::NexmarkConfig;
use crate::connectors::nexmark_source::NexmarkSource;
use crate::connectors::sinks::{CollectSink, DiscardSink, PrintSink};
use crate::connectors::two_phase::ExactlyOnceFileSink;
use crate::error::{Error, Result};
use crate::operators::aggregate::Agg;
use crate::operators::window::{TimeWindow, WindowAssigner, WindowFunction};
use crate::row::{Row, Value, rows_of};
use crate::stream::{DataStream, StreamEnv};
use crate::time::WatermarkStrategy;

/// The jobs this binary knows, with a line about each.
pub const JOBS: &[(&str, &str)] = &[
    (
        "windowed-count",
        "keyed 1 s tumbling event-time count over generated events with 1000 keys",
    ),
    (
        "running-count",
        "running count per key over generated events whose keys are (almost) all new: keyed state that keeps growing",
    ),
    ("q0", "Nexmark q0: every bid passed through"),
    ("q1", "Nexmark q1: bids with the price converted to euros"),
    (
        "q2",
        "Nexmark q2: bids of every 123rd auction, (auction, price)",
    ),
    (
        "q5",
        "Nexmark q5, hot items: per 10 s window sliding by 2 s, the auctions with the most bids",
    ),
    ("hot-items", "alias of q5"),
    (
        "auction-stats",
        "per auction and 10 s window: bids and highest price, window-joined with the auction's seller (the exactly-once test job)",
    ),
    (
        "q7",
        "Nexmark q7: per 10 s window, the bids with the highest price",
    ),
];

/// What a built-in job runs over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobArgs {
    /// Input records: generated events for the windowed count, bids for Nexmark.
    pub events: u64,
    /// Nexmark seed.
    pub seed: u64,
    /// Nexmark event-time rate (events per event-time second).
    pub events_per_second: u64,
    /// Records per second each source subtask emits at most (wall-clock); `None`: as fast as it can.
    pub rate_limit: Option<u64>,
    /// Records per second each sink subtask accepts at most: a throttled sink behind a rebalance
    /// (so that its backpressure crosses a network edge). `None`: as fast as it can.
    pub sink_rate_limit: Option<u64>,
}

impl Default for JobArgs {
    fn default() -> Self {
        Self {
            events: 10_000_000,
            seed: 0,
            events_per_second: NexmarkConfig::default().events_per_second,
            rate_limit: None,
            sink_rate_limit: None,
        }
    }
}

/// Where a built-in job's results go.
#[derive(Debug, Clone)]
pub enum JobOutput {
    Print,
    Discard,
    Collect(CollectSink),
    Checksum(ChecksumSink),
    /// Exactly-once: CSV files committed on checkpoints.
    ExactlyOnce(ExactlyOnceFileSink),
}

/// The checksum sink matching a job's Flink peer.
pub fn checksum_for(job: &str) -> Result<ChecksumSink> {
    Ok(match canonical(job)? {
        "windowed-count" => ChecksumSink::new(&["key", "window_end", "n"], RowHash::WindowedCount),
        "running-count" => ChecksumSink::new(&["key", "n"], RowHash::Fold),
        "q0" | "q1" => {
            ChecksumSink::new(&["auction", "bidder", "price", "date_time"], RowHash::Fold)
        }
        "q2" => ChecksumSink::new(&["auction", "price"], RowHash::Fold),
        "q5" => ChecksumSink::new(&["auction", "window_end", "n"], RowHash::Fold),
        "auction-stats" => ChecksumSink::new(
            &["auction", "window_start", "n", "max_price", "seller"],
            RowHash::Fold,
        ),
        _ => ChecksumSink::new(&["auction", "price", "bidder", "window_end"], RowHash::Fold),
    })
}

fn canonical(job: &str) -> Result<&'static str> {
    Ok(match job {
        "hot-items" | "q5" => "q5",
        other => JOBS
            .iter()
            .map(|(name, _)| *name)
            .find(|name| *name == other)
            .ok_or_else(|| {
                let known: Vec<&str> = JOBS.iter().map(|(n, _)| *n).collect();
                Error::plan(
                    "job",
                    format!("unknown job '{other}' (known: {})", known.join(", ")),
                )
            })?,
    })
}

/// Adds the job `name` to `env`, writing its results to `output`.
pub fn build(env: &StreamEnv, name: &str, args: &JobArgs, output: &JobOutput) -> Result<()> {
    let result = match canonical(name)? {
        "windowed-count" => windowed_count(env, args),
        "running-count" => running_count(env, args),
        "q0" => bids(env, args).name("q0"),
        "q1" => q1(env, args),
        "q2" => q2(env, args),
        "q5" => q5(env, args),
        "auction-stats" => auction_stats(env, args),
        _ => q7(env, args),
    };
    let result = match args.sink_rate_limit {
        Some(rate) => {
            let schema = result.schema().clone();
            let per_row = std::time::Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            result
                .rebalance()
                .map_batches("throttle", schema, move |batch| {
                    std::thread::sleep(per_row * batch.num_rows() as u32);
                    Ok(batch)
                })
        }
        None => result,
    };
    let sink = match output {
        JobOutput::Print => result.sink(PrintSink),
        JobOutput::Discard => result.sink(DiscardSink::new()),
        JobOutput::Collect(c) => result.sink(c.clone()),
        JobOutput::Checksum(c) => result.sink(c.clone()),
        JobOutput::ExactlyOnce(s) => result.sink(s.clone()),
    };
    if canonical(name)? == "auction-stats" {
        // Stable uids: its state must survive restarts of changed builds.
        sink.uid("sink");
    }
    Ok(())
}

fn nexmark_config(args: &JobArgs) -> NexmarkConfig {
    NexmarkConfig {
        seed: args.seed,
        events_per_second: args.events_per_second,
        ..NexmarkConfig::default()
    }
}

fn bid_source(args: &JobArgs) -> NexmarkSource {
    let source = NexmarkSource::bids(nexmark_config(args), Some(args.events));
    match args.rate_limit {
        Some(rate) => source.with_rate_limit(rate),
        None => source,
    }
}

/// Every bid, all columns, with event time from `date_time`.
fn bids(env: &StreamEnv, args: &JobArgs) -> DataStream {
    env.from_source(
        bid_source(args),
        Some(WatermarkStrategy::ascending("date_time")),
    )
}

/// Per auction and 10 s tumbling window, the number of bids and the highest price, joined in the
/// same window with the auction (its seller and time). The auctions are a tenth of the bids, at a
/// fifteenth of the rate limit (the generator's ratio), so both sides advance together.
fn auction_stats(env: &StreamEnv, args: &JobArgs) -> DataStream {
    let window = || WindowAssigner::tumbling(Duration::from_secs(10));
    let counts = bids(env, args)
        .uid("bids")
        .select(&["auction", "price", "date_time"])
        .key_by(&["auction"])
        .window(window())
        .aggregate(&[Agg::count("n"), Agg::max("price", "max_price")])
        .uid("bids-per-auction");
    let mut auctions = NexmarkSource::auctions(nexmark_config(args), Some(args.events / 10));
    if let Some(rate) = args.rate_limit {
        auctions = auctions.with_rate_limit((rate / 15).max(1));
    }
    let auctions = env
        .from_source(auctions, Some(WatermarkStrategy::ascending("date_time")))
        .uid("auctions")
        .select(&["id", "seller", "date_time"]);
    counts
        .join(&auctions)
        .where_key(&["auction"])
        .equal_to(&["id"])
        .window(window())
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
        ])
}

fn windowed_count(env: &StreamEnv, args: &JobArgs) -> DataStream {
    env.from_source(
        KeyedEvents::new(args.events),
        Some(WatermarkStrategy::ascending("ts")),
    )
    .key_by(&["key"])
    .window(WindowAssigner::tumbling(Duration::from_secs(1)))
    .aggregate(&[Agg::count("n")])
}

/// A running count per key with as many keys as events: every record adds state, so the state grows
/// with the input while each checkpoint interval changes only what its records touched (the
/// benchmark of incremental checkpoints).
fn running_count(env: &StreamEnv, args: &JobArgs) -> DataStream {
    env.from_source(
        KeyedEvents::new(args.events).with_keys(args.events.max(1) * 1000),
        None,
    )
    .key_by(&["key"])
    .aggregate(&[Agg::count("n")])
}

fn q1(env: &StreamEnv, args: &JobArgs) -> DataStream {
    let input = bids(env, args);
    let schema = input.schema().clone();
    let price = schema.index_of("price").unwrap_or(2);
    input.map_batches("price in euros", schema, move |batch| {
        // price * 908 / 1000 in integer arithmetic, exactly as the Flink peer.
        let dollars = batch.column(price);
        let euros = div(
            &mul(dollars, &Int64Array::new_scalar(908))?,
            &Int64Array::new_scalar(1000),
        )?;
        let mut columns = batch.columns().to_vec();
        columns[price] = euros;
        Ok(RecordBatch::try_new(batch.schema(), columns)?)
    })
}

fn q2(env: &StreamEnv, args: &JobArgs) -> DataStream {
    bids(env, args)
        .filter_batches("auction % 123 = 0", |batch| {
            let auction = batch
                .column_by_name("auction")
                .ok_or_else(|| Error::user("no auction column"))?;
            let remainder = rem(auction, &Int64Array::new_scalar(123))?;
            Ok(eq(&remainder, &Int64Array::new_scalar(0))?)
        })
        .select(&["auction", "price"])
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// Per window: the rows whose `field` equals the window's largest, projected to `out` columns.
struct KeepMax {
    field: &'static str,
    columns: Vec<&'static str>,
    with_window_end: bool,
}

impl WindowFunction for KeepMax {
    fn apply(
        &self,
        _key: &Row,
        window: TimeWindow,
        elements: &RecordBatch,
        out: &mut Vec<Row>,
    ) -> Result<()> {
        let schema = elements.schema();
        let at = |name: &str| {
            schema
                .index_of(name)
                .map_err(|_| Error::user(format!("no column {name}")))
        };
        let values = cast(elements.column(at(self.field)?), &DataType::Int64)?;
        let values = values.as_primitive::<Int64Type>();
        let Some(max) = arrow::compute::max(values) else {
            return Ok(());
        };
        let keep = eq(values, &Int64Array::new_scalar(max))?;
        let kept = filter_record_batch(elements, &keep)?;
        let indices: Vec<usize> = self.columns.iter().map(|c| at(c)).collect::<Result<_>>()?;
        for row in rows_of(&kept.project(&indices)?)? {
            let mut row = row;
            if self.with_window_end {
                row.push(Value::Int(window.end));
            }
            out.push(row);
        }
        Ok(())
    }
}

fn q5(env: &StreamEnv, args: &JobArgs) -> DataStream {
    let counts = bids(env, args)
        .select(&["auction", "date_time"])
        .key_by(&["auction"])
        .window(WindowAssigner::sliding(
            Duration::from_secs(10),
            Duration::from_secs(2),
        ))
        .aggregate(&[Agg::count("n")]);
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("window_end", ts_type(), false),
        Field::new("n", DataType::Int64, false),
    ]));
    counts
        .key_by(&["window_end"])
        .window(WindowAssigner::tumbling(Duration::from_secs(2)))
        .process(
            "hottest auctions",
            schema,
            KeepMax {
                field: "n",
                columns: vec!["auction", "window_end", "n"],
                with_window_end: false,
            },
        )
}

fn q7(env: &StreamEnv, args: &JobArgs) -> DataStream {
    let per_auction: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("window_end", ts_type(), false),
    ]));
    bids(env, args)
        .select(&["auction", "bidder", "price", "date_time"])
        .key_by(&["auction"])
        .window(WindowAssigner::tumbling(Duration::from_secs(10)))
        .process(
            "highest bids of the auction",
            per_auction.clone(),
            KeepMax {
                field: "price",
                columns: vec!["auction", "price", "bidder"],
                with_window_end: true,
            },
        )
        .key_by(&["window_end"])
        .window(WindowAssigner::tumbling(Duration::from_secs(10)))
        .process(
            "highest bids of the window",
            per_auction,
            KeepMax {
                field: "price",
                columns: vec!["auction", "price", "bidder", "window_end"],
                with_window_end: false,
            },
        )
}
