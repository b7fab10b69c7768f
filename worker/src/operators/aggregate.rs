//! Incremental aggregates: count, sum, min, max, avg and user-defined ones, shared by windows and
//! rolling aggregations. An [`Agg`] names what to compute; bound against a schema it becomes a
//! [`BoundAgg`] that creates, updates, merges and finishes [`AccSlot`] accumulators. Accumulators are
//! plain serialisable values so that any state backend can keep them.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::field_index;
use crate::row::{Row, Value, batch_from_rows, row_at};

/// A user-defined aggregate over whole rows, with an accumulator made of values.
pub trait AggregateFunction: Send + Sync {
    /// Type of the result column.
    fn output_type(&self) -> DataType;
    /// A fresh accumulator.
    fn create(&self) -> Row;
    /// Adds one input row (all columns of the input, in schema order).
    fn add(&self, acc: &mut Row, input: &Row) -> Result<()>;
    /// Merges `other` into `acc` (session windows merge their accumulators).
    fn merge(&self, acc: &mut Row, other: Row) -> Result<()>;
    /// The result of an accumulator.
    fn result(&self, acc: &Row) -> Result<Value>;
}

#[derive(Clone)]
enum AggKind {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    Udf(Arc<dyn AggregateFunction>),
}

/// One aggregate to compute, and the name of its result column.
#[derive(Clone)]
pub struct Agg {
    kind: AggKind,
    input: Option<String>,
    output: String,
}

impl std::fmt::Debug for Agg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Agg {
    /// Number of records.
    pub fn count(output: &str) -> Self {
        Self {
            kind: AggKind::Count,
            input: None,
            output: output.into(),
        }
    }
    /// Sum of a numeric column (nulls skipped).
    pub fn sum(input: &str, output: &str) -> Self {
        Self {
            kind: AggKind::Sum,
            input: Some(input.into()),
            output: output.into(),
        }
    }
    /// Smallest value of a numeric or timestamp column.
    pub fn min(input: &str, output: &str) -> Self {
        Self {
            kind: AggKind::Min,
            input: Some(input.into()),
            output: output.into(),
        }
    }
    /// Largest value of a numeric or timestamp column.
    pub fn max(input: &str, output: &str) -> Self {
        Self {
            kind: AggKind::Max,
            input: Some(input.into()),
            output: output.into(),
        }
    }
    /// Mean of a numeric column, as `Float64`.
    pub fn avg(input: &str, output: &str) -> Self {
        Self {
            kind: AggKind::Avg,
            input: Some(input.into()),
            output: output.into(),
        }
    }
    /// A user-defined aggregate.
    pub fn udf(function: Arc<dyn AggregateFunction>, output: &str) -> Self {
        Self {
            kind: AggKind::Udf(function),
            input: None,
            output: output.into(),
        }
    }

    /// E.g. `sum(price) as total`.
    pub fn describe(&self) -> String {
        let name = match self.kind {
            AggKind::Count => "count",
            AggKind::Sum => "sum",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::Avg => "avg",
            AggKind::Udf(_) => "udf",
        };
        format!(
            "{name}({}) as {}",
            self.input.as_deref().unwrap_or("*"),
            self.output
        )
    }
}

/// An accumulator slot of one aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccSlot {
    Int(i64),
    Float(f64),
    MaybeInt(Option<i64>),
    MaybeFloat(Option<f64>),
    Avg { sum: f64, count: i64 },
    Udf(Row),
}

/// The accumulators of all aggregates of one key (and window).
pub type Accumulator = Vec<AccSlot>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Numeric {
    Int,
    Float,
    Timestamp,
}

#[derive(Clone)]
enum Bound {
    Count,
    Sum(Numeric),
    Min(Numeric),
    Max(Numeric),
    Avg,
    Udf(Arc<dyn AggregateFunction>),
}

/// An aggregate bound to an input schema.
#[derive(Clone)]
pub struct BoundAgg {
    bound: Bound,
    column: Option<usize>,
    field: Field,
}

/// One batch's input columns, cast once for all rows.
pub enum AggInput {
    None,
    Int(Int64Array),
    Float(Float64Array),
    Rows(Arc<RecordBatch>),
}

fn numeric(operator: &str, name: &str, data_type: &DataType) -> Result<Numeric> {
    match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Ok(Numeric::Int),
        DataType::Float32 | DataType::Float64 => Ok(Numeric::Float),
        DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Date32 => Ok(Numeric::Timestamp),
        other => Err(Error::plan(
            operator,
            format!("field '{name}' has type {other}; this aggregate needs a number or timestamp"),
        )),
    }
}

