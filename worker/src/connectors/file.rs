//! Bounded file sources and file sinks: CSV and JSON lines.
//!
//! [`FileSource`] reads a file, or every visible regular file of a directory (sorted by name;
//! names starting with `.` or `_` are skipped, as in-progress and marker files are), assigning
//! files to subtasks round-robin. It parses records itself, record by record, so that one
//! malformed record (wrong number of fields, a value that does not parse as its column's type,
//! invalid JSON, a missing required field, invalid UTF-8) is reported on its own through
//! [`SourceContext::malformed`] with its `file:line` position, and the job's error policy decides
//! (fail, or dead-letter and go on); the other records of the batch are unaffected. Nothing is
//! dropped silently; only blank lines are skipped, since they hold no record.
//!
//! [`FileSink`] writes one part file per subtask, `part-<subtask>.csv` / `part-<subtask>.jsonl`,
//! through a buffered writer into a hidden `.part-<subtask>.<ext>.inprogress` file that is renamed
//! when the input ends, so a reader never sees a half-written part. Timestamps are written as epoch
//! milliseconds, which the source reads back exactly: sink → source round-trips every supported
//! type (see [`FileSink`] for the CSV null convention).
//!
//! Not for unbounded input (no directory monitoring, no tailing), for compressed files, or for
//! nested data: columns are the scalar types of [`crate::row::is_supported`].

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::NullBufferBuilder;
use arrow::array::timezone::Tz;
use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanBuilder, LargeStringBuilder,
    PrimitiveArray, StringBuilder,
};
use arrow::buffer::ScalarBuffer;
use arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use arrow::datatypes::{
    DataType, Date32Type, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow::json::writer::LineDelimited;
use arrow::json::{LineDelimitedWriter, WriterBuilder};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::{SinkBuilder, SourceBuilder};
use crate::error::{Error, Result};
use crate::operator::{Operator, Output, Source, SourceContext, SourcePoll, SubtaskInfo};
use crate::plan::{OperatorFactory, SourceFactory};

/// A quoted CSV field may span lines; a record still open after this many bytes is reported as
/// malformed (its first line) and the lines after it are read again as records of their own, so
/// that one stray quote costs one record, not the rest of the file.
const MAX_RECORD_BYTES: usize = 1 << 20;

/// Buffer size of file reads and writes.
const IO_BUFFER: usize = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv { header: bool, delimiter: u8 },
    JsonLines,
}

impl Format {
    fn label(&self) -> &'static str {
        match self {
            Format::Csv { .. } => "csv",
            Format::JsonLines => "json-lines",
        }
    }

    fn extension(&self) -> &'static str {
        match self {
            Format::Csv { .. } => "csv",
            Format::JsonLines => "jsonl",
        }
    }

    fn check(&self, operator: &str) -> Result<()> {
        if let Format::Csv { delimiter, .. } = self
            && (!delimiter.is_ascii() || matches!(delimiter, b'"' | b'\n' | b'\r'))
        {
            return Err(Error::plan(
                operator,
                format!(
                    "the CSV delimiter must be an ASCII character other than a quote or a line break, got byte {delimiter:#04x}"
                ),
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Column types
// ---------------------------------------------------------------------------------------------

/// How a column's text is read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    UInt {
        max: u64,
    },
    Float32,
    Float64,
    Utf8,
    /// Epoch milliseconds, or a date-time string.
    Timestamp,
    /// Days since the epoch, or `YYYY-MM-DD`.
    Date,
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: Kind,
    nullable: bool,
    data_type: DataType,
}

fn kind_of(data_type: &DataType) -> Option<Kind> {
    Some(match data_type {
        DataType::Boolean => Kind::Bool,
        DataType::Int8 => Kind::Int {
            min: i8::MIN.into(),
            max: i8::MAX.into(),
        },
        DataType::Int16 => Kind::Int {
            min: i16::MIN.into(),
            max: i16::MAX.into(),
        },
        DataType::Int32 => Kind::Int {
            min: i32::MIN.into(),
            max: i32::MAX.into(),
        },
        DataType::Int64 => Kind::Int {
            min: i64::MIN,
            max: i64::MAX,
        },
        DataType::UInt8 => Kind::UInt {
            max: u8::MAX.into(),
        },
        DataType::UInt16 => Kind::UInt {
            max: u16::MAX.into(),
        },
        DataType::UInt32 => Kind::UInt {
            max: u32::MAX.into(),
        },
        DataType::UInt64 => Kind::UInt { max: u64::MAX },
        DataType::Float32 => Kind::Float32,
        DataType::Float64 => Kind::Float64,
        DataType::Utf8 | DataType::LargeUtf8 => Kind::Utf8,
        DataType::Timestamp(TimeUnit::Millisecond, _) => Kind::Timestamp,
        DataType::Date32 => Kind::Date,
        _ => return None,
    })
}

/// The columns of `schema`, or a planning error naming the first one of a type files cannot hold.
fn columns_of(operator: &str, schema: &Schema) -> Result<Vec<Column>> {
    if schema.fields().is_empty() {
        return Err(Error::plan(operator, "the schema has no fields"));
    }
    schema
        .fields()
        .iter()
        .map(|f| {
            let kind = kind_of(f.data_type()).ok_or_else(|| {
                Error::plan(
                    operator,
                    format!(
                        "field '{}' has type {}, which files cannot hold (supported: booleans, \
                         integers, floats, strings, Timestamp(ms), Date32)",
                        f.name(),
                        f.data_type()
                    ),
                )
            })?;
            Ok(Column {
                name: f.name().clone(),
                kind,
                nullable: f.is_nullable(),
                data_type: f.data_type().clone(),
            })
        })
        .collect()
}

/// One parsed value of a record; strings are ranges of the record's text buffer.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(Range<usize>),
}

/// Parses date-time text to epoch milliseconds: an integer is taken as epoch millis, anything else
/// must be RFC 3339 or `YYYY-MM-DD[ HH:MM:SS[.fff]]` (with `T` or a space; without an offset, UTC).
fn parse_timestamp(utc: &Tz, text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    string_to_datetime(utc, text)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn type_name(column: &Column) -> String {
    column.data_type.to_string()
}

/// Reads one value from its text. `quoted` tells an empty quoted CSV field (an empty string) from
/// an empty unquoted one (null).
fn cell_from_text(
    column: &Column,
    utc: &Tz,
    text: &str,
    range: Range<usize>,
    quoted: bool,
) -> std::result::Result<Cell, String> {
    let raw = &text[range.clone()];
    if raw.is_empty() && !(quoted && column.kind == Kind::Utf8) {
        return if column.nullable {
            Ok(Cell::Null)
        } else if column.kind == Kind::Utf8 {
            Ok(Cell::Str(range))
        } else {
            Err(format!(
                "column '{}': missing value (the column is not nullable)",
                column.name
            ))
        };
    }
    let bad = || {
        format!(
            "column '{}': '{raw}' is not a valid {}",
            column.name,
            type_name(column)
        )
    };
    let value = raw.trim();
    Ok(match column.kind {
        Kind::Utf8 => Cell::Str(range),
        Kind::Bool => {
            if value.eq_ignore_ascii_case("true") {
                Cell::Bool(true)
            } else if value.eq_ignore_ascii_case("false") {
                Cell::Bool(false)
            } else {
                return Err(bad());
            }
        }
        Kind::Int { min, max } => match value.parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Cell::Int(v),
            _ => return Err(bad()),
        },
        Kind::UInt { max } => match value.parse::<u64>() {
            Ok(v) if v <= max => Cell::UInt(v),
            _ => return Err(bad()),
        },
        Kind::Float32 => Cell::Float(f64::from(value.parse::<f32>().map_err(|_| bad())?)),
        Kind::Float64 => Cell::Float(value.parse::<f64>().map_err(|_| bad())?),
        Kind::Timestamp => Cell::Int(parse_timestamp(utc, value).ok_or_else(bad)?),
        Kind::Date => match value.parse::<i32>() {
            Ok(days) => Cell::Int(days.into()),
            Err(_) => Cell::Int(Date32Type::parse(value).ok_or_else(bad)?.into()),
        },
    })
}

/// Reads one value from a JSON scalar; string values are copied into `text`.
fn cell_from_json(
    column: &Column,
    utc: &Tz,
    value: Option<&Scalar<'_>>,
    text: &mut String,
) -> std::result::Result<Cell, String> {
    let name = &column.name;
    let value = match value {
        None if column.nullable => return Ok(Cell::Null),
        None => return Err(format!("missing required field '{name}'")),
        Some(Scalar::Null) if column.nullable => return Ok(Cell::Null),
        Some(Scalar::Null) => return Err(format!("field '{name}' is null but not nullable")),
        Some(v) => v,
    };
    let bad = || {
        format!(
            "field '{name}': {} is not a valid {}",
            value.describe(),
            type_name(column)
        )
    };
    Ok(match (column.kind, value) {
        (Kind::Utf8, Scalar::Str(s)) => {
            let start = text.len();
            text.push_str(s);
            Cell::Str(start..text.len())
        }
        (Kind::Bool, Scalar::Bool(b)) => Cell::Bool(*b),
        (Kind::Int { min, max }, Scalar::Num(n)) => match n.parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Cell::Int(v),
            _ => return Err(bad()),
        },
        (Kind::UInt { max }, Scalar::Num(n)) => match n.parse::<u64>() {
            Ok(v) if v <= max => Cell::UInt(v),
            _ => return Err(bad()),
        },
        (Kind::Float32, Scalar::Num(n)) => {
            Cell::Float(f64::from(n.parse::<f32>().map_err(|_| bad())?))
        }
        (Kind::Float64, Scalar::Num(n)) => Cell::Float(n.parse::<f64>().map_err(|_| bad())?),
        (Kind::Timestamp, Scalar::Num(n)) => Cell::Int(n.parse::<i64>().map_err(|_| bad())?),
        (Kind::Timestamp, Scalar::Str(s)) => {
            Cell::Int(parse_timestamp(utc, s.trim()).ok_or_else(bad)?)
        }
        (Kind::Date, Scalar::Num(n)) => Cell::Int(n.parse::<i32>().map_err(|_| bad())?.into()),
        (Kind::Date, Scalar::Str(s)) => {
            Cell::Int(Date32Type::parse(s.trim()).ok_or_else(bad)?.into())
        }
        _ => return Err(bad()),
    })
}

