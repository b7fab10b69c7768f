//! Keyed windows: assigners (tumbling, sliding, session, global), triggers (event time, processing
//! time, count, purging, never), allowed lateness with a side output for late records, and the
//! window contents: incremental aggregates or all elements for a full-window function.
//!
//! The semantics are Flink's `WindowOperator`: a record is assigned to its windows; a window whose
//! cleanup time (`max_timestamp + allowed_lateness`, with `max_timestamp = end - 1`) is at or behind
//! the watermark is skipped; a record skipped by all its windows and itself late is sent to the late
//! side output. Triggers decide when a window fires; its state is dropped at the cleanup time. Session
//! windows merge when they touch, merging their contents. Keyed state and timers go through the state
//! API and the timer service, so every backend holds the same data.

use std::sync::Arc;

use hashbrown::HashMap;
use std::time::Duration;

use arrow::array::{ArrayRef, TimestampMillisecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::aggregate::{Accumulator, AggInput, BoundAgg};
use crate::checkpoint::state::{RestoredState, StateWriter, decode, encode};
use crate::error::{Error, Result};
use crate::keys::{KeyRows, KeySpec};
use crate::operator::{Operator, Output, SubtaskInfo};
use crate::row::{self, Row, RowDecoder};
use crate::state::{KeyedStateBackend, Namespace, ValueState};
use crate::time::{
    MAX_WATERMARK, MIN_WATERMARK, TimeDomain, Timestamp, event_time_values, millis, now_millis,
};
use crate::timers::TimerService;

/// A time window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeWindow {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl TimeWindow {
    /// The largest timestamp in the window; the global window's is `i64::MAX`.
    pub fn max_timestamp(&self) -> Timestamp {
        if self.end == MAX_WATERMARK {
            MAX_WATERMARK
        } else {
            self.end - 1
        }
    }

    fn namespace(&self) -> Namespace {
        Namespace::Window {
            start: self.start,
            end: self.end,
        }
    }

    fn from_namespace(ns: &Namespace) -> Self {
        match ns {
            Namespace::Window { start, end } => Self {
                start: *start,
                end: *end,
            },
            Namespace::Global => GLOBAL_WINDOW,
        }
    }

    /// Whether two windows overlap or touch (session windows merge then).
    fn touches(&self, other: &Self) -> bool {
        self.start <= other.end && self.end >= other.start
    }
}

const GLOBAL_WINDOW: TimeWindow = TimeWindow {
    start: MIN_WATERMARK,
    end: MAX_WATERMARK,
};

/// Which windows a record belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowAssigner {
    /// Fixed-size, non-overlapping windows aligned to the epoch plus `offset`.
    Tumbling {
        size: i64,
        offset: i64,
        domain: TimeDomain,
    },
    /// Fixed-size windows every `slide`.
    Sliding {
        size: i64,
        slide: i64,
        offset: i64,
        domain: TimeDomain,
    },
    /// Windows of activity separated by at least `gap`; merged as records arrive.
    Session { gap: i64, domain: TimeDomain },
    /// Flink SQL's cumulating windows: every `size` (aligned to the epoch plus `offset`) starts a
    /// window that grows by `step` (a divisor of `size`): `[s, s + step)`, `[s, s + 2 step)`, ...
    /// `[s, s + size)`, each firing at its end.
    Cumulative {
        size: i64,
        step: i64,
        offset: i64,
        domain: TimeDomain,
    },
    /// One window for all time; needs a trigger (e.g. count) to fire.
    Global,
}

