//! Process functions: user code that sees one record at a time together with keyed state and timers
//! (Flink's `KeyedProcessFunction` and `CoProcessFunction`), the operators that run them, and the
//! DataStream API that adds them (`keyed.process(..)`, `a.connect(&b).process(..)`).
//!
//! A function is written against any [`KeyedStateBackend`]: it registers its state handles in
//! [`KeyedProcessFunction::open`] and reaches state, timers, the current key, the record's event
//! time and the watermark through a [`KeyedContext`] scoped to the current key. Event-time timers
//! fire when the watermark reaches them, processing-time timers when the wall clock does; when the
//! input ends every pending processing-time timer fires, as in Flink's batch execution. This module
//! is not where windows ([`super::window`]) or joins ([`super::join`]) live: those use the same state
//! and timers directly, without going through user functions and `Row` values.

use std::rc::Rc;
use std::sync::Arc;

use arrow::array::Array;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::checkpoint::state::{RestoredState, StateWriter};
use crate::error::{Error, Result};
use crate::keys::{KeyRows, KeySpec};
use crate::operator::{Operator, Output, SubtaskInfo};
use crate::plan::{NodeKind, Partitioning, TimeAttr};
use crate::row::{self, Row};
use crate::state::{
    KeyedStateBackend, ListState, MapKey, MapState, Namespace, ReducingState, StateValue,
    ValueState,
};
use crate::stream::{DataStream, KeyedStream};
use crate::time::{
    MAX_WATERMARK, MIN_WATERMARK, TimeDomain, Timestamp, event_time_values, now_millis,
};
use crate::timers::{Timer, TimerService};

/// A function over a keyed stream with state and timers (Flink's `KeyedProcessFunction`).
///
/// One clone runs per subtask; [`KeyedProcessFunction::open`] is called on it once, before any record,
/// to register state. State handles are cheap to clone, so keep them in the function's fields.
/// (A [`ReducingState`] handle is not `Sync`; keep a value state and fold with
/// [`KeyedContext::upsert`] instead.)
pub trait KeyedProcessFunction: Clone + Send + Sync + 'static {
    /// Registers the state the function uses.
    fn open<S: KeyedStateBackend>(&mut self, _state: &mut S) -> Result<()> {
        Ok(())
    }

    /// Handles one record; rows pushed to `out` are emitted with the operator's output schema.
    fn process_element<S: KeyedStateBackend>(
        &mut self,
        row: &Row,
        ctx: &mut KeyedContext<'_, S>,
        out: &mut Vec<Row>,
    ) -> Result<()>;

    /// A timer of the current key fired at `time`.
    fn on_timer<S: KeyedStateBackend>(
        &mut self,
        _time: Timestamp,
        _domain: TimeDomain,
        _ctx: &mut KeyedContext<'_, S>,
        _out: &mut Vec<Row>,
    ) -> Result<()> {
        Ok(())
    }
}

/// A function over two connected streams with shared state and timers (Flink's `CoProcessFunction`,
/// or `KeyedCoProcessFunction` when both streams are keyed).
pub trait CoProcessFunction: Clone + Send + Sync + 'static {
    /// Registers the state the function uses.
    fn open<S: KeyedStateBackend>(&mut self, _state: &mut S) -> Result<()> {
        Ok(())
    }

    /// Handles one record of the first stream.
    fn process_element1<S: KeyedStateBackend>(
        &mut self,
        row: &Row,
        ctx: &mut KeyedContext<'_, S>,
        out: &mut Vec<Row>,
    ) -> Result<()>;

    /// Handles one record of the second stream.
    fn process_element2<S: KeyedStateBackend>(
        &mut self,
        row: &Row,
        ctx: &mut KeyedContext<'_, S>,
        out: &mut Vec<Row>,
    ) -> Result<()>;

    /// A timer of the current key fired at `time`.
    fn on_timer<S: KeyedStateBackend>(
        &mut self,
        _time: Timestamp,
        _domain: TimeDomain,
        _ctx: &mut KeyedContext<'_, S>,
        _out: &mut Vec<Row>,
    ) -> Result<()> {
        Ok(())
    }
}

/// What a process function reaches while handling one record or timer: the current key, time, the
/// timer service and the keyed state, all scoped to the current key and [`Namespace::Global`].
///
/// On a stream that is not keyed (a non-keyed `connect`), the key is empty and the state is the
/// subtask's own.
pub struct KeyedContext<'a, S> {
    key: &'a [u8],
    key_row: &'a Row,
    timestamp: Option<Timestamp>,
    watermark: Timestamp,
    timers: &'a mut TimerService,
    state: &'a mut S,
}

