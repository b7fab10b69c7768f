//! Generated input, like Flink's `datagen` connector: [`DatagenSource`], rows whose fields come
//! from per-field generators (sequences, random numbers and strings, an event-time column), and
//! [`KeyedEvents`], the fixed `(key, ts)` input of the windowed-count benchmark that the Flink peer
//! (`bench/flink/src/dev/strom/bench/WindowedCount.java`) generates identically.
//!
//! Every value is a pure function of the seed, the field and the row index: no generator state is
//! carried between rows, so the same rows come out at any parallelism (as a multiset) and any
//! row can be recomputed on its own ([`DatagenSource::row`], [`keyed_event`]). This is not a
//! source of realistic data distributions or of true randomness; the Nexmark source is the
//! benchmark input with a realistic shape.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringBuilder, TimestampMillisecondArray};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::SourceBuilder;
use super::interleaved;
use crate::checkpoint::state::{RestoredState, StateWriter, decode, encode};
use crate::error::{Error, Result};
use crate::operator::{Source, SourceContext, SourcePoll};
use crate::plan::SourceFactory;
use crate::row::{Row, Value};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const ROW_MUL: u64 = 0xD1B5_4A32_D192_ED03;

/// splitmix64 of `n`: `z = n + 0x9E3779B97F4A7C15`, then splitmix64's output mix, all wrapping.
#[inline]
pub fn splitmix64(n: u64) -> u64 {
    mix64(n.wrapping_add(GOLDEN))
}

/// splitmix64's output function.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `floor(x * bound / 2^64)`: a uniform word mapped onto `0..bound`.
#[inline]
fn below(x: u64, bound: u64) -> u64 {
    ((u128::from(x) * u128::from(bound)) >> 64) as u64
}

// ---------------------------------------------------------------------------------------------
// DatagenSource
// ---------------------------------------------------------------------------------------------

/// How one field of a [`DatagenSource`] is generated from the row index `r` (0-based).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldGen {
    /// `Int64` `start + r`, for `r` in `0..=end-start`: a bounded sequence. The source ends after
    /// the shortest sequence (or the row limit).
    Sequence { start: i64, end: i64 },
    /// `Int64` uniform in `min..=max`.
    Random { min: i64, max: i64 },
    /// `Float64` uniform in `[min, max)`.
    RandomFloat { min: f64, max: f64 },
    /// `Utf8` of `length` random lowercase hexadecimal digits (as Flink's datagen strings).
    RandomString { length: usize },
    /// `Timestamp(ms)` `base_ms + floor(r * 1000 / rows_per_second)`: event time advancing by one
    /// second every `rows_per_second` rows (0 counts as 1). Ascending in `r`.
    EventTime { base_ms: i64, rows_per_second: u64 },
}

impl FieldGen {
    fn data_type(&self) -> DataType {
        match self {
            FieldGen::Sequence { .. } | FieldGen::Random { .. } => DataType::Int64,
            FieldGen::RandomFloat { .. } => DataType::Float64,
            FieldGen::RandomString { .. } => DataType::Utf8,
            FieldGen::EventTime { .. } => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        match self {
            FieldGen::Sequence { start, end } if end < start => {
                Err(format!("sequence end {end} is below its start {start}"))
            }
            FieldGen::Random { min, max } if max < min => {
                Err(format!("random max {max} is below its min {min}"))
            }
            FieldGen::RandomFloat { min, max } if max < min || !(max - min).is_finite() => Err(
                format!("random float range [{min}, {max}) is not a finite range"),
            ),
            _ => Ok(()),
        }
    }

    /// Rows this field allows, if it bounds the source.
    fn rows(&self) -> Option<u64> {
        match self {
            FieldGen::Sequence { start, end } => {
                Some((*end as i128 - *start as i128 + 1).clamp(0, u64::MAX as i128) as u64)
            }
            _ => None,
        }
    }
}

/// Rows of generated fields (Flink's `datagen` connector). Build it with the field methods, e.g.
///
/// ```ignore
/// DatagenSource::new()
///     .sequence("id", 1, 1_000_000)
///     .random_int("user", 0, 99)
///     .random_string("tag", 8)
///     .event_time("ts", 1000)
/// ```
///
/// The source is bounded by the shortest [`FieldGen::Sequence`] and by [`Self::with_limit`];
/// without either it is unbounded. Row `r` is a pure function of the seed and `r`; subtask `i` of
/// `p` generates rows `r = i, i + p, i + 2p, …`, so event time ascends within each subtask.
#[derive(Clone)]
pub struct DatagenSource {
    name: String,
    fields: Vec<(String, FieldGen)>,
    seed: u64,
    limit: Option<u64>,
    rate: Option<u64>,
}

impl fmt::Debug for DatagenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagenSource")
            .field("name", &self.name)
            .field("fields", &self.fields)
            .field("seed", &self.seed)
            .field("limit", &self.limit)
            .finish()
    }
}

