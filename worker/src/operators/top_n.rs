//! Flink SQL's Top-N: `ROW_NUMBER() OVER (PARTITION BY k ORDER BY s) AS rn` filtered to
//! `rn <= N`, over an insert-only input. Each partition key keeps its N first rows by the sort key
//! in keyed state, and the result is a changelog (the last column, [`OP_COLUMN`]) of the rows that
//! enter and leave the top N; deduplication is the case N = 1.
//!
//! A new row goes after the rows that sort equal to it (the earlier row keeps its rank), except
//! where [`TopNSpec::new_wins_ties`] says otherwise: Flink's deduplication that keeps the last row
//! by event time (`ORDER BY ts DESC`, N = 1) lets a row replace one with the same time.
//!
//! Without the rank in the output, a row entering the top N is inserted (`+I`) and the row it
//! pushes out is deleted (`-D`). With the rank (`rn` selected), every row whose rank changes is
//! updated: the old row at that rank is retracted (`-U`) and the new one added (`+U`), and a rank
//! that did not exist before is inserted; so a changelog's final state is the top N with their
//! ranks either way.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};

use super::group_aggregate::{OP_COLUMN, RowKind};
use super::join::JoinedRows;
use crate::checkpoint::state::{RestoredState, StateWriter};
use crate::error::{Error, Result};
use crate::keys::{KeyRows, KeySpec};
use crate::operator::{Operator, Output, SubtaskInfo};
use crate::plan::OperatorFactory;
use crate::row::{self, Value};
use crate::state::{KeyedStateBackend, Namespace, ValueState};
use crate::stream::{DataStream, KeyedStream};

/// One sort column: its index in the input, and its direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortColumn {
    pub column: usize,
    pub descending: bool,
    pub nulls_first: bool,
}

/// The complete description of one Top-N.
#[derive(Debug, Clone)]
pub struct TopNSpec {
    /// The partition key.
    pub key: KeySpec,
    pub order: Vec<SortColumn>,
    /// N: how many rows each key keeps (at least 1).
    pub limit: usize,
    /// Whether the output has the rank (`UInt64`, from 1) after the input's columns.
    pub rank: bool,
    /// Whether a new row goes before the rows that sort equal to it.
    pub new_wins_ties: bool,
    /// The input's columns, the rank if [`TopNSpec::rank`], then [`OP_COLUMN`].
    pub output: SchemaRef,
}

/// A kept row: its sort key (bytes that compare as the rows sort) and the row.
type Kept = (Vec<u8>, Vec<u8>);

/// One subtask of a Top-N.
pub struct TopNOperator<S: KeyedStateBackend> {
    info: SubtaskInfo,
    spec: TopNSpec,
    sorter: RowConverter,
    state: S,
    /// Per key, its top rows in rank order.
    tops: ValueState<Vec<Kept>>,
    keys: KeyRows,
    out_rows: JoinedRows,
    suffix: Vec<u8>,
}

impl<S: KeyedStateBackend> TopNOperator<S> {
    /// A subtask of `spec` over input batches of `input`, keeping its rows in `state`.
    pub fn new(info: SubtaskInfo, spec: TopNSpec, input: &Schema, mut state: S) -> Result<Self> {
        let sorter = sorter(&info, &spec.order, input)?;
        Ok(Self {
            tops: state.value_state("top-n"),
            info,
            spec,
            sorter,
            state,
            keys: KeyRows::default(),
            out_rows: JoinedRows::default(),
            suffix: Vec::new(),
        })
    }

    /// The keyed state, for inspection in tests.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Adds `row` at `rank` (from 1) as a change of `kind`.
    fn emit(&mut self, row: &[u8], rank: usize, kind: RowKind) -> Result<()> {
        let rank = self.spec.rank.then_some(rank);
        push_ranked(&mut self.out_rows, &mut self.suffix, row, rank, Some(kind))
    }
}

/// The converter to sort keys: bytes that compare as rows sort by `order`.
fn sorter(info: &SubtaskInfo, order: &[SortColumn], input: &Schema) -> Result<RowConverter> {
    let fields = order
        .iter()
        .map(|o| {
            SortField::new_with_options(
                input.field(o.column).data_type().clone(),
                arrow::compute::SortOptions {
                    descending: o.descending,
                    nulls_first: o.nulls_first,
                },
            )
        })
        .collect();
    RowConverter::new(fields).map_err(|e| info.fail(e))
}

