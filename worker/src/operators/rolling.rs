//! Rolling aggregations on a keyed stream (Flink's `KeyedStream.reduce/sum/min/max`): every input
//! record updates its key's running value, and the updated value is emitted at once.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::aggregate::{Accumulator, AggInput, BoundAgg};
use crate::checkpoint::state::{RestoredState, StateWriter};
use crate::error::Result;
use crate::keys::{KeyRows, KeySpec};
use crate::operator::{Operator, Output, SubtaskInfo};
use crate::row::{Row, batch_from_rows, rows_of};
use crate::state::{KeyedStateBackend, Namespace, ValueState};

/// A reduce function: folds the next record into the running one (both with the input's schema).
pub type ReduceFn = Arc<dyn Fn(&Row, &Row) -> Result<Row> + Send + Sync>;

/// The output schema of a rolling aggregate: the key fields, then the aggregates.
pub fn aggregate_schema(input: &SchemaRef, key: &KeySpec, aggs: &[BoundAgg]) -> SchemaRef {
    let mut fields: Vec<Field> = key
        .indices
        .iter()
        .map(|&i| input.field(i).as_ref().clone())
        .collect();
    fields.extend(aggs.iter().map(|a| a.field().clone()));
    Arc::new(Schema::new(fields))
}

/// Running aggregates per key.
pub struct RollingAggregate<S: KeyedStateBackend> {
    pub(crate) key: KeySpec,
    pub(crate) aggs: Vec<BoundAgg>,
    pub(crate) schema: SchemaRef,
    pub(crate) state: S,
    pub(crate) accs: ValueState<Accumulator>,
    pub(crate) keys: KeyRows,
}

impl<S: KeyedStateBackend> RollingAggregate<S> {
    /// A subtask keeping its running values in `state`.
    pub fn new(key: KeySpec, aggs: Vec<BoundAgg>, schema: SchemaRef, mut state: S) -> Self {
        let accs = state.value_state("rolling-accumulators");
        Self {
            key,
            aggs,
            schema,
            state,
            accs,
            keys: KeyRows::default(),
        }
    }
}

impl<S: KeyedStateBackend> Operator for RollingAggregate<S> {
    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        self.state.snapshot(checkpoint_id, out)
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        self.state.restore(state)
    }
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        self.keys.encode(&self.key, &batch)?;
        let batch = Arc::new(batch);
        let inputs: Vec<AggInput> = self
            .aggs
            .iter()
            .map(|a| a.input(&batch))
            .collect::<Result<_>>()?;
        let mut snapshots: Vec<Accumulator> = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let aggs = &self.aggs;
            let acc = self.state.upsert(
                &self.accs,
                self.keys.get(row),
                &Namespace::Global,
                || aggs.iter().map(BoundAgg::create).collect(),
                |acc| -> Result<Accumulator> {
                    for ((agg, slot), input) in aggs.iter().zip(acc.iter_mut()).zip(&inputs) {
                        agg.add(slot, input, row)?;
                    }
                    Ok(acc.clone())
                },
            )??;
            snapshots.push(acc);
        }
        let mut columns = self.key.columns(&batch);
        for (i, agg) in self.aggs.iter().enumerate() {
            columns.push(agg.finish(snapshots.iter().filter_map(|a| a.get(i)))?);
        }
        out.emit(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }
}

/// A running reduce per key with a user function.
pub struct RollingReduce<S: KeyedStateBackend> {
    pub(crate) info: SubtaskInfo,
    pub(crate) key: KeySpec,
    pub(crate) reduce: ReduceFn,
    pub(crate) state: S,
    pub(crate) current: ValueState<Row>,
    pub(crate) keys: KeyRows,
}

impl<S: KeyedStateBackend> RollingReduce<S> {
    /// A subtask keeping its running values in `state`.
    pub fn new(info: SubtaskInfo, key: KeySpec, reduce: ReduceFn, mut state: S) -> Self {
        let current = state.value_state("rolling-reduce");
        Self {
            info,
            key,
            reduce,
            state,
            current,
            keys: KeyRows::default(),
        }
    }
}

impl<S: KeyedStateBackend> Operator for RollingReduce<S> {
    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        self.state.snapshot(checkpoint_id, out)
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        self.state.restore(state)
    }
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        self.keys.encode(&self.key, &batch)?;
        let mut produced = Vec::with_capacity(batch.num_rows());
        for (row, values) in rows_of(&batch)?.into_iter().enumerate() {
            let key = self.keys.get(row);
            let next = match self.state.get(&self.current, key, &Namespace::Global)? {
                Some(acc) => (self.reduce)(&acc, &values).map_err(|e| self.info.fail(e))?,
                None => values,
            };
            self.state
                .put(&self.current, key, &Namespace::Global, next.clone())?;
            produced.push(next);
        }
        out.emit(batch_from_rows(&batch.schema(), &produced)?);
        Ok(())
    }
}