/// Binds `aggs` against `schema`, checking fields and types and the uniqueness of output names.
pub fn bind(operator: &str, schema: &SchemaRef, aggs: &[Agg]) -> Result<Vec<BoundAgg>> {
    if aggs.is_empty() {
        return Err(Error::plan(operator, "no aggregate given"));
    }
    let mut bound = Vec::with_capacity(aggs.len());
    for agg in aggs {
        let column = match &agg.input {
            Some(name) => Some(field_index(operator, schema, name)?),
            None => None,
        };
        let input = column.map(|c| (schema.field(c).name().as_str(), schema.field(c).data_type()));
        let (b, data_type) = match (&agg.kind, input) {
            (AggKind::Count, _) => (Bound::Count, DataType::Int64),
            (AggKind::Sum, Some((name, t))) => match numeric(operator, name, t)? {
                Numeric::Float => (Bound::Sum(Numeric::Float), DataType::Float64),
                Numeric::Int => (Bound::Sum(Numeric::Int), DataType::Int64),
                Numeric::Timestamp => {
                    return Err(Error::plan(
                        operator,
                        format!("cannot sum timestamps in '{name}'"),
                    ));
                }
            },
            (AggKind::Min | AggKind::Max, Some((name, t))) => {
                let n = numeric(operator, name, t)?;
                let out = match n {
                    Numeric::Int => DataType::Int64,
                    Numeric::Float => DataType::Float64,
                    Numeric::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
                };
                let b = if matches!(agg.kind, AggKind::Min) {
                    Bound::Min(n)
                } else {
                    Bound::Max(n)
                };
                (b, out)
            }
            (AggKind::Avg, Some((name, t))) => {
                if numeric(operator, name, t)? == Numeric::Timestamp {
                    return Err(Error::plan(
                        operator,
                        format!("cannot average timestamps in '{name}'"),
                    ));
                }
                (Bound::Avg, DataType::Float64)
            }
            (AggKind::Udf(f), _) => (Bound::Udf(f.clone()), f.output_type()),
            (_, None) => {
                return Err(Error::plan(
                    operator,
                    format!("{} needs an input field", agg.describe()),
                ));
            }
        };
        if aggs.iter().filter(|a| a.output == agg.output).count() > 1 {
            return Err(Error::plan(
                operator,
                format!("two aggregates are named '{}'", agg.output),
            ));
        }
        bound.push(BoundAgg {
            bound: b,
            column,
            field: Field::new(&agg.output, data_type, true),
        });
    }
    Ok(bound)
}

impl BoundAgg {
    /// The result column.
    pub fn field(&self) -> &Field {
        &self.field
    }

    /// Prepares the batch's input column for this aggregate.
    pub fn input(&self, batch: &Arc<RecordBatch>) -> Result<AggInput> {
        let Some(column) = self.column else {
            return Ok(match self.bound {
                Bound::Udf(_) => AggInput::Rows(batch.clone()),
                _ => AggInput::None,
            });
        };
        let array = batch.column(column);
        Ok(match &self.bound {
            Bound::Count => AggInput::None,
            Bound::Udf(_) => AggInput::Rows(batch.clone()),
            Bound::Avg
            | Bound::Sum(Numeric::Float)
            | Bound::Min(Numeric::Float)
            | Bound::Max(Numeric::Float) => AggInput::Float(
                cast(array, &DataType::Float64)?
                    .as_primitive::<Float64Type>()
                    .clone(),
            ),
            _ => AggInput::Int(
                cast(array, &DataType::Int64)?
                    .as_primitive::<Int64Type>()
                    .clone(),
            ),
        })
    }

    /// A fresh accumulator slot.
    pub fn create(&self) -> AccSlot {
        match &self.bound {
            Bound::Count => AccSlot::Int(0),
            // A sum of no values is NULL, as in SQL (and Flink), not 0.
            Bound::Sum(Numeric::Float)
            | Bound::Min(Numeric::Float)
            | Bound::Max(Numeric::Float) => AccSlot::MaybeFloat(None),
            Bound::Sum(_) | Bound::Min(_) | Bound::Max(_) => AccSlot::MaybeInt(None),
            Bound::Avg => AccSlot::Avg { sum: 0.0, count: 0 },
            Bound::Udf(f) => AccSlot::Udf(f.create()),
        }
    }