// ---------------------------------------------------------------------------------------------
// Column buffers
// ---------------------------------------------------------------------------------------------

/// Values of one column of the batch being built.
enum ColumnBuf {
    Int(Vec<i64>, NullBufferBuilder),
    UInt(Vec<u64>, NullBufferBuilder),
    Float(Vec<f64>, NullBufferBuilder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
    LargeStr(LargeStringBuilder),
}

impl ColumnBuf {
    fn new(column: &Column, capacity: usize) -> Self {
        match column.kind {
            Kind::Bool => ColumnBuf::Bool(BooleanBuilder::with_capacity(capacity)),
            Kind::Int { .. } | Kind::Timestamp | Kind::Date => ColumnBuf::Int(
                Vec::with_capacity(capacity),
                NullBufferBuilder::new(capacity),
            ),
            Kind::UInt { .. } => ColumnBuf::UInt(
                Vec::with_capacity(capacity),
                NullBufferBuilder::new(capacity),
            ),
            Kind::Float32 | Kind::Float64 => ColumnBuf::Float(
                Vec::with_capacity(capacity),
                NullBufferBuilder::new(capacity),
            ),
            Kind::Utf8 if column.data_type == DataType::LargeUtf8 => {
                ColumnBuf::LargeStr(LargeStringBuilder::with_capacity(capacity, capacity * 8))
            }
            Kind::Utf8 => ColumnBuf::Str(StringBuilder::with_capacity(capacity, capacity * 8)),
        }
    }

