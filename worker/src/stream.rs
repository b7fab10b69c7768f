//! The DataStream API: builds a [`LogicalGraph`] the way Flink's `StreamExecutionEnvironment` and
//! `DataStream` do: `env.from_source(..).map(..).key_by(..).window(..).aggregate(..).sink(..)`.
//!
//! Building never fails half-way: a mistake (an unknown field, a key of a type that cannot be a key,
//! an event-time window on a stream without watermarks) is recorded with the operator's name and
//! reported by [`StreamEnv::build`] or [`StreamEnv::execute`] before anything runs.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::BooleanArray;
use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use strom_api::{EngineConfig, ErrorPolicy};

use crate::connectors::{SinkBuilder, SourceBuilder, dead_letter};
use crate::error::{Error, Result};
use crate::keys::{KeySpec, field_index};
use crate::operator::Operator;
use crate::operators::aggregate::{self, Agg};
use crate::operators::basic::{Filter, FlatMapFn, FlatMapRows, Identity, MapBatches, Project};
use crate::operators::rolling::{ReduceFn, RollingAggregate, RollingReduce, aggregate_schema};
use crate::operators::watermarks::WatermarkAssigner;
use crate::operators::window::{
    Trigger, WindowAssigner, WindowContents, WindowFunction, WindowOperator, WindowSpec,
};
use crate::plan::{
    LogicalEdge, LogicalGraph, LogicalNode, NodeId, NodeKind, OperatorFactory, Partitioning,
    TimeAttr,
};
use crate::row::Row;
use crate::time::{TimeDomain, WatermarkStrategy, millis};

pub(crate) struct Builder {
    pub(crate) name: String,
    pub(crate) config: EngineConfig,
    pub(crate) nodes: Vec<LogicalNode>,
    pub(crate) edges: Vec<LogicalEdge>,
    pub(crate) errors: Vec<Error>,
    pub(crate) dead_letter_consumers: usize,
}

/// Where a job is put together; the entry point of the DataStream API.
#[derive(Clone)]
pub struct StreamEnv {
    pub(crate) inner: Rc<RefCell<Builder>>,
}

impl std::fmt::Debug for StreamEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamEnv")
            .field("name", &self.inner.borrow().name)
            .finish()
    }
}

fn empty_schema() -> SchemaRef {
    Arc::new(Schema::empty())
}

impl StreamEnv {
    /// A new job named `name` with `config`.
    pub fn new(name: &str, config: EngineConfig) -> Self {
        Self {
            inner: Rc::new(RefCell::new(Builder {
                name: name.into(),
                config,
                nodes: Vec::new(),
                edges: Vec::new(),
                errors: Vec::new(),
                dead_letter_consumers: 0,
            })),
        }
    }

    /// The job's engine configuration.
    pub fn config(&self) -> EngineConfig {
        self.inner.borrow().config.clone()
    }

    pub(crate) fn error(&self, error: Error) {
        self.inner.borrow_mut().errors.push(error);
    }

    pub(crate) fn add_node(
        &self,
        name: String,
        parallelism: u32,
        kind: NodeKind,
        schema: SchemaRef,
        side_outputs: Vec<(String, SchemaRef)>,
    ) -> NodeId {
        let mut b = self.inner.borrow_mut();
        let id = b.nodes.len();
        let uid = format!("{}-{id}", name.split(['(', ' ']).next().unwrap_or("op"));
        b.nodes.push(LogicalNode {
            id,
            name,
            uid,
            parallelism,
            kind,
            schema,
            side_outputs,
            chainable: true,
        });
        id
    }

    pub(crate) fn add_edge(
        &self,
        from: &DataStream,
        to: NodeId,
        to_input: usize,
        partitioning: Partitioning,
    ) {
        self.inner.borrow_mut().edges.push(LogicalEdge {
            from: from.node,
            from_port: from.port,
            to,
            to_input,
            partitioning,
        });
    }