impl Default for DatagenSource {
    fn default() -> Self {
        Self::new()
    }
}

/// Base of [`DatagenSource::event_time`] fields: 2023-11-14T22:13:20Z.
pub const DEFAULT_BASE_MS: i64 = 1_700_000_000_000;

impl DatagenSource {
    /// A source with no fields yet, seed 0, no row limit and no rate limit.
    pub fn new() -> Self {
        Self {
            name: "datagen".into(),
            fields: Vec::new(),
            seed: 0,
            limit: None,
            rate: None,
        }
    }

    /// Sets the operator's display name (`datagen(<name>)`).
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = format!("datagen({name})");
        self
    }

    /// Adds a field.
    pub fn field(mut self, name: &str, generator: FieldGen) -> Self {
        self.fields.push((name.into(), generator));
        self
    }

    /// Adds an `Int64` sequence `start..=end` (bounds the source).
    pub fn sequence(self, name: &str, start: i64, end: i64) -> Self {
        self.field(name, FieldGen::Sequence { start, end })
    }

    /// Adds an `Int64` uniform in `min..=max`.
    pub fn random_int(self, name: &str, min: i64, max: i64) -> Self {
        self.field(name, FieldGen::Random { min, max })
    }

    /// Adds a `Float64` uniform in `[min, max)`.
    pub fn random_float(self, name: &str, min: f64, max: f64) -> Self {
        self.field(name, FieldGen::RandomFloat { min, max })
    }

    /// Adds a `Utf8` of `length` random hexadecimal digits.
    pub fn random_string(self, name: &str, length: usize) -> Self {
        self.field(name, FieldGen::RandomString { length })
    }

    /// Adds a `Timestamp(ms)` event time starting at [`DEFAULT_BASE_MS`] and advancing one second
    /// per `rows_per_second` rows.
    pub fn event_time(self, name: &str, rows_per_second: u64) -> Self {
        self.field(
            name,
            FieldGen::EventTime {
                base_ms: DEFAULT_BASE_MS,
                rows_per_second,
            },
        )
    }

    /// Seed of the random fields (default 0).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Generates at most `rows` rows in all.
    pub fn with_limit(mut self, rows: u64) -> Self {
        self.limit = Some(rows);
        self
    }

    /// Emits at most `rows_per_sec` rows per second of wall-clock time in total, shared equally by
    /// the subtasks; 0 means no limit (the default). Event time is unaffected.
    pub fn with_rate_limit(mut self, rows_per_sec: u64) -> Self {
        self.rate = (rows_per_sec > 0).then_some(rows_per_sec);
        self
    }

    /// Checks the fields: at least one, unique names, non-empty ranges.
    pub fn validate(&self) -> Result<()> {
        if self.fields.is_empty() {
            return Err(Error::plan(&self.name, "a datagen source needs a field"));
        }
        for (i, (name, generator)) in self.fields.iter().enumerate() {
            if self.fields[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::plan(
                    &self.name,
                    format!("field '{name}' is defined twice"),
                ));
            }
            generator
                .check()
                .map_err(|m| Error::plan(&self.name, format!("field '{name}': {m}")))?;
        }
        Ok(())
    }

    /// Number of rows the source generates in all; `None` if it is unbounded.
    pub fn rows(&self) -> Option<u64> {
        self.fields
            .iter()
            .filter_map(|(_, g)| g.rows())
            .chain(self.limit)
            .min()
    }

    /// Row `r`, computed on its own (tests, tools); [`Value::Int`] for timestamps.
    pub fn row(&self, r: u64) -> Row {
        self.fields
            .iter()
            .enumerate()
            .map(|(slot, (_, generator))| match generator {
                FieldGen::RandomFloat { .. } => {
                    Value::Float(float_at(self.seed, slot, generator, r))
                }
                FieldGen::RandomString { length } => {
                    let mut s = String::with_capacity(*length);
                    hex_string(draw(self.seed, slot, r), *length, &mut s);
                    Value::Str(s)
                }
                _ => Value::Int(int_at(self.seed, slot, generator, r)),
            })
            .collect()
    }

    /// Rows `start, start + step, …` (`len` of them) as a batch of [`SourceBuilder::schema`].
    pub fn batch(&self, start: u64, step: u64, len: usize) -> Result<RecordBatch> {
        let schema = self.schema();
        let rows = || (0..len as u64).map(move |i| start.wrapping_add(i.wrapping_mul(step)));
        let columns = self
            .fields
            .iter()
            .enumerate()
            .map(|(slot, (_, generator))| -> ArrayRef {
                match generator {
                    FieldGen::RandomFloat { .. } => {
                        let v: Vec<f64> = rows()
                            .map(|r| float_at(self.seed, slot, generator, r))
                            .collect();
                        Arc::new(Float64Array::new(ScalarBuffer::from(v), None))
                    }
                    FieldGen::RandomString { length } => {
                        let mut b = StringBuilder::with_capacity(len, len.saturating_mul(*length));
                        let mut s = String::with_capacity(*length);
                        for r in rows() {
                            s.clear();
                            hex_string(draw(self.seed, slot, r), *length, &mut s);
                            b.append_value(&s);
                        }
                        Arc::new(b.finish())
                    }
                    FieldGen::EventTime { .. } => {
                        let v: Vec<i64> = rows()
                            .map(|r| int_at(self.seed, slot, generator, r))
                            .collect();
                        Arc::new(TimestampMillisecondArray::new(ScalarBuffer::from(v), None))
                    }
                    _ => {
                        let v: Vec<i64> = rows()
                            .map(|r| int_at(self.seed, slot, generator, r))
                            .collect();
                        Arc::new(Int64Array::new(ScalarBuffer::from(v), None))
                    }
                }
            })
            .collect();
        Ok(RecordBatch::try_new_with_options(
            schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(len)),
        )?)
    }
}