    /// Appends a cell; the cell was made for this column, so its variant matches.
    fn append(&mut self, cell: &Cell, text: &str) {
        fn push<T: Default + Copy>(v: &mut Vec<T>, n: &mut NullBufferBuilder, x: Option<T>) {
            v.push(x.unwrap_or_default());
            n.append(x.is_some());
        }
        match (self, cell) {
            (ColumnBuf::Int(v, n), Cell::Int(x)) => push(v, n, Some(*x)),
            (ColumnBuf::Int(v, n), _) => push(v, n, None),
            (ColumnBuf::UInt(v, n), Cell::UInt(x)) => push(v, n, Some(*x)),
            (ColumnBuf::UInt(v, n), _) => push(v, n, None),
            (ColumnBuf::Float(v, n), Cell::Float(x)) => push(v, n, Some(*x)),
            (ColumnBuf::Float(v, n), _) => push(v, n, None),
            (ColumnBuf::Bool(b), Cell::Bool(x)) => b.append_value(*x),
            (ColumnBuf::Bool(b), _) => b.append_null(),
            (ColumnBuf::Str(b), Cell::Str(r)) => b.append_value(&text[r.clone()]),
            (ColumnBuf::Str(b), _) => b.append_null(),
            (ColumnBuf::LargeStr(b), Cell::Str(r)) => b.append_value(&text[r.clone()]),
            (ColumnBuf::LargeStr(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self, data_type: &DataType) -> ArrayRef {
        fn prim<T: ArrowPrimitiveType>(
            values: impl Iterator<Item = T::Native>,
            nulls: &mut NullBufferBuilder,
        ) -> PrimitiveArray<T> {
            PrimitiveArray::<T>::new(ScalarBuffer::from_iter(values), nulls.finish())
        }
        match self {
            ColumnBuf::Int(v, n) => {
                let values = std::mem::take(v);
                // Values were range-checked against the column's type when parsed.
                match data_type {
                    DataType::Int8 => {
                        Arc::new(prim::<Int8Type>(values.iter().map(|x| *x as i8), n))
                    }
                    DataType::Int16 => {
                        Arc::new(prim::<Int16Type>(values.iter().map(|x| *x as i16), n))
                    }
                    DataType::Int32 => {
                        Arc::new(prim::<Int32Type>(values.iter().map(|x| *x as i32), n))
                    }
                    DataType::Date32 => {
                        Arc::new(prim::<Date32Type>(values.iter().map(|x| *x as i32), n))
                    }
                    DataType::Timestamp(_, tz) => Arc::new(
                        prim::<TimestampMillisecondType>(values.into_iter(), n)
                            .with_timezone_opt(tz.clone()),
                    ),
                    _ => Arc::new(prim::<Int64Type>(values.into_iter(), n)),
                }
            }
            ColumnBuf::UInt(v, n) => {
                let values = std::mem::take(v);
                match data_type {
                    DataType::UInt8 => {
                        Arc::new(prim::<UInt8Type>(values.iter().map(|x| *x as u8), n))
                    }
                    DataType::UInt16 => {
                        Arc::new(prim::<UInt16Type>(values.iter().map(|x| *x as u16), n))
                    }
                    DataType::UInt32 => {
                        Arc::new(prim::<UInt32Type>(values.iter().map(|x| *x as u32), n))
                    }
                    _ => Arc::new(prim::<UInt64Type>(values.into_iter(), n)),
                }
            }
            ColumnBuf::Float(v, n) => {
                let values = std::mem::take(v);
                match data_type {
                    DataType::Float32 => {
                        Arc::new(prim::<Float32Type>(values.iter().map(|x| *x as f32), n))
                    }
                    _ => Arc::new(prim::<Float64Type>(values.into_iter(), n)),
                }
            }
            ColumnBuf::Bool(b) => Arc::new(b.finish()),
            ColumnBuf::Str(b) => Arc::new(b.finish()),
            ColumnBuf::LargeStr(b) => Arc::new(b.finish()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CSV records
// ---------------------------------------------------------------------------------------------

/// Splits one CSV record (RFC 4180: `"` quotes a field, `""` is a quote inside one) into `fields`,
/// unescaped into `text`, each with whether it was quoted. Returns `Ok(false)` if the record ends
/// inside a quoted field (it continues on the next line). A quote inside an unquoted field is
/// taken literally.
fn split_csv(
    record: &str,
    delimiter: u8,
    text: &mut String,
    fields: &mut Vec<(Range<usize>, bool)>,
) -> std::result::Result<bool, String> {
    text.clear();
    fields.clear();
    let bytes = record.as_bytes();
    let mut i = 0;
    loop {
        let start = text.len();
        if bytes.get(i) == Some(&b'"') {
            i += 1;
            loop {
                let Some(q) = bytes[i..].iter().position(|&b| b == b'"') else {
                    return Ok(false);
                };
                text.push_str(&record[i..i + q]);
                i += q + 1;
                if bytes.get(i) == Some(&b'"') {
                    text.push('"');
                    i += 1;
                } else {
                    break;
                }
            }
            fields.push((start..text.len(), true));
            match bytes.get(i) {
                None => return Ok(true),
                Some(&b) if b == delimiter => i += 1,
                Some(_) => {
                    return Err(format!(
                        "field {}: unexpected text after its closing quote",
                        fields.len()
                    ));
                }
            }
        } else {
            match bytes[i..].iter().position(|&b| b == delimiter) {
                Some(d) => {
                    text.push_str(&record[i..i + d]);
                    fields.push((start..text.len(), false));
                    i += d + 1;
                }
                None => {
                    text.push_str(&record[i..]);
                    fields.push((start..text.len(), false));
                    return Ok(true);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON lines
// ---------------------------------------------------------------------------------------------

/// A JSON value as far as a flat record needs it. Numbers keep their text, so that they are parsed
/// exactly by the column's type.
#[derive(Debug, Clone, PartialEq)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    Num(&'a str),
    Str(Cow<'a, str>),
    /// An object or array (skipped, after checking it is valid JSON).
    Nested(&'static str),
}

impl Scalar<'_> {
    fn describe(&self) -> String {
        match self {
            Scalar::Null => "null".into(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Num(n) => (*n).to_owned(),
            Scalar::Str(s) => format!("{s:?}"),
            Scalar::Nested(what) => (*what).to_owned(),
        }
    }
}

/// Nesting deeper than this is rejected (it would only be skipped anyway).
const MAX_JSON_DEPTH: usize = 64;

/// A strict (RFC 8259) scanner of one JSON object per line.
struct Json<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

type JsonResult<T> = std::result::Result<T, String>;

impl<'a> Json<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    fn err<T>(&self, what: &str) -> JsonResult<T> {
        Err(format!("invalid JSON at column {}: {what}", self.i + 1))
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Scans a whole object, calling `field` for each member, and checks nothing follows it.
    fn object(&mut self, mut field: impl FnMut(Cow<'a, str>, Scalar<'a>)) -> JsonResult<()> {
        self.ws();
        if !self.eat(b'{') {
            return self.err("a record must be a JSON object");
        }
        self.ws();
        if !self.eat(b'}') {
            loop {
                self.ws();
                let key = self.string()?;
                self.ws();
                if !self.eat(b':') {
                    return self.err("expected ':'");
                }
                self.ws();
                let value = self.value(1)?;
                field(key, value);
                self.ws();
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b'}') {
                    break;
                }
                return self.err("expected ',' or '}'");
            }
        }
        self.ws();
        if self.i != self.b.len() {
            return self.err("unexpected text after the object");
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> JsonResult<Scalar<'a>> {
        match self.b.get(self.i) {
            Some(b'"') => Ok(Scalar::Str(self.string()?)),
            Some(b'{') => {
                self.skip_nested(depth)?;
                Ok(Scalar::Nested("an object"))
            }
            Some(b'[') => {
                self.skip_nested(depth)?;
                Ok(Scalar::Nested("an array"))
            }
            Some(b't') => self.literal("true", Scalar::Bool(true)),
            Some(b'f') => self.literal("false", Scalar::Bool(false)),
            Some(b'n') => self.literal("null", Scalar::Null),
            Some(b'-' | b'0'..=b'9') => Ok(Scalar::Num(self.number()?)),
            Some(_) => self.err("expected a value"),
            None => self.err("unexpected end of line"),
        }
    }

    fn literal(&mut self, word: &str, value: Scalar<'a>) -> JsonResult<Scalar<'a>> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(value)
        } else {
            self.err("expected a value")
        }
    }

    fn skip_nested(&mut self, depth: usize) -> JsonResult<()> {
        if depth > MAX_JSON_DEPTH {
            return self.err("nested too deeply");
        }
        let (object, close) = if self.eat(b'{') {
            (true, b'}')
        } else if self.eat(b'[') {
            (false, b']')
        } else {
            return self.err("expected an object or array");
        };
        self.ws();
        if self.eat(close) {
            return Ok(());
        }
        loop {
            self.ws();
            if object {
                self.string()?;
                self.ws();
                if !self.eat(b':') {
                    return self.err("expected ':'");
                }
                self.ws();
            }
            self.value(depth + 1)?;
            self.ws();
            if self.eat(b',') {
                continue;
            }
            if self.eat(close) {
                return Ok(());
            }
            return self.err(if object {
                "expected ',' or '}'"
            } else {
                "expected ',' or ']'"
            });
        }
    }

    fn number(&mut self) -> JsonResult<&'a str> {
        let start = self.i;
        self.eat(b'-');
        let digits = |j: &mut Self| {
            let from = j.i;
            while j.b.get(j.i).is_some_and(u8::is_ascii_digit) {
                j.i += 1;
            }
            j.i - from
        };
        if self.eat(b'0') {
            // No leading zeros.
        } else if digits(self) == 0 {
            return self.err("invalid number");
        }
        if self.eat(b'.') && digits(self) == 0 {
            return self.err("invalid number");
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if digits(self) == 0 {
                return self.err("invalid number");
            }
        }
        Ok(&self.s[start..self.i])
    }

    fn hex4(&mut self) -> JsonResult<u32> {
        let Some(h) = self.s.get(self.i..self.i + 4) else {
            return self.err("invalid \\u escape");
        };
        let Ok(v) = u32::from_str_radix(h, 16) else {
            return self.err("invalid \\u escape");
        };
        if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return self.err("invalid \\u escape");
        }
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> JsonResult<Cow<'a, str>> {
        if !self.eat(b'"') {
            return self.err("expected a string");
        }
        let start = self.i;
        // Fast path: no escapes.
        loop {
            match self.b.get(self.i) {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Borrowed(&self.s[start..self.i - 1]));
                }
                Some(b'\\') => break,
                Some(&c) if c < 0x20 => return self.err("control character in a string"),
                Some(_) => self.i += 1,
            }
        }
        let mut out = String::from(&self.s[start..self.i]);
        loop {
            match self.b.get(self.i) {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(&e) = self.b.get(self.i) else {
                        return self.err("unterminated string");
                    };
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let mut code = self.hex4()?;
                            if (0xD800..0xDC00).contains(&code) {
                                if !(self.eat(b'\\') && self.eat(b'u')) {
                                    return self.err("unpaired surrogate in a \\u escape");
                                }
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return self.err("unpaired surrogate in a \\u escape");
                                }
                                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                            }
                            match char::from_u32(code) {
                                Some(c) => out.push(c),
                                None => return self.err("unpaired surrogate in a \\u escape"),
                            }
                        }
                        _ => return self.err("invalid escape"),
                    }
                }
                Some(&c) if c < 0x20 => return self.err("control character in a string"),
                Some(_) => {
                    // Copy up to the next quote, backslash or control character (all ASCII, so a
                    // character boundary).
                    let from = self.i;
                    while self
                        .b
                        .get(self.i)
                        .is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20)
                    {
                        self.i += 1;
                    }
                    out.push_str(&self.s[from..self.i]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// FileSource
// ---------------------------------------------------------------------------------------------

/// A bounded source of CSV or JSON-lines files (see the module docs).
///
/// CSV: fields are matched to the schema by position; with a header (the default) the first line
/// of every file is skipped. An empty unquoted field is null (or, in a non-nullable string column,
/// the empty string); `""` is the empty string. JSON lines: one object per line, members matched
/// by name (others ignored); a missing member is null. In both, `Timestamp(ms)` columns take
/// epoch milliseconds or RFC 3339 / `YYYY-MM-DD HH:MM:SS[.fff]` text (UTC unless an offset is
/// given), `Date32` columns days or `YYYY-MM-DD`.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    files: Arc<Vec<PathBuf>>,
    schema: SchemaRef,
    format: Format,
}

impl FileSource {
    /// CSV files at `path` (a file, or a directory of them), header row expected, `,`-separated.
    pub fn csv(path: impl AsRef<Path>, schema: SchemaRef) -> Result<Self> {
        Self::new(
            path.as_ref(),
            schema,
            Format::Csv {
                header: true,
                delimiter: b',',
            },
        )
    }

    /// JSON-lines files at `path` (a file, or a directory of them).
    pub fn json_lines(path: impl AsRef<Path>, schema: SchemaRef) -> Result<Self> {
        Self::new(path.as_ref(), schema, Format::JsonLines)
    }

    fn new(path: &Path, schema: SchemaRef, format: Format) -> Result<Self> {
        let name = format!("{}({})", format.label(), path.display());
        columns_of(&name, &schema)?;
        let files = list_files(path)?;
        Ok(Self {
            path: path.to_owned(),
            files: Arc::new(files),
            schema,
            format,
        })
    }

    /// Whether each CSV file starts with a header line to skip (default true). No effect on JSON.
    pub fn with_header(mut self, header: bool) -> Self {
        if let Format::Csv { header: h, .. } = &mut self.format {
            *h = header;
        }
        self
    }

    /// The CSV field delimiter (default `,`; must be ASCII). No effect on JSON.
    pub fn with_delimiter(mut self, delimiter: u8) -> Self {
        if let Format::Csv { delimiter: d, .. } = &mut self.format {
            *d = delimiter;
        }
        self
    }

    /// The files read, in order; subtask `i` of `p` reads those at positions `i, i + p, …`.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// `path` itself if it is a file, else the visible regular files in it, sorted by name.
fn list_files(path: &Path) -> Result<Vec<PathBuf>> {
    let context = || format!("listing input files at {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| Error::io(context(), e))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(context(), e))? {
        let entry = entry.map_err(|e| Error::io(context(), e))?;
        let name = entry.file_name();
        let hidden = name
            .to_str()
            .is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
        // Follows symbolic links.
        let is_file = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
        if is_file && !hidden {
            files.push(entry.path());
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

impl SourceBuilder for FileSource {
    fn name(&self) -> String {
        format!("{}({})", self.format.label(), self.path.display())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn max_parallelism(&self) -> Option<u32> {
        Some(u32::try_from(self.files.len()).unwrap_or(u32::MAX).max(1))
    }

    fn factory(self) -> SourceFactory {
        let name = self.name();
        let checked = self
            .format
            .check(&name)
            .and_then(|()| columns_of(&name, &self.schema));
        let source = Arc::new(self);
        Arc::new(move |info| {
            let columns = match &checked {
                Ok(c) => c.clone(),
                Err(e) => return Err(info.fail(e)),
            };
            let p = info.parallelism.max(1) as usize;
            let files = source
                .files
                .iter()
                .skip(info.index as usize)
                .step_by(p)
                .cloned()
                .collect::<VecDeque<_>>();
            let utc = Tz::from_str("+00:00").map_err(|e| info.fail(e))?;
            let index = columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect();
            Ok(Box::new(FileReader {
                info: info.clone(),
                format: source.format,
                schema: source.schema.clone(),
                columns,
                index,
                utc,
                files,
                open: None,
                text: String::new(),
                fields: Vec::new(),
                cells: Vec::new(),
            }) as Box<dyn Source>)
        })
    }
}

/// One physical line, without its line break.
struct Line {
    /// 1-based.
    no: u64,
    /// The text, or the text (lossy) if it is not UTF-8.
    text: std::result::Result<String, String>,
    /// Whether it ended with `\r\n` (restored inside multi-line quoted CSV fields).
    crlf: bool,
}

struct OpenFile {
    display: String,
    reader: BufReader<File>,
    line: u64,
    header_pending: bool,
    /// Lines read ahead by an unterminated CSV record, to be read again.
    pushback: VecDeque<Line>,
    buf: Vec<u8>,
}

impl OpenFile {
    fn next_line(&mut self) -> Result<Option<Line>> {
        if let Some(line) = self.pushback.pop_front() {
            return Ok(Some(line));
        }
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| Error::io(format!("reading {}", self.display), e))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        let mut crlf = false;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
                crlf = true;
            }
        }
        let text = match std::str::from_utf8(&self.buf) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(String::from_utf8_lossy(&self.buf).into_owned()),
        };
        Ok(Some(Line {
            no: self.line,
            text,
            crlf,
        }))
    }

    fn position(&self, line: u64) -> String {
        format!("{}:{line}", self.display)
    }
}

/// What reading the next record gave.
enum Record {
    /// A good record; its cells are in the reader's scratch buffers.
    Good,
    Bad {
        position: String,
        reason: String,
        raw: String,
    },
}

struct FileReader {
    info: SubtaskInfo,
    format: Format,
    schema: SchemaRef,
    columns: Vec<Column>,
    /// Column index by name (JSON).
    index: HashMap<String, usize>,
    utc: Tz,
    files: VecDeque<PathBuf>,
    open: Option<OpenFile>,
    /// Scratch: the current record's unescaped text, fields and cells.
    text: String,
    fields: Vec<(Range<usize>, bool)>,
    cells: Vec<Cell>,
}

impl FileReader {
    /// The next record of this subtask's files, or `None` when all are read.
    fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            if self.open.is_none() {
                let Some(path) = self.files.pop_front() else {
                    return Ok(None);
                };
                let display = path.display().to_string();
                let file =
                    File::open(&path).map_err(|e| Error::io(format!("opening {display}"), e))?;
                self.open = Some(OpenFile {
                    display,
                    reader: BufReader::with_capacity(IO_BUFFER, file),
                    line: 0,
                    header_pending: matches!(self.format, Format::Csv { header: true, .. }),
                    pushback: VecDeque::new(),
                    buf: Vec::new(),
                });
            }
            let Some(file) = self.open.as_mut() else {
                continue;
            };
            let Some(Line {
                no: line_no,
                text: line,
                crlf,
            }) = file.next_line()?
            else {
                self.open = None;
                continue;
            };
            if std::mem::take(&mut file.header_pending) {
                continue;
            }
            let line = match line {
                Ok(line) => line,
                Err(lossy) => {
                    return Ok(Some(Record::Bad {
                        position: file.position(line_no),
                        reason: "the line is not valid UTF-8".into(),
                        raw: lossy,
                    }));
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            return Ok(Some(match self.format {
                Format::Csv { delimiter, .. } => self.csv_record(line_no, line, crlf, delimiter)?,
                Format::JsonLines => self.json_record(line_no, &line),
            }));
        }
    }

    fn csv_record(
        &mut self,
        line_no: u64,
        first: String,
        crlf: bool,
        delimiter: u8,
    ) -> Result<Record> {
        let Some(file) = self.open.as_mut() else {
            return Err(self.info.fail("no open file"));
        };
        let mut raw = first;
        let mut first_len = None;
        let mut continued: Vec<Line> = Vec::new();
        let mut break_crlf = crlf;
        loop {
            match split_csv(&raw, delimiter, &mut self.text, &mut self.fields) {
                Ok(true) => break,
                Ok(false) => {
                    let next = if raw.len() > MAX_RECORD_BYTES {
                        None
                    } else {
                        file.next_line()?
                    };
                    match next {
                        Some(Line {
                            no,
                            text: Ok(text),
                            crlf,
                        }) => {
                            first_len.get_or_insert(raw.len());
                            raw.push_str(if break_crlf { "\r\n" } else { "\n" });
                            raw.push_str(&text);
                            break_crlf = crlf;
                            continued.push(Line {
                                no,
                                text: Ok(text),
                                crlf,
                            });
                        }
                        other => {
                            // Unterminated: report the first line alone and read the others again.
                            file.pushback.extend(continued);
                            file.pushback.extend(other);
                            raw.truncate(first_len.unwrap_or(raw.len()));
                            return Ok(Record::Bad {
                                position: file.position(line_no),
                                reason: "unterminated quoted field".into(),
                                raw,
                            });
                        }
                    }
                }
                Err(reason) => {
                    return Ok(Record::Bad {
                        position: file.position(line_no),
                        reason,
                        raw,
                    });
                }
            }
        }
        match csv_cells(
            &self.columns,
            &self.utc,
            &self.text,
            &self.fields,
            &mut self.cells,
        ) {
            Ok(()) => Ok(Record::Good),
            Err(reason) => Ok(Record::Bad {
                position: file.position(line_no),
                reason,
                raw,
            }),
        }
    }

    fn json_record(&mut self, line_no: u64, line: &str) -> Record {
        let position = || {
            self.open
                .as_ref()
                .map(|f| f.position(line_no))
                .unwrap_or_default()
        };
        match json_cells(
            &self.columns,
            &self.index,
            &self.utc,
            line,
            &mut self.text,
            &mut self.cells,
        ) {
            Ok(()) => Record::Good,
            Err(reason) => Record::Bad {
                position: position(),
                reason,
                raw: line.to_owned(),
            },
        }
    }
}

/// Reads the fields of one split CSV record into `cells`, or says why the record is malformed.
fn csv_cells(
    columns: &[Column],
    utc: &Tz,
    text: &str,
    fields: &[(Range<usize>, bool)],
    cells: &mut Vec<Cell>,
) -> std::result::Result<(), String> {
    if fields.len() != columns.len() {
        return Err(format!(
            "expected {} fields, found {}",
            columns.len(),
            fields.len()
        ));
    }
    cells.clear();
    for (column, (range, quoted)) in columns.iter().zip(fields) {
        cells.push(cell_from_text(column, utc, text, range.clone(), *quoted)?);
    }
    Ok(())
}

/// Reads one JSON object's fields (by column name; others are ignored) into `cells`, string
/// values into `text`, or says why the record is malformed.
fn json_cells(
    columns: &[Column],
    index: &HashMap<String, usize>,
    utc: &Tz,
    line: &str,
    text: &mut String,
    cells: &mut Vec<Cell>,
) -> std::result::Result<(), String> {
    let mut slots: Vec<Option<Scalar<'_>>> = vec![None; columns.len()];
    Json::new(line).object(|key, value| {
        if let Some(&i) = index.get(key.as_ref()) {
            slots[i] = Some(value);
        }
    })?;
    text.clear();
    cells.clear();
    for (column, slot) in columns.iter().zip(&slots) {
        cells.push(cell_from_json(column, utc, slot.as_ref(), text)?);
    }
    Ok(())
}

/// Reads records that come one at a time, each a whole CSV record or JSON object (a message of
/// a Kafka topic), into batches, with the same types and the same errors as [`FileSource`]. A
/// malformed record is left out of the batch and its reason returned, for the source to report.
pub(crate) struct RecordDecoder {
    json: bool,
    delimiter: u8,
    schema: SchemaRef,
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    utc: Tz,
    text: String,
    fields: Vec<(Range<usize>, bool)>,
    cells: Vec<Cell>,
    buffers: Vec<ColumnBuf>,
    rows: usize,
}

impl RecordDecoder {
    /// CSV records (no header) separated by `delimiter`.
    pub(crate) fn csv(operator: &str, schema: SchemaRef, delimiter: u8) -> Result<Self> {
        Format::Csv {
            header: false,
            delimiter,
        }
        .check(operator)?;
        Self::new(operator, schema, false, delimiter)
    }

    /// JSON objects, fields by column name.
    pub(crate) fn json(operator: &str, schema: SchemaRef) -> Result<Self> {
        Self::new(operator, schema, true, b',')
    }

    fn new(operator: &str, schema: SchemaRef, json: bool, delimiter: u8) -> Result<Self> {
        let columns = columns_of(operator, &schema)?;
        let utc = Tz::from_str("+00:00").map_err(|e| Error::plan(operator, e.to_string()))?;
        Ok(Self {
            json,
            delimiter,
            schema,
            index: columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect(),
            buffers: columns.iter().map(|c| ColumnBuf::new(c, 0)).collect(),
            columns,
            utc,
            text: String::new(),
            fields: Vec::new(),
            cells: Vec::new(),
            rows: 0,
        })
    }

    /// Adds one record to the batch being built, or says why it is malformed.
    pub(crate) fn push(&mut self, record: &str) -> std::result::Result<(), String> {
        if self.json {
            json_cells(
                &self.columns,
                &self.index,
                &self.utc,
                record,
                &mut self.text,
                &mut self.cells,
            )?;
        } else {
            let record = record.strip_suffix('\n').unwrap_or(record);
            let record = record.strip_suffix('\r').unwrap_or(record);
            if !split_csv(record, self.delimiter, &mut self.text, &mut self.fields)? {
                return Err("unterminated quoted field".into());
            }
            csv_cells(
                &self.columns,
                &self.utc,
                &self.text,
                &self.fields,
                &mut self.cells,
            )?;
        }
        for (buffer, cell) in self.buffers.iter_mut().zip(&self.cells) {
            buffer.append(cell, &self.text);
        }
        self.rows += 1;
        Ok(())
    }

    /// Records in the batch being built.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// The batch of the records pushed since the last call; `None` if there were none.
    pub(crate) fn finish(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let columns = self
            .buffers
            .iter_mut()
            .zip(&self.columns)
            .map(|(b, c)| b.finish(&c.data_type))
            .collect();
        let rows = std::mem::take(&mut self.rows);
        Ok(Some(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?))
    }
}

impl Source for FileReader {
    fn poll(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll> {
        let target = ctx.batch_size.max(1);
        let mut buffers: Vec<ColumnBuf> = self
            .columns
            .iter()
            .map(|c| ColumnBuf::new(c, target))
            .collect();
        let mut good = 0;
        let mut seen = 0;
        let mut finished = false;
        while seen < target {
            let Some(record) = self.next_record()? else {
                finished = true;
                break;
            };
            seen += 1;
            match record {
                Record::Good => {
                    for (buffer, cell) in buffers.iter_mut().zip(&self.cells) {
                        buffer.append(cell, &self.text);
                    }
                    good += 1;
                }
                Record::Bad {
                    position,
                    reason,
                    raw,
                } => ctx.malformed(position, reason, raw)?,
            }
        }
        if good > 0 {
            let columns = buffers
                .iter_mut()
                .zip(&self.columns)
                .map(|(b, c)| b.finish(&c.data_type))
                .collect();
            let batch = RecordBatch::try_new_with_options(
                self.schema.clone(),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(good)),
            )?;
            return Ok(SourcePoll::Data(batch));
        }
        Ok(if finished {
            SourcePoll::Finished
        } else {
            // A whole batch of malformed records: their dead letters go out now; poll again.
            SourcePoll::Pending(Duration::ZERO)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// FileSink
// ---------------------------------------------------------------------------------------------

/// Writes CSV or JSON-lines part files, one per subtask, into the directory `path` (created if
/// needed; an existing part file of the same name is replaced when the subtask finishes).
///
/// Values are written so that [`FileSource`] reads them back exactly: timestamps as epoch
/// milliseconds, floats in their shortest exact form. CSV: a header line (by default), fields
/// quoted only when needed, null as an empty field and the empty string as `""`. JSON lines: one
/// object per row, nulls written as `null`.
#[derive(Debug, Clone)]
pub struct FileSink {
    dir: PathBuf,
    format: Format,
    /// Partition columns: rows go to `dir/<col>=<value>/...`, without those columns.
    partition_by: Vec<String>,
    /// Write an empty `_SUCCESS` file into every partition directory when the input ends.
    success_files: bool,
}

impl FileSink {
    /// CSV part files in the directory `path`, with a header line, `,`-separated.
    pub fn csv(path: impl AsRef<Path>) -> Self {
        Self {
            dir: path.as_ref().to_owned(),
            format: Format::Csv {
                header: true,
                delimiter: b',',
            },
            partition_by: Vec::new(),
            success_files: false,
        }
    }

    /// JSON-lines part files in the directory `path`.
    pub fn json_lines(path: impl AsRef<Path>) -> Self {
        Self {
            dir: path.as_ref().to_owned(),
            format: Format::JsonLines,
            partition_by: Vec::new(),
            success_files: false,
        }
    }

    /// Whether CSV files start with a header line (default true). No effect on JSON.
    pub fn with_header(mut self, header: bool) -> Self {
        if let Format::Csv { header: h, .. } = &mut self.format {
            *h = header;
        }
        self
    }

    /// The CSV field delimiter (default `,`; must be ASCII). No effect on JSON.
    pub fn with_delimiter(mut self, delimiter: u8) -> Self {
        if let Format::Csv { delimiter: d, .. } = &mut self.format {
            *d = delimiter;
        }
        self
    }

    /// The part file subtask `subtask` writes.
    pub fn part_path(&self, subtask: u32) -> PathBuf {
        self.dir
            .join(format!("part-{subtask}.{}", self.format.extension()))
    }

    /// Partitions the output by `columns`, as Flink's filesystem sink with `PARTITIONED BY`:
    /// each row goes to the directory `<col>=<value>/...` under the sink's (values escaped as
    /// Flink escapes them; null or empty as `__DEFAULT_PARTITION__`), and the files hold the
    /// other columns.
    pub fn partition_by(mut self, columns: &[&str]) -> Self {
        self.partition_by = columns.iter().map(|c| (*c).to_owned()).collect();
        self
    }

    /// Whether every partition directory gets an empty `_SUCCESS` file when the input ends
    /// (Flink's `success-file` partition commit policy).
    pub fn with_success_files(mut self, success_files: bool) -> Self {
        self.success_files = success_files;
        self
    }

    /// Opens subtask `subtask`'s part file in `dir` for records of `schema`.
    fn open_part(&self, dir: &Path, subtask: u32, schema: &Schema) -> Result<PartWriter> {
        let path = dir.join(format!("part-{subtask}.{}", self.format.extension()));
        let tmp = dir.join(format!(
            ".part-{subtask}.{}.inprogress",
            self.format.extension()
        ));
        let display = path.display().to_string();
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let file = File::create(&tmp).map_err(|e| Error::io(format!("creating {display}"), e))?;
        let mut writer = BufWriter::with_capacity(IO_BUFFER, file);
        let out = match self.format {
            Format::Csv { header, delimiter } => {
                if header {
                    let mut line = String::new();
                    for (i, f) in schema.fields().iter().enumerate() {
                        if i > 0 {
                            line.push(char::from(delimiter));
                        }
                        push_csv_text(&mut line, f.name(), delimiter);
                    }
                    line.push('\n');
                    writer
                        .write_all(line.as_bytes())
                        .map_err(|e| Error::io(format!("writing {display}"), e))?;
                }
                PartOut::Csv {
                    writer,
                    delimiter,
                    line: String::new(),
                }
            }
            Format::JsonLines => PartOut::Json(Box::new(
                WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(writer),
            )),
        };
        Ok(PartWriter {
            display,
            path,
            tmp,
            out: Some(out),
        })
    }
}

/// A partition value as a directory name part, escaped as Flink (and Hive) escape them.
fn escape_partition_value(value: &str) -> String {
    if value.is_empty() {
        return "__DEFAULT_PARTITION__".into();
    }
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        let escaped = c < ' '
            || matches!(
                c,
                '"' | '#'
                    | '%'
                    | '\''
                    | '*'
                    | '/'
                    | ':'
                    | '='
                    | '?'
                    | '\\'
                    | '\x7f'
                    | '{'
                    | '['
                    | ']'
                    | '^'
            );
        if escaped {
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

impl SinkBuilder for FileSink {
    fn name(&self) -> String {
        format!("{}-sink({})", self.format.label(), self.dir.display())
    }

    fn factory(self, schema: &SchemaRef) -> Result<OperatorFactory> {
        let name = self.name();
        self.format.check(&name)?;
        columns_of(&name, schema)?;
        let partitions = self
            .partition_by
            .iter()
            .map(|c| {
                schema.index_of(c).map_err(|_| {
                    Error::plan(&name, format!("partition column '{c}' is not a column"))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let data: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !partitions.contains(i))
            .collect();
        if data.is_empty() {
            return Err(Error::plan(&name, "every column is a partition column"));
        }
        let data_schema = Arc::new(schema.project(&data)?);
        let sink = Arc::new(self);
        Ok(Arc::new(move |info| {
            if partitions.is_empty() {
                return Ok(
                    Box::new(sink.open_part(&sink.dir, info.index, &data_schema)?)
                        as Box<dyn Operator>,
                );
            }
            Ok(Box::new(PartitionedWriter {
                sink: sink.clone(),
                subtask: info.index,
                partitions: partitions.clone(),
                data: data.clone(),
                data_schema: data_schema.clone(),
                writers: HashMap::new(),
            }) as Box<dyn Operator>)
        }))
    }
}

/// One subtask of a partitioned file sink: a part file per partition directory it wrote to.
struct PartitionedWriter {
    sink: Arc<FileSink>,
    subtask: u32,
    partitions: Vec<usize>,
    data: Vec<usize>,
    data_schema: SchemaRef,
    writers: HashMap<PathBuf, PartWriter>,
}

impl Operator for PartitionedWriter {
    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let options = FormatOptions::default();
        let formatters = self
            .partitions
            .iter()
            .map(|&i| ArrayFormatter::try_new(batch.column(i).as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        // Rows by partition directory, in order of first appearance.
        let mut rows: Vec<(PathBuf, Vec<u32>)> = Vec::new();
        let mut index: HashMap<PathBuf, usize> = HashMap::new();
        for row in 0..batch.num_rows() {
            let mut dir = self.sink.dir.clone();
            for ((&c, f), column) in self
                .partitions
                .iter()
                .zip(&formatters)
                .zip(&self.sink.partition_by)
            {
                let value = if batch.column(c).is_null(row) {
                    String::new()
                } else {
                    f.value(row).to_string()
                };
                dir.push(format!("{column}={}", escape_partition_value(&value)));
            }
            let at = *index.entry(dir.clone()).or_insert_with(|| {
                rows.push((dir, Vec::new()));
                rows.len() - 1
            });
            rows[at].1.push(u32::try_from(row).unwrap_or(u32::MAX));
        }
        let data = batch.project(&self.data)?;
        for (dir, take) in rows {
            let indices = arrow::array::UInt32Array::from(take);
            let columns = data
                .columns()
                .iter()
                .map(|c| arrow::compute::take(c, &indices, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let part = RecordBatch::try_new(self.data_schema.clone(), columns)?;
            if !self.writers.contains_key(&dir) {
                let writer = self.sink.open_part(&dir, self.subtask, &self.data_schema)?;
                self.writers.insert(dir.clone(), writer);
            }
            if let Some(writer) = self.writers.get_mut(&dir) {
                writer.process(input, part, out)?;
            }
        }
        Ok(())
    }

    fn end_of_input(&mut self, out: &mut Output) -> Result<()> {
        for (dir, writer) in &mut self.writers {
            writer.end_of_input(out)?;
            if self.sink.success_files {
                let success = dir.join("_SUCCESS");
                File::create(&success)
                    .map_err(|e| Error::io(format!("creating {}", success.display()), e))?;
            }
        }
        Ok(())
    }
}

enum PartOut {
    Csv {
        writer: BufWriter<File>,
        delimiter: u8,
        /// Scratch for one batch's text.
        line: String,
    },
    Json(Box<LineDelimitedWriter<BufWriter<File>>>),
}

struct PartWriter {
    display: String,
    path: PathBuf,
    tmp: PathBuf,
    out: Option<PartOut>,
}

/// Appends `s` as a CSV field: quoted if it is empty or holds the delimiter, a quote or a line
/// break.
pub(crate) fn push_csv_text(out: &mut String, s: &str, delimiter: u8) {
    let needs_quotes = s.is_empty()
        || s.bytes()
            .any(|b| b == delimiter || matches!(b, b'"' | b'\n' | b'\r'));
    if needs_quotes {
        out.push('"');
        for c in s.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// How one column of a batch is written to CSV.
enum CsvColumn<'a> {
    Utf8(&'a arrow::array::StringArray),
    LargeUtf8(&'a arrow::array::LargeStringArray),
    Millis(&'a PrimitiveArray<TimestampMillisecondType>),
    Other(ArrayFormatter<'a>),
}

pub(crate) fn write_csv(batch: &RecordBatch, delimiter: u8, out: &mut String) -> Result<()> {
    write_csv_rows(batch, delimiter, out, None)
}

/// [`write_csv`], pushing where each row's line ends in `out` to `row_ends` (records that are
/// messages of their own; a quoted field may hold a line break, so lines cannot be split later).
pub(crate) fn write_csv_rows(
    batch: &RecordBatch,
    delimiter: u8,
    out: &mut String,
    mut row_ends: Option<&mut Vec<usize>>,
) -> Result<()> {
    let options = FormatOptions::default();
    let writers = batch
        .columns()
        .iter()
        .map(|c| -> Result<CsvColumn<'_>> {
            Ok(match c.data_type() {
                DataType::Utf8 => CsvColumn::Utf8(c.as_string::<i32>()),
                DataType::LargeUtf8 => CsvColumn::LargeUtf8(c.as_string::<i64>()),
                DataType::Timestamp(TimeUnit::Millisecond, _) => {
                    CsvColumn::Millis(c.as_primitive::<TimestampMillisecondType>())
                }
                _ => CsvColumn::Other(ArrayFormatter::try_new(c.as_ref(), &options)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut scratch = String::new();
    for row in 0..batch.num_rows() {
        for (i, (column, writer)) in batch.columns().iter().zip(&writers).enumerate() {
            if i > 0 {
                out.push(char::from(delimiter));
            }
            if column.is_null(row) {
                continue;
            }
            match writer {
                CsvColumn::Utf8(a) => push_csv_text(out, a.value(row), delimiter),
                CsvColumn::LargeUtf8(a) => push_csv_text(out, a.value(row), delimiter),
                CsvColumn::Millis(a) => {
                    // Writing into a String cannot fail.
                    let _ = write!(out, "{}", a.value(row));
                }
                CsvColumn::Other(f) => {
                    scratch.clear();
                    write!(scratch, "{}", f.value(row))
                        .map_err(|_| Error::user(format!("cannot format column {i}")))?;
                    push_csv_text(out, &scratch, delimiter);
                }
            }
        }
        out.push('\n');
        if let Some(ends) = row_ends.as_deref_mut() {
            ends.push(out.len());
        }
    }
    Ok(())
}

/// The batch with its timestamp columns as Int64 epoch milliseconds (for the JSON writer).
pub(crate) fn with_epoch_millis(batch: &RecordBatch) -> Result<RecordBatch> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Timestamp(..)))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if matches!(f.data_type(), DataType::Timestamp(..)) {
            fields.push(Field::new(f.name(), DataType::Int64, f.is_nullable()));
            columns.push(arrow::compute::cast(c, &DataType::Int64)?);
        } else {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

impl Operator for PartWriter {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let io = |e| Error::io(format!("writing {}", self.display), e);
        match &mut self.out {
            Some(PartOut::Csv {
                writer,
                delimiter,
                line,
            }) => {
                line.clear();
                write_csv(&batch, *delimiter, line)?;
                writer.write_all(line.as_bytes()).map_err(io)?;
            }
            Some(PartOut::Json(writer)) => writer.write(&with_epoch_millis(&batch)?)?,
            None => {
                return Err(Error::user(format!(
                    "{} received records after its input ended",
                    self.display
                )));
            }
        }
        Ok(())
    }

    fn end_of_input(&mut self, _out: &mut Output) -> Result<()> {
        let io = |e| Error::io(format!("writing {}", self.display), e);
        let writer = match self.out.take() {
            Some(PartOut::Csv { writer, .. }) => writer,
            Some(PartOut::Json(mut w)) => {
                w.finish()?;
                w.into_inner()
            }
            None => return Ok(()),
        };
        let file = writer.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn partition_values_are_escaped_as_flink_escapes_them() {
        assert_eq!(escape_partition_value("2015-07-15"), "2015-07-15");
        assert_eq!(escape_partition_value("00:01"), "00%3A01");
        assert_eq!(escape_partition_value("a/b=c%"), "a%2Fb%3Dc%25");
        assert_eq!(escape_partition_value(""), "__DEFAULT_PARTITION__");
    }

    fn split(s: &str) -> std::result::Result<(bool, Vec<(String, bool)>), String> {
        let mut text = String::new();
        let mut fields = Vec::new();
        let done = split_csv(s, b',', &mut text, &mut fields)?;
        Ok((
            done,
            fields
                .iter()
                .map(|(r, q)| (text[r.clone()].to_owned(), *q))
                .collect(),
        ))
    }

    #[test]
    fn csv_split_handles_quotes() {
        let (done, f) = split(r#"a,"b,c","d""e",,"""#).unwrap();
        assert!(done);
        let got: Vec<_> = f.iter().map(|(s, q)| (s.as_str(), *q)).collect();
        assert_eq!(
            got,
            [
                ("a", false),
                ("b,c", true),
                ("d\"e", true),
                ("", false),
                ("", true)
            ]
        );
        assert!(!split("x,\"open").unwrap().0);
        assert!(split(r#""a"b,c"#).is_err());
        assert_eq!(split("a\"b").unwrap().1, [("a\"b".to_owned(), false)]);
        assert_eq!(split("").unwrap().1, [(String::new(), false)]);
    }

    #[test]
    fn json_scanner_reads_flat_objects() {
        let mut seen = Vec::new();
        Json::new(
            r#" {"a": 1.5e3, "b": "x\"\u00e9\ud83d\ude00", "c": [1, {"d": null}], "e": true} "#,
        )
        .object(|k, v| seen.push((k.into_owned(), v.describe())))
        .unwrap();
        assert_eq!(
            seen,
            [
                ("a".to_owned(), "1.5e3".to_owned()),
                ("b".to_owned(), format!("{:?}", "x\"é😀")),
                ("c".to_owned(), "an array".to_owned()),
                ("e".to_owned(), "true".to_owned()),
            ]
        );
        for bad in [
            "",
            "[]",
            "{",
            r#"{"a"}"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":1} x"#,
            r#"{"a":tru}"#,
            r#"{"a":"\ud800"}"#,
            "{\"a\":\"\t\"}",
        ] {
            assert!(Json::new(bad).object(|_, _| {}).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_parse_from_millis_and_text() {
        let utc = Tz::from_str("+00:00").unwrap();
        assert_eq!(
            parse_timestamp(&utc, "1700000000123"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_timestamp(&utc, "-5"), Some(-5));
        assert_eq!(
            parse_timestamp(&utc, "2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_timestamp(&utc, "2023-11-14 22:13:20.5"),
            Some(1_700_000_000_500)
        );
        assert_eq!(
            parse_timestamp(&utc, "2023-11-14 22:13:20"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_timestamp(&utc, "2023-11-15T00:13:20+02:00"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_timestamp(&utc, "yesterday"), None);
    }
}