    /// Adds a source. `watermarks`, if given, derives event time and watermarks from one of its
    /// columns in each source subtask (Flink's `fromSource(source, watermarkStrategy, name)`).
    pub fn from_source(
        &self,
        source: impl SourceBuilder,
        watermarks: Option<WatermarkStrategy>,
    ) -> DataStream {
        let name = source.name();
        let schema = source.schema();
        let parallelism = source
            .max_parallelism()
            .map_or(self.config().parallelism, |m| {
                m.min(self.config().parallelism)
            });
        let time = match &watermarks {
            Some(w) => match check_time_column(&name, &schema, &w.column) {
                Ok(()) => Some(TimeAttr {
                    column: w.column.clone(),
                    offset: 0,
                }),
                Err(e) => {
                    self.error(e);
                    None
                }
            },
            None => None,
        };
        let kind = NodeKind::Source {
            factory: source.factory(),
            watermarks,
        };
        let node = self.add_node(
            name,
            parallelism,
            kind,
            schema.clone(),
            vec![(dead_letter::TAG.into(), dead_letter::schema())],
        );
        DataStream {
            env: self.clone(),
            node,
            port: 0,
            schema,
            time,
            partitioning: Partitioning::Forward,
        }
    }

    /// The records every source of the job could not read, when the error policy is
    /// [`ErrorPolicy::DeadLetter`]: connect it to a sink. Call it after adding the sources.
    pub fn dead_letters(&self) -> DataStream {
        let sources: Vec<DataStream> = {
            let b = self.inner.borrow();
            b.nodes
                .iter()
                .filter(|n| matches!(n.kind, NodeKind::Source { .. }))
                .map(|n| DataStream {
                    env: self.clone(),
                    node: n.id,
                    port: dead_letter::PORT,
                    schema: dead_letter::schema(),
                    time: None,
                    partitioning: Partitioning::Rebalance,
                })
                .collect()
        };
        self.inner.borrow_mut().dead_letter_consumers += 1;
        let parallelism = self.config().parallelism;
        let node = self.add_node(
            "dead-letters".into(),
            parallelism,
            NodeKind::Operator {
                factory: Arc::new(|_| Ok(Box::new(Identity))),
                inputs: 1,
            },
            dead_letter::schema(),
            Vec::new(),
        );
        for s in &sources {
            self.add_edge(s, node, 0, Partitioning::Rebalance);
        }
        DataStream {
            env: self.clone(),
            node,
            port: 0,
            schema: dead_letter::schema(),
            time: None,
            partitioning: Partitioning::Forward,
        }
    }

    /// The finished logical graph, or the first mistake found while building it.
    pub fn build(&self) -> Result<LogicalGraph> {
        let mut b = self.inner.borrow_mut();
        if let Some(e) = b.errors.drain(..).next() {
            return Err(e);
        }
        if b.config.error_policy == ErrorPolicy::DeadLetter && b.dead_letter_consumers == 0 {
            return Err(Error::plan(
                "job",
                "the error policy is dead-letter but no sink consumes env.dead_letters()",
            ));
        }
        Ok(LogicalGraph {
            name: b.name.clone(),
            config: b.config.clone(),
            nodes: b.nodes.clone(),
            edges: b.edges.clone(),
        })
    }

    /// Builds, runs to completion on the embedded runtime, and reports the first failure.
    pub fn execute(&self) -> Result<()> {
        crate::runtime::start(&self.build()?)?.join()
    }
}

fn check_time_column(operator: &str, schema: &SchemaRef, column: &str) -> Result<()> {
    let i = field_index(operator, schema, column)?;
    match schema.field(i).data_type() {
        DataType::Int64 | DataType::Timestamp(TimeUnit::Millisecond, _) => Ok(()),
        other => Err(Error::plan(
            operator,
            format!(
                "event-time field '{column}' has type {other}; it must be Int64 epoch millis or Timestamp(ms)"
            ),
        )),
    }
}

