//! Faster kernels for two shapes of decimal arithmetic that DataFusion evaluates in several passes.
//!
//! - An integer column times a decimal literal (`0.908 * price`): DataFusion casts the column to
//!   a decimal, then multiplies with an overflow check per value. [`fuse`] replaces the pair with
//!   one multiplication per value when no product can overflow the result's precision.
//! - A decimal cast that keeps the scale (a result written to a `DECIMAL(p, s)` column): arrow
//!   checks every value against the new precision and rebuilds the array. [`cast`] first checks
//!   the whole array at once, and when every value fits, only relabels its type.
//!
//! Both give exactly the values, nulls and types of the passes they replace; anything else goes to
//! DataFusion and arrow unchanged.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, RecordBatch};
use arrow::compute::kernels::cast::cast as arrow_cast;
use arrow::datatypes::{DataType, Decimal128Type, Int64Type, Schema};
use arrow::error::ArrowError;
use datafusion_common::tree_node::{Transformed, TreeNode};
use datafusion_common::{Result as DfResult, ScalarValue};
use datafusion_expr::{ColumnarValue, Operator};
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::expressions::{BinaryExpr, CastExpr, Literal};

/// `expr` with every integer-times-decimal-literal product that cannot overflow computed by
/// [`ScaledInteger`].
pub(crate) fn fuse(
    expr: Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> DfResult<Arc<dyn PhysicalExpr>> {
    expr.transform_up(|e| {
        Ok(match ScaledInteger::matching(&e, schema)? {
            Some(fused) => Transformed::yes(Arc::new(fused) as Arc<dyn PhysicalExpr>),
            None => Transformed::no(e),
        })
    })
    .map(|t| t.data)
}

/// An integer expression times a decimal factor, as a `Decimal128(precision, scale)` whose
/// precision holds every product (checked when built), so no value needs checking.
#[derive(Debug, Eq)]
pub(crate) struct ScaledInteger {
    integer: Arc<dyn PhysicalExpr>,
    /// The factor's unscaled value: the factor is `factor / 10^scale`.
    factor: i128,
    precision: u8,
    scale: i8,
}

// By hand: a derived `PartialEq` cannot compare the `Arc<dyn PhysicalExpr>` (rust-lang#78808).
impl PartialEq for ScaledInteger {
    fn eq(&self, other: &Self) -> bool {
        self.integer.eq(&other.integer)
            && (self.factor, self.precision, self.scale)
                == (other.factor, other.precision, other.scale)
    }
}

impl std::hash::Hash for ScaledInteger {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.integer.hash(state);
        (self.factor, self.precision, self.scale).hash(state);
    }
}

impl ScaledInteger {
    /// `e` as a scaled integer if it is `literal * CAST(int AS DECIMAL(_, 0))` (either order) and
    /// DataFusion types the product as a decimal of the literal's scale wide enough for any
    /// integer of the column's type.
    fn matching(e: &Arc<dyn PhysicalExpr>, schema: &Schema) -> DfResult<Option<Self>> {
        let Some(product) = e.downcast_ref::<BinaryExpr>() else {
            return Ok(None);
        };
        if *product.op() != Operator::Multiply {
            return Ok(None);
        }
        let (left, right) = (product.left(), product.right());
        let (literal, other) = match (as_decimal_literal(left), as_decimal_literal(right)) {
            (Some(l), None) => (l, right),
            (None, Some(l)) => (l, left),
            _ => return Ok(None),
        };
        let Some(cast) = other.downcast_ref::<CastExpr>() else {
            return Ok(None);
        };
        if !matches!(cast.cast_type(), DataType::Decimal128(_, 0)) {
            return Ok(None);
        }
        let Some(largest) = largest_integer(&cast.expr.data_type(schema)?) else {
            return Ok(None);
        };
        let DataType::Decimal128(precision, scale) = e.data_type(schema)? else {
            return Ok(None);
        };
        let (factor, literal_scale) = literal;
        let fits = factor
            .unsigned_abs()
            .checked_mul(largest)
            .zip(10u128.checked_pow(u32::from(precision)))
            .is_some_and(|(bound, limit)| bound < limit);
        if literal_scale != scale || !fits {
            return Ok(None);
        }
        Ok(Some(Self {
            integer: Arc::clone(&cast.expr),
            factor,
            precision,
            scale,
        }))
    }

