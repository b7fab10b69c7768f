//! Flink SQL's group aggregation, `GROUP BY` without windows: one continuously updated result row
//! per key, emitted as a changelog. The first result of a key is an insertion (`+I`), a changed
//! result retracts the old row and adds the new one (`-U`, `+U`), and a key whose last row was
//! retracted is deleted (`-D`) and forgotten. An unchanged result emits nothing.
//!
//! A changelog is carried in the batches as a last column, [`OP_COLUMN`] (`Int8`, a [`RowKind`]).
//! The input may be a changelog itself (an updating result): `+I`/`+U` rows are added to their
//! key's accumulators and `-U`/`-D` rows are retracted from them; COUNT, SUM and AVG subtract, and
//! MIN and MAX keep the count of every value of the key (only the extreme one when the input is
//! insert-only).
//!
//! Results are computed once per key per batch, after every row of the batch was applied, as
//! Flink's mini-batch aggregation does: the changelog has fewer intermediate results than Flink's
//! row-at-a-time one, and the same final state.
//!
//! Arguments arrive as `Int64` (integers, and decimals as unscaled values), `Float64` or `Utf8`
//! columns (text for MIN, MAX and COUNT(DISTINCT) only); results are `Int64`, `Float64` or `Utf8`
//! (AVG of integers truncated towards zero, as in Flink), and the SQL planner casts them to the
//! query's types. COUNT(DISTINCT) keeps the count of every distinct value of the key, so that a
//! value leaves the count with its last copy's retraction.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int8Array};
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::join::JoinedRows;
use crate::checkpoint::state::{RestoredState, StateWriter};
use crate::error::{Error, Result};
use crate::keys::{KeyRows, KeySpec};
use crate::operator::{Operator, Output, SubtaskInfo};
use crate::plan::OperatorFactory;
use crate::row::{self, Value};
use crate::state::{KeyedStateBackend, Namespace, ValueState};
use crate::stream::{DataStream, KeyedStream};

/// The name of a changelog's row-kind column.
pub const OP_COLUMN: &str = "__op";

/// What a changelog row does, as Flink's `RowKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum RowKind {
    Insert = 0,
    UpdateBefore = 1,
    UpdateAfter = 2,
    Delete = 3,
}

impl RowKind {
    /// The kind of the code `code` in an [`OP_COLUMN`].
    pub fn from_code(code: i8) -> Option<Self> {
        Some(match code {
            0 => Self::Insert,
            1 => Self::UpdateBefore,
            2 => Self::UpdateAfter,
            3 => Self::Delete,
            _ => return None,
        })
    }

    /// Flink's short notation: `+I`, `-U`, `+U`, `-D`.
    pub fn short(self) -> &'static str {
        match self {
            Self::Insert => "+I",
            Self::UpdateBefore => "-U",
            Self::UpdateAfter => "+U",
            Self::Delete => "-D",
        }
    }

    /// Whether the row is taken away (`-U`, `-D`).
    pub fn retracts(self) -> bool {
        matches!(self, Self::UpdateBefore | Self::Delete)
    }
}

/// An aggregate function of a group aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAggKind {
    /// `COUNT(*)`: rows.
    CountRows,
    /// `COUNT(x)`: rows where the argument is not null.
    Count,
    /// `COUNT(DISTINCT x)`: the distinct non-null values of an integer argument.
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
}

/// One aggregate: its function and its argument's column in the input (`Int64` or `Float64`).
#[derive(Debug, Clone)]
pub struct GroupAgg {
    pub kind: GroupAggKind,
    pub input: Option<usize>,
    /// The argument is `Utf8` (MIN, MAX and COUNT DISTINCT take text).
    pub text: bool,
}

/// The complete description of one group aggregation.
#[derive(Debug, Clone)]
pub struct GroupAggregateSpec {
    pub key: KeySpec,
    pub aggs: Vec<GroupAgg>,
    /// The input's [`OP_COLUMN`], if the input is a changelog.
    pub op: Option<usize>,
    /// The key columns, one column per aggregate (`Int64` or `Float64`), then [`OP_COLUMN`].
    pub output: SchemaRef,
}