/// A stream of records with a schema.
#[derive(Clone)]
pub struct DataStream {
    pub(crate) env: StreamEnv,
    pub(crate) node: NodeId,
    pub(crate) port: usize,
    pub(crate) schema: SchemaRef,
    /// Event time and watermarks, if the stream has them.
    pub(crate) time: Option<TimeAttr>,
    /// How the next operator is fed from this stream.
    pub(crate) partitioning: Partitioning,
}

impl std::fmt::Debug for DataStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStream")
            .field("node", &self.node)
            .field("schema", &self.schema)
            .finish()
    }
}

impl DataStream {
    /// The records' schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The environment this stream belongs to.
    pub fn env(&self) -> &StreamEnv {
        &self.env
    }

    /// The event-time column, if the stream has event time and watermarks.
    pub fn time_column(&self) -> Option<&str> {
        self.time.as_ref().map(|t| t.column.as_str())
    }

    pub(crate) fn parallelism(&self) -> u32 {
        self.env.inner.borrow().nodes[self.node].parallelism
    }

    pub(crate) fn node_name(&self) -> String {
        self.env.inner.borrow().nodes[self.node].name.clone()
    }

    /// Sets the parallelism of the operator that produces this stream.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        self.env.inner.borrow_mut().nodes[self.node].parallelism = parallelism;
        self
    }

    /// Sets the stable id of the operator that produces this stream (its state's identity).
    pub fn uid(self, uid: &str) -> Self {
        self.env.inner.borrow_mut().nodes[self.node].uid = uid.into();
        self
    }

    /// Renames the operator that produces this stream.
    pub fn name(self, name: &str) -> Self {
        self.env.inner.borrow_mut().nodes[self.node].name = name.into();
        self
    }

    /// Keeps the operator that produces this stream out of its upstream chain.
    pub fn disable_chaining(self) -> Self {
        self.env.inner.borrow_mut().nodes[self.node].chainable = false;
        self
    }

    /// Adds a one-input operator fed from this stream.
    pub(crate) fn then(
        &self,
        name: String,
        parallelism: u32,
        schema: SchemaRef,
        side_outputs: Vec<(String, SchemaRef)>,
        factory: OperatorFactory,
    ) -> NodeId {
        let node = self.env.add_node(
            name,
            parallelism,
            NodeKind::Operator { factory, inputs: 1 },
            schema,
            side_outputs,
        );
        self.env.add_edge(self, node, 0, self.partitioning.clone());
        node
    }

    pub(crate) fn derived(
        &self,
        node: NodeId,
        schema: SchemaRef,
        time: Option<TimeAttr>,
    ) -> DataStream {
        DataStream {
            env: self.env.clone(),
            node,
            port: 0,
            schema,
            time,
            partitioning: Partitioning::Forward,
        }
    }

    /// The time attribute carried over to `schema` if its column survives unchanged.
    fn time_in(&self, schema: &SchemaRef) -> Option<TimeAttr> {
        let t = self.time.as_ref()?;
        let old = self.schema.field_with_name(&t.column).ok()?;
        let new = schema.field_with_name(&t.column).ok()?;
        (old.data_type() == new.data_type()).then(|| t.clone())
    }

    /// A columnar map: `f` turns each batch into a batch of `schema`.
    pub fn map_batches(
        &self,
        name: &str,
        schema: SchemaRef,
        f: impl Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    ) -> DataStream {
        let f = Arc::new(f);
        let out = schema.clone();
        let node = self.then(
            format!("map({name})"),
            self.parallelism(),
            schema.clone(),
            Vec::new(),
            Arc::new(move |info| {
                Ok(Box::new(MapBatches {
                    info: info.clone(),
                    f: f.clone(),
                    schema: out.clone(),
                }) as Box<dyn Operator>)
            }),
        );
        self.derived(node, schema.clone(), self.time_in(&schema))
    }

    /// A row map: `f` turns each record into one record of `schema`.
    pub fn map(
        &self,
        name: &str,
        schema: SchemaRef,
        f: impl Fn(Row) -> Result<Row> + Send + Sync + 'static,
    ) -> DataStream {
        let f: FlatMapFn = Arc::new(move |row, out| {
            out.push(f(row)?);
            Ok(())
        });
        self.row_function(format!("map({name})"), schema, f)
    }

    /// A row flat map: `f` turns each record into any number of records of `schema`.
    pub fn flat_map(
        &self,
        name: &str,
        schema: SchemaRef,
        f: impl Fn(Row, &mut Vec<Row>) -> Result<()> + Send + Sync + 'static,
    ) -> DataStream {
        self.row_function(format!("flat_map({name})"), schema, Arc::new(f))
    }

    /// The operator behind `map` and `flat_map`, named `name`.
    fn row_function(&self, name: String, schema: SchemaRef, f: FlatMapFn) -> DataStream {
        let out = schema.clone();
        let node = self.then(
            name,
            self.parallelism(),
            schema.clone(),
            Vec::new(),
            Arc::new(move |info| {
                Ok(Box::new(FlatMapRows {
                    info: info.clone(),
                    f: f.clone(),
                    schema: out.clone(),
                }) as Box<dyn Operator>)
            }),
        );
        self.derived(node, schema.clone(), self.time_in(&schema))
    }

    /// Keeps the rows for which the columnar predicate is true.
    pub fn filter_batches(
        &self,
        name: &str,
        predicate: impl Fn(&RecordBatch) -> Result<BooleanArray> + Send + Sync + 'static,
    ) -> DataStream {
        let predicate = Arc::new(predicate);
        let node = self.then(
            format!("filter({name})"),
            self.parallelism(),
            self.schema.clone(),
            Vec::new(),
            Arc::new(move |info| {
                Ok(Box::new(Filter {
                    info: info.clone(),
                    predicate: predicate.clone(),
                }) as Box<dyn Operator>)
            }),
        );
        self.derived(node, self.schema.clone(), self.time.clone())
    }

    /// Keeps the records for which `predicate` is true.
    pub fn filter(
        &self,
        name: &str,
        predicate: impl Fn(&Row) -> bool + Send + Sync + 'static,
    ) -> DataStream {
        self.filter_batches(name, move |batch| {
            let rows = crate::row::rows_of(batch)?;
            Ok(rows.iter().map(|r| Some(predicate(r))).collect())
        })
    }

    /// Keeps the named fields, in this order.
    pub fn select(&self, fields: &[&str]) -> DataStream {
        let name = format!("select({})", fields.join(", "));
        let indices: Result<Vec<usize>> = fields
            .iter()
            .map(|f| field_index(&name, &self.schema, f))
            .collect();
        let indices = match indices {
            Ok(i) => i,
            Err(e) => {
                self.env.error(e);
                return self.clone();
            }
        };
        let schema = match self.schema.project(&indices) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                self.env.error(e.into());
                return self.clone();
            }
        };
        let node = self.then(
            name,
            self.parallelism(),
            schema.clone(),
            Vec::new(),
            Arc::new(move |_| {
                Ok(Box::new(Project {
                    indices: indices.clone(),
                }) as Box<dyn Operator>)
            }),
        );
        self.derived(node, schema.clone(), self.time_in(&schema))
    }

    /// Derives event time from `strategy.column` and generates watermarks here; upstream watermarks
    /// are replaced.
    pub fn assign_timestamps_and_watermarks(&self, strategy: WatermarkStrategy) -> DataStream {
        let name = format!("watermarks({})", strategy.column);
        if let Err(e) = check_time_column(&name, &self.schema, &strategy.column) {
            self.env.error(e);
            return self.clone();
        }
        let column = self.schema.index_of(&strategy.column).unwrap_or(0);
        let time = Some(TimeAttr {
            column: strategy.column.clone(),
            offset: 0,
        });
        let node = self.then(
            name,
            self.parallelism(),
            self.schema.clone(),
            Vec::new(),
            Arc::new(move |_| {
                Ok(Box::new(WatermarkAssigner::new(strategy.clone(), column)) as Box<dyn Operator>)
            }),
        );
        self.derived(node, self.schema.clone(), time)
    }

    /// Declares `column` as the event time of a stream whose source emits its own watermarks.
    pub fn with_event_time(&self, column: &str) -> DataStream {
        if let Err(e) = check_time_column(&self.node_name(), &self.schema, column) {
            self.env.error(e);
            return self.clone();
        }
        DataStream {
            time: Some(TimeAttr {
                column: column.into(),
                offset: 0,
            }),
            ..self.clone()
        }
    }

    /// The next operator receives whole batches round-robin.
    pub fn rebalance(&self) -> DataStream {
        DataStream {
            partitioning: Partitioning::Rebalance,
            ..self.clone()
        }
    }

    /// The next operator receives every batch in every subtask.
    pub fn broadcast(&self) -> DataStream {
        DataStream {
            partitioning: Partitioning::Broadcast,
            ..self.clone()
        }
    }

    /// Partitions by the named key fields.
    pub fn key_by(&self, fields: &[&str]) -> KeyedStream {
        let name = format!("key_by({})", fields.join(", "));
        let key = match KeySpec::resolve(&name, &self.schema, fields) {
            Ok(k) => k,
            Err(e) => {
                self.env.error(e);
                KeySpec {
                    names: Vec::new(),
                    indices: Vec::new(),
                }
            }
        };
        KeyedStream {
            stream: DataStream {
                partitioning: Partitioning::Hash(key.clone()),
                ..self.clone()
            },
            key,
        }
    }

    /// Merges streams of the same schema.
    pub fn union(&self, others: &[DataStream]) -> DataStream {
        let name = "union".to_owned();
        for other in others {
            if other.schema.fields() != self.schema.fields() {
                self.env.error(Error::plan(
                    &name,
                    format!("schemas differ: {:?} vs {:?}", self.schema, other.schema),
                ));
                return self.clone();
            }
        }
        let time = if others.iter().all(|o| o.time == self.time) {
            self.time.clone()
        } else {
            None
        };
        let node = self.env.add_node(
            name,
            self.parallelism(),
            NodeKind::Operator {
                factory: Arc::new(|_| Ok(Box::new(Identity) as Box<dyn Operator>)),
                inputs: 1,
            },
            self.schema.clone(),
            Vec::new(),
        );
        for s in std::iter::once(self).chain(others) {
            let partitioning = match &s.partitioning {
                Partitioning::Forward => Partitioning::Rebalance,
                p => p.clone(),
            };
            self.env.add_edge(s, node, 0, partitioning);
        }
        self.derived(node, self.schema.clone(), time)
    }

    /// The side output `tag` of the operator that produces this stream (e.g. late records).
    pub fn side_output(&self, tag: &str) -> DataStream {
        let found = {
            let b = self.env.inner.borrow();
            let node = &b.nodes[self.node];
            node.side_outputs
                .iter()
                .position(|(t, _)| t == tag)
                .map(|i| (i + 1, node.side_outputs[i].1.clone()))
        };
        match found {
            Some((port, schema)) => DataStream {
                env: self.env.clone(),
                node: self.node,
                port,
                time: self.time_in(&schema),
                schema,
                partitioning: Partitioning::Forward,
            },
            None => {
                self.env.error(Error::plan(
                    self.node_name(),
                    format!("no side output named '{tag}'"),
                ));
                self.clone()
            }
        }
    }

    /// Writes the stream to a sink.
    pub fn sink(&self, sink: impl SinkBuilder) -> DataStream {
        let name = sink.name();
        let parallelism = sink.parallelism().unwrap_or_else(|| self.parallelism());
        let factory = match sink.factory(&self.schema) {
            Ok(f) => f,
            Err(e) => {
                self.env.error(e);
                return self.clone();
            }
        };
        let node = self.then(name, parallelism, empty_schema(), Vec::new(), factory);
        self.derived(node, empty_schema(), None)
    }
}

