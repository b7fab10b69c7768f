//! Columnar generation of Nexmark events straight into Arrow record batches.
//!
//! A batch holds the events `k = start + i * step` (wrapping) for `i` in `0..len` of one kind,
//! in that order; parallel subtask `s` of `p` generating a kind contiguously would use e.g.
//! `start = s, step = p` (strided) or `start = s * chunk, step = 1` (blocked). Only the
//! projected columns are computed, one column at a time, each from the shared field formulas
//! in `fields`, so a batch equals the row-at-a-time events exactly.

use std::cell::RefCell;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::fields::{
    self, AUCTION_EXTRA_SLOT, BID_EXTRA_SLOT, PERSON_EXTRA_SLOT, PROPORTION_DENOMINATOR,
};
use super::rng::EventRng;
use super::tables;
use super::{EventKind, NexmarkConfig, event_number};

/// Event numbers and random streams of the rows of a batch.
struct Rows {
    ns: Vec<u64>,
    rngs: Vec<EventRng>,
}

impl Rows {
    fn new(cfg: &NexmarkConfig, kind: EventKind, start: u64, step: u64, len: usize) -> Self {
        let mut ns = Vec::with_capacity(len);
        let mut rngs = Vec::with_capacity(len);
        let mut numbers = EventNumbers::new(kind, start, step);
        for _ in 0..len {
            let n = numbers.next();
            ns.push(n);
            rngs.push(EventRng::new(cfg.seed, n));
        }
        Self { ns, rngs }
    }

    fn iter(&self) -> impl Iterator<Item = (u64, EventRng)> + '_ {
        self.ns.iter().copied().zip(self.rngs.iter().copied())
    }

    /// The event times of the rows, from one [`ClockSpan`](fields::ClockSpan) moved along them.
    fn time_col(&self, clock: fields::EventClock) -> ArrayRef {
        let mut span = fields::ClockSpan::new(clock);
        let values: Vec<i64> = self.ns.iter().map(|&n| span.at(n)).collect();
        Arc::new(TimestampMillisecondArray::new(
            ScalarBuffer::from(values),
            None,
        ))
    }

    fn i64_col(&self, f: impl Fn(u64, EventRng) -> i64) -> ArrayRef {
        let values: Vec<i64> = self.iter().map(|(n, r)| f(n, r)).collect();
        Arc::new(Int64Array::new(ScalarBuffer::from(values), None))
    }

    fn ts_col(&self, f: impl Fn(u64, EventRng) -> i64) -> ArrayRef {
        let values: Vec<i64> = self.iter().map(|(n, r)| f(n, r)).collect();
        Arc::new(TimestampMillisecondArray::new(
            ScalarBuffer::from(values),
            None,
        ))
    }

    /// A Utf8 column; `f` appends row values to the shared value buffer. `bytes_per_row` only
    /// sizes the initial allocation.
    fn utf8_col(
        &self,
        bytes_per_row: usize,
        f: impl Fn(u64, EventRng, &mut Vec<u8>),
    ) -> Result<ArrayRef, ArrowError> {
        let mut offsets: Vec<i32> = Vec::with_capacity(self.ns.len() + 1);
        let mut values: Vec<u8> = Vec::with_capacity(self.ns.len().saturating_mul(bytes_per_row));
        offsets.push(0);
        for (n, r) in self.iter() {
            f(n, r, &mut values);
            offsets.push(values.len() as i32);
        }
        if i32::try_from(values.len()).is_err() {
            return Err(ArrowError::ComputeError(format!(
                "nexmark: {} bytes of string data exceed a Utf8 column; use smaller batches",
                values.len()
            )));
        }
        let array = StringArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Buffer::from_vec(values),
            None,
        )?;
        Ok(Arc::new(array))
    }

    /// The `extra` column: empty strings without a per-row call when there is no padding.
    fn extra_col(&self, cfg: &NexmarkConfig, slot: u64) -> Result<ArrayRef, ArrowError> {
        if cfg.extra_bytes == 0 {
            return empty_strings(self.ns.len());
        }
        let hint = cfg.extra_bytes.min(1 << 16);
        self.utf8_col(hint, |_, r, out| fields::extra(cfg, r, slot, out))
    }

    /// A Utf8 column of constant strings chosen per row.
    fn table_col(
        &self,
        bytes_per_row: usize,
        f: impl Fn(u64, EventRng) -> &'static str,
    ) -> Result<ArrayRef, ArrowError> {
        self.utf8_col(bytes_per_row, |n, r, out| {
            out.extend_from_slice(f(n, r).as_bytes())
        })
    }
}

