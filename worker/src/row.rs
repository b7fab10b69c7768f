//! Rows: the engine's stable binary row format and a row-at-a-time [`Value`] view of batches.
//!
//! Data travels as Arrow `RecordBatch`es. Where a single record has to be kept on its own (keys, state,
//! buffered window contents, join buffers) it is encoded in the format below. The format is part of the
//! savepoint format, so it is specified here and never changes without a version bump:
//!
//! - a row is the concatenation of its columns in schema order;
//! - a column is one byte `0` for null, or one byte `1` followed by its value;
//! - `Boolean`: one byte, 0 or 1;
//! - signed integers of any width, `Timestamp(Millisecond)` and `Date32`: the value widened to `i64`, sign
//!   bit flipped, 8 bytes big-endian (so byte order is numeric order);
//! - unsigned integers: widened to `u64`, 8 bytes big-endian;
//! - `Float32`/`Float64`: widened to `f64`, its IEEE-754 bits, 8 bytes big-endian;
//! - `Utf8`/`LargeUtf8`: the length as `u32` big-endian, then the UTF-8 bytes.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int8Builder, Int16Builder, Int32Builder, Int64Builder, LargeStringBuilder, StringBuilder,
    TimestampMillisecondBuilder, UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    SchemaRef, TimeUnit, TimestampMillisecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

/// One field of one record, for row-at-a-time user functions and tests.
#[derive(Debug, Clone, PartialEq, PartialOrd, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    /// Any signed integer, a millisecond timestamp or a date.
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
}

impl Value {
    /// The value as `i64`, if it is an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            Value::UInt(v) => i64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// The value as `f64`, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::UInt(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as `&str`, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::UInt(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}

/// A record as values in schema order.
pub type Row = Vec<Value>;

/// Whether the engine can encode, key by and rebuild columns of this type.
pub fn is_supported(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Date32
            | DataType::Timestamp(TimeUnit::Millisecond, _)
    )
}

/// Whether a column of this type can be a key (floats cannot: their equality is not an identity).
pub fn is_key_type(data_type: &DataType) -> bool {
    is_supported(data_type) && !matches!(data_type, DataType::Float32 | DataType::Float64)
}

#[inline]
fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.push(1);
    out.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
}

#[inline]
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.push(1);
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends column `array`'s value at `row` to `out` in the row format.
#[inline]
pub fn encode_value(array: &dyn Array, row: usize, out: &mut Vec<u8>) -> Result<()> {
    if array.is_null(row) {
        out.push(0);
        return Ok(());
    }
    match array.data_type() {
        DataType::Int64 => put_i64(out, array.as_primitive::<Int64Type>().value(row)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => put_i64(
            out,
            array.as_primitive::<TimestampMillisecondType>().value(row),
        ),
        DataType::Int32 => put_i64(out, i64::from(array.as_primitive::<Int32Type>().value(row))),
        DataType::Int16 => put_i64(out, i64::from(array.as_primitive::<Int16Type>().value(row))),
        DataType::Int8 => put_i64(out, i64::from(array.as_primitive::<Int8Type>().value(row))),
        DataType::Date32 => put_i64(
            out,
            i64::from(array.as_primitive::<Date32Type>().value(row)),
        ),
        DataType::UInt64 => put_u64(out, array.as_primitive::<UInt64Type>().value(row)),
        DataType::UInt32 => put_u64(
            out,
            u64::from(array.as_primitive::<UInt32Type>().value(row)),
        ),
        DataType::UInt16 => put_u64(
            out,
            u64::from(array.as_primitive::<UInt16Type>().value(row)),
        ),
        DataType::UInt8 => put_u64(out, u64::from(array.as_primitive::<UInt8Type>().value(row))),
        DataType::Float64 => put_u64(
            out,
            array.as_primitive::<Float64Type>().value(row).to_bits(),
        ),
        DataType::Float32 => put_u64(
            out,
            f64::from(array.as_primitive::<Float32Type>().value(row)).to_bits(),
        ),
        DataType::Boolean => {
            out.push(1);
            out.push(u8::from(array.as_boolean().value(row)));
        }
        DataType::Utf8 => put_str(out, array.as_string::<i32>().value(row))?,
        DataType::LargeUtf8 => put_str(out, array.as_string::<i64>().value(row))?,
        other => return Err(unsupported(other)),
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let len = u32::try_from(s.len())
        .map_err(|_| Error::user(format!("string of {} bytes is too long", s.len())))?;
    out.push(1);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn unsupported(data_type: &DataType) -> Error {
    Error::user(format!("columns of type {data_type} are not supported"))
}

/// Appends row `row` of `columns` to `out`.
pub fn encode_row(columns: &[ArrayRef], row: usize, out: &mut Vec<u8>) -> Result<()> {
    for column in columns {
        encode_value(column.as_ref(), row, out)?;
    }
    Ok(())
}

/// Reads encoded rows back into Arrow columns of the given types.
pub struct RowDecoder {
    builders: Vec<ColumnBuilder>,
}

enum ColumnBuilder {
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Str(StringBuilder),
    LargeStr(LargeStringBuilder),
    Date(Date32Builder),
    Ts(TimestampMillisecondBuilder, Option<Arc<str>>),
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos + n;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| Error::user("encoded row is truncated"))?;
        self.pos = end;
        Ok(slice)
    }
    fn u64(&mut self) -> Result<u64> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(buf))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok((self.u64()? ^ (1 << 63)) as i64)
    }
    fn str(&mut self) -> Result<&str> {
        let mut len = [0u8; 4];
        len.copy_from_slice(self.take(4)?);
        let bytes = self.take(u32::from_be_bytes(len) as usize)?;
        std::str::from_utf8(bytes).map_err(|e| Error::user(format!("encoded string: {e}")))
    }
}

