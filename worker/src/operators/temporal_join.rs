//! The event-time temporal join of Flink SQL (`JOIN rates FOR SYSTEM_TIME AS OF o.order_time`):
//! each record of the left (probe) stream joins the version of its key that the right (versioned)
//! stream held *at the left record's time*: the right record of that key with the latest time at
//! or before it. Later versions do not change a result already emitted, so the output is
//! insert-only, and it keeps the left record's time as its event time.
//!
//! Both inputs are keyed by the join key. A left record waits in keyed state until the watermark
//! (the smaller of the two inputs') reaches its time: only then are all versions up to that time
//! known. It is joined then, or, when its key had no version yet, dropped (inner join) or padded
//! with nulls (`LEFT JOIN`). Right records are versions, kept per key in arrival order and sorted by
//! time when a key is joined (on equal times the later arrival is the newer version). Once the
//! watermark passes a version's successor, no left record that is not late can see it, and it is
//! dropped: a key keeps the version valid at the watermark and the newer ones. Each left record,
//! and each version, registers an event-time timer of its key at its time, so that joining and
//! cleaning happen as the watermark passes them.
//!
//! Rows whose key has a null column never match (SQL's `=`): a left one goes out padded with
//! nulls at once in a `LEFT JOIN` and is dropped otherwise; a right one is dropped.

use std::sync::Arc;

use arrow::array::Array;
use arrow::record_batch::RecordBatch;

use super::join::{JoinInput, JoinedRows, add_join, event_time_of, join_schema, side_of};
use super::process::{carried_time, check_key_types, check_output_schema, event_times, same_env};
use crate::checkpoint::state::{RestoredState, StateWriter};
use crate::error::{Error, Result};
use crate::keys::KeyRows;
use crate::operator::{Operator, Output, SubtaskInfo};
use crate::plan::OperatorFactory;
use crate::row::{self, Value};
use crate::state::{KeyedStateBackend, ListState, Namespace};
use crate::stream::{DataStream, KeyedStream};
use crate::time::{MIN_WATERMARK, TimeDomain, Timestamp};
use crate::timers::TimerService;

/// The complete description of one temporal join.
#[derive(Debug, Clone)]
pub struct TemporalJoinSpec {
    /// Left (probe), right (versions).
    pub inputs: [JoinInput; 2],
    pub output: arrow::datatypes::SchemaRef,
    /// `LEFT JOIN`: a left record without a version goes out padded with nulls.
    pub outer: bool,
}

/// A left record or a version: its time and its row.
type Timed = (Timestamp, Vec<u8>);

/// One subtask of a temporal join.
pub struct TemporalJoinOperator<S: KeyedStateBackend> {
    info: SubtaskInfo,
    spec: TemporalJoinSpec,
    state: S,
    /// Per key: the left records waiting for the watermark, and the versions.
    rows: [ListState<Timed>; 2],
    timers: TimerService,
    watermark: Timestamp,
    keys: KeyRows,
    row_buf: Vec<u8>,
    joined: JoinedRows,
    /// A right row of nulls (`LEFT JOIN`).
    nulls: Vec<u8>,
}

impl<S: KeyedStateBackend> TemporalJoinOperator<S> {
    /// A subtask of `spec` keeping its records in `state`.
    pub fn new(info: SubtaskInfo, spec: TemporalJoinSpec, mut state: S) -> Result<Self> {
        let mut nulls = Vec::new();
        for f in spec.inputs[1].schema.fields() {
            row::encode_owned(&Value::Null, f.data_type(), &mut nulls)?;
        }
        Ok(Self {
            rows: [
                state.list_state("temporal-join-left"),
                state.list_state("temporal-join-versions"),
            ],
            info,
            spec,
            state,
            timers: TimerService::default(),
            watermark: MIN_WATERMARK,
            keys: KeyRows::default(),
            row_buf: Vec::new(),
            joined: JoinedRows::default(),
            nulls,
        })
    }