impl WindowAssigner {
    /// Tumbling event-time windows.
    pub fn tumbling(size: Duration) -> Self {
        Self::Tumbling {
            size: millis(size),
            offset: 0,
            domain: TimeDomain::EventTime,
        }
    }
    /// Sliding event-time windows.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        Self::Sliding {
            size: millis(size),
            slide: millis(slide),
            offset: 0,
            domain: TimeDomain::EventTime,
        }
    }
    /// Event-time session windows.
    pub fn session(gap: Duration) -> Self {
        Self::Session {
            gap: millis(gap),
            domain: TimeDomain::EventTime,
        }
    }
    /// Tumbling processing-time windows.
    pub fn tumbling_processing_time(size: Duration) -> Self {
        Self::Tumbling {
            size: millis(size),
            offset: 0,
            domain: TimeDomain::ProcessingTime,
        }
    }
    /// Sliding processing-time windows.
    pub fn sliding_processing_time(size: Duration, slide: Duration) -> Self {
        Self::Sliding {
            size: millis(size),
            slide: millis(slide),
            offset: 0,
            domain: TimeDomain::ProcessingTime,
        }
    }
    /// Processing-time session windows.
    pub fn session_processing_time(gap: Duration) -> Self {
        Self::Session {
            gap: millis(gap),
            domain: TimeDomain::ProcessingTime,
        }
    }
    /// Cumulating event-time windows of at most `size`, growing by `step`.
    pub fn cumulative(size: Duration, step: Duration) -> Self {
        Self::Cumulative {
            size: millis(size),
            step: millis(step),
            offset: 0,
            domain: TimeDomain::EventTime,
        }
    }

    /// The global window.
    pub fn global() -> Self {
        Self::Global
    }

    /// The clock windows follow; the global window has none.
    pub fn domain(&self) -> Option<TimeDomain> {
        match self {
            Self::Tumbling { domain, .. }
            | Self::Sliding { domain, .. }
            | Self::Session { domain, .. }
            | Self::Cumulative { domain, .. } => Some(*domain),
            Self::Global => None,
        }
    }

    fn is_merging(&self) -> bool {
        matches!(self, Self::Session { .. })
    }

    /// E.g. `tumbling 1000ms`.
    pub fn describe(&self) -> String {
        let clock = |d: &TimeDomain| {
            if *d == TimeDomain::ProcessingTime {
                " processing-time"
            } else {
                ""
            }
        };
        match self {
            Self::Tumbling { size, domain, .. } => format!("tumbling {size}ms{}", clock(domain)),
            Self::Sliding {
                size,
                slide,
                domain,
                ..
            } => format!("sliding {size}ms/{slide}ms{}", clock(domain)),
            Self::Session { gap, domain } => format!("session gap {gap}ms{}", clock(domain)),
            Self::Cumulative {
                size, step, domain, ..
            } => format!("cumulative {size}ms by {step}ms{}", clock(domain)),
            Self::Global => "global".into(),
        }
    }

    pub(crate) fn validate(&self, operator: &str) -> Result<()> {
        let bad = |m: &str| Err(Error::plan(operator, m));
        match self {
            Self::Tumbling { size, offset, .. } if *size <= 0 || offset.abs() >= *size => {
                bad("a tumbling window needs a positive size and |offset| < size")
            }
            Self::Sliding {
                size,
                slide,
                offset,
                ..
            } if *size <= 0 || *slide <= 0 || offset.abs() >= *slide => {
                bad("a sliding window needs a positive size and slide and |offset| < slide")
            }
            Self::Session { gap, .. } if *gap <= 0 => bad("a session window needs a positive gap"),
            Self::Cumulative {
                size, step, offset, ..
            } if *step <= 0 || *size <= 0 || size % step != 0 || offset.abs() >= *size => bad(
                "a cumulative window needs a positive step that divides its size and |offset| < size",
            ),
            _ => Ok(()),
        }
    }

    /// The windows that contain `ts` (a session's first window for a merging assigner).
    #[inline]
    pub(crate) fn assign(&self, ts: Timestamp, out: &mut Vec<TimeWindow>) {
        out.clear();
        match *self {
            Self::Tumbling { size, offset, .. } => {
                let start = ts - (ts - offset).rem_euclid(size);
                out.push(TimeWindow {
                    start,
                    end: start + size,
                });
            }
            Self::Sliding {
                size,
                slide,
                offset,
                ..
            } => {
                let last = ts - (ts - offset).rem_euclid(slide);
                let mut start = last;
                while start > ts - size {
                    out.push(TimeWindow {
                        start,
                        end: start + size,
                    });
                    start -= slide;
                }
            }
            Self::Session { gap, .. } => out.push(TimeWindow {
                start: ts,
                end: ts.saturating_add(gap),
            }),
            Self::Cumulative {
                size, step, offset, ..
            } => {
                // Every window of the record's cycle that ends after it.
                let start = ts - (ts - offset).rem_euclid(size);
                let mut end = start + size;
                while end > ts {
                    out.push(TimeWindow { start, end });
                    end -= step;
                }
            }
            Self::Global => out.push(GLOBAL_WINDOW),
        }
    }
}