fn narrow<T: TryFrom<i64>>(v: i64) -> Result<T> {
    T::try_from(v).map_err(|_| Error::user(format!("value {v} out of range for its column")))
}

fn narrow_u<T: TryFrom<u64>>(v: u64) -> Result<T> {
    T::try_from(v).map_err(|_| Error::user(format!("value {v} out of range for its column")))
}

impl RowDecoder {
    /// A decoder for rows of these column types.
    pub fn new<'a>(types: impl IntoIterator<Item = &'a DataType>) -> Result<Self> {
        let builders = types
            .into_iter()
            .map(|t| {
                Ok(match t {
                    DataType::Boolean => ColumnBuilder::Bool(BooleanBuilder::new()),
                    DataType::Int8 => ColumnBuilder::I8(Int8Builder::new()),
                    DataType::Int16 => ColumnBuilder::I16(Int16Builder::new()),
                    DataType::Int32 => ColumnBuilder::I32(Int32Builder::new()),
                    DataType::Int64 => ColumnBuilder::I64(Int64Builder::new()),
                    DataType::UInt8 => ColumnBuilder::U8(UInt8Builder::new()),
                    DataType::UInt16 => ColumnBuilder::U16(UInt16Builder::new()),
                    DataType::UInt32 => ColumnBuilder::U32(UInt32Builder::new()),
                    DataType::UInt64 => ColumnBuilder::U64(UInt64Builder::new()),
                    DataType::Float32 => ColumnBuilder::F32(Float32Builder::new()),
                    DataType::Float64 => ColumnBuilder::F64(Float64Builder::new()),
                    DataType::Utf8 => ColumnBuilder::Str(StringBuilder::new()),
                    DataType::LargeUtf8 => ColumnBuilder::LargeStr(LargeStringBuilder::new()),
                    DataType::Date32 => ColumnBuilder::Date(Date32Builder::new()),
                    DataType::Timestamp(TimeUnit::Millisecond, tz) => {
                        ColumnBuilder::Ts(TimestampMillisecondBuilder::new(), tz.clone())
                    }
                    other => return Err(unsupported(other)),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { builders })
    }

    /// Decodes one encoded row and appends it; returns the number of bytes read.
    pub fn append(&mut self, bytes: &[u8]) -> Result<usize> {
        let mut c = Cursor { bytes, pos: 0 };
        for builder in &mut self.builders {
            let present = c.take(1)?[0] == 1;
            macro_rules! put {
                ($b:expr, $v:expr) => {
                    if present {
                        $b.append_value($v)
                    } else {
                        $b.append_null()
                    }
                };
            }
            match builder {
                ColumnBuilder::Bool(b) => {
                    if present {
                        b.append_value(c.take(1)?[0] != 0)
                    } else {
                        b.append_null()
                    }
                }
                ColumnBuilder::I8(b) => put!(b, narrow(if present { c.i64()? } else { 0 })?),
                ColumnBuilder::I16(b) => put!(b, narrow(if present { c.i64()? } else { 0 })?),
                ColumnBuilder::I32(b) => put!(b, narrow(if present { c.i64()? } else { 0 })?),
                ColumnBuilder::I64(b) => put!(b, if present { c.i64()? } else { 0 }),
                ColumnBuilder::Date(b) => put!(b, narrow(if present { c.i64()? } else { 0 })?),
                ColumnBuilder::Ts(b, _) => put!(b, if present { c.i64()? } else { 0 }),
                ColumnBuilder::U8(b) => put!(b, narrow_u(if present { c.u64()? } else { 0 })?),
                ColumnBuilder::U16(b) => put!(b, narrow_u(if present { c.u64()? } else { 0 })?),
                ColumnBuilder::U32(b) => put!(b, narrow_u(if present { c.u64()? } else { 0 })?),
                ColumnBuilder::U64(b) => put!(b, if present { c.u64()? } else { 0 }),
                ColumnBuilder::F32(b) => {
                    put!(
                        b,
                        if present {
                            f64::from_bits(c.u64()?) as f32
                        } else {
                            0.0
                        }
                    )
                }
                ColumnBuilder::F64(b) => put!(
                    b,
                    if present {
                        f64::from_bits(c.u64()?)
                    } else {
                        0.0
                    }
                ),
                ColumnBuilder::Str(b) => {
                    if present {
                        b.append_value(c.str()?)
                    } else {
                        b.append_null()
                    }
                }
                ColumnBuilder::LargeStr(b) => {
                    if present {
                        b.append_value(c.str()?)
                    } else {
                        b.append_null()
                    }
                }
            }
        }
        Ok(c.pos)
    }

    /// The columns decoded so far; the decoder is empty afterwards.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.builders
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    ColumnBuilder::Bool(b) => Arc::new(b.finish()),
                    ColumnBuilder::I8(b) => Arc::new(b.finish()),
                    ColumnBuilder::I16(b) => Arc::new(b.finish()),
                    ColumnBuilder::I32(b) => Arc::new(b.finish()),
                    ColumnBuilder::I64(b) => Arc::new(b.finish()),
                    ColumnBuilder::U8(b) => Arc::new(b.finish()),
                    ColumnBuilder::U16(b) => Arc::new(b.finish()),
                    ColumnBuilder::U32(b) => Arc::new(b.finish()),
                    ColumnBuilder::U64(b) => Arc::new(b.finish()),
                    ColumnBuilder::F32(b) => Arc::new(b.finish()),
                    ColumnBuilder::F64(b) => Arc::new(b.finish()),
                    ColumnBuilder::Str(b) => Arc::new(b.finish()),
                    ColumnBuilder::LargeStr(b) => Arc::new(b.finish()),
                    ColumnBuilder::Date(b) => Arc::new(b.finish()),
                    ColumnBuilder::Ts(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
                }
            })
            .collect()
    }
}