    fn data_type(&self) -> DataType {
        DataType::Decimal128(self.precision, self.scale)
    }
}

/// The unscaled value and scale of a non-null decimal literal.
fn as_decimal_literal(e: &Arc<dyn PhysicalExpr>) -> Option<(i128, i8)> {
    match e.downcast_ref::<Literal>()?.value() {
        ScalarValue::Decimal128(Some(v), _, s) => Some((*v, *s)),
        _ => None,
    }
}

/// The largest magnitude of an integer type that converts to `i64` without loss.
fn largest_integer(t: &DataType) -> Option<u128> {
    Some(match t {
        DataType::Int8 => 128,
        DataType::Int16 => 1 << 15,
        DataType::Int32 => 1 << 31,
        DataType::Int64 => 1 << 63,
        DataType::UInt8 => u128::from(u8::MAX),
        DataType::UInt16 => u128::from(u16::MAX),
        DataType::UInt32 => u128::from(u32::MAX),
        _ => return None,
    })
}

impl fmt::Display for ScaledInteger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} * {}e-{}", self.integer, self.factor, self.scale)
    }
}

impl PhysicalExpr for ScaledInteger {
    fn data_type(&self, _input_schema: &Schema) -> DfResult<DataType> {
        Ok(ScaledInteger::data_type(self))
    }