/// An `f64` as an `i64` that orders as the float does (for MIN and MAX of floats).
fn ordered(f: f64) -> i64 {
    let bits = f.to_bits() as i64;
    if bits < 0 { bits ^ i64::MAX } else { bits }
}

fn unordered(o: i64) -> f64 {
    let bits = if o < 0 { o ^ i64::MAX } else { o };
    f64::from_bits(bits as u64)
}

/// One aggregate's accumulator.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Acc {
    /// Non-null values seen and their sum.
    Int {
        sum: i64,
        n: i64,
    },
    Float {
        sum: f64,
        n: i64,
    },
    /// Each value (floats as [`ordered`]) and how many times it is there.
    Values {
        counts: BTreeMap<i64, i64>,
        float: bool,
    },
    /// Each string value and how many times it is there (MIN, MAX and COUNT DISTINCT of text).
    Texts {
        counts: BTreeMap<String, i64>,
    },
}

/// What an aggregate's values are: its result type for MIN and MAX, its argument's otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueKind {
    Int,
    Float,
    Text,
}

impl ValueKind {
    pub(crate) fn of(t: &DataType) -> Self {
        match t {
            DataType::Float64 => Self::Float,
            DataType::Utf8 => Self::Text,
            _ => Self::Int,
        }
    }
}

/// A key's state: its rows, and each aggregate's accumulator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Group {
    rows: i64,
    accs: Vec<Acc>,
}

/// The aggregates' argument columns of `batch`.
pub(crate) fn args_of<'a>(
    aggs: &[GroupAgg],
    batch: &'a RecordBatch,
    info: &SubtaskInfo,
) -> Result<Vec<Arg<'a>>> {
    aggs.iter()
        .map(|a| match a.input {
            None => Ok(Arg::None),
            Some(i) => {
                let c = batch.column(i);
                match c.data_type() {
                    DataType::Int64 => Ok(Arg::Int(c.as_primitive::<Int64Type>())),
                    DataType::Float64 => Ok(Arg::Float(c.as_primitive::<Float64Type>())),
                    DataType::Utf8 => Ok(Arg::Text(c.as_string::<i32>())),
                    other => Err(info.fail(format!(
                        "an aggregate's argument is {other}, not Int64, Float64 or Utf8"
                    ))),
                }
            }
        })
        .collect()
}

