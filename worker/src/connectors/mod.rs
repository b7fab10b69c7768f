//! Connectors: where records come from and go to. A source is described by a [`SourceBuilder`], a sink
//! by a [`SinkBuilder`]; both hand the plan a factory that makes one instance per subtask.

pub mod collection;
pub mod datagen;
pub mod dead_letter;
pub mod file;
mod interleaved;
pub mod kafka;
pub mod nexmark;
pub mod nexmark_source;
pub mod sinks;
mod throttle;
pub mod two_phase;

use arrow::datatypes::SchemaRef;

use crate::error::Result;
use crate::plan::{OperatorFactory, SourceFactory};

/// Describes a source for the plan.
pub trait SourceBuilder {
    /// Display name of the source operator.
    fn name(&self) -> String;
    /// Schema of the records it produces.
    fn schema(&self) -> SchemaRef;
    /// The most subtasks that can do useful work (e.g. the number of files); `None` for no limit.
    fn max_parallelism(&self) -> Option<u32> {
        None
    }
    /// Makes the per-subtask instances.
    fn factory(self) -> SourceFactory;
}

/// Describes a sink for the plan.
pub trait SinkBuilder {
    /// Display name of the sink operator.
    fn name(&self) -> String;
    /// Its parallelism, if it needs a particular one (e.g. 1 for an ordered file).
    fn parallelism(&self) -> Option<u32> {
        None
    }
    /// Makes the per-subtask instances for records of `schema`, or says why it cannot take them.
    fn factory(self, schema: &SchemaRef) -> Result<OperatorFactory>;
}
