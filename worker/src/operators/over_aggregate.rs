//! Flink SQL's OVER aggregation on event time: `agg(x) OVER (PARTITION BY k ORDER BY ts <frame>)`
//! adds to every row the aggregates over the rows of its key that precede it in event time. Rows
//! wait in keyed state until the watermark passes their time, and then go out in time order, each
//! with its frame's aggregates, as Flink's row-time OVER functions do; the result is insert-only
//! and keeps the input's event time. A row at or behind the watermark when it arrives is late and
//! dropped, as in Flink.
//!
//! Frames ([`OverFrame`]): `ROWS BETWEEN n PRECEDING AND CURRENT ROW` (the row and the `n` rows
//! before it, rows of equal time in arrival order), `RANGE BETWEEN d PRECEDING AND CURRENT ROW`
//! (the rows whose time is within `d` before the row's, and every row of the same time: rows of
//! equal time share their result), and either with `UNBOUNDED PRECEDING`. Accumulators are
//! the group aggregation's ([`Group`]): a row leaving a bounded frame is retracted from them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::group_aggregate::{ArgValue, Group, GroupAgg, ValueKind, args_of};
use super::join::JoinedRows;
use crate::checkpoint::state::{RestoredState, StateWriter};
use crate::error::{Error, Result};
use crate::keys::{KeyRows, KeySpec};
use crate::operator::{Operator, Output, SubtaskInfo};
use crate::plan::OperatorFactory;
use crate::row::{self, Value};
use crate::state::{KeyedStateBackend, Namespace, ValueState};
use crate::stream::{DataStream, KeyedStream};
use crate::time::{TimeDomain, Timestamp, event_time_values};
use crate::timers::TimerService;

/// Which preceding rows an OVER aggregate covers, up to the current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverFrame {
    /// The current row and this many rows before it (`None`: all of them).
    Rows(Option<u64>),
    /// The rows at most this many milliseconds older than the current row (`None`: all), and
    /// the rows of the same time.
    Range(Option<i64>),
}

/// The complete description of one OVER aggregation.
#[derive(Debug, Clone)]
pub struct OverSpec {
    pub key: KeySpec,
    /// The event-time column.
    pub time: usize,
    pub frame: OverFrame,
    /// Aggregates over `Int64`, `Float64` or (MIN, MAX) `Utf8` columns of the input.
    pub aggs: Vec<GroupAgg>,
    /// The input's columns, then one per aggregate (`Int64`, `Float64` or `Utf8`).
    pub output: SchemaRef,
}

/// A row waiting for the watermark or inside a bounded frame: its time, its encoded columns and
/// its aggregates' argument values.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    time: Timestamp,
    row: Vec<u8>,
    args: Vec<Option<ArgValue>>,
}

/// A key's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyOver {
    /// Rows the watermark has not passed, by time, in arrival order.
    pending: BTreeMap<Timestamp, Vec<Kept>>,
    /// Rows of a bounded frame that later rows may still cover, oldest first.
    frame: VecDeque<Kept>,
    group: Group,
}

/// One subtask of an OVER aggregation.
pub struct OverAggregateOperator<S: KeyedStateBackend> {
    info: SubtaskInfo,
    spec: OverSpec,
    kinds: Vec<ValueKind>,
    result_types: Vec<DataType>,
    state: S,
    overs: ValueState<KeyOver>,
    timers: TimerService,
    watermark: Timestamp,
    keys: KeyRows,
    out_rows: JoinedRows,
    suffix: Vec<u8>,
    late: u64,
}

impl<S: KeyedStateBackend> OverAggregateOperator<S> {
    /// A subtask of `spec` keeping its rows and accumulators in `state`.
    pub fn new(info: SubtaskInfo, spec: OverSpec, mut state: S) -> Result<Self> {
        let first = spec.output.fields().len() - spec.aggs.len();
        let result_types: Vec<DataType> = spec.output.fields()[first..]
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let kinds = spec
            .aggs
            .iter()
            .zip(&result_types)
            .map(|(a, t)| {
                if a.text {
                    ValueKind::Text
                } else {
                    ValueKind::of(t)
                }
            })
            .collect();
        Ok(Self {
            overs: state.value_state("over-aggregate"),
            info,
            spec,
            kinds,
            result_types,
            state,
            timers: TimerService::default(),
            watermark: Timestamp::MIN,
            keys: KeyRows::default(),
            out_rows: JoinedRows::default(),
            suffix: Vec::new(),
            late: 0,
        })
    }

    /// Rows dropped because they arrived behind the watermark.
    pub fn late_rows(&self) -> u64 {
        self.late
    }