/// When a window emits its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The assigner's own: event time for event-time windows, processing time for processing-time
    /// windows, never for the global window.
    Default,
    /// When the watermark passes the window's end (and again for each allowed late record).
    EventTime,
    /// When the wall clock passes the window's end.
    ProcessingTime,
    /// Every `n` records of the key in the window.
    Count(u64),
    /// Never (the window's state is only dropped at cleanup).
    Never,
    /// The inner trigger, dropping the window's contents whenever it fires.
    Purging(Box<Trigger>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Firing {
    Continue,
    Fire,
    FireAndPurge,
}

impl Trigger {
    fn resolve(self, assigner: &WindowAssigner) -> Trigger {
        match self {
            Trigger::Default => match assigner.domain() {
                Some(TimeDomain::EventTime) => Trigger::EventTime,
                Some(TimeDomain::ProcessingTime) => Trigger::ProcessingTime,
                None => Trigger::Never,
            },
            Trigger::Purging(inner) => Trigger::Purging(Box::new(inner.resolve(assigner))),
            other => other,
        }
    }

    fn purges(f: Firing, purging: bool) -> Firing {
        if purging && f == Firing::Fire {
            Firing::FireAndPurge
        } else {
            f
        }
    }
}

/// A full-window function: sees all records of a key's window at once.
pub trait WindowFunction: Send + Sync {
    /// Called when the window fires; `key` holds the key fields, `elements` the window's records.
    fn apply(
        &self,
        key: &Row,
        window: TimeWindow,
        elements: &RecordBatch,
        out: &mut Vec<Row>,
    ) -> Result<()>;
}

/// What a window keeps for each key.
#[derive(Clone)]
pub enum WindowContents {
    /// Accumulators of these aggregates; the output is key, `window_start`, `window_end`, results.
    Aggregate(Vec<BoundAgg>),
    /// All records; the function's rows are the output, with this schema.
    Process(Arc<dyn WindowFunction>, SchemaRef),
}

/// The complete description of one window operator.
#[derive(Clone)]
pub struct WindowSpec {
    pub assigner: WindowAssigner,
    pub trigger: Trigger,
    pub allowed_lateness: i64,
    pub contents: WindowContents,
    /// Event-time column index and offset (for event-time assigners).
    pub time: Option<(usize, i64)>,
    pub key: KeySpec,
    pub input_schema: SchemaRef,
    /// Whether late records go to side output 1.
    pub late_side_output: bool,
}

impl WindowSpec {
    /// The output schema.
    pub fn output_schema(&self, operator: &str) -> Result<SchemaRef> {
        match &self.contents {
            WindowContents::Process(_, schema) => Ok(schema.clone()),
            WindowContents::Aggregate(aggs) => {
                let mut fields: Vec<Field> = self
                    .key
                    .indices
                    .iter()
                    .map(|&i| self.input_schema.field(i).as_ref().clone())
                    .collect();
                let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
                fields.push(Field::new("window_start", ts.clone(), false));
                fields.push(Field::new("window_end", ts, false));
                fields.extend(aggs.iter().map(|a| a.field().clone()));
                for (i, f) in fields.iter().enumerate() {
                    if fields[..i].iter().any(|g| g.name() == f.name()) {
                        return Err(Error::plan(
                            operator,
                            format!("output field '{}' appears twice", f.name()),
                        ));
                    }
                }
                Ok(Arc::new(Schema::new(fields)))
            }
        }
    }
}

/// The snapshot section of the pane bookkeeping (see [`WindowOperator::snapshot`]).
const PANES_SECTION: &str = "window-panes";

/// One subtask of a window operator.
pub struct WindowOperator<S: KeyedStateBackend> {
    info: SubtaskInfo,
    spec: WindowSpec,
    trigger: Trigger,
    purging: bool,
    domain: TimeDomain,
    output_schema: SchemaRef,
    state: S,
    accs: ValueState<Accumulator>,
    /// Full-window contents: the records in the row format, back to back.
    elements: ValueState<Vec<u8>>,
    counts: ValueState<u64>,
    sessions: ValueState<Vec<(Timestamp, Timestamp)>>,
    timers: TimerService,
    /// Sliding windows kept as panes of one slide each (see [`WindowOperator::panes`]).
    panes: Option<Panes>,
    /// In pane mode: the starts of the panes that hold state.
    pane_starts: std::collections::BTreeSet<Timestamp>,
    /// In pane mode: the end of the next window to fire.
    next_pane_end: Timestamp,
    /// Event-time session windows of aggregates without allowed lateness (Flink SQL's `SESSION`):
    /// a batch is merged into sessions per key before it meets the state (see
    /// [`WindowOperator::add_batch_to_sessions`]).
    batched_sessions: bool,
    watermark: Timestamp,
    keys: KeyRows,
    windows: Vec<TimeWindow>,
    fired: Vec<(Box<[u8]>, TimeWindow, Fired)>,
    /// Pane mode: the firing window's accumulators merged from its panes (kept for its capacity:
    /// a window can hold hundreds of thousands of keys).
    merged: HashMap<Vec<u8>, Accumulator>,
    row_buf: Vec<u8>,
}

/// Aggregated results of fired windows go out in batches of at most this many rows (the engine's
/// default batch size): one watermark can fire a window for each of hundreds of thousands of keys,
/// and a single batch of them all would be memory fresh from the OS, and one indivisible piece of
/// work downstream.
const FIRED_BATCH_ROWS: usize = 4096;

/// Sliding event-time windows whose size is a multiple of the slide, without allowed lateness and
/// with the default trigger, keep one accumulator per key and *pane* (a slide-long slice) instead of
/// one per window: a record updates one pane instead of `size / slide` windows, and a window's result
/// is the merge of its panes when it fires. The output is the same.
#[derive(Debug, Clone, Copy)]
struct Panes {
    size: i64,
    slide: i64,
    offset: i64,
}

enum Fired {
    Acc(Accumulator),
    Rows(Vec<u8>),
}

impl<S: KeyedStateBackend> WindowOperator<S> {
    /// A window operator subtask keeping its state in `state`.
    pub fn new(info: SubtaskInfo, spec: WindowSpec, mut state: S) -> Result<Self> {
        let trigger = spec.trigger.clone().resolve(&spec.assigner);
        let (trigger, purging) = match trigger {
            Trigger::Purging(inner) => (*inner, true),
            t => (t, false),
        };
        let output_schema = spec.output_schema(&info.name)?;
        let panes = match (&spec.assigner, &trigger, &spec.contents) {
            // A tumbling window is its own single pane.
            (
                WindowAssigner::Tumbling {
                    size,
                    offset,
                    domain: TimeDomain::EventTime,
                },
                Trigger::EventTime,
                WindowContents::Aggregate(_),
            ) if !purging && spec.allowed_lateness == 0 => Some(Panes {
                size: *size,
                slide: *size,
                offset: *offset,
            }),
            (
                WindowAssigner::Sliding {
                    size,
                    slide,
                    offset,
                    domain: TimeDomain::EventTime,
                },
                Trigger::EventTime,
                WindowContents::Aggregate(_),
            ) if !purging && spec.allowed_lateness == 0 && size % slide == 0 => Some(Panes {
                size: *size,
                slide: *slide,
                offset: *offset,
            }),
            _ => None,
        };
        let batched_sessions = matches!(
            (&spec.assigner, &trigger, &spec.contents),
            (
                WindowAssigner::Session {
                    domain: TimeDomain::EventTime,
                    ..
                },
                Trigger::EventTime,
                WindowContents::Aggregate(_),
            )
        ) && spec.allowed_lateness == 0;
        Ok(Self {
            panes,
            batched_sessions,
            pane_starts: std::collections::BTreeSet::new(),
            next_pane_end: MIN_WATERMARK,
            domain: spec.assigner.domain().unwrap_or(TimeDomain::EventTime),
            accs: state.value_state("window-accumulators"),
            elements: state.value_state("window-elements"),
            counts: state.value_state("trigger-count"),
            sessions: state.value_state("session-windows"),
            info,
            spec,
            trigger,
            purging,
            output_schema,
            state,
            timers: TimerService::default(),
            watermark: MIN_WATERMARK,
            keys: KeyRows::default(),
            windows: Vec::new(),
            fired: Vec::new(),
            merged: HashMap::new(),
            row_buf: Vec::new(),
        })
    }

    fn cleanup_time(&self, w: &TimeWindow) -> Timestamp {
        let max = w.max_timestamp();
        if self.domain == TimeDomain::EventTime {
            max.saturating_add(self.spec.allowed_lateness)
        } else {
            max
        }
    }

    fn is_window_late(&self, w: &TimeWindow) -> bool {
        self.domain == TimeDomain::EventTime
            && self.spec.assigner.domain().is_some()
            && self.cleanup_time(w) <= self.watermark
    }

    /// Registers the trigger's and the cleanup timer of a window that just got state.
    fn register_timers(&mut self, key: &[u8], w: &TimeWindow) {
        let ns = w.namespace();
        match self.trigger {
            Trigger::EventTime if w.max_timestamp() > self.watermark => {
                self.timers
                    .register(TimeDomain::EventTime, w.max_timestamp(), key, ns)
            }
            Trigger::ProcessingTime => {
                self.timers
                    .register(TimeDomain::ProcessingTime, w.max_timestamp(), key, ns)
            }
            _ => {}
        }
        if self.spec.assigner.domain().is_some() && w.end != MAX_WATERMARK {
            self.timers
                .register(self.domain, self.cleanup_time(w), key, ns);
        }
    }

    /// Adds row `row` to the contents of `key`'s window `w`; returns whether the state is new.
    fn add_to_contents(
        &mut self,
        key: &[u8],
        w: &TimeWindow,
        inputs: &[AggInput],
        batch: &RecordBatch,
        row: usize,
    ) -> Result<bool> {
        let ns = w.namespace();
        match &self.spec.contents {
            WindowContents::Aggregate(aggs) => {
                let mut created = false;
                self.state.upsert(
                    &self.accs,
                    key,
                    &ns,
                    || {
                        created = true;
                        aggs.iter().map(BoundAgg::create).collect()
                    },
                    |acc| -> Result<()> {
                        for ((agg, slot), input) in aggs.iter().zip(acc.iter_mut()).zip(inputs) {
                            agg.add(slot, input, row)?;
                        }
                        Ok(())
                    },
                )??;
                Ok(created)
            }
            WindowContents::Process(..) => {
                self.row_buf.clear();
                row::encode_row(batch.columns(), row, &mut self.row_buf)?;
                let mut created = false;
                let bytes = &self.row_buf;
                self.state.upsert(
                    &self.elements,
                    key,
                    &ns,
                    || {
                        created = true;
                        Vec::new()
                    },
                    |buffer| buffer.extend_from_slice(bytes),
                )?;
                Ok(created)
            }
        }
    }

    fn on_element_trigger(&mut self, key: &[u8], w: &TimeWindow) -> Result<Firing> {
        let f = match &self.trigger {
            Trigger::EventTime if w.max_timestamp() <= self.watermark => Firing::Fire,
            Trigger::Count(n) => {
                let n = *n;
                let fire = self.state.upsert(
                    &self.counts,
                    key,
                    &w.namespace(),
                    || 0,
                    |c| {
                        *c += 1;
                        if *c >= n {
                            *c = 0;
                            true
                        } else {
                            false
                        }
                    },
                )?;
                if fire { Firing::Fire } else { Firing::Continue }
            }
            _ => Firing::Continue,
        };
        Ok(Trigger::purges(f, self.purging))
    }

    fn clear_window(&mut self, key: &[u8], w: &TimeWindow) -> Result<Option<Fired>> {
        let ns = w.namespace();
        if matches!(self.trigger, Trigger::Count(_)) {
            self.state.take(&self.counts, key, &ns)?;
        }
        Ok(match self.spec.contents {
            WindowContents::Aggregate(_) => self.state.take(&self.accs, key, &ns)?.map(Fired::Acc),
            WindowContents::Process(..) => {
                self.state.take(&self.elements, key, &ns)?.map(Fired::Rows)
            }
        })
    }

    fn read_window(&self, key: &[u8], w: &TimeWindow) -> Result<Option<Fired>> {
        let ns = w.namespace();
        Ok(match self.spec.contents {
            WindowContents::Aggregate(_) => self.state.get(&self.accs, key, &ns)?.map(Fired::Acc),
            WindowContents::Process(..) => {
                self.state.get(&self.elements, key, &ns)?.map(Fired::Rows)
            }
        })
    }

    fn act(&mut self, key: &[u8], w: &TimeWindow, firing: Firing) -> Result<()> {
        match firing {
            Firing::Continue => {}
            Firing::Fire => {
                if let Some(f) = self.read_window(key, w)? {
                    self.fired.push((key.into(), *w, f));
                }
            }
            Firing::FireAndPurge => {
                if let Some(f) = self.clear_window(key, w)? {
                    self.fired.push((key.into(), *w, f));
                }
            }
        }
        Ok(())
    }

    /// Merges `key`'s sessions with the new window `w`; returns the window to add the record to.
    fn merge_sessions(&mut self, key: &[u8], w: TimeWindow) -> Result<TimeWindow> {
        let mut sessions = self
            .state
            .get(&self.sessions, key, &Namespace::Global)?
            .unwrap_or_default();
        let mut merged = w;
        let mut absorbed = Vec::new();
        sessions.retain(|&(start, end)| {
            let s = TimeWindow { start, end };
            if s.touches(&w) {
                absorbed.push(s);
                false
            } else {
                true
            }
        });
        for s in &absorbed {
            merged.start = merged.start.min(s.start);
            merged.end = merged.end.max(s.end);
        }
        // A merge can chain: the cover may now touch windows that `w` alone did not.
        loop {
            let before = absorbed.len();
            sessions.retain(|&(start, end)| {
                let s = TimeWindow { start, end };
                if s.touches(&merged) {
                    absorbed.push(s);
                    false
                } else {
                    true
                }
            });
            if absorbed.len() == before {
                break;
            }
            for s in &absorbed[before..] {
                merged.start = merged.start.min(s.start);
                merged.end = merged.end.max(s.end);
            }
        }
        for s in absorbed.iter().filter(|s| **s != merged) {
            let ns = s.namespace();
            self.timers
                .delete(TimeDomain::EventTime, s.max_timestamp(), key, ns);
            self.timers
                .delete(TimeDomain::ProcessingTime, s.max_timestamp(), key, ns);
            self.timers
                .delete(self.domain, self.cleanup_time(s), key, ns);
            let count = self.state.take(&self.counts, key, &ns)?.unwrap_or(0);
            if count > 0 {
                self.state.upsert(
                    &self.counts,
                    key,
                    &merged.namespace(),
                    || 0,
                    |c| *c += count,
                )?;
            }
            match &self.spec.contents {
                WindowContents::Aggregate(aggs) => {
                    if let Some(acc) = self.state.take(&self.accs, key, &ns)? {
                        let aggs = aggs.clone();
                        let mut result = Ok(());
                        self.state.upsert(
                            &self.accs,
                            key,
                            &merged.namespace(),
                            || aggs.iter().map(BoundAgg::create).collect(),
                            |target| {
                                for ((agg, t), a) in aggs.iter().zip(target.iter_mut()).zip(acc) {
                                    if let Err(e) = agg.merge(t, a) {
                                        result = Err(e);
                                    }
                                }
                            },
                        )?;
                        result?;
                    }
                }
                WindowContents::Process(..) => {
                    if let Some(rows) = self.state.take(&self.elements, key, &ns)? {
                        self.state.upsert(
                            &self.elements,
                            key,
                            &merged.namespace(),
                            Vec::new,
                            |buffer| buffer.extend_from_slice(&rows),
                        )?;
                    }
                }
            }
        }
        sessions.push((merged.start, merged.end));
        sessions.sort_unstable();
        self.state
            .put(&self.sessions, key, &Namespace::Global, sessions)?;
        Ok(merged)
    }

    fn forget_session(&mut self, key: &[u8], w: &TimeWindow) -> Result<()> {
        if self.spec.assigner.is_merging() {
            self.state
                .update(&self.sessions, key, &Namespace::Global, |s| {
                    if let Some(list) = s {
                        list.retain(|&(start, end)| !(start == w.start && end == w.end));
                        if list.is_empty() {
                            *s = None;
                        }
                    }
                })?;
        }
        Ok(())
    }

    /// Adds a batch to session windows: its records are first merged into sessions per key within
    /// the batch, each with its accumulator, so that the keyed state and the timers are touched
    /// once per key and local session rather than once per record (Nexmark's hot bidders place
    /// most bids of a batch). The result is the same as record by record: sessions are the union
    /// of touching windows in any order, and without allowed lateness no record makes a window
    /// fire on arrival.
    fn add_batch_to_sessions(
        &mut self,
        keys: &KeyRows,
        timestamps: &[i64],
        offset: i64,
        inputs: &[AggInput],
        late_rows: &mut Vec<u32>,
    ) -> Result<()> {
        let WindowContents::Aggregate(aggs) = &self.spec.contents else {
            return Ok(());
        };
        let mut local: HashMap<&[u8], Vec<(TimeWindow, Accumulator)>> = HashMap::new();
        let mut windows = Vec::new();
        for (row, &ts) in timestamps.iter().enumerate() {
            let ts = ts + offset;
            self.spec.assigner.assign(ts, &mut windows);
            let Some(&w) = windows.first() else {
                continue;
            };
            if self.is_window_late(&w) {
                if ts <= self.watermark {
                    late_rows.push(row as u32);
                }
                continue;
            }
            let sessions = local.entry(keys.get(row)).or_default();
            let mut merged = w;
            let mut acc: Option<Accumulator> = None;
            // Absorb every local session the cover touches, until none does (merges chain).
            let mut i = 0;
            while i < sessions.len() {
                if sessions[i].0.touches(&merged) {
                    let (s, other) = sessions.swap_remove(i);
                    merged.start = merged.start.min(s.start);
                    merged.end = merged.end.max(s.end);
                    match &mut acc {
                        None => acc = Some(other),
                        Some(acc) => {
                            for ((agg, slot), o) in aggs.iter().zip(acc.iter_mut()).zip(other) {
                                agg.merge(slot, o)?;
                            }
                        }
                    }
                    i = 0;
                } else {
                    i += 1;
                }
            }
            let mut acc = acc.unwrap_or_else(|| aggs.iter().map(BoundAgg::create).collect());
            for ((agg, slot), input) in aggs.iter().zip(acc.iter_mut()).zip(inputs) {
                agg.add(slot, input, row)?;
            }
            sessions.push((merged, acc));
        }
        let aggs = aggs.clone();
        for (key, sessions) in local {
            for (w, acc) in sessions {
                let merged = self.merge_sessions(key, w)?;
                self.state
                    .update(&self.accs, key, &merged.namespace(), |slot| match slot {
                        None => {
                            *slot = Some(acc);
                            Ok(())
                        }
                        Some(target) => aggs
                            .iter()
                            .zip(target.iter_mut())
                            .zip(acc)
                            .try_for_each(|((agg, t), a)| agg.merge(t, a)),
                    })??;
                self.register_timers(key, &merged);
            }
        }
        Ok(())
    }

    /// Adds a batch to its panes: first aggregated per (key, pane) within the batch, so that the
    /// state is touched once per distinct key and pane rather than once per record. Records whose
    /// every window has already fired are returned as late.
    fn add_batch_to_panes(
        &mut self,
        panes: Panes,
        keys: &KeyRows,
        timestamps: &[i64],
        offset: i64,
        inputs: &[AggInput],
        late_rows: &mut Vec<u32>,
    ) -> Result<()> {
        let WindowContents::Aggregate(aggs) = &self.spec.contents else {
            return Ok(());
        };
        let mut local: HashMap<(&[u8], Timestamp), Accumulator> = HashMap::new();
        for (row, &ts) in timestamps.iter().enumerate() {
            let ts = ts + offset;
            let start = ts - (ts - panes.offset).rem_euclid(panes.slide);
            // The last window holding the record starts with its pane.
            if start + panes.size - 1 <= self.watermark {
                late_rows.push(row as u32);
                continue;
            }
            let acc = local
                .entry((keys.get(row), start))
                .or_insert_with(|| aggs.iter().map(BoundAgg::create).collect());
            for ((agg, slot), input) in aggs.iter().zip(acc.iter_mut()).zip(inputs) {
                agg.add(slot, input, row)?;
            }
        }
        for ((key, start), acc) in local {
            let ns = Namespace::Window {
                start,
                end: start + panes.slide,
            };
            let pending = std::cell::RefCell::new(Some(acc));
            let mut created = false;
            self.state.upsert(
                &self.accs,
                key,
                &ns,
                || {
                    created = true;
                    pending.borrow_mut().take().unwrap_or_default()
                },
                |target| -> Result<()> {
                    if let Some(acc) = pending.borrow_mut().take() {
                        for ((agg, slot), other) in aggs.iter().zip(target.iter_mut()).zip(acc) {
                            agg.merge(slot, other)?;
                        }
                    }
                    Ok(())
                },
            )??;
            if created {
                self.pane_starts.insert(start);
            }
        }
        Ok(())
    }

    /// Fires, in order, every pane-mode window that ends at or before the watermark: each window's
    /// result per key is the merge of the key's accumulators in the window's panes, and the oldest
    /// pane, which no later window holds, is dropped.
    fn fire_pane_windows(&mut self, panes: Panes, watermark: Timestamp) -> Result<()> {
        let WindowContents::Aggregate(aggs) = &self.spec.contents else {
            return Ok(());
        };
        while let Some(&first) = self.pane_starts.first() {
            // No window ending before `first + slide` holds a pane.
            let end = self.next_pane_end.max(first + panes.slide);
            if end - 1 > watermark {
                break;
            }
            let start = end - panes.size;
            let window = TimeWindow { start, end };
            let oldest = Namespace::Window {
                start,
                end: start + panes.slide,
            };
            let drained = self.state.drain_namespace(&self.accs, &oldest)?;
            if panes.size == panes.slide {
                self.fired.extend(
                    drained
                        .into_iter()
                        .map(|(key, acc)| (key.into_boxed_slice(), window, Fired::Acc(acc))),
                );
            } else {
                let mut merged = std::mem::take(&mut self.merged);
                merged.extend(drained);
                let later: Vec<Timestamp> = self
                    .pane_starts
                    .range(start + panes.slide..end)
                    .copied()
                    .collect();
                for pane in later {
                    let ns = Namespace::Window {
                        start: pane,
                        end: pane + panes.slide,
                    };
                    self.state
                        .for_each_in_namespace(&self.accs, &ns, |key, acc| {
                            match merged.entry_ref(key) {
                                hashbrown::hash_map::EntryRef::Vacant(v) => {
                                    v.insert(acc.clone());
                                }
                                hashbrown::hash_map::EntryRef::Occupied(mut o) => {
                                    for ((agg, slot), other) in
                                        aggs.iter().zip(o.get_mut().iter_mut()).zip(acc)
                                    {
                                        agg.merge_ref(slot, other)?;
                                    }
                                }
                            }
                            Ok(())
                        })?;
                }
                self.fired.extend(
                    merged
                        .drain()
                        .map(|(key, acc)| (key.into_boxed_slice(), window, Fired::Acc(acc))),
                );
                self.merged = merged;
            }
            self.pane_starts.remove(&start);
            self.next_pane_end = end + panes.slide;
        }
        // Windows ending at or before the watermark are done, with or without state: a pane created
        // later must not fire them.
        if watermark < MAX_WATERMARK - 2 * panes.slide {
            let x = watermark + 2;
            let first_open =
                x + (panes.slide - (x - panes.offset).rem_euclid(panes.slide)) % panes.slide;
            self.next_pane_end = self.next_pane_end.max(first_open);
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        key: &[u8],
        w: TimeWindow,
    ) -> Result<()> {
        let fires = match (&self.trigger, domain) {
            (Trigger::EventTime, TimeDomain::EventTime)
            | (Trigger::ProcessingTime, TimeDomain::ProcessingTime) => time == w.max_timestamp(),
            _ => false,
        };
        let cleanup = domain == self.domain && time == self.cleanup_time(&w);
        if cleanup {
            let contents = self.clear_window(key, &w)?;
            self.forget_session(key, &w)?;
            if fires && let Some(c) = contents {
                self.fired.push((key.into(), w, c));
            }
        } else if fires {
            self.act(key, &w, Trigger::purges(Firing::Fire, self.purging))?;
        }
        Ok(())
    }

    fn fire_due(&mut self, domain: TimeDomain, time: Timestamp) -> Result<()> {
        while let Some(timer) = self.timers.pop_due(domain, time) {
            let w = TimeWindow::from_namespace(&timer.namespace);
            self.on_timer(domain, timer.time, &timer.key, w)?;
        }
        Ok(())
    }

    fn emit_fired(&mut self, out: &mut Output) -> Result<()> {
        if self.fired.is_empty() {
            return Ok(());
        }
        let mut fired = std::mem::take(&mut self.fired);
        let key_types = self.spec.key.types(&self.spec.input_schema);
        match &self.spec.contents {
            WindowContents::Aggregate(aggs) => {
                for fired in fired.chunks(FIRED_BATCH_ROWS) {
                    let mut keys = RowDecoder::new(key_types.iter().copied())?;
                    for (key, _, _) in fired {
                        keys.append(key)?;
                    }
                    let mut columns: Vec<ArrayRef> = keys.finish();
                    columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(
                        fired.iter().map(|(_, w, _)| w.start),
                    )));
                    columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(
                        fired.iter().map(|(_, w, _)| w.end),
                    )));
                    for (i, agg) in aggs.iter().enumerate() {
                        columns.push(agg.finish(fired.iter().filter_map(|(_, _, f)| match f {
                            Fired::Acc(acc) => acc.get(i),
                            Fired::Rows(_) => None,
                        }))?);
                    }
                    out.emit(RecordBatch::try_new(self.output_schema.clone(), columns)?);
                }
            }
            WindowContents::Process(function, schema) => {
                let mut rows = Vec::new();
                for (key, w, f) in &fired {
                    let Fired::Rows(elements) = f else { continue };
                    let key_row =
                        row::rows_of(&row::decode_batch(&key_schema(&self.spec), [&key[..]])?)?
                            .pop()
                            .unwrap_or_default();
                    let batch = row::decode_concatenated(&self.spec.input_schema, elements)?;
                    function
                        .apply(&key_row, *w, &batch, &mut rows)
                        .map_err(|e| self.info.fail(e))?;
                }
                out.emit(row::batch_from_rows(schema, &rows).map_err(|e| self.info.fail(e))?);
            }
        }
        // Kept for its capacity.
        fired.clear();
        self.fired = fired;
        Ok(())
    }

    fn timestamps<'a>(&self, batch: &'a RecordBatch) -> Result<Option<(&'a [i64], i64)>> {
        let Some((column, offset)) = self.spec.time else {
            return Ok(None);
        };
        Ok(Some((
            event_time_values(batch.column(column).as_ref())?,
            offset,
        )))
    }
}