/// Adds `row` to `out`, followed by its rank (from 1) and its row kind, where given.
fn push_ranked(
    out: &mut JoinedRows,
    suffix: &mut Vec<u8>,
    row: &[u8],
    rank: Option<usize>,
    kind: Option<RowKind>,
) -> Result<()> {
    suffix.clear();
    if let Some(rank) = rank {
        row::encode_owned(&Value::UInt(rank as u64), &DataType::UInt64, suffix)?;
    }
    if let Some(kind) = kind {
        row::encode_owned(&Value::Int(kind as i64), &DataType::Int8, suffix)?;
    }
    out.push(row, suffix);
    Ok(())
}

/// What one row did to its key's top rows.
enum Change {
    /// It did not enter.
    None,
    /// It entered at `at`; `before` is the rows from `at` on as they were.
    Entered { at: usize, before: Vec<Kept> },
}

impl<S: KeyedStateBackend> Operator for TopNOperator<S> {
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let mut keys = std::mem::take(&mut self.keys);
        keys.encode(&self.spec.key, &batch)?;
        let order: Vec<_> = self
            .spec
            .order
            .iter()
            .map(|o| batch.column(o.column).clone())
            .collect();
        let sort_keys = self
            .sorter
            .convert_columns(&order)
            .map_err(|e| self.info.fail(e))?;
        let (limit, new_wins) = (self.spec.limit, self.spec.new_wins_ties);
        let global = Namespace::Global;
        let mut encoded = Vec::new();
        for r in 0..batch.num_rows() {
            let sort = sort_keys.row(r);
            let sort = sort.as_ref();
            encoded.clear();
            row::encode_row(batch.columns(), r, &mut encoded)?;
            let mut change = Change::None;
            let mut after: Vec<Kept> = Vec::new();
            self.state
                .update(&self.tops, keys.get(r), &global, |slot| {
                    let top = slot.get_or_insert_with(Vec::new);
                    let at = if new_wins {
                        top.partition_point(|(s, _)| s.as_slice() < sort)
                    } else {
                        top.partition_point(|(s, _)| s.as_slice() <= sort)
                    };
                    if at >= limit {
                        return;
                    }
                    let before = top[at..].to_vec();
                    top.insert(at, (sort.to_vec(), encoded.clone()));
                    top.truncate(limit);
                    after = top[at..].to_vec();
                    change = Change::Entered { at, before };
                })?;
            let Change::Entered { at, before } = change else {
                continue;
            };
            if self.spec.rank {
                // Every rank from `at` on now holds another row.
                for (i, (_, new)) in after.iter().enumerate() {
                    match before.get(i) {
                        Some((_, old)) => {
                            self.emit(old, at + i + 1, RowKind::UpdateBefore)?;
                            self.emit(new, at + i + 1, RowKind::UpdateAfter)?;
                        }
                        None => self.emit(new, at + i + 1, RowKind::Insert)?,
                    }
                }
            } else {
                // Only the row that fell out of the top N (if it is full) and the new one change.
                if before.len() + at >= limit
                    && let Some((_, out)) = before.last()
                {
                    self.emit(out, limit, RowKind::Delete)?;
                }
                self.emit(&encoded, at + 1, RowKind::Insert)?;
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

/// A Top-N of a [`KeyedStream`]: how it sorts and how many rows it keeps.
#[derive(Debug, Clone)]
pub struct TopN {
    pub order: Vec<SortColumn>,
    pub limit: usize,
    pub rank: bool,
    pub new_wins_ties: bool,
}

impl TopN {
    /// What makes this Top-N impossible over rows of `columns` columns, if anything (`outside`
    /// says how a sort column beyond them is out of place).
    fn problem(&self, columns: usize, outside: &str) -> Option<String> {
        if self.limit == 0 {
            return Some("a Top-N keeps at least one row".into());
        }
        self.order
            .iter()
            .find(|o| o.column >= columns)
            .map(|o| format!("sort column {} {outside}", o.column))
    }
}

impl KeyedStream {
    /// The first `top.limit` rows of each key by `top.order`, as a changelog (Flink SQL's Top-N
    /// over an insert-only input; see the module docs). The output is this stream's columns, the
    /// rank (`UInt64`) if `top.rank`, then [`OP_COLUMN`], without event time.
    pub fn top_n(&self, top: TopN) -> DataStream {
        let stream = &self.stream;
        let name = "top_n".to_owned();
        let input = stream.schema.clone();
        let mut fields: Vec<Field> = input
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        if top.rank {
            fields.push(Field::new("__rank", DataType::UInt64, true));
        }
        fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        let output: SchemaRef = Arc::new(Schema::new(fields));
        if let Some(problem) = top.problem(input.fields().len(), "is not in the input") {
            stream.env.error(Error::plan(&name, problem));
            return stream.clone();
        }
        let spec = TopNSpec {
            key: self.key.clone(),
            order: top.order,
            limit: top.limit,
            rank: top.rank,
            new_wins_ties: top.new_wins_ties,
            output: output.clone(),
        };
        let factory: OperatorFactory = Arc::new(move |info| {
            Ok(Box::new(TopNOperator::new(
                info.clone(),
                spec.clone(),
                &input,
                crate::state::Backend::for_subtask(info)?,
            )?) as Box<dyn Operator>)
        });
        self.keyed_operator(&name, factory, output, None)
    }
}

// ---------------------------------------------------------------------------------------------------
// Top-N over an updating input.

/// The complete description of one Top-N over a changelog.
#[derive(Debug, Clone)]
pub struct RetractTopNSpec {
    pub key: KeySpec,
    /// Sort columns, among the first `width`.
    pub order: Vec<SortColumn>,
    pub limit: usize,
    pub rank: bool,
    /// The input's row columns: the first `width`; [`OP_COLUMN`] is next (any columns after it
    /// only key the rows).
    pub width: usize,
    /// The row columns, the rank if [`RetractTopNSpec::rank`], then [`OP_COLUMN`].
    pub output: SchemaRef,
}

/// One subtask of a Top-N over an updating input (a `GROUP BY` result): Flink's retracting
/// Top-N. A retraction may take a row out of the top N, and the row next in line must then take
/// its place, so each key keeps *all* its rows in sort order, not only the first N. Every change
/// of the input updates that list, and the difference between the first N before and after goes
/// out: with ranks, each rank whose row changed is updated (`-U`/`+U`), inserted or deleted;
/// without, the row that left is deleted and the row that entered is inserted.
pub struct RetractTopNOperator<S: KeyedStateBackend> {
    info: SubtaskInfo,
    spec: RetractTopNSpec,
    sorter: RowConverter,
    state: S,
    rows: ValueState<Vec<Kept>>,
    keys: KeyRows,
    out_rows: JoinedRows,
    suffix: Vec<u8>,
}

impl<S: KeyedStateBackend> RetractTopNOperator<S> {
    /// A subtask of `spec` over input batches of `input`, keeping its rows in `state`.
    pub fn new(
        info: SubtaskInfo,
        spec: RetractTopNSpec,
        input: &Schema,
        mut state: S,
    ) -> Result<Self> {
        let sorter = sorter(&info, &spec.order, input)?;
        Ok(Self {
            rows: state.value_state("retract-top-n"),
            info,
            spec,
            sorter,
            state,
            keys: KeyRows::default(),
            out_rows: JoinedRows::default(),
            suffix: Vec::new(),
        })
    }

    fn emit(&mut self, row: &[u8], rank: usize, kind: RowKind) -> Result<()> {
        let rank = self.spec.rank.then_some(rank);
        push_ranked(&mut self.out_rows, &mut self.suffix, row, rank, Some(kind))
    }
}

impl<S: KeyedStateBackend> Operator for RetractTopNOperator<S> {
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let width = self.spec.width;
        let kinds = batch
            .columns()
            .get(width)
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::Int8Array>())
            .ok_or_else(|| self.info.fail("the input has no row kind column"))?
            .clone();
        let mut keys = std::mem::take(&mut self.keys);
        keys.encode(&self.spec.key, &batch)?;
        let order: Vec<_> = self
            .spec
            .order
            .iter()
            .map(|o| batch.column(o.column).clone())
            .collect();
        let sort_keys = self
            .sorter
            .convert_columns(&order)
            .map_err(|e| self.info.fail(e))?;
        let limit = self.spec.limit;
        let global = Namespace::Global;
        let data = &batch.columns()[..width];
        let mut encoded = Vec::new();
        for r in 0..batch.num_rows() {
            let kind = RowKind::from_code(kinds.value(r)).ok_or_else(|| {
                self.info
                    .fail(format!("unknown row kind {}", kinds.value(r)))
            })?;
            let sort = sort_keys.row(r);
            let sort = sort.as_ref();
            encoded.clear();
            row::encode_row(data, r, &mut encoded)?;
            let (before, after) = self
                .state
                .update(&self.rows, keys.get(r), &global, |slot| {
                    let all = slot.get_or_insert_with(Vec::new);
                    let before: Vec<Kept> = all.iter().take(limit).cloned().collect();
                    if kind.retracts() {
                        // The row itself, among those that sort equal to it (a retraction of a row
                        // never seen changes nothing, as in Flink).
                        let from = all.partition_point(|(s, _)| s.as_slice() < sort);
                        let to = all.partition_point(|(s, _)| s.as_slice() <= sort);
                        if let Some(i) = (from..to).find(|&i| all[i].1 == encoded) {
                            all.remove(i);
                        }
                    } else {
                        let at = all.partition_point(|(s, _)| s.as_slice() <= sort);
                        all.insert(at, (sort.to_vec(), encoded.clone()));
                    }
                    let after: Vec<Kept> = all.iter().take(limit).cloned().collect();
                    if all.is_empty() {
                        *slot = None;
                    }
                    (before, after)
                })?;
            if self.spec.rank {
                for i in 0..before.len().max(after.len()) {
                    match (before.get(i), after.get(i)) {
                        (Some((_, old)), Some((_, new))) if old != new => {
                            self.emit(old, i + 1, RowKind::UpdateBefore)?;
                            self.emit(new, i + 1, RowKind::UpdateAfter)?;
                        }
                        (Some((_, old)), None) => self.emit(old, i + 1, RowKind::Delete)?,
                        (None, Some((_, new))) => self.emit(new, i + 1, RowKind::Insert)?,
                        _ => {}
                    }
                }
            } else {
                // One row changed: at most one left the first N and one entered.
                let mut entered: Vec<&[u8]> = after.iter().map(|(_, r)| r.as_slice()).collect();
                let mut left = Vec::new();
                for (_, old) in &before {
                    match entered.iter().position(|new| new == old) {
                        Some(i) => {
                            entered.swap_remove(i);
                        }
                        None => left.push(old.clone()),
                    }
                }
                let entered: Vec<Vec<u8>> = entered.into_iter().map(<[u8]>::to_vec).collect();
                for old in &left {
                    self.emit(old, 0, RowKind::Delete)?;
                }
                for new in &entered {
                    self.emit(new, 0, RowKind::Insert)?;
                }
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
    /// The first `top.limit` rows of each key by `top.order` over this changelog (its first
    /// `width` columns are the rows, [`OP_COLUMN`] the next one): Flink SQL's Top-N over an
    /// updating input. The output is a changelog of the row columns, the rank (`UInt64`) if
    /// `top.rank`, then [`OP_COLUMN`], without event time.
    pub fn retract_top_n(&self, top: TopN, width: usize) -> DataStream {
        let stream = &self.stream;
        let name = "retract_top_n".to_owned();
        let input = stream.schema.clone();
        if input.fields().get(width).map(|f| f.name().as_str()) != Some(OP_COLUMN) {
            stream.env.error(Error::plan(
                &name,
                format!("column {width} of the input is not its row kind ({OP_COLUMN})"),
            ));
            return stream.clone();
        }
        if let Some(problem) = top.problem(width, "is not a row column") {
            stream.env.error(Error::plan(&name, problem));
            return stream.clone();
        }
        let mut fields: Vec<Field> = input.fields()[..width]
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        if top.rank {
            fields.push(Field::new("__rank", DataType::UInt64, true));
        }
        fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        let output: SchemaRef = Arc::new(Schema::new(fields));
        let spec = RetractTopNSpec {
            key: self.key.clone(),
            order: top.order,
            limit: top.limit,
            rank: top.rank,
            width,
            output: output.clone(),
        };
        let factory: OperatorFactory = Arc::new(move |info| {
            Ok(Box::new(RetractTopNOperator::new(
                info.clone(),
                spec.clone(),
                &input,
                crate::state::Backend::for_subtask(info)?,
            )?) as Box<dyn Operator>)
        });
        self.keyed_operator(&name, factory, output, None)
    }
}

// ---------------------------------------------------------------------------------------------------
// Window Top-N.

/// The complete description of one window Top-N.
#[derive(Debug, Clone)]
pub struct WindowTopNSpec {
    /// The partition key, which holds the window (its start and end).
    pub key: KeySpec,
    pub order: Vec<SortColumn>,
    pub limit: usize,
    pub rank: bool,
    pub new_wins_ties: bool,
    /// The rows' time (their window's last millisecond): column index and offset.
    pub time: (usize, i64),
    /// The input's columns, then the rank if [`WindowTopNSpec::rank`].
    pub output: SchemaRef,
}

/// One subtask of a window Top-N: Flink SQL's Top-N whose `PARTITION BY` holds `window_start` and
/// `window_end`. Each key (one window, perhaps split further) keeps its N first rows in keyed
/// state as rows arrive; when the watermark reaches the rows' time (the window's end), they go
/// out with their ranks, once, insert-only, and the key is forgotten. Rows behind the watermark
/// are late: their window has gone out already, and they are dropped, as in Flink.
pub struct WindowTopNOperator<S: KeyedStateBackend> {
    info: SubtaskInfo,
    spec: WindowTopNSpec,
    sorter: RowConverter,
    state: S,
    tops: ValueState<Vec<Kept>>,
    timers: crate::timers::TimerService,
    watermark: crate::time::Timestamp,
    keys: KeyRows,
    out_rows: JoinedRows,
    suffix: Vec<u8>,
}

impl<S: KeyedStateBackend> WindowTopNOperator<S> {
    /// A subtask of `spec` over input batches of `input`, keeping its rows in `state`.
    pub fn new(
        info: SubtaskInfo,
        spec: WindowTopNSpec,
        input: &Schema,
        mut state: S,
    ) -> Result<Self> {
        let sorter = sorter(&info, &spec.order, input)?;
        Ok(Self {
            tops: state.value_state("window-top-n"),
            info,
            spec,
            sorter,
            state,
            timers: crate::timers::TimerService::default(),
            watermark: crate::time::MIN_WATERMARK,
            keys: KeyRows::default(),
            out_rows: JoinedRows::default(),
            suffix: Vec::new(),
        })
    }
}

impl<S: KeyedStateBackend> Operator for WindowTopNOperator<S> {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let times = super::process::event_times(&self.info, &batch, Some(self.spec.time))?
            .unwrap_or_default();
        let mut keys = std::mem::take(&mut self.keys);
        keys.encode(&self.spec.key, &batch)?;
        let order: Vec<_> = self
            .spec
            .order
            .iter()
            .map(|o| batch.column(o.column).clone())
            .collect();
        let sort_keys = self
            .sorter
            .convert_columns(&order)
            .map_err(|e| self.info.fail(e))?;
        let (limit, new_wins) = (self.spec.limit, self.spec.new_wins_ties);
        let global = Namespace::Global;
        let mut encoded = Vec::new();
        for (r, &t) in times.iter().enumerate() {
            if t <= self.watermark {
                continue;
            }
            let sort = sort_keys.row(r);
            let sort = sort.as_ref();
            encoded.clear();
            row::encode_row(batch.columns(), r, &mut encoded)?;
            let key = keys.get(r);
            let first = self.state.update(&self.tops, key, &global, |slot| {
                let first = slot.is_none();
                let top = slot.get_or_insert_with(Vec::new);
                let at = if new_wins {
                    top.partition_point(|(s, _)| s.as_slice() < sort)
                } else {
                    top.partition_point(|(s, _)| s.as_slice() <= sort)
                };
                if at < limit {
                    top.insert(at, (sort.to_vec(), encoded.clone()));
                    top.truncate(limit);
                }
                first
            })?;
            if first {
                self.timers.register(
                    crate::time::TimeDomain::EventTime,
                    t,
                    key,
                    Namespace::Global,
                );
            }
        }
        self.keys = keys;
        Ok(())
    }

    fn on_watermark(&mut self, watermark: crate::time::Timestamp, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        while let Some(timer) = self
            .timers
            .pop_due(crate::time::TimeDomain::EventTime, self.watermark)
        {
            let top = self
                .state
                .take(&self.tops, &timer.key, &Namespace::Global)?
                .unwrap_or_default();
            for (rank, (_, row)) in top.iter().enumerate() {
                let rank = self.spec.rank.then_some(rank + 1);
                push_ranked(&mut self.out_rows, &mut self.suffix, row, rank, None)?;
            }
        }
        // Before the runtime forwards the watermark: the rows are not late downstream.
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
    /// The first `top.limit` rows of each key by `top.order`, emitted once when the watermark
    /// reaches the rows' event time: Flink SQL's window Top-N, whose key holds the window, so that
    /// the rows of a key share their window's time. The output is this stream's columns, then the
    /// rank (`UInt64`) if `top.rank`; insert-only, with this stream's event time.
    pub fn window_top_n(&self, top: TopN) -> DataStream {
        let stream = &self.stream;
        let name = "window_top_n".to_owned();
        let input = stream.schema.clone();
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        if top.rank {
            fields.push(Field::new("__rank", DataType::UInt64, false));
        }
        let output: SchemaRef = Arc::new(Schema::new(fields));
        let Some(time) = super::process::time_of(stream) else {
            stream.env.error(Error::plan(
                &name,
                "the input has no event time: a window Top-N goes out when the watermark passes \
                 its rows' window",
            ));
            return stream.clone();
        };
        if let Some(problem) = top.problem(input.fields().len(), "is not in the input") {
            stream.env.error(Error::plan(&name, problem));
            return stream.clone();
        }
        let spec = WindowTopNSpec {
            key: self.key.clone(),
            order: top.order,
            limit: top.limit,
            rank: top.rank,
            new_wins_ties: top.new_wins_ties,
            time,
            output: output.clone(),
        };
        let factory: OperatorFactory = Arc::new(move |info| {
            Ok(Box::new(WindowTopNOperator::new(
                info.clone(),
                spec.clone(),
                &input,
                crate::state::Backend::for_subtask(info)?,
            )?) as Box<dyn Operator>)
        });
        let time = stream.time.clone();
        self.keyed_operator(&name, factory, output, time)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use super::*;
    use crate::operator::Emitted;
    use crate::row::{Row, batch_from_rows, rows_of};

    fn info() -> SubtaskInfo {
        SubtaskInfo {
            name: "top".into(),
            index: 0,
            parallelism: 1,
            max_parallelism: 128,
            state: Default::default(),
        }
    }

    /// `k` (partition), `p` (price), `t` (time).
    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("p", DataType::Int64, true),
            Field::new("t", DataType::Int64, false),
        ]))
    }

    fn operator(
        limit: usize,
        rank: bool,
        order: Vec<SortColumn>,
        new_wins_ties: bool,
    ) -> TopNOperator<crate::state::MemoryStateBackend> {
        let schema = input();
        let key = KeySpec::resolve("top", &schema, &["k"]).unwrap();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        if rank {
            fields.push(Field::new("__rank", DataType::UInt64, true));
        }
        fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        let spec = TopNSpec {
            key,
            order,
            limit,
            rank,
            new_wins_ties,
            output: Arc::new(Schema::new(fields)),
        };
        TopNOperator::new(
            info(),
            spec,
            &schema,
            crate::state::MemoryStateBackend::default(),
        )
        .unwrap()
    }

    fn price_desc_then_time() -> Vec<SortColumn> {
        vec![
            SortColumn {
                column: 1,
                descending: true,
                nulls_first: false,
            },
            SortColumn {
                column: 2,
                descending: false,
                nulls_first: false,
            },
        ]
    }

    fn batch(rows: &[(&str, Option<i64>, i64)]) -> RecordBatch {
        let rows: Vec<Row> = rows
            .iter()
            .map(|(k, p, t)| {
                vec![
                    Value::from(*k),
                    p.map_or(Value::Null, Value::Int),
                    Value::Int(*t),
                ]
            })
            .collect();
        batch_from_rows(&input(), &rows).unwrap()
    }

    /// The changelog as (kind, row as text) in order.
    fn changes(out: &mut Output) -> Vec<(RowKind, String)> {
        let mut changes = Vec::new();
        for e in out.drain() {
            if let Emitted::Data(b) = e {
                for r in rows_of(&b).unwrap() {
                    let (op, values) = r.split_last().unwrap();
                    let kind = RowKind::from_code(op.as_i64().unwrap() as i8).unwrap();
                    let text: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
                    changes.push((kind, text.join(",")));
                }
            }
        }
        changes
    }

    /// A changelog's final state: the rows added and not retracted since, with multiplicity.
    fn final_state(changes: &[(RowKind, String)]) -> BTreeMap<String, i64> {
        let mut state = BTreeMap::new();
        for (kind, row) in changes {
            *state.entry(row.clone()).or_insert(0) += if kind.retracts() { -1 } else { 1 };
        }
        state.retain(|_, n| *n != 0);
        state
    }

    /// The top `n` of `rows` per key by price descending then time, with ranks if `rank`, by
    /// sorting every row seen (a stable sort: earlier rows first among equals).
    fn brute_force(
        rows: &[(&str, Option<i64>, i64)],
        n: usize,
        rank: bool,
    ) -> BTreeMap<String, i64> {
        let mut by_key: BTreeMap<&str, Vec<(Option<i64>, i64)>> = BTreeMap::new();
        for (k, p, t) in rows {
            by_key.entry(k).or_default().push((*p, *t));
        }
        let mut state = BTreeMap::new();
        for (k, mut rows) in by_key {
            // DESC, nulls last: None after every price.
            rows.sort_by(|a, b| match (a.0, b.0) {
                (Some(x), Some(y)) => y.cmp(&x).then(a.1.cmp(&b.1)),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.1.cmp(&b.1),
            });
            for (i, (p, t)) in rows.into_iter().take(n).enumerate() {
                let mut text = vec![
                    format!("{:?}", Value::from(k)),
                    format!("{:?}", p.map_or(Value::Null, Value::Int)),
                    format!("{:?}", Value::Int(t)),
                ];
                if rank {
                    text.push(format!("{:?}", Value::UInt(i as u64 + 1)));
                }
                *state.entry(text.join(",")).or_insert(0) += 1;
            }
        }
        state
    }

    #[test]
    fn the_changelog_ends_in_the_top_n_of_every_key_with_or_without_ranks() {
        // A deterministic pseudo-random input: 3 keys, prices with repeats and nulls, distinct
        // times, in several batches.
        let mut rows = Vec::new();
        let mut x: u64 = 7;
        for t in 0..400 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = ["a", "b", "c"][(x >> 33) as usize % 3];
            let price = ((x >> 40) % 50) as i64;
            rows.push((key, (price != 0).then_some(price), t));
        }
        for rank in [false, true] {
            for n in [1, 3, 10] {
                let mut op = operator(n, rank, price_desc_then_time(), false);
                let mut out = Output::default();
                let mut log = Vec::new();
                for chunk in rows.chunks(37) {
                    op.process(0, batch(chunk), &mut out).unwrap();
                    log.extend(changes(&mut out));
                }
                assert_eq!(
                    final_state(&log),
                    brute_force(&rows, n, rank),
                    "n = {n}, rank = {rank}"
                );
                assert!(
                    final_state(&log).values().all(|&c| c == 1),
                    "nothing retracted that was not there"
                );
            }
        }
    }