impl<S: KeyedStateBackend> KeyedContext<'_, S> {
    /// The current key's fields (empty when the stream is not keyed).
    pub fn key(&self) -> &Row {
        self.key_row
    }

    /// The current key in the row format (see [`crate::keys`]).
    pub fn key_bytes(&self) -> &[u8] {
        self.key
    }

    /// The event time of the current record, if the stream has event time; the timer's time in
    /// event-time timers; `None` in processing-time timers.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.timestamp
    }

    /// The operator's current watermark ([`MIN_WATERMARK`] before the first one).
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// The wall clock, in epoch milliseconds.
    pub fn current_processing_time(&self) -> Timestamp {
        now_millis()
    }

    /// Registers an event-time timer for the current key; it fires once the watermark reaches
    /// `time`. Registering the same time twice is one timer.
    pub fn register_event_time_timer(&mut self, time: Timestamp) {
        self.timers
            .register(TimeDomain::EventTime, time, self.key, Namespace::Global);
    }

    /// Deletes the current key's event-time timer at `time`, if there is one.
    pub fn delete_event_time_timer(&mut self, time: Timestamp) {
        self.timers
            .delete(TimeDomain::EventTime, time, self.key, Namespace::Global);
    }

    /// Registers a processing-time timer for the current key; it fires once the wall clock reaches
    /// `time`, or when the input ends.
    pub fn register_processing_time_timer(&mut self, time: Timestamp) {
        self.timers.register(
            TimeDomain::ProcessingTime,
            time,
            self.key,
            Namespace::Global,
        );
    }

    /// Deletes the current key's processing-time timer at `time`, if there is one.
    pub fn delete_processing_time_timer(&mut self, time: Timestamp) {
        self.timers.delete(
            TimeDomain::ProcessingTime,
            time,
            self.key,
            Namespace::Global,
        );
    }

    /// The state backend itself, for access under other keys or namespaces.
    pub fn state(&mut self) -> &mut S {
        self.state
    }

    /// The current key's value.
    pub fn get<T: StateValue>(&self, state: &ValueState<T>) -> Result<Option<T>> {
        self.state.get(state, self.key, &Namespace::Global)
    }

    /// Sets the current key's value.
    pub fn put<T: StateValue>(&mut self, state: &ValueState<T>, value: T) -> Result<()> {
        self.state.put(state, self.key, &Namespace::Global, value)
    }

    /// Reads, changes and writes back the current key's value (`None` clears it).
    pub fn update<T: StateValue, R>(
        &mut self,
        state: &ValueState<T>,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R> {
        self.state.update(state, self.key, &Namespace::Global, f)
    }

    /// Changes the current key's value, creating it with `init` first if there is none.
    pub fn upsert<T: StateValue, R>(
        &mut self,
        state: &ValueState<T>,
        init: impl FnOnce() -> T,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R> {
        self.state
            .upsert(state, self.key, &Namespace::Global, init, f)
    }

    /// Clears the current key's value; returns what was there.
    pub fn take<T: StateValue>(&mut self, state: &ValueState<T>) -> Result<Option<T>> {
        self.state.take(state, self.key, &Namespace::Global)
    }

    /// Appends to the current key's list; returns whether it was empty before.
    pub fn list_add<T: StateValue>(&mut self, state: &ListState<T>, value: T) -> Result<bool> {
        self.state
            .list_add(state, self.key, &Namespace::Global, value)
    }

    /// The current key's list.
    pub fn list_get<T: StateValue>(&self, state: &ListState<T>) -> Result<Vec<T>> {
        self.state.list_get(state, self.key, &Namespace::Global)
    }

    /// Replaces the current key's list; an empty list clears it.
    pub fn list_put<T: StateValue>(&mut self, state: &ListState<T>, values: Vec<T>) -> Result<()> {
        self.state
            .list_put(state, self.key, &Namespace::Global, values)
    }

    /// Removes and returns the current key's list.
    pub fn list_take<T: StateValue>(&mut self, state: &ListState<T>) -> Result<Vec<T>> {
        self.state.list_take(state, self.key, &Namespace::Global)
    }

    /// The value under `map_key` in the current key's map.
    pub fn map_get<K: MapKey, V: StateValue>(
        &self,
        state: &MapState<K, V>,
        map_key: &K,
    ) -> Result<Option<V>> {
        self.state
            .map_get(state, self.key, &Namespace::Global, map_key)
    }

    /// Sets `map_key` to `value` in the current key's map.
    pub fn map_put<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        map_key: K,
        value: V,
    ) -> Result<()> {
        self.state
            .map_put(state, self.key, &Namespace::Global, map_key, value)
    }

    /// Removes `map_key` from the current key's map.
    pub fn map_remove<K: MapKey, V: StateValue>(
        &mut self,
        state: &MapState<K, V>,
        map_key: &K,
    ) -> Result<Option<V>> {
        self.state
            .map_remove(state, self.key, &Namespace::Global, map_key)
    }

    /// All entries of the current key's map, in key order.
    pub fn map_entries<K: MapKey, V: StateValue>(
        &self,
        state: &MapState<K, V>,
    ) -> Result<Vec<(K, V)>> {
        self.state.map_entries(state, self.key, &Namespace::Global)
    }

    /// Removes the current key's whole map.
    pub fn map_clear<K: MapKey, V: StateValue>(&mut self, state: &MapState<K, V>) -> Result<()> {
        self.state.map_clear(state, self.key, &Namespace::Global)
    }

    /// Folds `value` into the current key's reducing state.
    pub fn reduce_add<T: StateValue>(&mut self, state: &ReducingState<T>, value: T) -> Result<()> {
        self.state
            .reduce_add(state, self.key, &Namespace::Global, value)
    }

    /// The current key's folded value.
    pub fn reduce_get<T: StateValue>(&self, state: &ReducingState<T>) -> Result<Option<T>> {
        self.state.reduce_get(state, self.key, &Namespace::Global)
    }
}