fn key_schema(spec: &WindowSpec) -> SchemaRef {
    Arc::new(Schema::new(
        spec.key
            .indices
            .iter()
            .map(|&i| spec.input_schema.field(i).as_ref().clone())
            .collect::<Vec<_>>(),
    ))
}

impl<S: KeyedStateBackend> Operator for WindowOperator<S> {
    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        self.state.snapshot(checkpoint_id, out)?;
        self.timers.snapshot(self.info.max_parallelism, out)?;
        if self.panes.is_some() {
            // Which panes hold state, and the next window to fire, belong to the subtask rather than
            // a key: every key group carries them, and a restore takes their union.
            let starts: Vec<Timestamp> = self.pane_starts.iter().copied().collect();
            let bytes = encode(&(self.next_pane_end, starts))?;
            for kg in self.info.key_groups() {
                out.keyed(kg, PANES_SECTION, &bytes);
            }
        }
        Ok(())
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        self.state.restore(state)?;
        self.timers.restore(state)?;
        for (_, bytes) in state.sections(PANES_SECTION) {
            let (next_end, starts): (Timestamp, Vec<Timestamp>) = decode(bytes)?;
            self.next_pane_end = self.next_pane_end.max(next_end);
            self.pane_starts.extend(starts);
        }
        Ok(())
    }
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let mut keys = std::mem::take(&mut self.keys);
        keys.encode(&self.spec.key, &batch)?;
        let batch = Arc::new(batch);
        let inputs: Vec<AggInput> = match &self.spec.contents {
            WindowContents::Aggregate(aggs) => aggs
                .iter()
                .map(|a| a.input(&batch))
                .collect::<Result<_>>()?,
            WindowContents::Process(..) => Vec::new(),
        };
        let event_time = self.spec.assigner.domain() == Some(TimeDomain::EventTime);
        let timestamps = if event_time {
            self.timestamps(&batch)?
        } else {
            None
        };
        let now = now_millis();
        let mut late_rows: Vec<u32> = Vec::new();
        let mut windows = std::mem::take(&mut self.windows);
        if let (Some(panes), Some((values, offset))) = (self.panes, timestamps) {
            self.add_batch_to_panes(panes, &keys, values, offset, &inputs, &mut late_rows)?;
        }
        if let (true, Some((values, offset))) = (self.batched_sessions, timestamps) {
            self.add_batch_to_sessions(&keys, values, offset, &inputs, &mut late_rows)?;
        }
        let rows = if self.panes.is_some() || self.batched_sessions {
            0
        } else {
            batch.num_rows()
        };
        for row in 0..rows {
            let key = keys.get(row);
            let ts = match timestamps {
                Some((values, offset)) => values[row] + offset,
                None if event_time => {
                    return Err(self
                        .info
                        .fail("event-time window on records without a timestamp"));
                }
                None => now,
            };
            self.spec.assigner.assign(ts, &mut windows);
            let mut skipped = true;
            for w in &windows {
                let mut w = *w;
                if self.spec.assigner.is_merging() {
                    if self.is_window_late(&w) {
                        continue;
                    }
                    w = self.merge_sessions(key, w)?;
                }
                if self.is_window_late(&w) {
                    continue;
                }
                skipped = false;
                // A merged session got its state from the merge: its timers are new in any case.
                if self.add_to_contents(key, &w, &inputs, &batch, row)?
                    || self.spec.assigner.is_merging()
                {
                    self.register_timers(key, &w);
                }
                let firing = self.on_element_trigger(key, &w)?;
                self.act(key, &w, firing)?;
            }
            if skipped
                && event_time
                && ts.saturating_add(self.spec.allowed_lateness) <= self.watermark
            {
                late_rows.push(row as u32);
            }
        }
        self.windows = windows;
        self.keys = keys;
        self.emit_fired(out)?;
        if self.spec.late_side_output && !late_rows.is_empty() {
            out.emit_side(1, take_record_batch(&batch, &UInt32Array::from(late_rows))?);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> Result<()> {
        self.watermark = watermark;
        if let Some(panes) = self.panes {
            self.fire_pane_windows(panes, watermark)?;
        }
        self.fire_due(TimeDomain::EventTime, watermark)?;
        self.emit_fired(out)
    }

    fn next_processing_time(&self) -> Option<Timestamp> {
        self.timers.next_processing_time()
    }

    fn on_processing_time(&mut self, now: Timestamp, out: &mut Output) -> Result<()> {
        self.fire_due(TimeDomain::ProcessingTime, now)?;
        self.emit_fired(out)
    }

    fn end_of_input(&mut self, out: &mut Output) -> Result<()> {
        // As in batch execution: processing time jumps to the end, so every such timer fires.
        self.fire_due(TimeDomain::ProcessingTime, MAX_WATERMARK)?;
        self.emit_fired(out)
    }
}