    #[test]
    fn a_row_that_ranks_changes_only_what_it_moves() {
        let mut op = operator(2, true, price_desc_then_time(), false);
        let mut out = Output::default();
        op.process(0, batch(&[("a", Some(5), 1), ("a", Some(3), 2)]), &mut out)
            .unwrap();
        let inserted: Vec<RowKind> = changes(&mut out).into_iter().map(|(k, _)| k).collect();
        assert_eq!(inserted, [RowKind::Insert, RowKind::Insert]);
        // Lower than both: not in the top 2, nothing.
        op.process(0, batch(&[("a", Some(1), 3)]), &mut out)
            .unwrap();
        assert!(changes(&mut out).is_empty());
        // Between: rank 2 changes hands, rank 1 stays.
        op.process(0, batch(&[("a", Some(4), 4)]), &mut out)
            .unwrap();
        let c = changes(&mut out);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].0, RowKind::UpdateBefore);
        assert!(
            c[0].1.contains("Int(3)") && c[0].1.ends_with("UInt(2)"),
            "{c:?}"
        );
        assert_eq!(c[1].0, RowKind::UpdateAfter);
        assert!(
            c[1].1.contains("Int(4)") && c[1].1.ends_with("UInt(2)"),
            "{c:?}"
        );
    }

    #[test]
    fn deduplication_keeps_the_first_or_the_last_row_by_time() {
        let by_time = |descending| {
            vec![SortColumn {
                column: 2,
                descending,
                nulls_first: false,
            }]
        };
        // Keep first (ORDER BY t ASC): a later row, even at the same time, never replaces it.
        let mut first = operator(1, false, by_time(false), false);
        let mut out = Output::default();
        first
            .process(
                0,
                batch(&[("a", Some(1), 10), ("a", Some(2), 10), ("a", Some(3), 11)]),
                &mut out,
            )
            .unwrap();
        let c = changes(&mut out);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].1.contains("Int(1)"), "{c:?}");
        // Keep last (ORDER BY t DESC, ties to the new row): every row at or after the time wins.
        let mut last = operator(1, false, by_time(true), true);
        last.process(
            0,
            batch(&[("a", Some(1), 10), ("a", Some(2), 10), ("a", Some(3), 9)]),
            &mut out,
        )
        .unwrap();
        let c = changes(&mut out);
        let kinds: Vec<RowKind> = c.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [RowKind::Insert, RowKind::Delete, RowKind::Insert],
            "{c:?}"
        );
        assert_eq!(
            final_state(&c).keys().collect::<Vec<_>>(),
            [&format!(
                "{:?},{:?},{:?}",
                Value::from("a"),
                Value::Int(2),
                Value::Int(10)
            )]
        );
    }

    #[test]
    fn a_window_top_n_goes_out_once_when_the_watermark_reaches_the_window() {
        // Key `k` stands for the window; `t` is its rows' time (the window's end - 1).
        let schema = input();
        let spec = WindowTopNSpec {
            key: KeySpec::resolve("top", &schema, &["k"]).unwrap(),
            order: price_desc_then_time(),
            limit: 2,
            rank: true,
            new_wins_ties: false,
            time: (2, 0),
            output: Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, false),
                Field::new("p", DataType::Int64, true),
                Field::new("t", DataType::Int64, false),
                Field::new("__rank", DataType::UInt64, false),
            ])),
        };
        let mut op = WindowTopNOperator::new(
            info(),
            spec,
            &schema,
            crate::state::MemoryStateBackend::default(),
        )
        .unwrap();
        let mut out = Output::default();
        let rows = |out: &mut Output| -> Vec<String> {
            let mut rows = Vec::new();
            for e in out.drain() {
                if let Emitted::Data(b) = e {
                    for r in rows_of(&b).unwrap() {
                        rows.push(format!(
                            "{}:{}#{}",
                            r[0].as_str().unwrap(),
                            r[1].as_i64().unwrap(),
                            r[3].as_i64().unwrap()
                        ));
                    }
                }
            }
            rows
        };
        op.process(
            0,
            batch(&[
                ("w1", Some(5), 9),
                ("w2", Some(1), 19),
                ("w1", Some(7), 9),
                ("w1", Some(5), 9),
            ]),
            &mut out,
        )
        .unwrap();
        op.process(
            0,
            batch(&[("w1", Some(6), 9), ("w2", Some(3), 19)]),
            &mut out,
        )
        .unwrap();
        assert!(
            rows(&mut out).is_empty(),
            "nothing before the window closes"
        );
        op.on_watermark(9, &mut out).unwrap();
        assert_eq!(rows(&mut out), ["w1:7#1", "w1:6#2"]);
        // Late for w1 (its window went out): dropped, and nothing goes out again.
        op.process(0, batch(&[("w1", Some(100), 9)]), &mut out)
            .unwrap();
        op.on_watermark(18, &mut out).unwrap();
        assert!(rows(&mut out).is_empty());
        op.on_watermark(19, &mut out).unwrap();
        assert_eq!(rows(&mut out), ["w2:3#1", "w2:1#2"]);
    }
}
