//! The regular join of Flink SQL: an inner equi-join of two unbounded streams. Every record is kept
//! in keyed state (per key, per side) and joined at once with every record of the other side that
//! has the same key, so the output is every matching pair, each exactly once, whatever the order
//! the two inputs arrive in. Neither input needs event time, and the output has none.
//!
//! Without a time-to-live the state grows with the input, as Flink's does. With one (Flink's
//! `table.exec.state.ttl`), a record is forgotten `ttl` of processing time after it was stored:
//! it no longer joins, and it is removed from state by a processing-time cleanup timer of its key,
//! or earlier when the key is probed. Rows whose key has a null column never match (SQL's `=`), so
//! they are neither joined nor stored.
//!
//! Joined records are the left record's fields followed by the right record's
//! ([`super::join::join_schema`]), built from the two encoded rows without decoding either.
//!
//! **Outer joins** (LEFT, RIGHT, FULL: [`RegularJoin::outer`]) emit a changelog (the last column,
//! [`OP_COLUMN`]): a preserved side's record without a match goes out padded with nulls (`+I`),
//! and when its key's first match arrives that row is deleted (`-D`) before the joined ones are
//! inserted, as Flink does. A key's records all match each other (the join has no condition
//! besides its key), so a record has a match exactly when the other side holds its key: no
//! per-record match count is kept. A preserved record with a null key goes out padded at once.

use std::fmt;
use std::sync::Arc;

use arrow::array::Array;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::group_aggregate::{OP_COLUMN, RowKind};
use super::join::{JoinedRows, add_join, join_schema, side_of};
use super::process::{check_key_types, check_output_schema, same_env};
use crate::checkpoint::state::{RestoredState, StateWriter};
use crate::error::{Error, Result};
use crate::keys::{KeyRows, KeySpec};
use crate::operator::{Operator, Output, SubtaskInfo};
use crate::plan::OperatorFactory;
use crate::row::{self, Value};
use crate::state::{KeyedStateBackend, ListState, Namespace};
use crate::stream::{DataStream, KeyedStream};
use crate::time::{TimeDomain, Timestamp};
use crate::timers::TimerService;

/// Where the join reads processing time: the system clock, or a clock a test drives.
#[derive(Clone)]
pub struct ProcessingClock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl ProcessingClock {
    /// The system clock (milliseconds since the epoch).
    pub fn system() -> Self {
        Self(Arc::new(crate::time::now_millis))
    }

    /// A clock reading `now`.
    pub fn new(now: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl fmt::Debug for ProcessingClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProcessingClock")
    }
}

/// The complete description of one regular join.
#[derive(Debug, Clone)]
pub struct RegularJoinSpec {
    /// Left, right: each input's schema and key.
    pub inputs: [(SchemaRef, KeySpec); 2],
    pub output: SchemaRef,
    /// How long a stored record lives, in milliseconds of processing time; `None` is forever.
    pub ttl_ms: Option<i64>,
    pub clock: ProcessingClock,
    /// Whether the left and the right records without a match are kept (outer joins): the
    /// output is then a changelog.
    pub outer: [bool; 2],
}

/// Cleanup timers of a key are rounded up to this grain (or the TTL, if shorter), so that a key
/// fed steadily has one timer per grain, not one per record.
const CLEANUP_GRAIN_MS: i64 = 1_000;

/// A stored record: the processing time it expires at (`Timestamp::MAX` without TTL) and its row.
type Stored = (Timestamp, Vec<u8>);

/// One subtask of a regular join.
pub struct RegularJoinOperator<S: KeyedStateBackend> {
    info: SubtaskInfo,
    spec: RegularJoinSpec,
    state: S,
    rows: [ListState<Stored>; 2],
    timers: TimerService,
    keys: KeyRows,
    row_buf: Vec<u8>,
    joined: JoinedRows,
    /// Outer joins: each side's row of nulls, and scratch for a row and its kind.
    nulls: [Vec<u8>; 2],
    suffix: Vec<u8>,
}