/// One input of a process operator.
#[derive(Debug, Clone)]
pub struct ProcessInput {
    pub schema: SchemaRef,
    /// The key; `None` for a non-keyed input (state is then per subtask, under the empty key).
    pub key: Option<KeySpec>,
    /// Event-time column index and offset, if the input has event time.
    pub time: Option<(usize, i64)>,
}

/// The complete description of one process operator: its inputs (one or two) and output schema.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub inputs: Vec<ProcessInput>,
    pub output: SchemaRef,
}

/// What one-input and two-input process operators share: state, timers, keys, output.
struct Core<S> {
    info: SubtaskInfo,
    inputs: Vec<ProcessInput>,
    /// Schema of the key fields, to decode the keys of timers.
    key_schema: SchemaRef,
    output: SchemaRef,
    state: S,
    timers: TimerService,
    watermark: Timestamp,
    keys: KeyRows,
    produced: Vec<Row>,
}

impl<S: KeyedStateBackend> Core<S> {
    fn new(info: SubtaskInfo, spec: ProcessSpec, state: S) -> Result<Self> {
        let key_schema = match spec.inputs.first() {
            Some(ProcessInput {
                schema,
                key: Some(key),
                ..
            }) => Arc::new(Schema::new(
                key.indices
                    .iter()
                    .map(|&i| schema.field(i).as_ref().clone())
                    .collect::<Vec<_>>(),
            )),
            Some(_) => Arc::new(Schema::empty()),
            None => return Err(info.fail("a process operator needs an input")),
        };
        Ok(Self {
            info,
            inputs: spec.inputs,
            key_schema,
            output: spec.output,
            state,
            timers: TimerService::default(),
            watermark: MIN_WATERMARK,
            keys: KeyRows::default(),
            produced: Vec::new(),
        })
    }