    /// Adds row `row` of the prepared input to `slot`.
    #[inline]
    pub fn add(&self, slot: &mut AccSlot, input: &AggInput, row: usize) -> Result<()> {
        match (slot, input) {
            (AccSlot::Int(n), AggInput::None) => *n += 1,
            (AccSlot::Int(n), AggInput::Int(a)) => {
                if a.is_valid(row) {
                    *n = n.wrapping_add(a.value(row));
                }
            }
            (AccSlot::Float(n), AggInput::Float(a)) => {
                if a.is_valid(row) {
                    *n += a.value(row);
                }
            }
            (AccSlot::MaybeInt(m), AggInput::Int(a)) => {
                if a.is_valid(row) {
                    let v = a.value(row);
                    *m = Some(match (*m, &self.bound) {
                        (None, _) => v,
                        (Some(c), Bound::Sum(_)) => c.wrapping_add(v),
                        (Some(c), Bound::Min(_)) => c.min(v),
                        (Some(c), _) => c.max(v),
                    });
                }
            }
            (AccSlot::MaybeFloat(m), AggInput::Float(a)) => {
                if a.is_valid(row) {
                    let v = a.value(row);
                    *m = Some(match (*m, &self.bound) {
                        (None, _) => v,
                        (Some(c), Bound::Sum(_)) => c + v,
                        (Some(c), Bound::Min(_)) => c.min(v),
                        (Some(c), _) => c.max(v),
                    });
                }
            }
            (AccSlot::Avg { sum, count }, AggInput::Float(a)) => {
                if a.is_valid(row) {
                    *sum += a.value(row);
                    *count += 1;
                }
            }
            (AccSlot::Udf(acc), AggInput::Rows(batch)) => {
                if let Bound::Udf(f) = &self.bound {
                    f.add(acc, &row_at(batch, row)?)?;
                }
            }
            _ => {
                return Err(Error::user(format!(
                    "accumulator of '{}' does not match its input",
                    self.field.name()
                )));
            }
        }
        Ok(())
    }

    /// Merges `other` into `slot`.
    pub fn merge(&self, slot: &mut AccSlot, other: AccSlot) -> Result<()> {
        self.merge_ref(slot, &other)
    }

    /// Merges a borrowed `other` into `slot`.
    pub fn merge_ref(&self, slot: &mut AccSlot, other: &AccSlot) -> Result<()> {
        if let Some(sum) = self.nullable_sum(slot) {
            *slot = sum;
        }
        let other = self.nullable_sum(other).unwrap_or_else(|| other.clone());
        match (slot, other) {
            (AccSlot::Int(a), AccSlot::Int(b)) => *a = a.wrapping_add(b),
            (AccSlot::Float(a), AccSlot::Float(b)) => *a += b,
            (AccSlot::MaybeInt(a), AccSlot::MaybeInt(b)) => {
                *a = match (*a, b, &self.bound) {
                    (Some(x), Some(y), Bound::Sum(_)) => Some(x.wrapping_add(y)),
                    (Some(x), Some(y), Bound::Min(_)) => Some(x.min(y)),
                    (Some(x), Some(y), _) => Some(x.max(y)),
                    (x, y, _) => x.or(y),
                }
            }
            (AccSlot::MaybeFloat(a), AccSlot::MaybeFloat(b)) => {
                *a = match (*a, b, &self.bound) {
                    (Some(x), Some(y), Bound::Sum(_)) => Some(x + y),
                    (Some(x), Some(y), Bound::Min(_)) => Some(x.min(y)),
                    (Some(x), Some(y), _) => Some(x.max(y)),
                    (x, y, _) => x.or(y),
                }
            }
            (AccSlot::Avg { sum, count }, AccSlot::Avg { sum: s, count: c }) => {
                *sum += s;
                *count += c;
            }
            (AccSlot::Udf(a), AccSlot::Udf(b)) => {
                if let Bound::Udf(f) = &self.bound {
                    f.merge(a, b)?;
                }
            }
            _ => return Err(Error::user("accumulators of different kinds cannot merge")),
        }
        Ok(())
    }

    /// A sum's slot in the old form (`Int`, `Float`, which read 0 for a sum of no values), as
    /// state written before sums became NULL-able restores it, turned into the current one
    /// (`MaybeInt`, `MaybeFloat`); `None` for any other slot. `add` takes either form;
    /// `merge_ref` brings both of its sides to the current one.
    fn nullable_sum(&self, slot: &AccSlot) -> Option<AccSlot> {
        match (&self.bound, slot) {
            (Bound::Sum(_), AccSlot::Int(v)) => Some(AccSlot::MaybeInt(Some(*v))),
            (Bound::Sum(_), AccSlot::Float(v)) => Some(AccSlot::MaybeFloat(Some(*v))),
            _ => None,
        }
    }