/// A stream partitioned by key.
#[derive(Clone, Debug)]
pub struct KeyedStream {
    pub(crate) stream: DataStream,
    pub(crate) key: KeySpec,
}

impl KeyedStream {
    /// Adds a one-input operator node at this stream's parallelism, its input hash-partitioned
    /// by the key, and returns its output (`time`: the output's event time, if it has one).
    pub(crate) fn keyed_operator(
        &self,
        name: &str,
        factory: OperatorFactory,
        output: SchemaRef,
        time: Option<TimeAttr>,
    ) -> DataStream {
        let stream = &self.stream;
        let node = stream.env.add_node(
            name.to_owned(),
            stream.parallelism(),
            NodeKind::Operator { factory, inputs: 1 },
            output.clone(),
            Vec::new(),
        );
        stream
            .env
            .add_edge(stream, node, 0, Partitioning::Hash(self.key.clone()));
        stream.derived(node, output, time)
    }

    /// The underlying stream.
    pub fn stream(&self) -> &DataStream {
        &self.stream
    }

    /// The key.
    pub fn key(&self) -> &KeySpec {
        &self.key
    }

    /// Running aggregates per key, emitted for every record: key fields, then the aggregates.
    pub fn aggregate(&self, aggs: &[Agg]) -> DataStream {
        let s = &self.stream;
        let name = format!(
            "rolling({})",
            aggs.iter()
                .map(Agg::describe)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let bound = match aggregate::bind(&name, &s.schema, aggs) {
            Ok(b) => b,
            Err(e) => {
                s.env.error(e);
                return s.clone();
            }
        };
        let schema = aggregate_schema(&s.schema, &self.key, &bound);
        let (key, out) = (self.key.clone(), schema.clone());
        let node = s.then(
            name,
            s.parallelism(),
            schema.clone(),
            Vec::new(),
            Arc::new(move |info| {
                Ok(Box::new(RollingAggregate::new(
                    key.clone(),
                    bound.clone(),
                    out.clone(),
                    crate::state::Backend::for_subtask(info)?,
                )) as Box<dyn Operator>)
            }),
        );
        s.derived(node, schema, None)
    }

    /// A running reduce per key: `f(running, next)` gives the new running record, which is emitted.
    pub fn reduce(
        &self,
        name: &str,
        f: impl Fn(&Row, &Row) -> Result<Row> + Send + Sync + 'static,
    ) -> DataStream {
        let s = &self.stream;
        let f: ReduceFn = Arc::new(f);
        let key = self.key.clone();
        let node = s.then(
            format!("reduce({name})"),
            s.parallelism(),
            s.schema.clone(),
            Vec::new(),
            Arc::new(move |info| {
                Ok(Box::new(RollingReduce::new(
                    info.clone(),
                    key.clone(),
                    f.clone(),
                    crate::state::Backend::for_subtask(info)?,
                )) as Box<dyn Operator>)
            }),
        );
        s.derived(node, s.schema.clone(), s.time.clone())
    }

    /// Groups each key's records into windows.
    pub fn window(&self, assigner: WindowAssigner) -> WindowedStream {
        WindowedStream {
            keyed: self.clone(),
            assigner,
            trigger: Trigger::Default,
            allowed_lateness: 0,
            late_tag: None,
        }
    }

    /// Windows of `size` records per key (Flink's `countWindow`): global windows with a purging
    /// count trigger.
    pub fn count_window(&self, size: u64) -> WindowedStream {
        self.window(WindowAssigner::global())
            .trigger(Trigger::Purging(Box::new(Trigger::Count(size))))
    }
}

/// A keyed stream grouped into windows; finished by an aggregate or a window function.
#[derive(Clone, Debug)]
pub struct WindowedStream {
    keyed: KeyedStream,
    assigner: WindowAssigner,
    trigger: Trigger,
    allowed_lateness: i64,
    late_tag: Option<String>,
}

impl WindowedStream {
    /// Replaces the assigner's default trigger.
    pub fn trigger(mut self, trigger: Trigger) -> Self {
        self.trigger = trigger;
        self
    }