/// The random word of field `slot` in row `r`.
#[inline]
fn draw(seed: u64, slot: usize, r: u64) -> u64 {
    let base = mix64(seed ^ r.wrapping_mul(ROW_MUL));
    mix64(base.wrapping_add((slot as u64 + 1).wrapping_mul(GOLDEN)))
}

/// Value of an integer or timestamp field.
#[inline]
fn int_at(seed: u64, slot: usize, generator: &FieldGen, r: u64) -> i64 {
    match *generator {
        FieldGen::Sequence { start, .. } => start.wrapping_add(r as i64),
        FieldGen::Random { min, max } => {
            let span = (max.wrapping_sub(min) as u64).wrapping_add(1);
            let x = draw(seed, slot, r);
            // span == 0: the whole i64 range.
            let offset = if span == 0 { x } else { below(x, span) };
            min.wrapping_add(offset as i64)
        }
        FieldGen::EventTime {
            base_ms,
            rows_per_second,
        } => {
            let rps = rows_per_second.max(1);
            let ms =
                (r / rps) as i128 * 1000 + (u128::from(r % rps) * 1000 / u128::from(rps)) as i128;
            (i128::from(base_ms) + ms).clamp(i64::MIN as i128, i64::MAX as i128) as i64
        }
        FieldGen::RandomFloat { .. } | FieldGen::RandomString { .. } => 0,
    }
}

/// Value of a float field.
#[inline]
fn float_at(seed: u64, slot: usize, generator: &FieldGen, r: u64) -> f64 {
    match *generator {
        FieldGen::RandomFloat { min, max } => {
            let unit = (draw(seed, slot, r) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            let v = min + unit * (max - min);
            // Rounding can reach `max`; keep the range half-open.
            if v >= max && max > min {
                min.max(max.next_down())
            } else {
                v
            }
        }
        _ => 0.0,
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `len` hex digits derived from `key` (16 per 64-bit word).
fn hex_string(key: u64, len: usize, out: &mut String) {
    let mut chunk = 0u64;
    let mut left = len;
    while left > 0 {
        chunk += 1;
        let mut w = mix64(key.wrapping_add(chunk.wrapping_mul(GOLDEN)));
        for _ in 0..left.min(16) {
            out.push(char::from(HEX[(w & 15) as usize]));
            w >>= 4;
        }
        left = left.saturating_sub(16);
    }
}

impl SourceBuilder for DatagenSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.fields
                .iter()
                .map(|(name, g)| Field::new(name, g.data_type(), false))
                .collect::<Vec<_>>(),
        ))
    }

    fn factory(self) -> SourceFactory {
        let checked = self.validate().map_err(|e| e.to_string());
        let end = self.rows().unwrap_or(u64::MAX);
        let rate = self.rate;
        let spec = Arc::new(self);
        Arc::new(move |info| {
            if let Err(message) = &checked {
                return Err(info.fail(message));
            }
            Ok(interleaved::subtask(spec.clone(), info, end, rate))
        })
    }
}