impl<S: KeyedStateBackend> RegularJoinOperator<S> {
    /// A subtask of `spec` keeping both sides' records in `state`.
    pub fn new(info: SubtaskInfo, spec: RegularJoinSpec, mut state: S) -> Result<Self> {
        if spec.ttl_ms.is_some_and(|t| t <= 0) {
            return Err(info.fail("a join's state time-to-live must be positive"));
        }
        let mut nulls = [Vec::new(), Vec::new()];
        for (side, buf) in nulls.iter_mut().enumerate() {
            for f in spec.inputs[side].0.fields() {
                row::encode_owned(&Value::Null, f.data_type(), buf)?;
            }
        }
        Ok(Self {
            rows: [
                state.list_state("regular-join-left"),
                state.list_state("regular-join-right"),
            ],
            info,
            spec,
            state,
            timers: TimerService::default(),
            keys: KeyRows::default(),
            row_buf: Vec::new(),
            joined: JoinedRows::default(),
            nulls,
            suffix: Vec::new(),
        })
    }

    fn is_outer(&self) -> bool {
        self.spec.outer.iter().any(|o| *o)
    }

    /// Adds a changelog row: `this` of `side` with `other` of the other side.
    fn emit(&mut self, side: usize, this: &[u8], other: &[u8], kind: RowKind) -> Result<()> {
        let (l, r) = if side == 0 {
            (this, other)
        } else {
            (other, this)
        };
        self.suffix.clear();
        self.suffix.extend_from_slice(r);
        row::encode_owned(
            &Value::Int(kind as i64),
            &arrow::datatypes::DataType::Int8,
            &mut self.suffix,
        )?;
        self.joined.push(l, &self.suffix);
        Ok(())
    }

    /// An outer join's record `this` of `side`, key `key` (`None`: a null key).
    fn process_outer(
        &mut self,
        side: usize,
        key: Option<&[u8]>,
        this: &[u8],
        now: Timestamp,
        expires: Timestamp,
    ) -> Result<()> {
        let other = 1 - side;
        let Some(key) = key else {
            if self.spec.outer[side] {
                let nulls = self.nulls[other].clone();
                self.emit(side, this, &nulls, RowKind::Insert)?;
            }
            return Ok(());
        };
        let global = Namespace::Global;
        let (others, expired) = self
            .state
            .with_list(&self.rows[other], key, &global, |rows| {
                let live: Vec<Vec<u8>> = rows
                    .iter()
                    .filter(|(t, _)| *t > now)
                    .map(|(_, r)| r.clone())
                    .collect();
                (live, rows.iter().any(|(t, _)| *t <= now))
            })?;
        if expired {
            self.expire(key, other, now)?;
        }
        if others.is_empty() {
            if self.spec.outer[side] {
                let nulls = self.nulls[other].clone();
                self.emit(side, this, &nulls, RowKind::Insert)?;
            }
        } else {
            let unmatched = self.spec.outer[other]
                && self
                    .state
                    .with_list(&self.rows[side], key, &global, |rows| {
                        rows.iter().all(|(t, _)| *t <= now)
                    })?;
            let nulls = self.nulls[side].clone();
            for o in &others {
                if unmatched {
                    // `o` had no match until now: its null-padded row goes.
                    self.emit(other, o, &nulls, RowKind::Delete)?;
                }
            }
            for o in &others {
                self.emit(side, this, o, RowKind::Insert)?;
            }
        }
        self.state
            .list_add(&self.rows[side], key, &global, (expires, this.to_vec()))?;
        Ok(())
    }

    /// The keyed state, for inspection in tests.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Drops `key`'s records of `side` that expired by `now`.
    fn expire(&mut self, key: &[u8], side: usize, now: Timestamp) -> Result<()> {
        let global = Namespace::Global;
        let any = self
            .state
            .with_list(&self.rows[side], key, &global, |rows| {
                rows.iter().any(|(t, _)| *t <= now)
            })?;
        if any {
            let mut rows = self.state.list_take(&self.rows[side], key, &global)?;
            rows.retain(|(t, _)| *t > now);
            self.state.list_put(&self.rows[side], key, &global, rows)?;
        }
        Ok(())
    }
}

/// Whether row `row` has a null in one of the `columns`.
fn null_key(columns: &[&dyn Array], row: usize) -> bool {
    columns.iter().any(|c| c.is_null(row))
}

