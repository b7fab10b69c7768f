//! Joins of two event-time streams on equal keys: the window join (Flink's
//! `a.join(b).where(k).equalTo(k).window(assigner).apply(..)`) and the interval join (Flink's
//! `a.keyBy(k).intervalJoin(b.keyBy(k)).between(lower, upper)`), both inner joins, and the DataStream
//! API that adds them.
//!
//! Both are two-input keyed operators: each input is hash-partitioned by its own key (the keys must
//! have the same types, so equal keys meet in one subtask), records are buffered in keyed state in
//! the row format ([`crate::row`]), and event-time timers decide when buffers are joined or dropped.
//! A joined record is the left record's fields followed by the right record's (a right field whose
//! name is taken is renamed with a `right_` prefix, see [`join_schema`]); being the concatenation of
//! the two encoded rows, it is built without decoding either side. A window join's output has no
//! event-time attribute; an interval join's keeps the left record's, and holds its watermark back
//! by the interval's reach (as Flink's does), so that no joined record is behind it. Records too late to join are
//! dropped and counted ([`LateCounter`]). Outer joins, allowed lateness and processing-time joins are
//! not provided here, and neither are joins without a key.
//!
//! **Window join**: each record goes to its windows (tumbling, sliding or session, event time);
//! when the watermark reaches a window's last millisecond, every pair of a left and a right record of
//! the same key in that window is emitted and the window's buffers are dropped. A record whose
//! windows have all fired already (`window end - 1 <= watermark`) is late. Session windows merge
//! when they touch, across both inputs; as in [`super::window`], a record whose own session window
//! `[t, t + gap)` is behind the watermark is late even if it touches a live session (Flink would
//! merge it in first).
//!
//! **Interval join**: a left record at `t` joins every right record of its key at `t_r` with
//! `t + lower <= t_r <= t + upper`. Pairs are emitted as soon as both records are there. A record is
//! late, and dropped, when its time is below the watermark (Flink's rule). A left record is kept
//! until the watermark passes `t + upper` and a right one until it passes `t_r - lower`: after that
//! no record that is not late can match it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::process::{
    carried_time, check_key_types, check_output_schema, event_times, same_env, time_of,
};
use super::window::{TimeWindow, WindowAssigner};
use crate::checkpoint::state::{RestoredState, StateWriter};
use crate::error::{Error, Result};
use crate::keys::{KeyRows, KeySpec};
use crate::operator::{Operator, Output, SubtaskInfo};
use crate::plan::{NodeKind, OperatorFactory, Partitioning};
use crate::row;
use crate::state::{KeyedStateBackend, ListState, Namespace, ValueState};
use crate::stream::{DataStream, KeyedStream};
use crate::time::{MAX_WATERMARK, MIN_WATERMARK, TimeDomain, Timestamp};
use crate::timers::TimerService;

/// Counts the records a join dropped as late, over all its subtasks; readable while and after the
/// job runs.
#[derive(Debug, Clone, Default)]
pub struct LateCounter(Arc<AtomicU64>);