/// Decodes whole encoded rows into a batch of `schema`.
pub fn decode_batch<'a>(
    schema: &SchemaRef,
    rows: impl IntoIterator<Item = &'a [u8]>,
) -> Result<RecordBatch> {
    let mut decoder = RowDecoder::new(schema.fields().iter().map(|f| f.data_type()))?;
    for row in rows {
        decoder.append(row)?;
    }
    Ok(RecordBatch::try_new(schema.clone(), decoder.finish())?)
}

/// Decodes a buffer of rows written back to back into a batch of `schema`.
pub fn decode_concatenated(schema: &SchemaRef, mut bytes: &[u8]) -> Result<RecordBatch> {
    let mut decoder = RowDecoder::new(schema.fields().iter().map(|f| f.data_type()))?;
    let mut rows = 0;
    while !bytes.is_empty() {
        let used = decoder.append(bytes)?;
        bytes = &bytes[used..];
        rows += 1;
    }
    if rows == 0 {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    Ok(RecordBatch::try_new(schema.clone(), decoder.finish())?)
}

/// The value of `array` at `row`.
pub fn value_at(array: &dyn Array, row: usize) -> Result<Value> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Utf8 => Value::Str(array.as_string::<i32>().value(row).to_owned()),
        DataType::LargeUtf8 => Value::Str(array.as_string::<i64>().value(row).to_owned()),
        DataType::Float64 => Value::Float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => {
            Value::Float(f64::from(array.as_primitive::<Float32Type>().value(row)))
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            let mut buf = Vec::with_capacity(9);
            encode_value(array, row, &mut buf)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[1..9]);
            Value::UInt(u64::from_be_bytes(b))
        }
        other if is_supported(other) => {
            let mut buf = Vec::with_capacity(9);
            encode_value(array, row, &mut buf)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[1..9]);
            Value::Int((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
        }
        other => return Err(unsupported(other)),
    })
}

