//! Dead letters: input records a source could not read, with where they were and why. Under the
//! dead-letter error policy every source sends them on its side output [`PORT`], and
//! `StreamEnv::dead_letters()` gathers them into one stream for a sink of the user's choice.

use std::sync::{Arc, LazyLock};

use arrow::array::StringArray;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::error::Result;

/// The side output port of every source that carries its dead letters.
pub const PORT: usize = 1;
/// The side output's tag.
pub const TAG: &str = "dead-letters";

/// One unreadable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The source's name.
    pub source: String,
    /// Where in the input, e.g. `data.csv:17`.
    pub position: String,
    /// Why it could not be read.
    pub reason: String,
    /// The record's raw text.
    pub raw: String,
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("position", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
    ]))
});

/// The schema of the dead-letter stream.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Dead letters as a batch.
pub fn to_batch(letters: Vec<DeadLetter>) -> Result<RecordBatch> {
    let column =
        |f: fn(&DeadLetter) -> &str| Arc::new(StringArray::from_iter_values(letters.iter().map(f)));
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            column(|d| &d.source),
            column(|d| &d.position),
            column(|d| &d.reason),
            column(|d| &d.raw),
        ],
    )?)
}