    /// Calls `f` for every record of `batch`, which arrived on `input`.
    fn process(
        &mut self,
        input: usize,
        batch: &RecordBatch,
        mut f: impl FnMut(&Row, &mut KeyedContext<'_, S>, &mut Vec<Row>) -> Result<()>,
    ) -> Result<()> {
        let spec = self
            .inputs
            .get(input)
            .ok_or_else(|| self.info.fail(format!("no input {input}")))?;
        let rows = row::rows_of(batch)?;
        let times = event_times(&self.info, batch, spec.time)?;
        if let Some(key) = &spec.key {
            self.keys.encode(key, batch)?;
        }
        let no_key = Row::new();
        for (i, values) in rows.iter().enumerate() {
            let (key, key_row): (&[u8], Row) = match &spec.key {
                Some(k) => (
                    self.keys.get(i),
                    k.indices.iter().map(|&c| values[c].clone()).collect(),
                ),
                None => (&[], no_key.clone()),
            };
            let mut ctx = KeyedContext {
                key,
                key_row: &key_row,
                timestamp: times.as_ref().map(|t| t[i]),
                watermark: self.watermark,
                timers: &mut self.timers,
                state: &mut self.state,
            };
            f(values, &mut ctx, &mut self.produced).map_err(|e| user_error(&self.info, e))?;
        }
        Ok(())
    }

    /// Fires the timers of `domain` at or before `limit`, in order, including those registered
    /// meanwhile.
    fn fire(
        &mut self,
        domain: TimeDomain,
        limit: Timestamp,
        mut f: impl FnMut(Timestamp, TimeDomain, &mut KeyedContext<'_, S>, &mut Vec<Row>) -> Result<()>,
    ) -> Result<()> {
        while let Some(timer) = self.timers.pop_due(domain, limit) {
            let key_row = decode_key(&self.key_schema, &timer.key)?;
            let mut ctx = KeyedContext {
                key: &timer.key,
                key_row: &key_row,
                timestamp: (domain == TimeDomain::EventTime).then_some(timer.time),
                watermark: self.watermark,
                timers: &mut self.timers,
                state: &mut self.state,
            };
            f(timer.time, domain, &mut ctx, &mut self.produced)
                .map_err(|e| user_error(&self.info, e))?;
        }
        Ok(())
    }

    fn on_watermark(
        &mut self,
        watermark: Timestamp,
        f: impl FnMut(Timestamp, TimeDomain, &mut KeyedContext<'_, S>, &mut Vec<Row>) -> Result<()>,
    ) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        self.fire(TimeDomain::EventTime, self.watermark, f)
    }

    /// The input ended: processing time jumps to the latest pending processing-time timer, so each
    /// of them fires once (with those registered meanwhile that are not later); then event-time timers
    /// at or before the watermark that processing-time timers registered.
    fn end_of_input(
        &mut self,
        mut f: impl FnMut(Timestamp, TimeDomain, &mut KeyedContext<'_, S>, &mut Vec<Row>) -> Result<()>,
    ) -> Result<()> {
        let pending: Vec<Timer> = std::iter::from_fn(|| {
            self.timers
                .pop_due(TimeDomain::ProcessingTime, MAX_WATERMARK)
        })
        .collect();
        if let Some(limit) = pending.last().map(|t| t.time) {
            for t in pending {
                self.timers
                    .register(TimeDomain::ProcessingTime, t.time, &t.key, t.namespace);
            }
            self.fire(TimeDomain::ProcessingTime, limit, &mut f)?;
        }
        self.fire(TimeDomain::EventTime, self.watermark, &mut f)
    }

    /// Emits what the function produced so far.
    fn emit(&mut self, out: &mut Output) -> Result<()> {
        if !self.produced.is_empty() {
            let batch = row::batch_from_rows(&self.output, &self.produced)
                .map_err(|e| self.info.fail(e))?;
            self.produced.clear();
            out.emit(batch);
        }
        Ok(())
    }
}

/// One subtask running a [`KeyedProcessFunction`].
pub struct KeyedProcessOperator<F, S> {
    core: Core<S>,
    function: F,
}

impl<F: KeyedProcessFunction, S: KeyedStateBackend> KeyedProcessOperator<F, S> {
    /// A subtask of `spec` (one input) keeping its state in `state`; opens `function`.
    pub fn new(
        info: SubtaskInfo,
        spec: ProcessSpec,
        mut function: F,
        mut state: S,
    ) -> Result<Self> {
        if spec.inputs.len() != 1 {
            return Err(info.fail("a keyed process operator has exactly one input"));
        }
        function
            .open(&mut state)
            .map_err(|e| user_error(&info, e))?;
        Ok(Self {
            core: Core::new(info, spec, state)?,
            function,
        })
    }

    /// The keyed state, for inspection in tests.
    pub fn state(&self) -> &S {
        &self.core.state
    }
}

impl<F: KeyedProcessFunction, S: KeyedStateBackend> Operator for KeyedProcessOperator<F, S> {
    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        self.core.state.snapshot(checkpoint_id, out)?;
        self.core
            .timers
            .snapshot(self.core.info.max_parallelism, out)
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        self.core.state.restore(state)?;
        self.core.timers.restore(state)
    }
    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let f = &mut self.function;
        self.core.process(input, &batch, |row, ctx, rows| {
            f.process_element(row, ctx, rows)
        })?;
        self.core.emit(out)
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> Result<()> {
        let f = &mut self.function;
        self.core
            .on_watermark(watermark, |t, d, ctx, rows| f.on_timer(t, d, ctx, rows))?;
        self.core.emit(out)
    }

    fn next_processing_time(&self) -> Option<Timestamp> {
        self.core.timers.next_processing_time()
    }

    fn on_processing_time(&mut self, now: Timestamp, out: &mut Output) -> Result<()> {
        let f = &mut self.function;
        self.core
            .fire(TimeDomain::ProcessingTime, now, |t, d, ctx, rows| {
                f.on_timer(t, d, ctx, rows)
            })?;
        self.core.emit(out)
    }

    fn end_of_input(&mut self, out: &mut Output) -> Result<()> {
        let f = &mut self.function;
        self.core
            .end_of_input(|t, d, ctx, rows| f.on_timer(t, d, ctx, rows))?;
        self.core.emit(out)
    }
}

/// One subtask running a [`CoProcessFunction`] over two inputs.
pub struct CoProcessOperator<F, S> {
    core: Core<S>,
    function: F,
}

impl<F: CoProcessFunction, S: KeyedStateBackend> CoProcessOperator<F, S> {
    /// A subtask of `spec` (two inputs) keeping its state in `state`; opens `function`.
    pub fn new(
        info: SubtaskInfo,
        spec: ProcessSpec,
        mut function: F,
        mut state: S,
    ) -> Result<Self> {
        if spec.inputs.len() != 2 {
            return Err(info.fail("a co-process operator has exactly two inputs"));
        }
        function
            .open(&mut state)
            .map_err(|e| user_error(&info, e))?;
        Ok(Self {
            core: Core::new(info, spec, state)?,
            function,
        })
    }

    /// The state, for inspection in tests.
    pub fn state(&self) -> &S {
        &self.core.state
    }
}

impl<F: CoProcessFunction, S: KeyedStateBackend> Operator for CoProcessOperator<F, S> {
    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        self.core.state.snapshot(checkpoint_id, out)?;
        self.core
            .timers
            .snapshot(self.core.info.max_parallelism, out)
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        self.core.state.restore(state)?;
        self.core.timers.restore(state)
    }
    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let f = &mut self.function;
        if input == 0 {
            self.core.process(0, &batch, |row, ctx, rows| {
                f.process_element1(row, ctx, rows)
            })?;
        } else {
            self.core.process(input, &batch, |row, ctx, rows| {
                f.process_element2(row, ctx, rows)
            })?;
        }
        self.core.emit(out)
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> Result<()> {
        let f = &mut self.function;
        self.core
            .on_watermark(watermark, |t, d, ctx, rows| f.on_timer(t, d, ctx, rows))?;
        self.core.emit(out)
    }

    fn next_processing_time(&self) -> Option<Timestamp> {
        self.core.timers.next_processing_time()
    }

    fn on_processing_time(&mut self, now: Timestamp, out: &mut Output) -> Result<()> {
        let f = &mut self.function;
        self.core
            .fire(TimeDomain::ProcessingTime, now, |t, d, ctx, rows| {
                f.on_timer(t, d, ctx, rows)
            })?;
        self.core.emit(out)
    }

    fn end_of_input(&mut self, out: &mut Output) -> Result<()> {
        let f = &mut self.function;
        self.core
            .end_of_input(|t, d, ctx, rows| f.on_timer(t, d, ctx, rows))?;
        self.core.emit(out)
    }
}

// ---------------------------------------------------------------------------------------------------
// Helpers shared with the joins.

/// The event times of `batch` (column value plus offset), if the input has event time.
pub(crate) fn event_times(
    info: &SubtaskInfo,
    batch: &RecordBatch,
    time: Option<(usize, i64)>,
) -> Result<Option<Vec<Timestamp>>> {
    let Some((column, offset)) = time else {
        return Ok(None);
    };
    let array = batch
        .columns()
        .get(column)
        .ok_or_else(|| info.fail(format!("the event-time column #{column} is missing")))?;
    if array.null_count() > 0 {
        return Err(info.fail("a record has no event time (its event-time field is null)"));
    }
    let values = event_time_values(array.as_ref()).map_err(|e| user_error(info, e))?;
    Ok(Some(
        values.iter().map(|v| v.saturating_add(offset)).collect(),
    ))
}

/// Decodes a key in the row format into its fields.
fn decode_key(key_schema: &SchemaRef, key: &[u8]) -> Result<Row> {
    if key_schema.fields().is_empty() {
        return Ok(Row::new());
    }
    let batch = row::decode_batch(key_schema, [key])?;
    row::row_at(&batch, 0)
}

/// A user function's error, attributed to the operator's subtask.
pub(crate) fn user_error(info: &SubtaskInfo, error: Error) -> Error {
    match error {
        Error::Operator {
            operator, message, ..
        } if operator.is_empty() => info.fail(message),
        other @ Error::Operator { .. } => other,
        other => info.fail(other),
    }
}

/// The event-time column index and offset of `stream`, if it has event time.
pub(crate) fn time_of(stream: &DataStream) -> Option<(usize, i64)> {
    let t = stream.time.as_ref()?;
    Some((stream.schema.index_of(&t.column).ok()?, t.offset))
}

/// `stream`'s time attribute, if its column is in `schema` with the same type.
pub(crate) fn carried_time(stream: &DataStream, schema: &SchemaRef) -> Option<TimeAttr> {
    let t = stream.time.as_ref()?;
    let old = stream.schema.field_with_name(&t.column).ok()?;
    let new = schema.field_with_name(&t.column).ok()?;
    (old.data_type() == new.data_type()).then(|| t.clone())
}

/// Rejects an output schema with fields the engine cannot build.
pub(crate) fn check_output_schema(operator: &str, schema: &SchemaRef) -> Result<()> {
    for field in schema.fields() {
        if !row::is_supported(field.data_type()) {
            return Err(Error::plan(
                operator,
                format!(
                    "output field '{}' has type {}, which the engine cannot build",
                    field.name(),
                    field.data_type()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks that two inputs' keys can be compared: as many fields, of the same types.
pub(crate) fn check_key_types(
    operator: &str,
    (first_schema, first): (&SchemaRef, &KeySpec),
    (second_schema, second): (&SchemaRef, &KeySpec),
) -> Result<()> {
    if first.indices.len() != second.indices.len() {
        return Err(Error::plan(
            operator,
            format!(
                "the first input's key ({}) and the second input's key ({}) have different numbers \
                 of fields",
                first.names.join(", "),
                second.names.join(", ")
            ),
        ));
    }
    for ((a, &i), (b, &j)) in first
        .names
        .iter()
        .zip(&first.indices)
        .zip(second.names.iter().zip(&second.indices))
    {
        let (ta, tb) = (
            first_schema.field(i).data_type(),
            second_schema.field(j).data_type(),
        );
        if ta != tb {
            return Err(Error::plan(
                operator,
                format!(
                    "key field '{b}' of the second input has type {tb} but key field '{a}' of the \
                     first input has type {ta}; the keys must have the same types"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether two streams were built in the same environment.
pub(crate) fn same_env(a: &DataStream, b: &DataStream) -> bool {
    Rc::ptr_eq(&a.env.inner, &b.env.inner)
}

// ---------------------------------------------------------------------------------------------------
// The DataStream API.

impl KeyedStream {
    /// Runs `function` on every record with the key's state and timers (Flink's
    /// `keyBy(..).process(..)`); it emits rows of `schema`. The output keeps the input's event-time
    /// column if `schema` has it with the same type.
    pub fn process(
        &self,
        name: &str,
        schema: SchemaRef,
        function: impl KeyedProcessFunction,
    ) -> DataStream {
        let s = &self.stream;
        let name = format!("process({name})");
        if let Err(e) = check_output_schema(&name, &schema) {
            s.env.error(e);
            return s.clone();
        }
        let spec = ProcessSpec {
            inputs: vec![ProcessInput {
                schema: s.schema.clone(),
                key: Some(self.key.clone()),
                time: time_of(s),
            }],
            output: schema.clone(),
        };
        let node = s.then(
            name,
            s.parallelism(),
            schema.clone(),
            Vec::new(),
            Arc::new(move |info| {
                Ok(Box::new(KeyedProcessOperator::new(
                    info.clone(),
                    spec.clone(),
                    function.clone(),
                    crate::state::Backend::for_subtask(info)?,
                )?) as Box<dyn Operator>)
            }),
        );
        s.derived(node, schema.clone(), carried_time(s, &schema))
    }

    /// Connects two keyed streams for a [`CoProcessFunction`] that shares state and timers per key
    /// between them (Flink's `KeyedCoProcessFunction`). The keys must have the same types.
    pub fn connect(&self, other: &KeyedStream) -> ConnectedStreams {
        ConnectedStreams {
            first: self.stream.clone(),
            second: other.stream.clone(),
            keys: Some((self.key.clone(), other.key.clone())),
        }
    }
}

impl DataStream {
    /// Connects two streams, not keyed, for a [`CoProcessFunction`]; its state and timers are per
    /// subtask (under the empty key).
    pub fn connect(&self, other: &DataStream) -> ConnectedStreams {
        ConnectedStreams {
            first: self.clone(),
            second: other.clone(),
            keys: None,
        }
    }
}

/// Two streams that feed one two-input operator.
#[derive(Clone, Debug)]
pub struct ConnectedStreams {
    first: DataStream,
    second: DataStream,
    keys: Option<(KeySpec, KeySpec)>,
}

impl ConnectedStreams {
    /// The first stream.
    pub fn first(&self) -> &DataStream {
        &self.first
    }

    /// The second stream.
    pub fn second(&self) -> &DataStream {
        &self.second
    }

    /// Runs `function` over both streams; it emits rows of `schema`. The operator's parallelism is the
    /// first stream's; the output keeps the event-time column if both inputs have the same one and
    /// `schema` has it with the same type.
    pub fn process(
        &self,
        name: &str,
        schema: SchemaRef,
        function: impl CoProcessFunction,
    ) -> DataStream {
        let (first, second) = (&self.first, &self.second);
        let env = &first.env;
        let name = format!("co_process({name})");
        let checked = if !same_env(first, second) {
            Err(Error::plan(
                &name,
                "the connected streams belong to different environments",
            ))
        } else if let Some((k1, k2)) = &self.keys {
            check_key_types(&name, (&first.schema, k1), (&second.schema, k2))
        } else {
            Ok(())
        }
        .and_then(|()| check_output_schema(&name, &schema));
        if let Err(e) = checked {
            env.error(e);
            return first.clone();
        }
        let parallelism = first.parallelism();
        let input = |s: &DataStream, key: Option<&KeySpec>| ProcessInput {
            schema: s.schema.clone(),
            key: key.cloned(),
            time: time_of(s),
        };
        let (k1, k2) = match &self.keys {
            Some((k1, k2)) => (Some(k1), Some(k2)),
            None => (None, None),
        };
        let spec = ProcessSpec {
            inputs: vec![input(first, k1), input(second, k2)],
            output: schema.clone(),
        };
        let factory: crate::plan::OperatorFactory = Arc::new(move |info| {
            Ok(Box::new(CoProcessOperator::new(
                info.clone(),
                spec.clone(),
                function.clone(),
                crate::state::Backend::for_subtask(info)?,
            )?) as Box<dyn Operator>)
        });
        let node = env.add_node(
            name,
            parallelism,
            NodeKind::Operator { factory, inputs: 2 },
            schema.clone(),
            Vec::new(),
        );
        let partitioning = |s: &DataStream, key: Option<&KeySpec>| match key {
            Some(k) => Partitioning::Hash(k.clone()),
            None => match &s.partitioning {
                Partitioning::Forward | Partitioning::Hash(_) if s.parallelism() != parallelism => {
                    Partitioning::Rebalance
                }
                Partitioning::Hash(_) => Partitioning::Forward,
                other => other.clone(),
            },
        };
        env.add_edge(first, node, 0, partitioning(first, k1));
        env.add_edge(second, node, 1, partitioning(second, k2));
        let time = carried_time(first, &schema).filter(|t| second.time.as_ref() == Some(t));
        first.derived(node, schema, time)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::row::{Value, batch_from_rows, rows_of};
    use arrow::datatypes::{DataType, Field};

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
        ]))
    }

    fn output_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("what", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]))
    }

    /// Counts per key; an event-time timer 10 ms after the first record emits and clears the count;
    /// a processing-time timer far in the future reports the total.
    #[derive(Clone, Default)]
    struct CountThenEmit {
        count: Option<ValueState<i64>>,
        total: Option<ValueState<i64>>,
    }

    impl KeyedProcessFunction for CountThenEmit {
        fn open<S: KeyedStateBackend>(&mut self, state: &mut S) -> Result<()> {
            self.count = Some(state.value_state("count"));
            self.total = Some(state.value_state("total"));
            Ok(())
        }

        fn process_element<S: KeyedStateBackend>(
            &mut self,
            _row: &Row,
            ctx: &mut KeyedContext<'_, S>,
            _out: &mut Vec<Row>,
        ) -> Result<()> {
            let (Some(count), Some(total)) = (&self.count, &self.total) else {
                return Err(Error::user("not opened"));
            };
            let ts = ctx.timestamp().ok_or_else(|| Error::user("no timestamp"))?;
            let first = ctx.upsert(
                count,
                || 0,
                |c| {
                    *c += 1;
                    *c == 1
                },
            )?;
            if first {
                ctx.register_event_time_timer(ts + 10);
            }
            ctx.upsert(total, || 0, |t| *t += 1)?;
            ctx.register_processing_time_timer(i64::MAX - 1);
            Ok(())
        }

        fn on_timer<S: KeyedStateBackend>(
            &mut self,
            _time: Timestamp,
            domain: TimeDomain,
            ctx: &mut KeyedContext<'_, S>,
            out: &mut Vec<Row>,
        ) -> Result<()> {
            let (Some(count), Some(total)) = (&self.count, &self.total) else {
                return Err(Error::user("not opened"));
            };
            let key = ctx.key().clone();
            let (what, n) = match domain {
                TimeDomain::EventTime => ("count", ctx.take(count)?.unwrap_or(0)),
                TimeDomain::ProcessingTime => ("total", ctx.take(total)?.unwrap_or(0)),
            };
            out.push(vec![key[0].clone(), what.into(), Value::Int(n)]);
            Ok(())
        }
    }

    fn batch(rows: &[(&str, i64)]) -> RecordBatch {
        let rows: Vec<Row> = rows
            .iter()
            .map(|(k, ts)| vec![Value::from(*k), Value::Int(*ts)])
            .collect();
        batch_from_rows(&input_schema(), &rows).unwrap()
    }

    fn rows(out: &mut Output) -> Vec<Row> {
        let mut rows = Vec::new();
        for item in out.drain() {
            if let crate::operator::Emitted::Data(b) = item {
                rows.extend(rows_of(&b).unwrap());
            }
        }
        rows
    }

    fn info() -> SubtaskInfo {
        SubtaskInfo {
            name: "process(test)".into(),
            index: 0,
            parallelism: 1,
            max_parallelism: 128,
            state: Default::default(),
        }
    }

    #[test]
    fn event_timers_fire_at_the_watermark_and_processing_timers_at_the_end() {
        let key = KeySpec::resolve("t", &input_schema(), &["k"]).unwrap();
        let spec = ProcessSpec {
            inputs: vec![ProcessInput {
                schema: input_schema(),
                key: Some(key),
                time: Some((1, 0)),
            }],
            output: output_schema(),
        };
        let mut op = KeyedProcessOperator::new(
            info(),
            spec,
            CountThenEmit::default(),
            crate::state::MemoryStateBackend::default(),
        )
        .unwrap();
        let mut out = Output::default();
        op.process(0, batch(&[("a", 100), ("b", 105), ("a", 103)]), &mut out)
            .unwrap();
        assert!(rows(&mut out).is_empty());
        op.on_watermark(109, &mut out).unwrap();
        assert!(rows(&mut out).is_empty(), "a's timer is at 110");
        op.on_watermark(110, &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            vec![vec!["a".into(), "count".into(), Value::Int(2)]]
        );
        op.process(0, batch(&[("a", 111), ("b", 90)]), &mut out)
            .unwrap();
        op.on_watermark(200, &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            vec![
                vec!["b".into(), "count".into(), Value::Int(2)],
                vec!["a".into(), "count".into(), Value::Int(1)],
            ]
        );
        assert_eq!(op.next_processing_time(), Some(i64::MAX - 1));
        op.end_of_input(&mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            vec![
                vec!["a".into(), "total".into(), Value::Int(3)],
                vec!["b".into(), "total".into(), Value::Int(2)],
            ]
        );
        assert_eq!(op.state().entries(), 0);
    }

    #[test]
    fn user_errors_name_the_operator() {
        let e = user_error(&info(), Error::user("boom"));
        assert_eq!(
            e.to_string(),
            "operator 'process(test)' (subtask 0) failed: boom"
        );
    }
}