    /// Emits the key's rows at `time`, each with its frame's aggregates.
    fn fire(&mut self, key: &[u8], time: Timestamp) -> Result<()> {
        let (aggs, frame) = (&self.spec.aggs, self.spec.frame);
        let mut fired: Vec<(Vec<u8>, Vec<Value>)> = Vec::new();
        self.state
            .update(&self.overs, key, &Namespace::Global, |slot| {
                let Some(over) = slot.as_mut() else {
                    return;
                };
                let Some(rows) = over.pending.remove(&time) else {
                    return;
                };
                match frame {
                    OverFrame::Rows(preceding) => {
                        for kept in rows {
                            over.group.apply_values(aggs, &kept.args, 1, true);
                            if let Some(n) = preceding {
                                over.frame.push_back(kept.clone());
                                while over.frame.len() as u64 > n + 1 {
                                    if let Some(old) = over.frame.pop_front() {
                                        over.group.apply_values(aggs, &old.args, -1, true);
                                    }
                                }
                            }
                            fired.push((kept.row, over.group.results(aggs)));
                        }
                    }
                    OverFrame::Range(preceding) => {
                        for kept in &rows {
                            over.group.apply_values(aggs, &kept.args, 1, true);
                        }
                        if let Some(d) = preceding {
                            over.frame.extend(rows.iter().cloned());
                            while over.frame.front().is_some_and(|f| f.time < time - d) {
                                if let Some(old) = over.frame.pop_front() {
                                    over.group.apply_values(aggs, &old.args, -1, true);
                                }
                            }
                        }
                        let results = over.group.results(aggs);
                        fired.extend(rows.into_iter().map(|k| (k.row, results.clone())));
                    }
                }
            })?;
        for (row, results) in fired {
            self.suffix.clear();
            for (v, t) in results.iter().zip(&self.result_types) {
                row::encode_owned(v, t, &mut self.suffix)?;
            }
            self.out_rows.push(&row, &self.suffix);
        }
        Ok(())
    }
}

impl<S: KeyedStateBackend> Operator for OverAggregateOperator<S> {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let times = event_time_values(batch.column(self.spec.time).as_ref())
            .map_err(|e| self.info.fail(e))?
            .to_vec();
        let mut keys = std::mem::take(&mut self.keys);
        keys.encode(&self.spec.key, &batch)?;
        let args = args_of(&self.spec.aggs, &batch, &self.info)?;
        let (aggs, kinds) = (&self.spec.aggs, &self.kinds);
        for (r, &time) in times.iter().enumerate() {
            if time <= self.watermark {
                self.late += 1;
                continue;
            }
            let mut encoded = Vec::new();
            row::encode_row(batch.columns(), r, &mut encoded)?;
            let kept = Kept {
                time,
                row: encoded,
                args: args.iter().map(|a| a.at(r).map(ArgValue::from)).collect(),
            };
            let key = keys.get(r);
            self.state
                .update(&self.overs, key, &Namespace::Global, |slot| {
                    let over = slot.get_or_insert_with(|| KeyOver {
                        pending: BTreeMap::new(),
                        frame: VecDeque::new(),
                        group: Group::new(aggs, kinds),
                    });
                    over.pending.entry(time).or_default().push(kept);
                })?;
            self.timers
                .register(TimeDomain::EventTime, time, key, Namespace::Global);
        }
        self.keys = keys;
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        while let Some(timer) = self.timers.pop_due(TimeDomain::EventTime, self.watermark) {
            self.fire(&timer.key, timer.time)?;
        }
        self.out_rows.emit(&self.spec.output, &self.info, out)
    }

    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        self.state.snapshot(checkpoint_id, out)?;
        self.timers.snapshot(self.info.max_parallelism, out)
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        self.state.restore(state)?;
        self.timers.restore(state)
    }
}

impl KeyedStream {
    /// An OVER aggregation of this stream by its key, ordered by its event time (see the module
    /// docs): the output is this stream's columns and one column per aggregate (of
    /// `result_types[i]`: `Int64`, `Float64` or `Utf8`), insert-only, with this stream's event
    /// time.
    pub fn over_aggregate(
        &self,
        frame: OverFrame,
        aggs: Vec<GroupAgg>,
        result_types: &[DataType],
    ) -> DataStream {
        let stream = &self.stream;
        let name = "over_aggregate".to_owned();
        let mut fields: Vec<Field> = stream
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for (i, t) in result_types.iter().enumerate() {
            fields.push(Field::new(format!("__over{i}"), t.clone(), true));
        }
        let output: SchemaRef = Arc::new(Schema::new(fields));
        let Some(time) = stream
            .time
            .as_ref()
            .and_then(|t| stream.schema.index_of(&t.column).ok())
        else {
            stream.env.error(Error::plan(
                &name,
                "an OVER aggregation is ordered by event time, and its input has none",
            ));
            return stream.clone();
        };
        if aggs.len() != result_types.len() {
            stream
                .env
                .error(Error::plan(&name, "an aggregate's result type is missing"));
            return stream.clone();
        }
        let spec = OverSpec {
            key: self.key.clone(),
            time,
            frame,
            aggs,
            output: output.clone(),
        };
        let factory: OperatorFactory = Arc::new(move |info| {
            Ok(Box::new(OverAggregateOperator::new(
                info.clone(),
                spec.clone(),
                crate::state::Backend::for_subtask(info)?,
            )?) as Box<dyn Operator>)
        });
        self.keyed_operator(&name, factory, output, stream.time.clone())
    }
}