    /// Keeps each window's state this long after its end, updating its result for late records.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = millis(lateness);
        self
    }

    /// Sends records too late for every window to the side output `tag`.
    pub fn side_output_late_data(mut self, tag: &str) -> Self {
        self.late_tag = Some(tag.into());
        self
    }

    /// Incremental aggregates; the output has the key fields, `window_start`, `window_end` and one
    /// column per aggregate, and its event time is `window_end - 1`.
    pub fn aggregate(&self, aggs: &[Agg]) -> DataStream {
        let s = &self.keyed.stream;
        let name = format!(
            "window({}; {})",
            self.assigner.describe(),
            aggs.iter()
                .map(Agg::describe)
                .collect::<Vec<_>>()
                .join(", ")
        );
        match aggregate::bind(&name, &s.schema, aggs) {
            Ok(bound) => self.finish(name, WindowContents::Aggregate(bound)),
            Err(e) => {
                s.env.error(e);
                s.clone()
            }
        }
    }

    /// A full-window function producing rows of `schema`.
    pub fn process(
        &self,
        name: &str,
        schema: SchemaRef,
        function: impl WindowFunction + 'static,
    ) -> DataStream {
        let name = format!("window({}; {name})", self.assigner.describe());
        self.finish(name, WindowContents::Process(Arc::new(function), schema))
    }

