//! Stateless record-at-a-time operators: map, filter, flat map, projection and the identity used by
//! union. Columnar variants take whole batches; row variants hand the user one [`Row`] at a time.

use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::operator::{Operator, Output, SubtaskInfo};
use crate::row::{Row, batch_from_rows, rows_of};

/// A function over whole batches.
pub type BatchFn = Arc<dyn Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync>;
/// A predicate over whole batches.
pub type BatchPredicate = Arc<dyn Fn(&RecordBatch) -> Result<BooleanArray> + Send + Sync>;
/// A function from one row to zero or more rows.
pub type FlatMapFn = Arc<dyn Fn(Row, &mut Vec<Row>) -> Result<()> + Send + Sync>;

/// Applies a batch function and checks its output schema.
pub struct MapBatches {
    pub(crate) info: SubtaskInfo,
    pub(crate) f: BatchFn,
    pub(crate) schema: SchemaRef,
}

impl Operator for MapBatches {
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let result = (self.f)(batch).map_err(|e| self.info.fail(e))?;
        if result.schema().fields() != self.schema.fields() {
            return Err(self.info.fail(format!(
                "function returned schema {:?}, declared {:?}",
                result.schema(),
                self.schema
            )));
        }
        out.emit(result);
        Ok(())
    }
}

/// Keeps the rows a batch predicate selects.
pub struct Filter {
    pub(crate) info: SubtaskInfo,
    pub(crate) predicate: BatchPredicate,
}

impl Operator for Filter {
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let mask = (self.predicate)(&batch).map_err(|e| self.info.fail(e))?;
        out.emit(filter_record_batch(&batch, &mask)?);
        Ok(())
    }
}

/// Applies a row function producing any number of rows per input row.
pub struct FlatMapRows {
    pub(crate) info: SubtaskInfo,
    pub(crate) f: FlatMapFn,
    pub(crate) schema: SchemaRef,
}

impl Operator for FlatMapRows {
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let mut produced = Vec::with_capacity(batch.num_rows());
        for row in rows_of(&batch)? {
            (self.f)(row, &mut produced).map_err(|e| self.info.fail(e))?;
        }
        out.emit(batch_from_rows(&self.schema, &produced).map_err(|e| self.info.fail(e))?);
        Ok(())
    }
}

/// Keeps the given columns, in the given order.
pub struct Project {
    pub(crate) indices: Vec<usize>,
}

impl Operator for Project {
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        out.emit(batch.project(&self.indices)?);
        Ok(())
    }
}

/// Passes records through: the operator behind `union` and plain repartitioning.
pub struct Identity;

impl Operator for Identity {
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        out.emit(batch);
        Ok(())
    }
}