impl LateCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records dropped so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(super) fn add(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The schema of joined records: the left fields, then the right fields; a right field whose name is
/// already taken gets the prefix `right_` (repeated until the name is free).
pub fn join_schema(left: &SchemaRef, right: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = left.fields().iter().map(|f| f.as_ref().clone()).collect();
    for f in right.fields() {
        let mut name = f.name().clone();
        while fields.iter().any(|g| *g.name() == name) {
            name = format!("right_{name}");
        }
        fields.push(f.as_ref().clone().with_name(name));
    }
    Arc::new(Schema::new(fields))
}

/// One input of a join.
#[derive(Debug, Clone)]
pub struct JoinInput {
    pub schema: SchemaRef,
    pub key: KeySpec,
    /// Event-time column index and offset.
    pub time: (usize, i64),
}

/// Joined rows in the row format, collected until they are emitted as one batch.
#[derive(Debug, Default)]
pub(super) struct JoinedRows {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl JoinedRows {
    pub(super) fn push(&mut self, left: &[u8], right: &[u8]) {
        self.data.extend_from_slice(left);
        self.data.extend_from_slice(right);
        self.ends.push(self.data.len());
    }

    pub(super) fn emit(
        &mut self,
        schema: &SchemaRef,
        info: &SubtaskInfo,
        out: &mut Output,
    ) -> Result<()> {
        if self.ends.is_empty() {
            return Ok(());
        }
        let mut start = 0;
        let rows = self.ends.iter().map(|&end| {
            let row = &self.data[start..end];
            start = end;
            row
        });
        let batch = row::decode_batch(schema, rows).map_err(|e| info.fail(e))?;
        self.data.clear();
        self.ends.clear();
        out.emit(batch);
        Ok(())
    }
}

pub(super) fn side_of(info: &SubtaskInfo, input: usize) -> Result<usize> {
    if input < 2 {
        Ok(input)
    } else {
        Err(info.fail(format!("a join has two inputs, not input {input}")))
    }
}

// ---------------------------------------------------------------------------------------------------
// Window join.

/// The complete description of one window join.
#[derive(Debug, Clone)]
pub struct WindowJoinSpec {
    /// An event-time tumbling, sliding or session assigner.
    pub assigner: WindowAssigner,
    /// Left, right.
    pub inputs: [JoinInput; 2],
    pub output: SchemaRef,
    pub late: LateCounter,
}

fn window_namespace(w: &TimeWindow) -> Namespace {
    Namespace::Window {
        start: w.start,
        end: w.end,
    }
}

fn window_of(ns: &Namespace) -> Option<TimeWindow> {
    match *ns {
        Namespace::Window { start, end } => Some(TimeWindow { start, end }),
        Namespace::Global => None,
    }
}

/// The windows of `assigner` that contain `ts` (none of the global window, which a window join
/// rejects when the job is planned).
fn assign_windows(assigner: &WindowAssigner, ts: Timestamp, out: &mut Vec<TimeWindow>) {
    if let WindowAssigner::Global = assigner {
        out.clear();
    } else {
        assigner.assign(ts, out);
    }
}

/// One subtask of a window join.
pub struct WindowJoinOperator<S: KeyedStateBackend> {
    info: SubtaskInfo,
    spec: WindowJoinSpec,
    merging: bool,
    state: S,
    /// Encoded records per side, per key and window.
    buffers: [ListState<Vec<u8>>; 2],
    /// Each key's live session windows (session assigners only).
    sessions: ValueState<Vec<(Timestamp, Timestamp)>>,
    timers: TimerService,
    watermark: Timestamp,
    keys: KeyRows,
    windows: Vec<TimeWindow>,
    row_buf: Vec<u8>,
    joined: JoinedRows,
    late: u64,
}

impl<S: KeyedStateBackend> WindowJoinOperator<S> {
    /// A subtask of `spec` keeping its buffers in `state`.
    pub fn new(info: SubtaskInfo, spec: WindowJoinSpec, mut state: S) -> Result<Self> {
        if spec.assigner.domain() != Some(TimeDomain::EventTime) {
            return Err(info.fail("a window join needs event-time windows"));
        }
        spec.assigner.validate(&info.name)?;
        Ok(Self {
            merging: matches!(spec.assigner, WindowAssigner::Session { .. }),
            buffers: [
                state.list_state("window-join-left"),
                state.list_state("window-join-right"),
            ],
            sessions: state.value_state("window-join-sessions"),
            info,
            spec,
            state,
            timers: TimerService::default(),
            watermark: MIN_WATERMARK,
            keys: KeyRows::default(),
            windows: Vec::new(),
            row_buf: Vec::new(),
            joined: JoinedRows::default(),
            late: 0,
        })
    }

    /// Records this subtask dropped as late.
    pub fn late_records(&self) -> u64 {
        self.late
    }

    /// The keyed state, for inspection in tests.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Merges `key`'s sessions with the new session window `w`; returns the window the record goes
    /// to. Buffers of absorbed sessions move to the merged one, and so does the timer.
    fn merge_session(&mut self, key: &[u8], w: TimeWindow) -> Result<TimeWindow> {
        let mut sessions = self
            .state
            .get(&self.sessions, key, &Namespace::Global)?
            .unwrap_or_default();
        let mut merged = w;
        let mut absorbed: Vec<TimeWindow> = Vec::new();
        loop {
            let before = absorbed.len();
            let cover = merged;
            sessions.retain(|&(start, end)| {
                let touches = start <= cover.end && end >= cover.start;
                if touches {
                    absorbed.push(TimeWindow { start, end });
                }
                !touches
            });
            if absorbed.len() == before {
                break;
            }
            for s in &absorbed[before..] {
                merged.start = merged.start.min(s.start);
                merged.end = merged.end.max(s.end);
            }
        }
        let target = window_namespace(&merged);
        for s in absorbed.iter().filter(|s| **s != merged) {
            let ns = window_namespace(s);
            self.timers
                .delete(TimeDomain::EventTime, s.max_timestamp(), key, ns);
            for buffer in &self.buffers {
                for r in self.state.list_take(buffer, key, &ns)? {
                    self.state.list_add(buffer, key, &target, r)?;
                }
            }
            self.timers
                .register(TimeDomain::EventTime, merged.max_timestamp(), key, target);
        }
        sessions.push((merged.start, merged.end));
        sessions.sort_unstable();
        self.state
            .put(&self.sessions, key, &Namespace::Global, sessions)?;
        Ok(merged)
    }

    fn forget_session(&mut self, key: &[u8], w: &TimeWindow) -> Result<()> {
        self.state
            .update(&self.sessions, key, &Namespace::Global, |s| {
                if let Some(list) = s {
                    list.retain(|&(start, end)| (start, end) != (w.start, w.end));
                    if list.is_empty() {
                        *s = None;
                    }
                }
            })
    }
}

impl<S: KeyedStateBackend> Operator for WindowJoinOperator<S> {
    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        self.state.snapshot(checkpoint_id, out)?;
        self.timers.snapshot(self.info.max_parallelism, out)
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        self.state.restore(state)?;
        self.timers.restore(state)
    }
    fn process(&mut self, input: usize, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let side = side_of(&self.info, input)?;
        let JoinInput { key, time, .. } = self.spec.inputs[side].clone();
        let times = event_times(&self.info, &batch, Some(time))?.unwrap_or_default();
        let mut keys = std::mem::take(&mut self.keys);
        keys.encode(&key, &batch)?;
        let mut windows = std::mem::take(&mut self.windows);
        let mut late = 0;
        for (row, &ts) in times.iter().enumerate() {
            let key = keys.get(row);
            assign_windows(&self.spec.assigner, ts, &mut windows);
            self.row_buf.clear();
            row::encode_row(batch.columns(), row, &mut self.row_buf)?;
            let mut kept = false;
            for &w in &windows {
                if w.max_timestamp() <= self.watermark {
                    continue;
                }
                let w = if self.merging {
                    self.merge_session(key, w)?
                } else {
                    w
                };
                let ns = window_namespace(&w);
                if self
                    .state
                    .list_add(&self.buffers[side], key, &ns, self.row_buf.clone())?
                {
                    self.timers
                        .register(TimeDomain::EventTime, w.max_timestamp(), key, ns);
                }
                kept = true;
            }
            if !kept {
                late += 1;
            }
        }
        self.keys = keys;
        self.windows = windows;
        self.late += late;
        self.spec.late.add(late);
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        while let Some(timer) = self.timers.pop_due(TimeDomain::EventTime, self.watermark) {
            let Some(w) = window_of(&timer.namespace) else {
                continue;
            };
            let ns = timer.namespace;
            let left = self.state.list_take(&self.buffers[0], &timer.key, &ns)?;
            let right = self.state.list_take(&self.buffers[1], &timer.key, &ns)?;
            if self.merging {
                self.forget_session(&timer.key, &w)?;
            }
            for l in &left {
                for r in &right {
                    self.joined.push(l, r);
                }
            }
        }
        self.joined.emit(&self.spec.output, &self.info, out)
    }
}

// ---------------------------------------------------------------------------------------------------
// Interval join.

/// The complete description of one interval join.
#[derive(Debug, Clone)]
pub struct IntervalJoinSpec {
    /// Left, right.
    pub inputs: [JoinInput; 2],
    /// A left record at `t` joins right records at `t + lower ..= t + upper` (inclusive bounds).
    pub lower: i64,
    pub upper: i64,
    pub output: SchemaRef,
    pub late: LateCounter,
}

/// One subtask of an interval join.
pub struct IntervalJoinOperator<S: KeyedStateBackend> {
    info: SubtaskInfo,
    spec: IntervalJoinSpec,
    state: S,
    /// Per side and key, its records in arrival order, as [`Run`]s. One list per key, so that
    /// storing records and probing the other side cost one lookup each (on RocksDB, storing is a
    /// merge); a probe scans the key's list and keeps the records in range, as Flink's scan of the
    /// key's time buckets does.
    rows: [ListState<Run>; 2],
    /// One timer per key at the earliest time some of its records can go: set when a side's
    /// list of the key starts, and again after a clean-up that leaves records behind.
    timers: TimerService,
    watermark: Timestamp,
    keys: KeyRows,
    row_buf: Vec<u8>,
    /// The run being gathered: consecutive records of one key in a batch.
    run_buf: Vec<u8>,
    joined: JoinedRows,
    late: u64,
}

/// Consecutive records of one key in a batch, stored as one list element: the earliest and the
/// latest of their times, and the records, each `[time: i64 LE][length: u32 LE][row]`. A window
/// join's input comes as long runs (a fired window's rows share its key), which then cost one
/// element instead of one per row. A run stays until its latest record can no longer join; a
/// probe skips its records out of range, so the earlier ones kept longer never match.
type Run = (Timestamp, Timestamp, Vec<u8>);

/// The (time, row) records of a run.
fn run_records(mut run: &[u8]) -> impl Iterator<Item = (Timestamp, &[u8])> {
    std::iter::from_fn(move || {
        let (t, rest) = run.split_first_chunk::<8>()?;
        let (len, rest) = rest.split_first_chunk::<4>()?;
        let (row, rest) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
        run = rest;
        Some((i64::from_le_bytes(*t), row))
    })
}

impl<S: KeyedStateBackend> IntervalJoinOperator<S> {
    /// A subtask of `spec` keeping its buffers in `state`.
    pub fn new(info: SubtaskInfo, spec: IntervalJoinSpec, mut state: S) -> Result<Self> {
        if spec.lower > spec.upper {
            return Err(info.fail("the join interval is empty"));
        }
        Ok(Self {
            rows: [
                state.list_state("interval-join-left-records"),
                state.list_state("interval-join-right-records"),
            ],
            info,
            spec,
            state,
            timers: TimerService::default(),
            watermark: MIN_WATERMARK,
            keys: KeyRows::default(),
            row_buf: Vec::new(),
            run_buf: Vec::new(),
            joined: JoinedRows::default(),
            late: 0,
        })
    }

    /// Records this subtask dropped as late.
    pub fn late_records(&self) -> u64 {
        self.late
    }

    /// The keyed state, for inspection in tests.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Stores the gathered run of `side` under `key`, arming the key's clean-up timer if the run
    /// starts its list.
    fn store_run(
        &mut self,
        side: usize,
        key: &[u8],
        (first, last): (Timestamp, Timestamp),
    ) -> Result<()> {
        let run = (first, last, self.run_buf.clone());
        self.run_buf.clear();
        if self
            .state
            .list_add(&self.rows[side], key, &Namespace::Global, run)?
        {
            let cleanup = self.cleanup_time(side, last);
            self.timers
                .register(TimeDomain::EventTime, cleanup, key, Namespace::Global);
        }
        Ok(())
    }

    /// The first watermark at which a record of `side` at `t` can no longer find a partner.
    fn cleanup_time(&self, side: usize, t: Timestamp) -> Timestamp {
        if side == 0 {
            t.saturating_add(self.spec.upper).saturating_add(1)
        } else {
            t.saturating_sub(self.spec.lower).saturating_add(1)
        }
    }

    /// Drops `key`'s records of `side` that the watermark has made unable to join; returns when
    /// the next of those left can go.
    fn clean(&mut self, key: &[u8], side: usize) -> Result<Option<Timestamp>> {
        let global = Namespace::Global;
        let mut records = self.state.list_take(&self.rows[side], key, &global)?;
        records.retain(|&(_, last, _)| self.cleanup_time(side, last) > self.watermark);
        let next = records
            .iter()
            .map(|&(_, last, _)| self.cleanup_time(side, last))
            .min();
        if !records.is_empty() {
            self.state
                .list_put(&self.rows[side], key, &global, records)?;
        }
        Ok(next)
    }
}

impl<S: KeyedStateBackend> Operator for IntervalJoinOperator<S> {
    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        self.state.snapshot(checkpoint_id, out)?;
        self.timers.snapshot(self.info.max_parallelism, out)
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        self.state.restore(state)?;
        self.timers.restore(state)
    }

    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let side = side_of(&self.info, input)?;
        let other = 1 - side;
        let JoinInput { key, time, .. } = self.spec.inputs[side].clone();
        let times = event_times(&self.info, &batch, Some(time))?.unwrap_or_default();
        let mut keys = std::mem::take(&mut self.keys);
        keys.encode(&key, &batch)?;
        let (lower, upper) = (self.spec.lower, self.spec.upper);
        let global = Namespace::Global;
        let mut late = 0;
        // The run being gathered: its first row (for its key) and its earliest and latest times.
        let mut run: Option<(usize, (Timestamp, Timestamp))> = None;
        for (row, &t) in times.iter().enumerate() {
            if t < self.watermark {
                late += 1;
                continue;
            }
            let key = keys.get(row);
            self.row_buf.clear();
            row::encode_row(batch.columns(), row, &mut self.row_buf)?;
            // Join with what the other side holds.
            let (from, to) = if side == 0 {
                (t.saturating_add(lower), t.saturating_add(upper))
            } else {
                (t.saturating_sub(upper), t.saturating_sub(lower))
            };
            let (joined, row_bytes) = (&mut self.joined, &self.row_buf);
            self.state
                .with_list(&self.rows[other], key, &global, |runs| {
                    for (_, r) in runs
                        .iter()
                        .filter(|(first, last, _)| *first <= to && *last >= from)
                        .flat_map(|(_, _, records)| run_records(records))
                        .filter(|(x, _)| (from..=to).contains(x))
                    {
                        if side == 0 {
                            joined.push(row_bytes, r);
                        } else {
                            joined.push(r, row_bytes);
                        }
                    }
                })?;
            // Keep it while a record of the other side that is not late can still match it.
            if self.cleanup_time(side, t) > self.watermark {
                if let Some((first_row, span)) = run
                    && keys.get(first_row) != key
                {
                    self.store_run(side, keys.get(first_row), span)?;
                    run = None;
                }
                let span = run.get_or_insert((row, (t, t)));
                span.1 = (span.1.0.min(t), span.1.1.max(t));
                let len = u32::try_from(self.row_buf.len())
                    .map_err(|_| self.info.fail("a joined record exceeds 4 GiB"))?;
                self.run_buf.extend_from_slice(&t.to_le_bytes());
                self.run_buf.extend_from_slice(&len.to_le_bytes());
                self.run_buf.extend_from_slice(&self.row_buf);
            }
        }
        if let Some((first_row, span)) = run {
            self.store_run(side, keys.get(first_row), span)?;
        }
        self.keys = keys;
        self.late += late;
        self.spec.late.add(late);
        self.joined.emit(&self.spec.output, &self.info, out)
    }

    fn forwards_watermarks(&self) -> bool {
        false
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        if self.watermark == MAX_WATERMARK {
            // The input has ended and nothing can join any more: drop the buffers whole, not key
            // by key.
            self.state.list_clear(&self.rows[0])?;
            self.state.list_clear(&self.rows[1])?;
            self.timers.clear(TimeDomain::EventTime);
            out.emit_watermark(MAX_WATERMARK);
            return Ok(());
        }
        // A pair found later than now holds a left record at or after `watermark - upper` and a
        // right one at or after `watermark + lower`: the output's watermark trails by the larger
        // distance, so that both times stay ahead of it (Flink holds its back the same way).
        let delay = self.spec.upper.max(self.spec.lower.saturating_neg()).max(0);
        out.emit_watermark(self.watermark.saturating_sub(delay));
        while let Some(timer) = self.timers.pop_due(TimeDomain::EventTime, self.watermark) {
            let next = [self.clean(&timer.key, 0)?, self.clean(&timer.key, 1)?]
                .into_iter()
                .flatten()
                .min();
            if let Some(next) = next {
                self.timers
                    .register(TimeDomain::EventTime, next, &timer.key, Namespace::Global);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// The DataStream API.

/// Resolves one side's key fields, saying which side an unknown field was looked for in.
fn resolve_key(
    operator: &str,
    side: &str,
    schema: &SchemaRef,
    fields: &[String],
) -> Result<KeySpec> {
    let names: Vec<&str> = fields.iter().map(String::as_str).collect();
    KeySpec::resolve(operator, schema, &names).map_err(|e| match e {
        Error::Plan { operator, message } => {
            Error::plan(operator, format!("{side} input: {message}"))
        }
        other => other,
    })
}

pub(super) fn event_time_of(
    operator: &str,
    side: &str,
    stream: &DataStream,
) -> Result<(usize, i64)> {
    time_of(stream).ok_or_else(|| {
        Error::plan(
            operator,
            format!(
                "the {side} input has no event time: a join needs event time and watermarks on both \
                 inputs (give the source a watermark strategy or call \
                 assign_timestamps_and_watermarks first)"
            ),
        )
    })
}

/// Adds a two-input join node fed by `left` and `right`, each hash-partitioned by its key.
pub(super) fn add_join(
    name: String,
    (left, left_key): (&DataStream, &KeySpec),
    (right, right_key): (&DataStream, &KeySpec),
    schema: SchemaRef,
    factory: OperatorFactory,
) -> DataStream {
    let env = &left.env;
    let node = env.add_node(
        name,
        left.parallelism(),
        NodeKind::Operator { factory, inputs: 2 },
        schema.clone(),
        Vec::new(),
    );
    env.add_edge(left, node, 0, Partitioning::Hash(left_key.clone()));
    env.add_edge(right, node, 1, Partitioning::Hash(right_key.clone()));
    left.derived(node, schema, None)
}

impl DataStream {
    /// Starts a window join of this stream (left) with `other` (right):
    /// `a.join(&b).where_key(&["k"]).equal_to(&["k"]).window(assigner).apply()`.
    pub fn join(&self, other: &DataStream) -> JoinBuilder {
        JoinBuilder {
            left: self.clone(),
            right: other.clone(),
            left_key: Vec::new(),
            right_key: Vec::new(),
        }
    }
}

/// A window join being described: the two streams and their keys.
#[derive(Debug, Clone)]
pub struct JoinBuilder {
    left: DataStream,
    right: DataStream,
    left_key: Vec<String>,
    right_key: Vec<String>,
}

impl JoinBuilder {
    /// The left stream's key fields.
    pub fn where_key(mut self, fields: &[&str]) -> Self {
        self.left_key = fields.iter().map(|f| (*f).to_owned()).collect();
        self
    }

    /// The right stream's key fields (as many as the left's, of the same types).
    pub fn equal_to(mut self, fields: &[&str]) -> Self {
        self.right_key = fields.iter().map(|f| (*f).to_owned()).collect();
        self
    }

    /// The windows to join in: event-time tumbling, sliding or session windows.
    pub fn window(self, assigner: WindowAssigner) -> WindowJoin {
        WindowJoin {
            join: self,
            assigner,
            late: LateCounter::new(),
        }
    }
}

/// A window join ready to be added with [`WindowJoin::apply`].
#[derive(Debug, Clone)]
pub struct WindowJoin {
    join: JoinBuilder,
    assigner: WindowAssigner,
    late: LateCounter,
}

impl WindowJoin {
    /// Counts the records dropped as late into `counter`.
    pub fn count_late(mut self, counter: &LateCounter) -> Self {
        self.late = counter.clone();
        self
    }

    fn spec(&self, name: &str) -> Result<WindowJoinSpec> {
        let (left, right) = (&self.join.left, &self.join.right);
        if !same_env(left, right) {
            return Err(Error::plan(
                name,
                "the joined streams belong to different environments",
            ));
        }
        self.assigner.validate(name)?;
        if self.assigner.domain() != Some(TimeDomain::EventTime) {
            return Err(Error::plan(
                name,
                "a window join needs event-time tumbling, sliding or session windows",
            ));
        }
        if self.join.left_key.is_empty() || self.join.right_key.is_empty() {
            return Err(Error::plan(
                name,
                "no join key: call where_key(..) and equal_to(..) before window(..)",
            ));
        }
        let left_key = resolve_key(name, "left", &left.schema, &self.join.left_key)?;
        let right_key = resolve_key(name, "right", &right.schema, &self.join.right_key)?;
        check_key_types(name, (&left.schema, &left_key), (&right.schema, &right_key))?;
        let left_time = event_time_of(name, "left", left)?;
        let right_time = event_time_of(name, "right", right)?;
        let output = join_schema(&left.schema, &right.schema);
        check_output_schema(name, &output)?;
        Ok(WindowJoinSpec {
            assigner: self.assigner.clone(),
            inputs: [
                JoinInput {
                    schema: left.schema.clone(),
                    key: left_key,
                    time: left_time,
                },
                JoinInput {
                    schema: right.schema.clone(),
                    key: right_key,
                    time: right_time,
                },
            ],
            output,
            late: self.late.clone(),
        })
    }

    /// Adds the join. Its output is [`join_schema`] of the two inputs, has no event time, and runs
    /// at the left stream's parallelism.
    pub fn apply(&self) -> DataStream {
        let left = &self.join.left;
        let name = format!("window_join({})", self.assigner.describe());
        let spec = match self.spec(&name) {
            Ok(spec) => spec,
            Err(e) => {
                left.env.error(e);
                return left.clone();
            }
        };
        let (left_key, right_key) = (spec.inputs[0].key.clone(), spec.inputs[1].key.clone());
        let schema = spec.output.clone();
        let factory: OperatorFactory = Arc::new(move |info| {
            Ok(Box::new(WindowJoinOperator::new(
                info.clone(),
                spec.clone(),
                crate::state::Backend::for_subtask(info)?,
            )?) as Box<dyn Operator>)
        });
        add_join(
            name,
            (left, &left_key),
            (&self.join.right, &right_key),
            schema,
            factory,
        )
    }
}

/// The bounds of an interval join, in milliseconds relative to the left record's time.
#[derive(Debug, Clone)]
pub struct IntervalJoin {
    lower: i64,
    upper: i64,
    lower_inclusive: bool,
    upper_inclusive: bool,
    late: LateCounter,
}

impl IntervalJoin {
    /// Right records at `t + lower ..= t + upper` join a left record at `t`; `lower` may be negative.
    pub fn between(lower_ms: i64, upper_ms: i64) -> Self {
        Self {
            lower: lower_ms,
            upper: upper_ms,
            lower_inclusive: true,
            upper_inclusive: true,
            late: LateCounter::new(),
        }
    }

    /// Excludes `t + lower` itself.
    pub fn lower_exclusive(mut self) -> Self {
        self.lower_inclusive = false;
        self
    }

    /// Excludes `t + upper` itself.
    pub fn upper_exclusive(mut self) -> Self {
        self.upper_inclusive = false;
        self
    }

    /// Counts the records dropped as late into `counter`.
    pub fn count_late(mut self, counter: &LateCounter) -> Self {
        self.late = counter.clone();
        self
    }

    /// The inclusive bounds.
    fn inclusive(&self) -> (i64, i64) {
        (
            if self.lower_inclusive {
                self.lower
            } else {
                self.lower.saturating_add(1)
            },
            if self.upper_inclusive {
                self.upper
            } else {
                self.upper.saturating_sub(1)
            },
        )
    }

    fn describe(&self) -> String {
        format!(
            "{}{}ms, {}ms{}",
            if self.lower_inclusive { '[' } else { '(' },
            self.lower,
            self.upper,
            if self.upper_inclusive { ']' } else { ')' }
        )
    }
}

impl KeyedStream {
    /// Joins every record of this stream (left) at `t` with the records of `other` (right) of the
    /// same key at `t + lower_ms ..= t + upper_ms` (Flink's `intervalJoin(..).between(..)`).
    pub fn interval_join(&self, other: &KeyedStream, lower_ms: i64, upper_ms: i64) -> DataStream {
        self.interval_join_with(other, IntervalJoin::between(lower_ms, upper_ms))
    }

    /// An interval join with exclusive bounds or a late-record counter, see [`IntervalJoin`]. The
    /// output is [`join_schema`] of the two inputs, keeps this (left) stream's event time (its
    /// watermark held back by the larger of `upper` and `-lower`), and runs at this stream's
    /// parallelism.
    pub fn interval_join_with(&self, other: &KeyedStream, join: IntervalJoin) -> DataStream {
        let (left, right) = (&self.stream, &other.stream);
        let name = format!("interval_join({})", join.describe());
        let spec = (|| -> Result<IntervalJoinSpec> {
            if !same_env(left, right) {
                return Err(Error::plan(
                    &name,
                    "the joined streams belong to different environments",
                ));
            }
            let (lower, upper) = join.inclusive();
            if lower > upper {
                return Err(Error::plan(
                    &name,
                    format!("the interval is empty: no time is in {}", join.describe()),
                ));
            }
            check_key_types(
                &name,
                (&left.schema, &self.key),
                (&right.schema, &other.key),
            )?;
            let left_time = event_time_of(&name, "left", left)?;
            let right_time = event_time_of(&name, "right", right)?;
            let output = join_schema(&left.schema, &right.schema);
            check_output_schema(&name, &output)?;
            Ok(IntervalJoinSpec {
                inputs: [
                    JoinInput {
                        schema: left.schema.clone(),
                        key: self.key.clone(),
                        time: left_time,
                    },
                    JoinInput {
                        schema: right.schema.clone(),
                        key: other.key.clone(),
                        time: right_time,
                    },
                ],
                lower,
                upper,
                output,
                late: join.late.clone(),
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
            Ok(Box::new(IntervalJoinOperator::new(
                info.clone(),
                spec.clone(),
                crate::state::Backend::for_subtask(info)?,
            )?) as Box<dyn Operator>)
        });
        let mut joined = add_join(
            name,
            (left, &self.key),
            (right, &other.key),
            schema.clone(),
            factory,
        );
        // The left record's time, which the output's watermark stays behind.
        joined.time = carried_time(left, &schema);
        joined
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use arrow::datatypes::DataType;

    use super::*;
    use crate::operator::Emitted;
    use crate::row::{Row, Value, batch_from_rows, rows_of};

    fn left_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("a", DataType::Utf8, false),
        ]))
    }

    fn right_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ts", DataType::Int64, false),
            Field::new("right_k", DataType::Int64, false),
        ]))
    }

    fn inputs() -> [JoinInput; 2] {
        let input = |schema: SchemaRef| JoinInput {
            key: KeySpec::resolve("t", &schema, &["k"]).unwrap(),
            schema,
            time: (1, 0),
        };
        [input(left_schema()), input(right_schema())]
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

    fn left(rows: &[(i64, i64, &str)]) -> RecordBatch {
        let rows: Vec<Row> = rows
            .iter()
            .map(|(k, ts, a)| vec![Value::Int(*k), Value::Int(*ts), Value::from(*a)])
            .collect();
        batch_from_rows(&left_schema(), &rows).unwrap()
    }

    fn right(rows: &[(i64, i64)]) -> RecordBatch {
        let rows: Vec<Row> = rows
            .iter()
            .map(|(k, ts)| vec![Value::Int(*k), Value::Int(*ts), Value::Int(-k)])
            .collect();
        batch_from_rows(&right_schema(), &rows).unwrap()
    }

    /// (left ts, left a, right ts) of the joined rows, sorted.
    fn pairs(out: &mut Output) -> Vec<(i64, String, i64)> {
        let mut pairs = Vec::new();
        for item in out.drain() {
            if let Emitted::Data(b) = item {
                for r in rows_of(&b).unwrap() {
                    assert_eq!(r[0], r[3], "joined on the key");
                    pairs.push((
                        r[1].as_i64().unwrap(),
                        r[2].as_str().unwrap().to_owned(),
                        r[4].as_i64().unwrap(),
                    ));
                }
            }
        }
        pairs.sort();
        pairs
    }

    #[test]
    fn right_fields_that_clash_are_renamed() {
        let schema = join_schema(&left_schema(), &right_schema());
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            ["k", "ts", "a", "right_k", "right_ts", "right_right_k"]
        );
    }

    #[test]
    fn tumbling_window_join_pairs_each_window_and_drops_late_records() {
        let spec = WindowJoinSpec {
            assigner: WindowAssigner::tumbling(Duration::from_millis(10)),
            inputs: inputs(),
            output: join_schema(&left_schema(), &right_schema()),
            late: LateCounter::new(),
        };
        let mut op = WindowJoinOperator::new(
            info(),
            spec.clone(),
            crate::state::MemoryStateBackend::default(),
        )
        .unwrap();
        let mut out = Output::default();
        op.process(0, left(&[(1, 3, "x"), (1, 12, "y"), (2, 4, "z")]), &mut out)
            .unwrap();
        op.process(1, right(&[(1, 9), (1, 0), (2, 10), (1, 15)]), &mut out)
            .unwrap();
        op.on_watermark(8, &mut out).unwrap();
        assert!(pairs(&mut out).is_empty());
        op.on_watermark(9, &mut out).unwrap();
        assert_eq!(
            pairs(&mut out),
            vec![(3, "x".into(), 0), (3, "x".into(), 9)]
        );
        // Window [0, 10) has fired: records for it are late; [10, 20) is still open.
        op.process(1, right(&[(1, 5), (1, 19)]), &mut out).unwrap();
        op.process(0, left(&[(2, 9, "w")]), &mut out).unwrap();
        assert_eq!(op.late_records(), 2);
        assert_eq!(spec.late.get(), 2);
        op.on_watermark(MAX_WATERMARK, &mut out).unwrap();
        assert_eq!(
            pairs(&mut out),
            vec![(12, "y".into(), 15), (12, "y".into(), 19)]
        );
        assert_eq!(op.state().entries(), 0);
    }

    #[test]
    fn session_window_join_merges_across_inputs() {
        let spec = WindowJoinSpec {
            assigner: WindowAssigner::session(Duration::from_millis(5)),
            inputs: inputs(),
            output: join_schema(&left_schema(), &right_schema()),
            late: LateCounter::new(),
        };
        let mut op =
            WindowJoinOperator::new(info(), spec, crate::state::MemoryStateBackend::default())
                .unwrap();
        let mut out = Output::default();
        // Left at 0 and 10 are separate sessions until the right record at 5 bridges them.
        op.process(
            0,
            left(&[(1, 0, "a"), (1, 10, "b"), (1, 30, "c")]),
            &mut out,
        )
        .unwrap();
        op.process(1, right(&[(1, 5)]), &mut out).unwrap();
        op.on_watermark(MAX_WATERMARK, &mut out).unwrap();
        assert_eq!(
            pairs(&mut out),
            vec![(0, "a".into(), 5), (10, "b".into(), 5)]
        );
        assert_eq!(op.state().entries(), 0);
    }

    /// An interval join of the test inputs between `lower` and `upper`, state in memory.
    fn interval_join(
        lower: i64,
        upper: i64,
    ) -> IntervalJoinOperator<crate::state::MemoryStateBackend> {
        let spec = IntervalJoinSpec {
            inputs: inputs(),
            lower,
            upper,
            output: join_schema(&left_schema(), &right_schema()),
            late: LateCounter::new(),
        };
        IntervalJoinOperator::new(info(), spec, crate::state::MemoryStateBackend::default())
            .unwrap()
    }

    #[test]
    fn interval_join_holds_its_watermark_back_by_the_reach_of_the_interval() {
        let watermarks = |op: &mut IntervalJoinOperator<_>, w: Timestamp| {
            let mut out = Output::default();
            op.on_watermark(w, &mut out).unwrap();
            assert!(!op.forwards_watermarks());
            out.drain()
                .filter_map(|e| match e {
                    crate::operator::Emitted::Watermark(w) => Some(w),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        // Right records up to 2 s after the left one, or 3 s before it.
        assert_eq!(watermarks(&mut interval_join(-1000, 2000), 10_000), [8_000]);
        assert_eq!(watermarks(&mut interval_join(-3000, 2000), 10_000), [7_000]);
        // Only later right records: the left time is never behind the input's watermark.
        assert_eq!(watermarks(&mut interval_join(500, 900), 10_000), [9_100]);
        assert_eq!(
            watermarks(&mut interval_join(-1000, 2000), MAX_WATERMARK),
            [MAX_WATERMARK]
        );
    }

    #[test]
    fn interval_join_pairs_within_bounds_and_cleans_up() {
        let mut op = interval_join(-2, 3);
        let mut out = Output::default();
        op.process(1, right(&[(1, 8), (1, 13), (2, 10)]), &mut out)
            .unwrap();
        op.process(0, left(&[(1, 10, "a")]), &mut out).unwrap();
        assert_eq!(
            pairs(&mut out),
            vec![(10, "a".into(), 8), (10, "a".into(), 13)]
        );
        // At watermark 11 the right record at 8 (usable until left time 10) is gone; so is a left
        // record at 10 once the watermark passes 13.
        op.on_watermark(11, &mut out).unwrap();
        op.process(0, left(&[(1, 11, "b"), (1, 10, "late")]), &mut out)
            .unwrap();
        assert_eq!(pairs(&mut out), vec![(11, "b".into(), 13)]);
        op.process(1, right(&[(1, 14), (1, 12)]), &mut out).unwrap();
        assert_eq!(
            pairs(&mut out),
            vec![
                (10, "a".into(), 12),
                (11, "b".into(), 12),
                (11, "b".into(), 14),
            ]
        );
        assert_eq!(op.late_records(), 1);
        op.on_watermark(MAX_WATERMARK, &mut out).unwrap();
        assert_eq!(op.state().entries(), 0);
    }

    #[test]
    fn interval_join_probes_each_record_of_a_run() {
        let mut op = interval_join(-2, 3);
        let mut out = Output::default();
        // Runs: key 1 at 10 and 20, key 2 at 15, key 1 at 12.
        op.process(
            0,
            left(&[(1, 10, "a"), (1, 20, "b"), (2, 15, "c"), (1, 12, "d")]),
            &mut out,
        )
        .unwrap();
        op.process(1, right(&[(1, 13)]), &mut out).unwrap();
        assert_eq!(
            pairs(&mut out),
            vec![(10, "a".into(), 13), (12, "d".into(), 13)]
        );
        // At 16 the run of "d" goes; the one of "a" stays for "b", and "a" no longer matches.
        op.on_watermark(16, &mut out).unwrap();
        op.process(1, right(&[(1, 17), (1, 18), (2, 16)]), &mut out)
            .unwrap();
        assert_eq!(
            pairs(&mut out),
            vec![(15, "c".into(), 16), (20, "b".into(), 18)]
        );
        op.on_watermark(MAX_WATERMARK, &mut out).unwrap();
        assert_eq!(op.state().entries(), 0);
    }

    #[test]
    fn interval_join_records_kept_past_their_time_find_no_partner() {
        let mut op = interval_join(-2, 3);
        let mut out = Output::default();
        // The key's clean-up timer is set by its first record (due at 24); the one at 5 could go
        // at 9 but stays in the key's list until then.
        op.process(0, left(&[(1, 20, "x"), (1, 5, "y")]), &mut out)
            .unwrap();
        op.on_watermark(10, &mut out).unwrap();
        op.process(1, right(&[(1, 10), (1, 21)]), &mut out).unwrap();
        assert_eq!(pairs(&mut out), vec![(20, "x".into(), 21)]);
        // By 24 every record so far has had its time; nothing is left once the input ends.
        op.on_watermark(24, &mut out).unwrap();
        op.process(0, left(&[(1, 24, "z")]), &mut out).unwrap();
        assert_eq!(pairs(&mut out), Vec::new());
        op.on_watermark(MAX_WATERMARK, &mut out).unwrap();
        assert_eq!(op.state().entries(), 0);
    }
}