    /// The keyed state, for inspection in tests.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Joins `key`'s left records the watermark has reached, and drops the versions no record
    /// that is not late can see any more.
    fn fire(&mut self, key: &[u8]) -> Result<()> {
        let global = Namespace::Global;
        let watermark = self.watermark;
        let left = self.state.list_take(&self.rows[0], key, &global)?;
        let mut versions = self.state.list_take(&self.rows[1], key, &global)?;
        // Stable: of two versions at one time, the later arrival stays the newer.
        versions.sort_by_key(|(t, _)| *t);
        let (due, waiting): (Vec<Timed>, Vec<Timed>) =
            left.into_iter().partition(|(t, _)| *t <= watermark);
        for (t, row) in &due {
            let valid = versions.partition_point(|(v, _)| v <= t);
            match valid.checked_sub(1).map(|i| &versions[i].1) {
                Some(version) => self.joined.push(row, version),
                None if self.spec.outer => self.joined.push(row, &self.nulls),
                None => {}
            }
        }
        if !waiting.is_empty() {
            self.state.list_put(&self.rows[0], key, &global, waiting)?;
        }
        let valid_at_watermark = versions.partition_point(|(v, _)| *v <= watermark);
        versions.drain(..valid_at_watermark.saturating_sub(1));
        if !versions.is_empty() {
            self.state.list_put(&self.rows[1], key, &global, versions)?;
        }
        Ok(())
    }
}

impl<S: KeyedStateBackend> Operator for TemporalJoinOperator<S> {
    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        self.state.snapshot(checkpoint_id, out)?;
        self.timers.snapshot(self.info.max_parallelism, out)
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        self.state.restore(state)?;
        self.timers.restore(state)
    }

    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let side = side_of(&self.info, input)?;
        let JoinInput { key, time, .. } = self.spec.inputs[side].clone();
        let times = event_times(&self.info, &batch, Some(time))?.unwrap_or_default();
        let mut keys = std::mem::take(&mut self.keys);
        keys.encode(&key, &batch)?;
        let key_columns: Vec<&dyn Array> = key
            .indices
            .iter()
            .map(|&i| batch.column(i).as_ref())
            .collect();
        let global = Namespace::Global;
        for (row, &t) in times.iter().enumerate() {
            self.row_buf.clear();
            row::encode_row(batch.columns(), row, &mut self.row_buf)?;
            if key_columns.iter().any(|c| c.is_null(row)) {
                if side == 0 && self.spec.outer {
                    self.joined.push(&self.row_buf, &self.nulls);
                }
                continue;
            }
            let key = keys.get(row);
            self.state
                .list_add(&self.rows[side], key, &global, (t, self.row_buf.clone()))?;
            self.timers.register(TimeDomain::EventTime, t, key, global);
        }
        self.keys = keys;
        self.joined.emit(&self.spec.output, &self.info, out)
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        let mut due: Vec<Box<[u8]>> =
            std::iter::from_fn(|| self.timers.pop_due(TimeDomain::EventTime, self.watermark))
                .map(|t| t.key)
                .collect();
        due.sort_unstable();
        due.dedup();
        for key in &due {
            self.fire(key)?;
        }
        // Emitted before the runtime forwards the watermark: no joined record is late.
        self.joined.emit(&self.spec.output, &self.info, out)
    }
}

/// Options of a temporal join: inner (the default) or `LEFT JOIN`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TemporalJoin {
    outer: bool,
}

impl TemporalJoin {
    /// An inner join: left records without a version are dropped.
    pub fn inner() -> Self {
        Self { outer: false }
    }

    /// A `LEFT JOIN`: left records without a version go out padded with nulls.
    pub fn left_outer() -> Self {
        Self { outer: true }
    }
}