/// The event numbers of the `k = start + i * step` (wrapping) of one kind, in order: `k`'s epoch
/// and offset are stepped rather than divided out of `k` for every row, and agree with
/// [`event_number`] for every `k`.
struct EventNumbers {
    kind: EventKind,
    per_epoch: u64,
    k: u64,
    step: u64,
    /// `event_number(kind, k) - offset`: the number of the kind's first event in `k`'s epoch.
    epoch_start: u64,
    /// `k % per_epoch`.
    offset: u64,
    /// `step / per_epoch * PROPORTION_DENOMINATOR` (wrapping) and `step % per_epoch`.
    epoch_step: u64,
    offset_step: u64,
}

impl EventNumbers {
    fn new(kind: EventKind, start: u64, step: u64) -> Self {
        let (per_epoch, _) = super::epoch_share(kind);
        let mut numbers = Self {
            kind,
            per_epoch,
            k: start,
            step,
            epoch_start: 0,
            offset: 0,
            epoch_step: (step / per_epoch).wrapping_mul(PROPORTION_DENOMINATOR),
            offset_step: step % per_epoch,
        };
        numbers.seek(start);
        numbers
    }

    fn seek(&mut self, k: u64) {
        self.k = k;
        self.offset = k % self.per_epoch;
        self.epoch_start = event_number(self.kind, k).wrapping_sub(self.offset);
    }

    /// The event number of the current `k`, then steps to the next.
    #[inline]
    fn next(&mut self) -> u64 {
        let n = self.epoch_start.wrapping_add(self.offset);
        match self.k.checked_add(self.step) {
            Some(k) => {
                self.k = k;
                self.offset += self.offset_step;
                self.epoch_start = self.epoch_start.wrapping_add(self.epoch_step);
                if self.offset >= self.per_epoch {
                    self.offset -= self.per_epoch;
                    self.epoch_start = self.epoch_start.wrapping_add(PROPORTION_DENOMINATOR);
                }
            }
            // `k` wraps: its epoch does not follow from the last one.
            None => self.seek(self.k.wrapping_add(self.step)),
        }
        n
    }
}

thread_local! {
    /// Empty strings, sliced for every `extra` column without padding: a new array would have
    /// its offsets checked, one pass over the rows per batch (2% of q0's time).
    static EMPTY_STRINGS: RefCell<ArrayRef> =
        RefCell::new(arrow::array::new_empty_array(&DataType::Utf8));
}

/// A Utf8 column of `len` empty strings.
fn empty_strings(len: usize) -> Result<ArrayRef, ArrowError> {
    EMPTY_STRINGS.with_borrow_mut(|empty| {
        if empty.len() < len {
            *empty = Arc::new(StringArray::try_new(
                OffsetBuffer::new_zeroed(len),
                Buffer::from_vec(Vec::<u8>::new()),
                None,
            )?);
        }
        Ok(empty.slice(0, len))
    })
}

fn bad_column(kind: EventKind, i: usize) -> ArrowError {
    ArrowError::SchemaError(format!("nexmark: no column {i} in the {kind:?} schema"))
}

/// Builds the batch: validates the projection against `full`, then one column per index.
fn assemble(
    full: &arrow::datatypes::Schema,
    len: usize,
    projection: Option<&[usize]>,
    mut column: impl FnMut(usize) -> Result<ArrayRef, ArrowError>,
) -> Result<RecordBatch, ArrowError> {
    let indices: Vec<usize> = match projection {
        Some(p) => p.to_vec(),
        None => (0..full.fields().len()).collect(),
    };
    let schema = Arc::new(full.project(&indices)?);
    let columns = indices
        .iter()
        .map(|&i| column(i))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(len)),
    )
}