    fn nullable(&self, input_schema: &Schema) -> DfResult<bool> {
        self.integer.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> DfResult<ColumnarValue> {
        let factor = self.factor;
        Ok(match self.integer.evaluate(batch)? {
            ColumnarValue::Array(a) => {
                let ints = arrow_cast(&a, &DataType::Int64)?;
                let scaled: Decimal128Array = ints
                    .as_primitive::<Int64Type>()
                    .unary::<_, Decimal128Type>(|x| i128::from(x) * factor);
                ColumnarValue::Array(Arc::new(
                    scaled.with_precision_and_scale(self.precision, self.scale)?,
                ))
            }
            ColumnarValue::Scalar(s) => {
                let v = match s.cast_to(&DataType::Int64)? {
                    ScalarValue::Int64(v) => v.map(|x| i128::from(x) * factor),
                    _ => None,
                };
                ColumnarValue::Scalar(ScalarValue::Decimal128(v, self.precision, self.scale))
            }
        })
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.integer]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> DfResult<Arc<dyn PhysicalExpr>> {
        let integer = children
            .into_iter()
            .next()
            .unwrap_or_else(|| self.integer.clone());
        Ok(Arc::new(Self {
            integer,
            factor: self.factor,
            precision: self.precision,
            scale: self.scale,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// `array` cast to `to`, as arrow casts it (a value that does not fit becomes null). A decimal
/// keeping its scale whose every value fits the new precision keeps its buffers and only changes
/// type.
pub(crate) fn cast(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    if let (DataType::Decimal128(_, from_scale), DataType::Decimal128(precision, scale)) =
        (array.data_type(), to)
        && from_scale == scale
        && let Some(limit) = 10u128.checked_pow(u32::from(*precision))
    {
        let decimals = array.as_primitive::<Decimal128Type>();
        let fits = |v: &i128| v.unsigned_abs() < limit;
        let all_fit = match decimals.nulls() {
            None => decimals.values().iter().all(fits),
            Some(nulls) => decimals
                .values()
                .iter()
                .zip(nulls.iter())
                .all(|(v, valid)| !valid || fits(v)),
        };
        if all_fit {
            return Ok(Arc::new(
                decimals
                    .clone()
                    .with_precision_and_scale(*precision, *scale)?,
            ));
        }
    }
    arrow_cast(array, to)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use arrow::array::{Int32Array, Int64Array};
    use arrow::datatypes::Field;
    use datafusion_physical_expr::expressions::{Column, binary, cast as cast_expr, lit};

    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("price", DataType::Int64, true),
            Field::new("small", DataType::Int32, true),
        ])
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(schema()),
            vec![
                Arc::new(Int64Array::from(vec![
                    Some(0),
                    Some(1234),
                    None,
                    Some(i64::MAX),
                    Some(i64::MIN),
                    Some(-77),
                ])),
                Arc::new(Int32Array::from(vec![
                    Some(1),
                    None,
                    Some(-3),
                    Some(i32::MAX),
                    Some(i32::MIN),
                    Some(5),
                ])),
            ],
        )
        .unwrap()
    }

    /// `factor * CAST(column AS DECIMAL(20, 0))` as DataFusion's planner builds it.
    fn product(column: &str, factor: ScalarValue, literal_first: bool) -> Arc<dyn PhysicalExpr> {
        let schema = schema();
        let col: Arc<dyn PhysicalExpr> =
            Arc::new(Column::new(column, schema.index_of(column).unwrap()));
        let casted = cast_expr(col, &schema, DataType::Decimal128(20, 0)).unwrap();
        let literal = lit(factor);
        if literal_first {
            binary(literal, Operator::Multiply, casted, &schema).unwrap()
        } else {
            binary(casted, Operator::Multiply, literal, &schema).unwrap()
        }
    }

    fn values(e: &Arc<dyn PhysicalExpr>) -> (DataType, Vec<Option<i128>>) {
        let array = e.evaluate(&batch()).unwrap().into_array(6).unwrap();
        let decimals = array.as_primitive::<Decimal128Type>();
        (array.data_type().clone(), decimals.iter().collect())
    }

    #[test]
    fn an_integer_times_a_decimal_literal_is_fused_and_equals_datafusion() {
        for (column, factor, first) in [
            ("price", ScalarValue::Decimal128(Some(908), 3, 3), true),
            ("price", ScalarValue::Decimal128(Some(-125), 5, 2), false),
            ("small", ScalarValue::Decimal128(Some(99_999), 5, 4), true),
        ] {
            let plain = product(column, factor, first);
            let fused = fuse(plain.clone(), &schema()).unwrap();
            assert!(fused.downcast_ref::<ScaledInteger>().is_some(), "{fused}");
            assert_eq!(values(&fused), values(&plain), "{plain}");
        }
    }

    #[test]
    fn products_that_could_overflow_are_left_to_datafusion() {
        // A 25-digit factor times a 19-digit integer could need 44 digits; DataFusion types the
        // product as DECIMAL(38, 0) and checks each one.
        let big = ScalarValue::Decimal128(Some(10i128.pow(24)), 25, 0);
        let fused = fuse(product("price", big, true), &schema()).unwrap();
        assert!(fused.downcast_ref::<ScaledInteger>().is_none(), "{fused}");
    }

    #[test]
    fn a_narrowing_decimal_cast_relabels_when_every_value_fits_and_nulls_what_does_not() {
        let wide: ArrayRef = Arc::new(
            Decimal128Array::from(vec![Some(99_999), None, Some(-99_999), Some(0)])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        );
        let narrow = DataType::Decimal128(5, 2);
        let fast = cast(&wide, &narrow).unwrap();
        assert_eq!(fast.data_type(), &narrow);
        assert_eq!(&fast, &arrow_cast(&wide, &narrow).unwrap());

        let too_wide: ArrayRef = Arc::new(
            Decimal128Array::from(vec![Some(100_000), Some(5)])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        );
        let slow = cast(&too_wide, &narrow).unwrap();
        assert_eq!(&slow, &arrow_cast(&too_wide, &narrow).unwrap());
        assert!(slow.is_null(0) && slow.is_valid(1));
    }
}