impl interleaved::IndexedBatches for DatagenSource {
    fn batch(&self, start: u64, step: u64, len: usize) -> Result<RecordBatch> {
        DatagenSource::batch(self, start, step, len)
    }
}

// ---------------------------------------------------------------------------------------------
// KeyedEvents
// ---------------------------------------------------------------------------------------------

/// Event time of event 0 of [`KeyedEvents`] (epoch ms).
pub const KEYED_EVENTS_BASE_TS: i64 = 1_700_000_000_000;

/// Event `n` of [`KeyedEvents`] with `keys` keys: `(splitmix64(n) % keys, 1_700_000_000_000 +
/// n / 1000)`; the remainder is taken on the unsigned word.
#[inline]
pub fn keyed_event(n: u64, keys: u64) -> (i64, i64) {
    let key = (splitmix64(n) % keys.max(1)) as i64;
    (key, KEYED_EVENTS_BASE_TS + (n / 1000) as i64)
}

static KEYED_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]))
});

/// The input of the windowed-count benchmark, identical to the Flink peer's: events `n` in
/// `0..events`, event `n` being [`keyed_event`]`(n, keys)` (`key` Int64, `ts` Timestamp(ms): a
/// thousand events per event-time millisecond, a million per second).
///
/// Split like Flink's `DataGeneratorSource`: subtask `i` of `p` generates the contiguous range
/// `events * i / p .. events * (i + 1) / p` in order, so `ts` ascends within each subtask
/// (`WatermarkStrategy::ascending("ts")` holds). Generation is columnar: two `Vec<i64>` filled in
/// a tight loop per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedEvents {
    events: u64,
    keys: u64,
}

impl KeyedEvents {
    /// Events `0..events` over 1000 keys.
    pub fn new(events: u64) -> Self {
        Self { events, keys: 1000 }
    }

    /// Uses `keys` keys (`0..keys`; 0 counts as 1).
    pub fn with_keys(mut self, keys: u64) -> Self {
        self.keys = keys.max(1);
        self
    }

    /// Number of events.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Number of keys.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// The events subtask `index` of `parallelism` generates.
    pub fn range(&self, index: u32, parallelism: u32) -> Range<u64> {
        let p = u128::from(parallelism.max(1));
        let n = u128::from(self.events);
        let at = |i: u128| (n * i / p) as u64;
        at(u128::from(index))..at(u128::from(index) + 1)
    }

    /// Events `range` as a batch of `(key, ts)`.
    pub fn batch(&self, range: Range<u64>) -> Result<RecordBatch> {
        let len = usize::try_from(range.end.saturating_sub(range.start))
            .map_err(|_| Error::user("keyed events: batch too large"))?;
        let mut keys = Vec::with_capacity(len);
        let mut ts = Vec::with_capacity(len);
        // A constant divisor lets the compiler replace the remainder by multiplications.
        if self.keys == 1000 {
            fill(range, |z| z % 1000, &mut keys, &mut ts);
        } else {
            let k = self.keys;
            fill(range, |z| z % k, &mut keys, &mut ts);
        }
        Ok(RecordBatch::try_new(
            KEYED_SCHEMA.clone(),
            vec![
                Arc::new(Int64Array::new(ScalarBuffer::from(keys), None)),
                Arc::new(TimestampMillisecondArray::new(ScalarBuffer::from(ts), None)),
            ],
        )?)
    }
}

#[inline(always)]
fn fill(range: Range<u64>, rem: impl Fn(u64) -> u64, keys: &mut Vec<i64>, ts: &mut Vec<i64>) {
    keys.extend(range.clone().map(|n| rem(splitmix64(n)) as i64));
    ts.extend(range.map(|n| KEYED_EVENTS_BASE_TS + (n / 1000) as i64));
}

impl SourceBuilder for KeyedEvents {
    fn name(&self) -> String {
        "keyed-events".into()
    }

    fn schema(&self) -> SchemaRef {
        KEYED_SCHEMA.clone()
    }

    fn factory(self) -> SourceFactory {
        Arc::new(move |info| {
            Ok(Box::new(KeyedEventsSubtask {
                spec: self,
                ranges: vec![(info.index, self.range(info.index, info.parallelism))],
            }) as Box<dyn Source>)
        })
    }
}

/// A subtask of [`KeyedEvents`]: the ranges of event indices it has still to produce, each a split
/// `(id, range)`. At the first start it has one; a restore at another parallelism hands the
/// remaining ranges of the old subtasks out round-robin, and a subtask with several reads the one
/// furthest behind first (event time grows with the index), with a watermark per split.
struct KeyedEventsSubtask {
    spec: KeyedEvents,
    ranges: Vec<(u32, Range<u64>)>,
}