/// Generates columns of one kind's rows: `column(i)` is column `i` of the kind's schema.
struct Columns<'a> {
    cfg: &'a NexmarkConfig,
    kind: EventKind,
    rows: Rows,
    clock: fields::EventClock,
}

impl<'a> Columns<'a> {
    fn new(cfg: &'a NexmarkConfig, kind: EventKind, rows: Rows) -> Self {
        Self {
            cfg,
            kind,
            rows,
            clock: fields::EventClock::new(cfg),
        }
    }

    fn schema(&self) -> arrow::datatypes::SchemaRef {
        super::schema(self.kind)
    }

    fn column(&self, i: usize) -> Result<ArrayRef, ArrowError> {
        match self.kind {
            EventKind::Person => self.person(i),
            EventKind::Auction => self.auction(i),
            EventKind::Bid => self.bid(i),
        }
    }

    fn person(&self, i: usize) -> Result<ArrayRef, ArrowError> {
        let (rows, cfg, clock) = (&self.rows, self.cfg, self.clock);
        match i {
            0 => Ok(rows.i64_col(|n, _| fields::person_id(n))),
            1 => rows.utf8_col(14, |_, r, out| fields::person_name(r, out)),
            2 => rows.utf8_col(16, |_, r, out| fields::person_email(r, out)),
            3 => rows.utf8_col(19, |_, r, out| fields::person_credit_card(r, out)),
            4 => rows.table_col(8, |_, r| fields::person_city(r)),
            5 => rows.table_col(2, |_, r| fields::person_state(r)),
            6 => Ok(rows.time_col(clock)),
            7 => rows.extra_col(cfg, PERSON_EXTRA_SLOT),
            _ => Err(bad_column(EventKind::Person, i)),
        }
    }

    fn auction(&self, i: usize) -> Result<ArrayRef, ArrowError> {
        let (rows, cfg, clock) = (&self.rows, self.cfg, self.clock);
        match i {
            0 => Ok(rows.i64_col(|n, _| fields::auction_id(n))),
            1 => rows.utf8_col(12, |_, r, out| fields::auction_item_name(r, out)),
            2 => rows.utf8_col(60, |_, r, out| fields::auction_description(r, out)),
            3 => Ok(rows.i64_col(|_, r| fields::auction_initial_bid(r))),
            4 => Ok(rows.i64_col(|_, r| fields::auction_reserve(r))),
            5 => Ok(rows.time_col(clock)),
            6 => Ok(rows.ts_col(|n, r| fields::auction_expires(cfg, clock, n, r))),
            7 => Ok(rows.i64_col(|n, r| fields::auction_seller(cfg, n, r))),
            8 => Ok(rows.i64_col(|_, r| fields::auction_category(r))),
            9 => rows.extra_col(cfg, AUCTION_EXTRA_SLOT),
            _ => Err(bad_column(EventKind::Auction, i)),
        }
    }

    fn bid(&self, i: usize) -> Result<ArrayRef, ArrowError> {
        let (rows, cfg, clock) = (&self.rows, self.cfg, self.clock);
        let table = tables::channels();
        let name = |r: EventRng| -> &'static str {
            table
                .names
                .get(fields::bid_channel_index(r))
                .map_or("", String::as_str)
        };
        let url = |r: EventRng| -> &'static str {
            table
                .urls
                .get(fields::bid_channel_index(r))
                .map_or("", String::as_str)
        };
        match i {
            0 => Ok(rows.i64_col(|n, r| fields::bid_auction(cfg, n, r))),
            1 => Ok(rows.i64_col(|n, r| fields::bid_bidder(cfg, n, r))),
            2 => Ok(rows.i64_col(|_, r| fields::bid_price(r))),
            3 => rows.table_col(8, |_, r| name(r)),
            4 => rows.table_col(64, |_, r| url(r)),
            5 => Ok(rows.time_col(clock)),
            6 => rows.extra_col(cfg, BID_EXTRA_SLOT),
            _ => Err(bad_column(EventKind::Bid, i)),
        }
    }

    /// The rows' batch of the `projection` columns (every column if `None`).
    fn batch(&self, projection: Option<&[usize]>) -> Result<RecordBatch, ArrowError> {
        assemble(&self.schema(), self.rows.ns.len(), projection, |i| {
            self.column(i)
        })
    }
}