    fn finish(&self, name: String, contents: WindowContents) -> DataStream {
        let s = &self.keyed.stream;
        if let Err(e) = self.assigner.validate(&name) {
            s.env.error(e);
            return s.clone();
        }
        let time = match (&s.time, self.assigner.domain()) {
            (Some(t), _) => Some((s.schema.index_of(&t.column).unwrap_or(0), t.offset)),
            (None, Some(TimeDomain::EventTime)) => {
                s.env.error(Error::plan(
                    &name,
                    "event-time window on a stream without watermarks: give the source a watermark \
                     strategy or call assign_timestamps_and_watermarks first",
                ));
                return s.clone();
            }
            (None, _) => None,
        };
        if self.late_tag.is_some() && self.assigner.domain() != Some(TimeDomain::EventTime) {
            s.env.error(Error::plan(
                &name,
                "late data exists only for event-time windows",
            ));
            return s.clone();
        }
        let spec = WindowSpec {
            assigner: self.assigner.clone(),
            trigger: self.trigger.clone(),
            allowed_lateness: self.allowed_lateness,
            contents,
            time,
            key: self.keyed.key.clone(),
            input_schema: s.schema.clone(),
            late_side_output: self.late_tag.is_some(),
        };
        let schema = match spec.output_schema(&name) {
            Ok(schema) => schema,
            Err(e) => {
                s.env.error(e);
                return s.clone();
            }
        };
        let side = self
            .late_tag
            .iter()
            .map(|t| (t.clone(), s.schema.clone()))
            .collect();
        let node = s.then(
            name,
            s.parallelism(),
            schema.clone(),
            side,
            Arc::new(move |info| {
                Ok(Box::new(WindowOperator::new(
                    info.clone(),
                    spec.clone(),
                    crate::state::Backend::for_subtask(info)?,
                )?) as Box<dyn Operator>)
            }),
        );
        let time = schema
            .field_with_name("window_end")
            .ok()
            .filter(|f| matches!(f.data_type(), DataType::Timestamp(..) | DataType::Int64))
            .filter(|_| s.time.is_some())
            .map(|_| TimeAttr {
                column: "window_end".into(),
                offset: -1,
            });
        s.derived(node, schema, time)
    }
}