/// Row `row` of `batch` as values.
pub fn row_at(batch: &RecordBatch, row: usize) -> Result<Row> {
    batch
        .columns()
        .iter()
        .map(|c| value_at(c.as_ref(), row))
        .collect()
}

/// All rows of `batch` as values.
pub fn rows_of(batch: &RecordBatch) -> Result<Vec<Row>> {
    (0..batch.num_rows()).map(|i| row_at(batch, i)).collect()
}

/// Encodes one value of the given column type in the row format.
pub fn encode_owned(value: &Value, data_type: &DataType, out: &mut Vec<u8>) -> Result<()> {
    let mismatch = || {
        Error::user(format!(
            "value {value:?} does not fit a column of type {data_type}"
        ))
    };
    match (value, data_type) {
        (Value::Null, _) => out.push(0),
        (Value::Bool(b), DataType::Boolean) => {
            out.push(1);
            out.push(u8::from(*b));
        }
        (Value::Str(s), DataType::Utf8 | DataType::LargeUtf8) => put_str(out, s)?,
        (v, DataType::Float32 | DataType::Float64) => {
            put_u64(out, v.as_f64().ok_or_else(mismatch)?.to_bits())
        }
        (
            Value::UInt(v),
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64,
        ) => put_u64(out, *v),
        (
            Value::Int(v),
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64,
        ) => put_u64(out, u64::try_from(*v).map_err(|_| mismatch())?),
        (v, t)
            if is_supported(t)
                && !matches!(t, DataType::Boolean | DataType::Utf8 | DataType::LargeUtf8) =>
        {
            put_i64(out, v.as_i64().ok_or_else(mismatch)?)
        }
        _ => return Err(mismatch()),
    }
    Ok(())
}

/// Builds a batch of `schema` from rows of values (user functions' output, tests).
pub fn batch_from_rows(schema: &SchemaRef, rows: &[Row]) -> Result<RecordBatch> {
    let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
    let mut decoder = RowDecoder::new(types.iter().copied())?;
    let mut buf = Vec::new();
    for row in rows {
        if row.len() != types.len() {
            return Err(Error::user(format!(
                "row has {} values but the schema has {} fields",
                row.len(),
                types.len()
            )));
        }
        buf.clear();
        for (v, t) in row.iter().zip(&types) {
            encode_owned(v, t, &mut buf)?;
        }
        decoder.append(&buf)?;
    }
    if rows.is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    Ok(RecordBatch::try_new(schema.clone(), decoder.finish())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn rows_round_trip_through_the_format() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("c", DataType::Float64, false),
            Field::new("d", DataType::Boolean, false),
            Field::new("e", DataType::Timestamp(TimeUnit::Millisecond, None), false),
            Field::new("f", DataType::UInt32, false),
            Field::new("g", DataType::Int32, false),
        ]));
        let rows = vec![
            vec![
                Value::Int(-5),
                "x".into(),
                Value::Float(1.5),
                true.into(),
                Value::Int(7),
                Value::UInt(3),
                Value::Int(-1),
            ],
            vec![
                Value::Null,
                Value::Null,
                Value::Float(-0.25),
                false.into(),
                Value::Int(-9),
                Value::UInt(0),
                Value::Int(i32::MAX.into()),
            ],
        ];
        let batch = batch_from_rows(&schema, &rows).unwrap();
        assert_eq!(rows_of(&batch).unwrap(), rows);
        let mut encoded = Vec::new();
        let mut bounds = Vec::new();
        for i in 0..batch.num_rows() {
            let start = encoded.len();
            encode_row(batch.columns(), i, &mut encoded).unwrap();
            bounds.push(start..encoded.len());
        }
        let again = decode_batch(&schema, bounds.iter().map(|r| &encoded[r.clone()])).unwrap();
        assert_eq!(again, batch);
    }

    #[test]
    fn integer_encoding_preserves_order() {
        let mut prev: Option<Vec<u8>> = None;
        for v in [i64::MIN, -1000, -1, 0, 1, 42, i64::MAX] {
            let mut buf = Vec::new();
            put_i64(&mut buf, v);
            if let Some(p) = &prev {
                assert!(p < &buf, "{v}");
            }
            prev = Some(buf);
        }
    }
}