    /// The result column for a sequence of accumulators.
    pub fn finish<'a>(&self, slots: impl Iterator<Item = &'a AccSlot>) -> Result<ArrayRef> {
        let data_type = self.field.data_type();
        Ok(match (&self.bound, data_type) {
            (Bound::Udf(f), _) => {
                let rows: Vec<Row> = slots
                    .map(|s| match s {
                        AccSlot::Udf(acc) => f.result(acc).map(|v| vec![v]),
                        _ => Err(Error::user("accumulator kind mismatch")),
                    })
                    .collect::<Result<_>>()?;
                let schema = Arc::new(arrow::datatypes::Schema::new(vec![self.field.clone()]));
                batch_from_rows(&schema, &rows)?.column(0).clone()
            }
            (_, DataType::Float64) => Arc::new(Float64Array::from_iter(slots.map(|s| match s {
                AccSlot::Float(v) => Some(*v),
                AccSlot::MaybeFloat(v) => *v,
                AccSlot::Avg { sum, count } => (*count > 0).then(|| sum / *count as f64),
                _ => None,
            }))),
            (_, DataType::Timestamp(..)) => {
                Arc::new(TimestampMillisecondArray::from_iter(slots.map(|s| {
                    if let AccSlot::MaybeInt(v) = s {
                        *v
                    } else {
                        None
                    }
                })))
            }
            _ => Arc::new(Int64Array::from_iter(slots.map(|s| match s {
                AccSlot::Int(v) => Some(*v),
                AccSlot::MaybeInt(v) => *v,
                _ => None,
            }))),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use arrow::datatypes::Schema;

    use super::*;

    /// Each aggregate of `aggs` over `rows` of `batch`, added one by one, then finished.
    fn aggregate(batch: &RecordBatch, aggs: &[Agg], rows: &[usize]) -> Vec<ArrayRef> {
        let batch = Arc::new(batch.clone());
        bind("test", &batch.schema(), aggs)
            .unwrap()
            .iter()
            .map(|agg| {
                let input = agg.input(&batch).unwrap();
                let mut slot = agg.create();
                for &row in rows {
                    agg.add(&mut slot, &input, row).unwrap();
                }
                agg.finish(std::iter::once(&slot)).unwrap()
            })
            .collect()
    }

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![None, Some(4), None, Some(-1)])),
                Arc::new(Float64Array::from(vec![None, Some(0.5), None, Some(2.0)])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_sum_of_no_values_is_null_and_a_count_is_zero() {
        let aggs = [Agg::sum("i", "si"), Agg::sum("f", "sf"), Agg::count("n")];
        // Only null values, then no rows at all: SQL's SUM is NULL, COUNT(*) counts rows.
        for rows in [&[0, 2][..], &[]] {
            let out = aggregate(&batch(), &aggs, rows);
            assert!(out[0].is_null(0), "{rows:?}");
            assert!(out[1].is_null(0), "{rows:?}");
            assert_eq!(
                out[2].as_primitive::<Int64Type>().value(0),
                rows.len() as i64
            );
        }
        let out = aggregate(&batch(), &aggs, &[0, 1, 2, 3]);
        assert_eq!(out[0].as_primitive::<Int64Type>().value(0), 3);
        assert_eq!(out[1].as_primitive::<Float64Type>().value(0), 2.5);
        assert_eq!(out[2].as_primitive::<Int64Type>().value(0), 4);
    }

    #[test]
    fn sums_merge_with_empty_ones_and_with_slots_of_older_state() {
        let schema = batch().schema();
        let [int, float] =
            &bind("test", &schema, &[Agg::sum("i", "si"), Agg::sum("f", "sf")]).unwrap()[..]
        else {
            panic!("two aggregates")
        };
        let result = |agg: &BoundAgg, slot: &AccSlot| agg.finish(std::iter::once(slot)).unwrap();

        let mut empty = int.create();
        int.merge_ref(&mut empty, &int.create()).unwrap();
        assert!(result(int, &empty).is_null(0));
        int.merge_ref(&mut empty, &AccSlot::MaybeInt(Some(5)))
            .unwrap();
        assert_eq!(result(int, &empty).as_primitive::<Int64Type>().value(0), 5);

        // A sum restored from state written when a sum started at 0 (`Int`, `Float`) merges with
        // today's slots either way round.
        let mut old = AccSlot::Int(7);
        int.merge_ref(&mut old, &AccSlot::MaybeInt(Some(5)))
            .unwrap();
        assert_eq!(result(int, &old).as_primitive::<Int64Type>().value(0), 12);
        let mut new = int.create();
        int.merge_ref(&mut new, &AccSlot::Int(7)).unwrap();
        assert_eq!(result(int, &new).as_primitive::<Int64Type>().value(0), 7);
        let mut old = AccSlot::Float(1.5);
        float.merge_ref(&mut old, &float.create()).unwrap();
        assert_eq!(
            result(float, &old).as_primitive::<Float64Type>().value(0),
            1.5
        );
    }
}