/// An argument column.
pub(crate) enum Arg<'a> {
    None,
    Int(&'a arrow::array::Int64Array),
    Float(&'a arrow::array::Float64Array),
    Text(&'a arrow::array::StringArray),
}

impl<'a> Arg<'a> {
    /// The value at `row`; `None` if null.
    pub(crate) fn at(&self, row: usize) -> Option<Num<'a>> {
        match self {
            Arg::None => None,
            Arg::Int(a) => a.is_valid(row).then(|| Num::Int(a.value(row))),
            Arg::Float(a) => a.is_valid(row).then(|| Num::Float(a.value(row))),
            Arg::Text(a) => a.is_valid(row).then(|| Num::Text(a.value(row))),
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Num<'a> {
    Int(i64),
    Float(f64),
    Text(&'a str),
}

impl Acc {
    /// Adds (`sign` 1) or retracts (`sign` -1) one non-null value.
    fn apply(&mut self, agg: &GroupAgg, v: Num<'_>, sign: i64, keep_all: bool) {
        match (self, v) {
            (Acc::Texts { counts }, Num::Text(v)) => {
                match counts.get_mut(v) {
                    Some(count) => {
                        *count += sign;
                        if *count <= 0 {
                            counts.remove(v);
                        }
                    }
                    None if sign > 0 => {
                        counts.insert(v.to_owned(), sign);
                    }
                    None => {}
                }
                if !keep_all && matches!(agg.kind, GroupAggKind::Min | GroupAggKind::Max) {
                    // Insert-only input: only the extreme value can ever be the result.
                    let keep = match agg.kind {
                        GroupAggKind::Min => counts.first_key_value(),
                        _ => counts.last_key_value(),
                    }
                    .map(|(k, _)| k.clone());
                    counts.retain(|k, _| Some(k) == keep.as_ref());
                }
            }
            (Acc::Texts { .. }, _) | (_, Num::Text(_)) => {}
            (Acc::Int { sum, n }, Num::Int(v)) => {
                *sum = sum.wrapping_add(sign.wrapping_mul(v));
                *n += sign;
            }
            (Acc::Int { sum, n }, Num::Float(v)) => {
                *sum = sum.wrapping_add(sign.wrapping_mul(v as i64));
                *n += sign;
            }
            (Acc::Float { sum, n }, v) => {
                let v = match v {
                    Num::Int(i) => i as f64,
                    Num::Float(f) => f,
                    Num::Text(_) => return,
                };
                *sum += sign as f64 * v;
                *n += sign;
            }
            (Acc::Values { counts, .. }, v) => {
                let key = match v {
                    Num::Int(i) => i,
                    Num::Float(f) => ordered(f),
                    Num::Text(_) => return,
                };
                let count = counts.entry(key).or_insert(0);
                *count += sign;
                if *count <= 0 {
                    counts.remove(&key);
                }
                if !keep_all && matches!(agg.kind, GroupAggKind::Min | GroupAggKind::Max) {
                    // Insert-only input: only the extreme value can ever be the result.
                    let keep = match agg.kind {
                        GroupAggKind::Min => counts.first_key_value().map(|(k, _)| *k),
                        _ => counts.last_key_value().map(|(k, _)| *k),
                    };
                    counts.retain(|k, _| Some(*k) == keep);
                }
            }
        }
    }
}

/// An argument's value, owned (rows an OVER aggregation keeps until they leave its frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ArgValue {
    Int(i64),
    Float(f64),
    Text(String),
}

impl From<Num<'_>> for ArgValue {
    fn from(v: Num<'_>) -> Self {
        match v {
            Num::Int(v) => ArgValue::Int(v),
            Num::Float(v) => ArgValue::Float(v),
            Num::Text(v) => ArgValue::Text(v.to_owned()),
        }
    }
}

impl ArgValue {
    fn as_num(&self) -> Num<'_> {
        match self {
            ArgValue::Int(v) => Num::Int(*v),
            ArgValue::Float(v) => Num::Float(*v),
            ArgValue::Text(v) => Num::Text(v),
        }
    }
}

impl Group {
    pub(crate) fn new(aggs: &[GroupAgg], kinds: &[ValueKind]) -> Self {
        Self {
            rows: 0,
            accs: aggs
                .iter()
                .zip(kinds)
                .map(|(a, &kind)| match (a.kind, kind) {
                    (
                        GroupAggKind::Min | GroupAggKind::Max | GroupAggKind::CountDistinct,
                        ValueKind::Text,
                    ) => Acc::Texts {
                        counts: BTreeMap::new(),
                    },
                    (GroupAggKind::Min | GroupAggKind::Max | GroupAggKind::CountDistinct, _) => {
                        Acc::Values {
                            counts: BTreeMap::new(),
                            float: kind == ValueKind::Float,
                        }
                    }
                    (_, ValueKind::Float) => Acc::Float { sum: 0.0, n: 0 },
                    _ => Acc::Int { sum: 0, n: 0 },
                })
                .collect(),
        }
    }

    /// Adds (`sign` 1) or retracts (`sign` -1) one row.
    fn apply(
        &mut self,
        aggs: &[GroupAgg],
        args: &[Arg<'_>],
        row: usize,
        sign: i64,
        keep_all: bool,
    ) {
        self.rows += sign;
        for ((acc, agg), arg) in self.accs.iter_mut().zip(aggs).zip(args) {
            if let Some(v) = arg.at(row) {
                acc.apply(agg, v, sign, keep_all);
            }
        }
    }

    /// [`Group::apply`] for one row's argument values, kept apart from their batch.
    pub(crate) fn apply_values(
        &mut self,
        aggs: &[GroupAgg],
        values: &[Option<ArgValue>],
        sign: i64,
        keep_all: bool,
    ) {
        self.rows += sign;
        for ((acc, agg), v) in self.accs.iter_mut().zip(aggs).zip(values) {
            if let Some(v) = v {
                acc.apply(agg, v.as_num(), sign, keep_all);
            }
        }
    }

    /// The aggregates' results.
    pub(crate) fn results(&self, aggs: &[GroupAgg]) -> Vec<Value> {
        self.accs
            .iter()
            .zip(aggs)
            .map(|(acc, agg)| match (agg.kind, acc) {
                (GroupAggKind::CountRows, _) => Value::Int(self.rows),
                (GroupAggKind::Count, Acc::Int { n, .. } | Acc::Float { n, .. }) => Value::Int(*n),
                (GroupAggKind::CountDistinct, Acc::Values { counts, .. }) => {
                    Value::Int(counts.len() as i64)
                }
                (GroupAggKind::CountDistinct, Acc::Texts { counts }) => {
                    Value::Int(counts.len() as i64)
                }
                (kind, Acc::Texts { counts }) => {
                    let extreme = if kind == GroupAggKind::Min {
                        counts.first_key_value()
                    } else {
                        counts.last_key_value()
                    };
                    extreme.map_or(Value::Null, |(v, _)| Value::Str(v.clone()))
                }
                (_, Acc::Int { n: 0, .. } | Acc::Float { n: 0, .. }) => Value::Null,
                (GroupAggKind::Sum, Acc::Int { sum, .. }) => Value::Int(*sum),
                (GroupAggKind::Sum, Acc::Float { sum, .. }) => Value::Float(*sum),
                (GroupAggKind::Avg, Acc::Int { sum, n }) => Value::Int(sum / n),
                (GroupAggKind::Avg, Acc::Float { sum, n }) => Value::Float(sum / *n as f64),
                (kind, Acc::Values { counts, float }) => {
                    let extreme = if kind == GroupAggKind::Min {
                        counts.first_key_value()
                    } else {
                        counts.last_key_value()
                    };
                    match extreme {
                        None => Value::Null,
                        Some((v, _)) if *float => Value::Float(unordered(*v)),
                        Some((v, _)) => Value::Int(*v),
                    }
                }
                _ => Value::Null,
            })
            .collect()
    }
}

/// One subtask of a group aggregation.
pub struct GroupAggregateOperator<S: KeyedStateBackend> {
    info: SubtaskInfo,
    spec: GroupAggregateSpec,
    /// Per aggregate, what its values are.
    kinds: Vec<ValueKind>,
    result_types: Vec<DataType>,
    state: S,
    groups: ValueState<Group>,
    keys: KeyRows,
    out_rows: JoinedRows,
    row_buf: Vec<u8>,
}

impl<S: KeyedStateBackend> GroupAggregateOperator<S> {
    /// A subtask of `spec` keeping its accumulators in `state`.
    pub fn new(info: SubtaskInfo, spec: GroupAggregateSpec, mut state: S) -> Result<Self> {
        let keys = spec.key.indices.len();
        let result_types: Vec<DataType> = spec.output.fields()[keys..keys + spec.aggs.len()]
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        // The argument's kind, where the result's does not tell it (COUNT DISTINCT of text).
        let kinds = spec
            .aggs
            .iter()
            .zip(&result_types)
            .map(|(a, t)| match (a.kind, a.text) {
                (_, true) => ValueKind::Text,
                _ => ValueKind::of(t),
            })
            .collect();
        Ok(Self {
            groups: state.value_state("group-aggregate"),
            info,
            spec,
            kinds,
            result_types,
            state,
            keys: KeyRows::default(),
            out_rows: JoinedRows::default(),
            row_buf: Vec::new(),
        })
    }

    /// The keyed state, for inspection in tests.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Adds a result row of `kind` for the key encoded as `key_row`.
    fn emit_row(&mut self, key_row: &[u8], results: &[Value], kind: RowKind) -> Result<()> {
        self.row_buf.clear();
        for (v, t) in results.iter().zip(&self.result_types) {
            row::encode_owned(v, t, &mut self.row_buf)?;
        }
        row::encode_owned(&Value::Int(kind as i64), &DataType::Int8, &mut self.row_buf)?;
        self.out_rows.push(key_row, &self.row_buf);
        Ok(())
    }
}

impl<S: KeyedStateBackend> Operator for GroupAggregateOperator<S> {
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let mut keys = std::mem::take(&mut self.keys);
        keys.encode(&self.spec.key, &batch)?;
        let args = args_of(&self.spec.aggs, &batch, &self.info)?;
        let ops: Option<&Int8Array> = self
            .spec
            .op
            .map(|i| batch.column(i).as_primitive::<arrow::datatypes::Int8Type>());
        let key_columns: Vec<_> = self
            .spec
            .key
            .indices
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let keep_all = ops.is_some();
        // The keys this batch touches, in order: their encoded key columns and result before.
        let mut touched: Vec<(usize, Vec<u8>, Option<Vec<Value>>)> = Vec::new();
        let mut seen: HashMap<&[u8], ()> = HashMap::new();
        let global = Namespace::Global;
        for row in 0..batch.num_rows() {
            let key = keys.get(row);
            if seen.insert(key, ()).is_none() {
                let before = self.state.with_value(&self.groups, key, &global, |g| {
                    g.filter(|g| g.rows > 0).map(|g| g.results(&self.spec.aggs))
                })?;
                let mut key_row = Vec::new();
                row::encode_row(&key_columns, row, &mut key_row)?;
                touched.push((row, key_row, before));
            }
            let sign = match ops.map(|o| o.value(row)) {
                None => 1,
                Some(code) => match RowKind::from_code(code) {
                    Some(kind) if kind.retracts() => -1,
                    Some(_) => 1,
                    None => return Err(self.info.fail(format!("row kind {code} is unknown"))),
                },
            };
            let (aggs, kinds) = (&self.spec.aggs, &self.kinds);
            self.state.update(&self.groups, key, &global, |slot| {
                let group = slot.get_or_insert_with(|| Group::new(aggs, kinds));
                group.apply(aggs, &args, row, sign, keep_all);
                if group.rows <= 0 {
                    *slot = None;
                }
            })?;
        }
        for (row, key_row, before) in touched {
            let key = keys.get(row);
            let after = self.state.with_value(&self.groups, key, &global, |g| {
                g.map(|g| g.results(&self.spec.aggs))
            })?;
            match (before, after) {
                (None, Some(new)) => self.emit_row(&key_row, &new, RowKind::Insert)?,
                (Some(old), None) => self.emit_row(&key_row, &old, RowKind::Delete)?,
                (Some(old), Some(new)) if old != new => {
                    self.emit_row(&key_row, &old, RowKind::UpdateBefore)?;
                    self.emit_row(&key_row, &new, RowKind::UpdateAfter)?;
                }
                _ => {}
            }
        }
        self.keys = keys;
        self.out_rows.emit(&self.spec.output, &self.info, out)
    }

    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        self.state.snapshot(checkpoint_id, out)
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        self.state.restore(state)
    }
}

