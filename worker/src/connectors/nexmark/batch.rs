//! Columnar generation of Nexmark events straight into Arrow record batches.
//!
//! A batch holds the events `k = start + i * step` (wrapping) for `i` in `0..len` of one kind,
//! in that order; parallel subtask `s` of `p` generating a kind contiguously would use e.g.
//! `start = s, step = p` (strided) or `start = s * chunk, step = 1` (blocked). Only the
//! projected columns are computed, one column at a time, each from the shared field formulas
//! in `fields`, so a batch equals the row-at-a-time events exactly.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::fields::{self, AUCTION_EXTRA_SLOT, BID_EXTRA_SLOT, PERSON_EXTRA_SLOT};
use super::rng::EventRng;
use super::tables;
use super::{EventKind, NexmarkConfig, auction_schema, bid_schema, event_number, person_schema};

/// Event numbers and random streams of the rows of a batch.
struct Rows {
    ns: Vec<u64>,
    rngs: Vec<EventRng>,
}

impl Rows {
    fn new(cfg: &NexmarkConfig, kind: EventKind, start: u64, step: u64, len: usize) -> Self {
        let mut ns = Vec::with_capacity(len);
        let mut rngs = Vec::with_capacity(len);
        let mut k = start;
        for _ in 0..len {
            let n = event_number(kind, k);
            ns.push(n);
            rngs.push(EventRng::new(cfg.seed, n));
            k = k.wrapping_add(step);
        }
        Self { ns, rngs }
    }

    fn iter(&self) -> impl Iterator<Item = (u64, EventRng)> + '_ {
        self.ns.iter().copied().zip(self.rngs.iter().copied())
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
            return Ok(Arc::new(StringArray::new(
                OffsetBuffer::new_zeroed(self.ns.len()),
                Buffer::from_vec(Vec::<u8>::new()),
                None,
            )));
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

/// Persons `k = start + i * step` for `i` in `0..len`; `projection` selects columns of
/// [`person_schema`](super::person_schema) by index (the batch has the projected schema).
pub fn persons_batch(
    cfg: &NexmarkConfig,
    start: u64,
    step: u64,
    len: usize,
    projection: Option<&[usize]>,
) -> Result<RecordBatch, ArrowError> {
    let rows = Rows::new(cfg, EventKind::Person, start, step, len);
    let clock = fields::EventClock::new(cfg);
    assemble(&person_schema(), len, projection, |i| match i {
        0 => Ok(rows.i64_col(|n, _| fields::person_id(n))),
        1 => rows.utf8_col(14, |_, r, out| fields::person_name(r, out)),
        2 => rows.utf8_col(16, |_, r, out| fields::person_email(r, out)),
        3 => rows.utf8_col(19, |_, r, out| fields::person_credit_card(r, out)),
        4 => rows.table_col(8, |_, r| fields::person_city(r)),
        5 => rows.table_col(2, |_, r| fields::person_state(r)),
        6 => Ok(rows.ts_col(|n, _| clock.at(n))),
        7 => rows.extra_col(cfg, PERSON_EXTRA_SLOT),
        _ => Err(bad_column(EventKind::Person, i)),
    })
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
    let rows = Rows::new(cfg, EventKind::Auction, start, step, len);
    let clock = fields::EventClock::new(cfg);
    assemble(&auction_schema(), len, projection, |i| match i {
        0 => Ok(rows.i64_col(|n, _| fields::auction_id(n))),
        1 => rows.utf8_col(12, |_, r, out| fields::auction_item_name(r, out)),
        2 => rows.utf8_col(60, |_, r, out| fields::auction_description(r, out)),
        3 => Ok(rows.i64_col(|_, r| fields::auction_initial_bid(r))),
        4 => Ok(rows.i64_col(|_, r| fields::auction_reserve(r))),
        5 => Ok(rows.ts_col(|n, _| clock.at(n))),
        6 => Ok(rows.ts_col(|n, r| fields::auction_expires(cfg, clock, n, r))),
        7 => Ok(rows.i64_col(|n, r| fields::auction_seller(cfg, n, r))),
        8 => Ok(rows.i64_col(|_, r| fields::auction_category(r))),
        9 => rows.extra_col(cfg, AUCTION_EXTRA_SLOT),
        _ => Err(bad_column(EventKind::Auction, i)),
    })
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
    let rows = Rows::new(cfg, EventKind::Bid, start, step, len);
    let clock = fields::EventClock::new(cfg);
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
    assemble(&bid_schema(), len, projection, |i| match i {
        0 => Ok(rows.i64_col(|n, r| fields::bid_auction(cfg, n, r))),
        1 => Ok(rows.i64_col(|n, r| fields::bid_bidder(cfg, n, r))),
        2 => Ok(rows.i64_col(|_, r| fields::bid_price(r))),
        3 => rows.table_col(8, |_, r| name(r)),
        4 => rows.table_col(64, |_, r| url(r)),
        5 => Ok(rows.ts_col(|n, _| clock.at(n))),
        6 => rows.extra_col(cfg, BID_EXTRA_SLOT),
        _ => Err(bad_column(EventKind::Bid, i)),
    })
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
    match kind {
        EventKind::Person => persons_batch(cfg, start, step, len, projection),
        EventKind::Auction => auctions_batch(cfg, start, step, len, projection),
        EventKind::Bid => bids_batch(cfg, start, step, len, projection),
    }
}