/// A predicate a source applies to its rows before it generates the rest of their columns
/// (Flink's filter push-down): `predicate` maps a batch of the `columns` (indices into the
/// kind's schema, in this order) to whether each row stays.
#[derive(Clone)]
pub struct RowFilter {
    pub columns: Vec<usize>,
    #[allow(clippy::type_complexity)]
    pub predicate: Arc<dyn Fn(&RecordBatch) -> Result<BooleanArray, ArrowError> + Send + Sync>,
}

impl std::fmt::Debug for RowFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowFilter")
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

/// Persons `k = start + i * step` for `i` in `0..len`; `projection` selects columns of
/// [`person_schema`](super::person_schema) by index (the batch has the projected schema).
pub fn persons_batch(
    cfg: &NexmarkConfig,
    start: u64,
    step: u64,
    len: usize,
    projection: Option<&[usize]>,
) -> Result<RecordBatch, ArrowError> {
    batch(EventKind::Person, cfg, start, step, len, projection)
}

/// Auctions `k = start + i * step` for `i` in `0..len`; `projection` selects columns of
/// [`auction_schema`](super::auction_schema) by index.
pub fn auctions_batch(
    cfg: &NexmarkConfig,
    start: u64,
    step: u64,
    len: usize,
    projection: Option<&[usize]>,
) -> Result<RecordBatch, ArrowError> {
    batch(EventKind::Auction, cfg, start, step, len, projection)
}

/// Bids `k = start + i * step` for `i` in `0..len`; `projection` selects columns of
/// [`bid_schema`](super::bid_schema) by index.
pub fn bids_batch(
    cfg: &NexmarkConfig,
    start: u64,
    step: u64,
    len: usize,
    projection: Option<&[usize]>,
) -> Result<RecordBatch, ArrowError> {
    batch(EventKind::Bid, cfg, start, step, len, projection)
}

/// [`persons_batch`], [`auctions_batch`] or [`bids_batch`] by kind.
pub fn batch(
    kind: EventKind,
    cfg: &NexmarkConfig,
    start: u64,
    step: u64,
    len: usize,
    projection: Option<&[usize]>,
) -> Result<RecordBatch, ArrowError> {
    Columns::new(cfg, kind, Rows::new(cfg, kind, start, step, len)).batch(projection)
}

/// [`batch`] of the rows `filter` keeps: its columns are generated for every row, the others only
/// for the rows kept, and the batch equals [`batch`]'s filtered by the predicate.
pub fn batch_where(
    kind: EventKind,
    cfg: &NexmarkConfig,
    (start, step, len): (u64, u64, usize),
    projection: Option<&[usize]>,
    filter: &RowFilter,
) -> Result<RecordBatch, ArrowError> {
    let all = Columns::new(cfg, kind, Rows::new(cfg, kind, start, step, len));
    let tested = all.batch(Some(&filter.columns))?;
    let keep = (filter.predicate)(&tested)?;
    if keep.len() != len {
        return Err(ArrowError::ComputeError(format!(
            "nexmark: a pushed-down filter gave {} results for {len} rows",
            keep.len()
        )));
    }
    let kept_rows = Rows {
        ns: filtered(&all.rows.ns, &keep),
        rngs: filtered(&all.rows.rngs, &keep),
    };
    let kept = Columns::new(cfg, kind, kept_rows);
    let tested = arrow::compute::filter_record_batch(&tested, &keep)?;
    assemble(
        &all.schema(),
        kept.rows.ns.len(),
        projection,
        |i| match filter.columns.iter().position(|&c| c == i) {
            Some(at) => Ok(tested.column(at).clone()),
            None => kept.column(i),
        },
    )
}

/// The elements of `values` whose row `keep` holds true (a null is false, as in SQL's WHERE).
fn filtered<T: Copy>(values: &[T], keep: &BooleanArray) -> Vec<T> {
    values
        .iter()
        .zip(keep.iter())
        .filter(|(_, k)| *k == Some(true))
        .map(|(v, _)| *v)
        .collect()
}