impl KeyedStream {
    /// A group aggregation of this stream by its key (Flink SQL's `GROUP BY` without windows):
    /// `aggs` over `Int64`, `Float64` or (MIN, MAX, COUNT DISTINCT) `Utf8` columns; `op` is the
    /// input's [`OP_COLUMN`] if it is a changelog. The output is the key columns, one column per
    /// aggregate (of `result_types[i]`: `Int64`, `Float64` or `Utf8`) and [`OP_COLUMN`]: a
    /// changelog, without event time.
    pub fn group_aggregate(
        &self,
        aggs: Vec<GroupAgg>,
        result_types: &[DataType],
        op: Option<usize>,
    ) -> DataStream {
        let stream = &self.stream;
        let name = "group_aggregate".to_owned();
        let mut fields: Vec<arrow::datatypes::Field> = self
            .key
            .indices
            .iter()
            .map(|&i| stream.schema.field(i).as_ref().clone().with_nullable(true))
            .collect();
        for (i, t) in result_types.iter().enumerate() {
            fields.push(arrow::datatypes::Field::new(
                format!("__agg{i}"),
                t.clone(),
                true,
            ));
        }
        fields.push(arrow::datatypes::Field::new(
            OP_COLUMN,
            DataType::Int8,
            false,
        ));
        let output: SchemaRef = Arc::new(arrow::datatypes::Schema::new(fields));
        if aggs.len() != result_types.len() {
            stream
                .env
                .error(Error::plan(&name, "an aggregate's result type is missing"));
            return stream.clone();
        }
        let spec = GroupAggregateSpec {
            key: self.key.clone(),
            aggs,
            op,
            output: output.clone(),
        };
        let factory: OperatorFactory = Arc::new(move |info| {
            Ok(Box::new(GroupAggregateOperator::new(
                info.clone(),
                spec.clone(),
                crate::state::Backend::for_subtask(info)?,
            )?) as Box<dyn Operator>)
        });
        self.keyed_operator(&name, factory, output, None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::operator::Emitted;
    use crate::row::{Row, batch_from_rows, rows_of};

    fn info() -> SubtaskInfo {
        SubtaskInfo {
            name: "agg".into(),
            index: 0,
            parallelism: 1,
            max_parallelism: 128,
            state: Default::default(),
        }
    }

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, true),
            Field::new(OP_COLUMN, DataType::Int8, false),
        ]))
    }

    fn operator(changelog: bool) -> GroupAggregateOperator<crate::state::MemoryStateBackend> {
        let schema = input_schema();
        let key = KeySpec::resolve("agg", &schema, &["k"]).unwrap();
        let kinds = [
            GroupAggKind::CountRows,
            GroupAggKind::Count,
            GroupAggKind::Sum,
            GroupAggKind::Avg,
            GroupAggKind::Min,
            GroupAggKind::Max,
        ];
        let aggs: Vec<GroupAgg> = kinds
            .iter()
            .map(|&kind| GroupAgg {
                kind,
                input: (kind != GroupAggKind::CountRows).then_some(1),
                text: false,
            })
            .collect();
        let mut fields = vec![Field::new("k", DataType::Utf8, true)];
        for i in 0..aggs.len() {
            fields.push(Field::new(format!("a{i}"), DataType::Int64, true));
        }
        fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        let spec = GroupAggregateSpec {
            key,
            aggs,
            op: changelog.then_some(2),
            output: Arc::new(Schema::new(fields)),
        };
        GroupAggregateOperator::new(info(), spec, crate::state::MemoryStateBackend::default())
            .unwrap()
    }

    fn batch(rows: &[(&str, Option<i64>, RowKind)]) -> RecordBatch {
        let rows: Vec<Row> = rows
            .iter()
            .map(|(k, v, op)| {
                vec![
                    Value::from(*k),
                    v.map_or(Value::Null, Value::Int),
                    Value::Int(*op as i64),
                ]
            })
            .collect();
        batch_from_rows(&input_schema(), &rows).unwrap()
    }

    /// `+I k [count(*), count, sum, avg, min, max]` lines.
    fn changes(out: &mut Output) -> Vec<String> {
        let mut lines = Vec::new();
        for item in out.drain() {
            if let Emitted::Data(b) = item {
                for r in rows_of(&b).unwrap() {
                    let kind = RowKind::from_code(r[7].as_i64().unwrap() as i8).unwrap();
                    let values: Vec<String> = r[1..7]
                        .iter()
                        .map(|v| v.as_i64().map_or("null".into(), |i| i.to_string()))
                        .collect();
                    lines.push(format!(
                        "{} {} {}",
                        kind.short(),
                        r[0].as_str().unwrap(),
                        values.join(",")
                    ));
                }
            }
        }
        lines
    }

    use RowKind::{Delete as D, Insert as I, UpdateAfter as UA, UpdateBefore as UB};

    #[test]
    fn an_insert_only_input_gives_inserts_then_updates_per_batch() {
        let mut op = operator(false);
        let mut out = Output::default();
        op.process(
            0,
            batch(&[("a", Some(5), I), ("b", None, I), ("a", Some(2), I)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            changes(&mut out),
            ["+I a 2,2,7,3,2,5", "+I b 1,0,null,null,null,null"]
        );
        op.process(0, batch(&[("a", Some(9), I), ("b", Some(-3), I)]), &mut out)
            .unwrap();
        assert_eq!(
            changes(&mut out),
            [
                "-U a 2,2,7,3,2,5",
                "+U a 3,3,16,5,2,9",
                "-U b 1,0,null,null,null,null",
                "+U b 2,1,-3,-3,-3,-3",
            ]
        );
    }

    #[test]
    fn count_distinct_counts_values_until_their_last_copy_is_retracted() {
        let schema = input_schema();
        let key = KeySpec::resolve("agg", &schema, &["k"]).unwrap();
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("d", DataType::Int64, true),
            Field::new(OP_COLUMN, DataType::Int8, false),
        ]));
        let spec = GroupAggregateSpec {
            key,
            aggs: vec![GroupAgg {
                kind: GroupAggKind::CountDistinct,
                input: Some(1),
                text: false,
            }],
            op: Some(2),
            output,
        };
        let mut op =
            GroupAggregateOperator::new(info(), spec, crate::state::MemoryStateBackend::default())
                .unwrap();
        let mut out = Output::default();
        let distinct = |out: &mut Output| -> Vec<(String, i64)> {
            out.drain()
                .filter_map(|e| match e {
                    Emitted::Data(b) => Some(rows_of(&b).unwrap()),
                    _ => None,
                })
                .flatten()
                .map(|r| {
                    let kind = RowKind::from_code(r[2].as_i64().unwrap() as i8).unwrap();
                    (kind.short().to_owned(), r[1].as_i64().unwrap())
                })
                .collect()
        };
        op.process(
            0,
            batch(&[
                ("a", Some(1), I),
                ("a", Some(1), I),
                ("a", None, I),
                ("a", Some(2), I),
            ]),
            &mut out,
        )
        .unwrap();
        assert_eq!(distinct(&mut out), [("+I".to_owned(), 2)]);
        op.process(0, batch(&[("a", Some(1), D)]), &mut out)
            .unwrap();
        assert!(distinct(&mut out).is_empty(), "one 1 is left");
        op.process(0, batch(&[("a", Some(1), D)]), &mut out)
            .unwrap();
        assert_eq!(
            distinct(&mut out),
            [("-U".to_owned(), 2), ("+U".to_owned(), 1)]
        );
    }

    #[test]
    fn min_max_and_count_distinct_of_text_follow_retractions() {
        // Key "g", argument the string column "s", a changelog.
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, false),
            Field::new("s", DataType::Utf8, true),
            Field::new(OP_COLUMN, DataType::Int8, false),
        ]));
        let key = KeySpec::resolve("agg", &schema, &["g"]).unwrap();
        let kinds = [
            GroupAggKind::Min,
            GroupAggKind::Max,
            GroupAggKind::CountDistinct,
        ];
        let aggs = kinds
            .iter()
            .map(|&kind| GroupAgg {
                kind,
                input: Some(1),
                text: true,
            })
            .collect();
        let output = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, true),
            Field::new("lo", DataType::Utf8, true),
            Field::new("hi", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new(OP_COLUMN, DataType::Int8, false),
        ]));
        let spec = GroupAggregateSpec {
            key,
            aggs,
            op: Some(2),
            output,
        };
        let mut op =
            GroupAggregateOperator::new(info(), spec, crate::state::MemoryStateBackend::default())
                .unwrap();
        let batch = |rows: &[(Option<&str>, RowKind)]| {
            let rows: Vec<Row> = rows
                .iter()
                .map(|(v, kind)| {
                    vec![
                        Value::from("g"),
                        v.map_or(Value::Null, Value::from),
                        Value::Int(*kind as i64),
                    ]
                })
                .collect();
            batch_from_rows(&schema, &rows).unwrap()
        };
        let mut out = Output::default();
        let lines = |out: &mut Output| -> Vec<String> {
            out.drain()
                .filter_map(|e| match e {
                    Emitted::Data(b) => Some(rows_of(&b).unwrap()),
                    _ => None,
                })
                .flatten()
                .map(|r| {
                    let kind = RowKind::from_code(r[4].as_i64().unwrap() as i8).unwrap();
                    let text = |v: &Value| v.as_str().unwrap_or("null").to_owned();
                    format!(
                        "{} {} {} {}",
                        kind.short(),
                        text(&r[1]),
                        text(&r[2]),
                        r[3].as_i64().unwrap()
                    )
                })
                .collect()
        };
        op.process(
            0,
            batch(&[
                (Some("10:05"), I),
                (Some("09:59"), I),
                (None, I),
                (Some("10:05"), I),
            ]),
            &mut out,
        )
        .unwrap();
        assert_eq!(lines(&mut out), ["+I 09:59 10:05 2"]);
        // One of two "10:05" goes: nothing changes; the other goes: the maximum falls back.
        op.process(0, batch(&[(Some("10:05"), D)]), &mut out)
            .unwrap();
        assert!(lines(&mut out).is_empty());
        op.process(
            0,
            batch(&[(Some("10:05"), D), (Some("11:00"), I)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(lines(&mut out), ["-U 09:59 10:05 2", "+U 09:59 11:00 2"]);
        op.process(
            0,
            batch(&[(Some("11:00"), D), (Some("09:59"), D)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            lines(&mut out),
            ["-U 09:59 11:00 2", "+U null null 0"],
            "the null row is still counted, so the key stays with empty results"
        );
    }

    #[test]
    fn retractions_update_and_delete_and_unchanged_results_emit_nothing() {
        let mut op = operator(true);
        let mut out = Output::default();
        op.process(
            0,
            batch(&[("a", Some(5), I), ("a", Some(7), I), ("a", Some(5), I)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(changes(&mut out), ["+I a 3,3,17,5,5,7"]);
        // The max (7) retracted: 5 is the max again, and still there once after one 5 goes.
        op.process(0, batch(&[("a", Some(7), UB), ("a", Some(5), D)]), &mut out)
            .unwrap();
        assert_eq!(changes(&mut out), ["-U a 3,3,17,5,5,7", "+U a 1,1,5,5,5,5"]);
        // Retracted and added back in one batch: nothing changed.
        op.process(
            0,
            batch(&[("a", Some(5), UB), ("a", Some(5), UA)]),
            &mut out,
        )
        .unwrap();
        assert!(changes(&mut out).is_empty());
        op.process(0, batch(&[("a", Some(5), D)]), &mut out)
            .unwrap();
        assert_eq!(changes(&mut out), ["-D a 1,1,5,5,5,5"]);
        assert_eq!(op.state().entries(), 0, "a deleted key is forgotten");
    }
}