impl<S: KeyedStateBackend> Operator for RegularJoinOperator<S> {
    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let side = side_of(&self.info, input)?;
        let other = 1 - side;
        let key = self.spec.inputs[side].1.clone();
        let mut keys = std::mem::take(&mut self.keys);
        keys.encode(&key, &batch)?;
        let key_columns: Vec<&dyn Array> = key
            .indices
            .iter()
            .map(|&i| batch.column(i).as_ref())
            .collect();
        let now = match self.spec.ttl_ms {
            Some(_) => self.spec.clock.now(),
            None => Timestamp::MIN,
        };
        let expires = self
            .spec
            .ttl_ms
            .map_or(Timestamp::MAX, |ttl| now.saturating_add(ttl));
        let global = Namespace::Global;
        let outer = self.is_outer();
        for row in 0..batch.num_rows() {
            if outer {
                self.row_buf.clear();
                row::encode_row(batch.columns(), row, &mut self.row_buf)?;
                let this = std::mem::take(&mut self.row_buf);
                let key = (!null_key(&key_columns, row)).then(|| keys.get(row));
                self.process_outer(side, key, &this, now, expires)?;
                self.row_buf = this;
                if let (Some(key), Some(ttl)) = (key, self.spec.ttl_ms) {
                    let grain = ttl.min(CLEANUP_GRAIN_MS);
                    let at = expires.saturating_add(grain - 1) / grain * grain;
                    self.timers
                        .register(TimeDomain::ProcessingTime, at, key, global);
                }
                continue;
            }
            if null_key(&key_columns, row) {
                continue;
            }
            let key = keys.get(row);
            self.row_buf.clear();
            row::encode_row(batch.columns(), row, &mut self.row_buf)?;
            let (joined, this) = (&mut self.joined, &self.row_buf);
            let expired = self
                .state
                .with_list(&self.rows[other], key, &global, |rows| {
                    let mut expired = false;
                    for (t, r) in rows {
                        if *t <= now {
                            expired = true;
                        } else if side == 0 {
                            joined.push(this, r);
                        } else {
                            joined.push(r, this);
                        }
                    }
                    expired
                })?;
            if expired {
                self.expire(key, other, now)?;
            }
            self.state.list_add(
                &self.rows[side],
                key,
                &global,
                (expires, self.row_buf.clone()),
            )?;
            if let Some(ttl) = self.spec.ttl_ms {
                let grain = ttl.min(CLEANUP_GRAIN_MS);
                let at = expires.saturating_add(grain - 1) / grain * grain;
                self.timers
                    .register(TimeDomain::ProcessingTime, at, key, global);
            }
        }
        self.keys = keys;
        self.joined.emit(&self.spec.output, &self.info, out)
    }

    fn next_processing_time(&self) -> Option<Timestamp> {
        self.timers.next_processing_time()
    }

    fn on_processing_time(&mut self, now: Timestamp, _out: &mut Output) -> Result<()> {
        let mut due: Vec<Box<[u8]>> =
            std::iter::from_fn(|| self.timers.pop_due(TimeDomain::ProcessingTime, now))
                .map(|t| t.key)
                .collect();
        due.sort_unstable();
        due.dedup();
        for key in &due {
            self.expire(key, 0, now)?;
            self.expire(key, 1, now)?;
        }
        Ok(())
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

/// Options of a regular join: the state time-to-live.
#[derive(Debug, Clone)]
pub struct RegularJoin {
    ttl_ms: Option<i64>,
    outer: [bool; 2],
    clock: ProcessingClock,
}

impl Default for RegularJoin {
    fn default() -> Self {
        Self {
            ttl_ms: None,
            outer: [false, false],
            clock: ProcessingClock::system(),
        }
    }
}

impl RegularJoin {
    /// Records are kept forever.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records are forgotten `ttl` of processing time after they were stored.
    pub fn ttl(mut self, ttl: std::time::Duration) -> Self {
        self.ttl_ms = Some(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        self
    }

    /// Reads processing time from `clock` (tests).
    pub fn clock(mut self, clock: ProcessingClock) -> Self {
        self.clock = clock;
        self
    }

    /// An outer join: `left` keeps the left records without a match (LEFT), `right` the right
    /// ones (RIGHT), both for FULL. The output becomes a changelog (see the module docs).
    pub fn outer(mut self, left: bool, right: bool) -> Self {
        self.outer = [left, right];
        self
    }
}

impl KeyedStream {
    /// Flink SQL's regular inner join of this stream (left) with `other` (right) on their keys:
    /// every pair of records with equal keys, emitted as soon as both are there. The output is
    /// [`join_schema`] of the two inputs, has no event time, and runs at this stream's parallelism.
    pub fn regular_join(&self, other: &KeyedStream, join: RegularJoin) -> DataStream {
        let (left, right) = (&self.stream, &other.stream);
        let kind = match join.outer {
            [false, false] => "regular_join",
            [true, false] => "left_outer_join",
            [false, true] => "right_outer_join",
            [true, true] => "full_outer_join",
        };
        let name = match join.ttl_ms {
            Some(ttl) => format!("{kind}(ttl {ttl}ms)"),
            None => kind.to_owned(),
        };
        let spec = (|| -> Result<RegularJoinSpec> {
            if !same_env(left, right) {
                return Err(Error::plan(
                    &name,
                    "the joined streams belong to different environments",
                ));
            }
            if join.ttl_ms.is_some_and(|t| t <= 0) {
                return Err(Error::plan(
                    &name,
                    "the state time-to-live must be positive",
                ));
            }
            check_key_types(
                &name,
                (&left.schema, &self.key),
                (&right.schema, &other.key),
            )?;
            let mut output = join_schema(&left.schema, &right.schema);
            if join.outer.iter().any(|o| *o) {
                // Either side may be padded with nulls; the row kind comes last.
                let mut fields: Vec<arrow::datatypes::Field> = output
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect();
                fields.push(arrow::datatypes::Field::new(
                    OP_COLUMN,
                    arrow::datatypes::DataType::Int8,
                    false,
                ));
                output = Arc::new(arrow::datatypes::Schema::new(fields));
            }
            check_output_schema(&name, &output)?;
            Ok(RegularJoinSpec {
                inputs: [
                    (left.schema.clone(), self.key.clone()),
                    (right.schema.clone(), other.key.clone()),
                ],
                output,
                ttl_ms: join.ttl_ms,
                clock: join.clock.clone(),
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
            Ok(Box::new(RegularJoinOperator::new(
                info.clone(),
                spec.clone(),
                crate::state::Backend::for_subtask(info)?,
            )?) as Box<dyn Operator>)
        });
        add_join(
            name,
            (left, &self.key),
            (right, &other.key),
            schema,
            factory,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicI64, Ordering};

    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::operator::Emitted;
    use crate::row::{Row, Value, batch_from_rows, rows_of};

    fn schema(value: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new(value, DataType::Utf8, false),
        ]))
    }

    fn spec(ttl_ms: Option<i64>, clock: ProcessingClock) -> RegularJoinSpec {
        let side = |s: SchemaRef| (s.clone(), KeySpec::resolve("t", &s, &["k"]).unwrap());
        RegularJoinSpec {
            inputs: [side(schema("a")), side(schema("b"))],
            output: join_schema(&schema("a"), &schema("b")),
            ttl_ms,
            clock,
            outer: [false, false],
        }
    }

    fn info() -> SubtaskInfo {
        SubtaskInfo {
            name: "join".into(),
            index: 0,
            parallelism: 1,
            max_parallelism: 128,
            state: Default::default(),
        }
    }

    fn batch(value: &str, rows: &[(Option<i64>, &str)]) -> RecordBatch {
        let rows: Vec<Row> = rows
            .iter()
            .map(|(k, v)| vec![k.map_or(Value::Null, Value::Int), Value::from(*v)])
            .collect();
        batch_from_rows(&schema(value), &rows).unwrap()
    }

    /// (left value, right value) of the joined rows, sorted.
    fn pairs(out: &mut Output) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for item in out.drain() {
            if let Emitted::Data(b) = item {
                for r in rows_of(&b).unwrap() {
                    assert_eq!(r[0], r[2], "joined on the key");
                    pairs.push((
                        r[1].as_str().unwrap().to_owned(),
                        r[3].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
        pairs.sort();
        pairs
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }

    #[test]
    fn every_matching_pair_once_in_any_arrival_order_and_null_keys_never_match() {
        let mut op = RegularJoinOperator::new(
            info(),
            spec(None, ProcessingClock::system()),
            crate::state::MemoryStateBackend::default(),
        )
        .unwrap();
        let mut out = Output::default();
        op.process(0, batch("a", &[(Some(1), "x"), (None, "n")]), &mut out)
            .unwrap();
        assert!(pairs(&mut out).is_empty());
        op.process(
            1,
            batch("b", &[(Some(1), "p"), (Some(2), "q"), (None, "m")]),
            &mut out,
        )
        .unwrap();
        assert_eq!(pairs(&mut out), vec![pair("x", "p")]);
        op.process(0, batch("a", &[(Some(1), "y"), (Some(2), "z")]), &mut out)
            .unwrap();
        assert_eq!(pairs(&mut out), vec![pair("y", "p"), pair("z", "q")]);
        op.process(1, batch("b", &[(Some(1), "r")]), &mut out)
            .unwrap();
        assert_eq!(pairs(&mut out), vec![pair("x", "r"), pair("y", "r")]);
        // Rows with a null key are not kept.
        assert_eq!(op.state().entries(), 4);
    }

    /// (kind, left value, right value) of a changelog's rows, in order; nulls as "-".
    fn changes(out: &mut Output) -> Vec<String> {
        let mut rows = Vec::new();
        for item in out.drain() {
            if let Emitted::Data(b) = item {
                for r in rows_of(&b).unwrap() {
                    let text = |v: &Value| v.as_str().map_or("-".to_owned(), str::to_owned);
                    let kind = match r[4] {
                        Value::Int(k) => RowKind::from_code(k as i8).unwrap().short(),
                        _ => "?",
                    };
                    rows.push(format!("{kind}({},{})", text(&r[1]), text(&r[3])));
                }
            }
        }
        rows
    }

    #[test]
    fn a_full_outer_join_pads_unmatched_rows_and_deletes_them_at_their_first_match() {
        let mut join_spec = spec(None, ProcessingClock::system());
        join_spec.outer = [true, true];
        let mut fields: Vec<Field> = join_spec
            .output
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        join_spec.output = Arc::new(Schema::new(fields));
        let mut op = RegularJoinOperator::new(
            info(),
            join_spec,
            crate::state::MemoryStateBackend::default(),
        )
        .unwrap();
        let mut out = Output::default();
        op.process(0, batch("a", &[(Some(1), "x"), (None, "n")]), &mut out)
            .unwrap();
        assert_eq!(changes(&mut out), ["+I(x,-)", "+I(n,-)"]);
        op.process(1, batch("b", &[(Some(1), "p"), (Some(2), "q")]), &mut out)
            .unwrap();
        assert_eq!(changes(&mut out), ["-D(x,-)", "+I(x,p)", "+I(-,q)"]);
        op.process(0, batch("a", &[(Some(2), "z"), (Some(1), "y")]), &mut out)
            .unwrap();
        assert_eq!(changes(&mut out), ["-D(-,q)", "+I(z,q)", "+I(y,p)"]);
        op.process(1, batch("b", &[(Some(1), "r"), (None, "m")]), &mut out)
            .unwrap();
        assert_eq!(changes(&mut out), ["+I(x,r)", "+I(y,r)", "+I(-,m)"]);
    }

    #[test]
    fn records_expire_after_the_ttl_and_their_state_is_cleaned_up() {
        let clock = Arc::new(AtomicI64::new(10_000));
        let now = clock.clone();
        let mut op = RegularJoinOperator::new(
            info(),
            spec(
                Some(500),
                ProcessingClock::new(move || now.load(Ordering::SeqCst)),
            ),
            crate::state::MemoryStateBackend::default(),
        )
        .unwrap();
        let mut out = Output::default();
        op.process(
            0,
            batch("a", &[(Some(1), "old"), (Some(2), "gone")]),
            &mut out,
        )
        .unwrap();
        clock.store(10_400, Ordering::SeqCst);
        op.process(0, batch("a", &[(Some(1), "new")]), &mut out)
            .unwrap();
        clock.store(10_600, Ordering::SeqCst);
        // "old" (stored at 10 000) expired at 10 500; "new" lives until 10 900.
        op.process(1, batch("b", &[(Some(1), "p")]), &mut out)
            .unwrap();
        assert_eq!(pairs(&mut out), vec![pair("new", "p")]);
        // Key 2 is never probed again: its cleanup timer removes it.
        assert_eq!(op.next_processing_time(), Some(10_500));
        op.on_processing_time(10_600, &mut out).unwrap();
        assert_eq!(op.state().entries(), 2, "key 1 on both sides");
        op.on_processing_time(11_100, &mut out).unwrap();
        assert_eq!(op.state().entries(), 0);
    }
}