impl KeyedStream {
    /// Flink SQL's event-time temporal join of this stream (left) with the versions in `versions`
    /// (right): each left record joins the latest right record of its key at or before its time,
    /// once the watermark has passed that time. Both inputs need event time. The output is
    /// [`join_schema`] of the two inputs (the right fields nullable for a `LEFT JOIN`), keeps the
    /// left input's event time, and runs at this stream's parallelism.
    pub fn temporal_join(&self, versions: &KeyedStream, join: TemporalJoin) -> DataStream {
        let (left, right) = (&self.stream, &versions.stream);
        let name = if join.outer {
            "temporal_left_join"
        } else {
            "temporal_join"
        }
        .to_owned();
        let spec = (|| -> Result<TemporalJoinSpec> {
            if !same_env(left, right) {
                return Err(Error::plan(
                    &name,
                    "the joined streams belong to different environments",
                ));
            }
            check_key_types(
                &name,
                (&left.schema, &self.key),
                (&right.schema, &versions.key),
            )?;
            let left_time = event_time_of(&name, "left", left)?;
            let right_time = event_time_of(&name, "right", right)?;
            let mut output = join_schema(&left.schema, &right.schema);
            if join.outer {
                let width = left.schema.fields().len();
                let fields: Vec<arrow::datatypes::Field> = output
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        f.as_ref()
                            .clone()
                            .with_nullable(i >= width || f.is_nullable())
                    })
                    .collect();
                output = Arc::new(arrow::datatypes::Schema::new(fields));
            }
            check_output_schema(&name, &output)?;
            Ok(TemporalJoinSpec {
                inputs: [
                    JoinInput {
                        schema: left.schema.clone(),
                        key: self.key.clone(),
                        time: left_time,
                    },
                    JoinInput {
                        schema: right.schema.clone(),
                        key: versions.key.clone(),
                        time: right_time,
                    },
                ],
                output,
                outer: join.outer,
            })
        })();
        let spec = match spec {
            Ok(spec) => spec,
            Err(e) => {
                left.env.error(e);
                return left.clone();
            }
        };
        let schema = spec.output.clone();
        let factory: OperatorFactory = Arc::new(move |info| {
            Ok(Box::new(TemporalJoinOperator::new(
                info.clone(),
                spec.clone(),
                crate::state::Backend::for_subtask(info)?,
            )?) as Box<dyn Operator>)
        });
        let mut joined = add_join(
            name,
            (left, &self.key),
            (right, &versions.key),
            schema.clone(),
            factory,
        );
        // The left fields come first, under their own names: the left time column is there.
        joined.time = carried_time(left, &schema);
        joined
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

    use super::*;
    use crate::keys::KeySpec;
    use crate::operator::Emitted;
    use crate::row::{Row, batch_from_rows, rows_of};
    use crate::time::MAX_WATERMARK;

    fn schema(value: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("t", DataType::Int64, false),
            Field::new(value, DataType::Utf8, false),
        ]))
    }

    fn spec(outer: bool) -> TemporalJoinSpec {
        let side = |s: SchemaRef| JoinInput {
            key: KeySpec::resolve("t", &s, &["k"]).unwrap(),
            schema: s,
            time: (1, 0),
        };
        let mut output = join_schema(&schema("a"), &schema("b"));
        if outer {
            output = Arc::new(Schema::new(
                output
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            ));
        }
        TemporalJoinSpec {
            inputs: [side(schema("a")), side(schema("b"))],
            output,
            outer,
        }
    }

    fn info() -> SubtaskInfo {
        SubtaskInfo {
            name: "temporal".into(),
            index: 0,
            parallelism: 1,
            max_parallelism: 128,
            state: Default::default(),
        }
    }

    fn batch(value: &str, rows: &[(Option<i64>, i64, &str)]) -> RecordBatch {
        let rows: Vec<Row> = rows
            .iter()
            .map(|(k, t, v)| {
                vec![
                    k.map_or(Value::Null, Value::Int),
                    Value::Int(*t),
                    Value::from(*v),
                ]
            })
            .collect();
        batch_from_rows(&schema(value), &rows).unwrap()
    }

    /// (left value, right value or "-") of the joined rows, sorted.
    fn pairs(out: &mut Output) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for item in out.drain() {
            if let Emitted::Data(b) = item {
                for r in rows_of(&b).unwrap() {
                    let right = r[5].as_str().unwrap_or("-").to_owned();
                    pairs.push((r[2].as_str().unwrap().to_owned(), right));
                }
            }
        }
        pairs.sort();
        pairs
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }

    fn operator(outer: bool) -> TemporalJoinOperator<crate::state::MemoryStateBackend> {
        TemporalJoinOperator::new(
            info(),
            spec(outer),
            crate::state::MemoryStateBackend::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_left_record_joins_the_version_valid_at_its_time_once_the_watermark_passes_it() {
        let mut op = operator(false);
        let mut out = Output::default();
        // Versions of key 1 at 10 and 20, arriving out of order; key 2 has one at 30.
        op.process(
            1,
            batch("b", &[(Some(1), 20, "v20"), (Some(2), 30, "w30")]),
            &mut out,
        )
        .unwrap();
        op.process(1, batch("b", &[(Some(1), 10, "v10")]), &mut out)
            .unwrap();
        op.process(
            0,
            batch(
                "a",
                &[
                    (Some(1), 5, "before"),
                    (Some(1), 10, "at10"),
                    (Some(1), 19, "at19"),
                    (Some(1), 25, "at25"),
                    (Some(2), 29, "early"),
                    (Some(2), 31, "later"),
                ],
            ),
            &mut out,
        )
        .unwrap();
        assert!(pairs(&mut out).is_empty(), "nothing before the watermark");
        op.on_watermark(19, &mut out).unwrap();
        assert_eq!(
            pairs(&mut out),
            vec![pair("at10", "v10"), pair("at19", "v10")],
            "a record before every version is dropped"
        );
        // A version arriving now, older than the watermark, is too late for what was emitted
        // but still joins the records that wait.
        op.process(1, batch("b", &[(Some(1), 24, "v24")]), &mut out)
            .unwrap();
        op.on_watermark(MAX_WATERMARK, &mut out).unwrap();
        assert_eq!(
            pairs(&mut out),
            vec![pair("at25", "v24"), pair("later", "w30")]
        );
    }

    #[test]
    fn versions_older_than_the_one_valid_at_the_watermark_are_dropped() {
        let mut op = operator(false);
        let mut out = Output::default();
        op.process(
            1,
            batch(
                "b",
                &[
                    (Some(1), 10, "v10"),
                    (Some(1), 20, "v20"),
                    (Some(1), 30, "v30"),
                ],
            ),
            &mut out,
        )
        .unwrap();
        op.on_watermark(25, &mut out).unwrap();
        let global = Namespace::Global;
        let key = {
            let mut keys = KeyRows::default();
            let b = batch("b", &[(Some(1), 0, "")]);
            keys.encode(&spec(false).inputs[1].key, &b).unwrap();
            keys.get(0).to_vec()
        };
        let kept: Vec<Timestamp> = op
            .state
            .list_get(&op.rows[1], &key, &global)
            .unwrap()
            .iter()
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(kept, vec![20, 30]);
        op.process(0, batch("a", &[(Some(1), 26, "at26")]), &mut out)
            .unwrap();
        op.on_watermark(MAX_WATERMARK, &mut out).unwrap();
        assert_eq!(pairs(&mut out), vec![pair("at26", "v20")]);
        assert!(op.state.list_get(&op.rows[1], &key, &global).unwrap().len() <= 1);
    }

    #[test]
    fn a_left_join_pads_records_without_a_version_and_with_a_null_key() {
        let mut op = operator(true);
        let mut out = Output::default();
        op.process(
            1,
            batch("b", &[(Some(1), 10, "v10"), (None, 1, "null")]),
            &mut out,
        )
        .unwrap();
        op.process(
            0,
            batch(
                "a",
                &[
                    (Some(1), 5, "before"),
                    (Some(1), 12, "after"),
                    (None, 12, "nokey"),
                ],
            ),
            &mut out,
        )
        .unwrap();
        assert_eq!(pairs(&mut out), vec![pair("nokey", "-")]);
        op.on_watermark(MAX_WATERMARK, &mut out).unwrap();
        assert_eq!(
            pairs(&mut out),
            vec![pair("after", "v10"), pair("before", "-")]
        );
    }
}