const RANGES: &str = "ranges";

impl Source for KeyedEventsSubtask {
    fn poll(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll> {
        let several = self.ranges.len() > 1;
        let Some((id, range)) = self
            .ranges
            .iter_mut()
            .filter(|(_, r)| !r.is_empty())
            .min_by_key(|(_, r)| r.start)
        else {
            return Ok(SourcePoll::Finished);
        };
        let len = (range.end - range.start).min(ctx.batch_size.max(1) as u64);
        let end = range.start + len;
        let batch = self.spec.batch(range.start..end)?;
        range.start = end;
        Ok(if several {
            SourcePoll::SplitData(*id, batch)
        } else {
            SourcePoll::Data(batch)
        })
    }

    fn snapshot(&mut self, out: &mut StateWriter) -> Result<()> {
        for (id, range) in &self.ranges {
            out.list_entry(RANGES, encode(&(*id, range.start, range.end))?);
        }
        Ok(())
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        self.ranges = state
            .list(RANGES)
            .iter()
            .map(|bytes| decode::<(u32, u64, u64)>(bytes).map(|(id, a, b)| (id, a..b)))
            .collect::<Result<_>>()?;
        Ok(())
    }

    fn open_splits(&self) -> Option<Vec<u32>> {
        (self.ranges.len() > 1).then(|| {
            self.ranges
                .iter()
                .filter(|(_, r)| !r.is_empty())
                .map(|(id, _)| *id)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use arrow::array::AsArray;
    use arrow::datatypes::{Int64Type, TimestampMillisecondType};

    use super::*;
    use crate::row::rows_of;

    #[test]
    fn splitmix64_reference_values() {
        // splitmix64 seeded with 0: its first outputs are the mix of GOLDEN, 2*GOLDEN, ...
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(GOLDEN), 0x6E78_9E6A_A1B9_65F4);
        let (key, ts) = keyed_event(1234, 1000);
        assert_eq!(key, (splitmix64(1234) % 1000) as i64);
        assert_eq!(ts, 1_700_000_000_001);
    }

    #[test]
    fn keyed_events_batch_matches_formula_and_ranges_cover() {
        let ev = KeyedEvents::new(10_007);
        let b = ev.batch(3000..3100).unwrap();
        let keys = b.column(0).as_primitive::<Int64Type>();
        let ts = b.column(1).as_primitive::<TimestampMillisecondType>();
        for (i, n) in (3000..3100u64).enumerate() {
            assert_eq!((keys.value(i), ts.value(i)), keyed_event(n, 1000));
        }
        let other = ev.with_keys(7).batch(0..50).unwrap();
        let keys = other.column(0).as_primitive::<Int64Type>();
        assert!(keys.values().iter().all(|k| (0..7).contains(k)));
        for p in [1u32, 3, 4] {
            let mut next = 0;
            for i in 0..p {
                let r = ev.range(i, p);
                assert_eq!(r.start, next);
                next = r.end;
            }
            assert_eq!(next, 10_007);
        }
    }

    #[test]
    fn datagen_batches_equal_rows_and_respect_ranges() {
        let src = DatagenSource::new()
            .sequence("id", 10, 29)
            .random_int("r", -3, 3)
            .random_float("f", 1.0, 2.0)
            .random_string("s", 20)
            .event_time("ts", 4)
            .with_seed(9);
        src.validate().unwrap();
        assert_eq!(src.rows(), Some(20));
        let b = src.batch(1, 3, 5).unwrap();
        let rows = rows_of(&b).unwrap();
        for (i, row) in rows.iter().enumerate() {
            let r = 1 + 3 * i as u64;
            assert_eq!(row, &src.row(r));
            assert_eq!(row[0], Value::Int(10 + r as i64));
            assert!((-3..=3).contains(&row[1].as_i64().unwrap()));
            let f = row[2].as_f64().unwrap();
            assert!((1.0..2.0).contains(&f));
            assert_eq!(row[3].as_str().unwrap().len(), 20);
            assert_eq!(row[4], Value::Int(DEFAULT_BASE_MS + (r as i64 * 1000) / 4));
        }
        assert!(
            DatagenSource::new()
                .random_int("x", 5, 4)
                .validate()
                .is_err()
        );
        assert!(DatagenSource::new().validate().is_err());
        assert_eq!(
            DatagenSource::new()
                .random_int("x", 0, 1)
                .with_limit(7)
                .rows(),
            Some(7)
        );
        // The full i64 range works too.
        let full = DatagenSource::new().random_int("x", i64::MIN, i64::MAX);
        full.batch(0, 1, 10).unwrap();
    }
}
