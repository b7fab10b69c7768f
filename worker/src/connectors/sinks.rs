//! Simple sinks: collect into memory (tests and tools), print to stdout, discard.

use std::io::Write;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parking_lot::Mutex;

use super::SinkBuilder;
use crate::error::{Error, Result};
use crate::operator::{Operator, Output};
use crate::plan::OperatorFactory;
use crate::row::{Row, rows_of};

/// Collects every record into a shared buffer that outlives the job.
#[derive(Debug, Clone, Default)]
pub struct CollectSink {
    batches: Arc<Mutex<Vec<RecordBatch>>>,
}

impl CollectSink {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The batches collected so far.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.batches.lock().clone()
    }

    /// The records collected so far, as rows.
    pub fn rows(&self) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        for b in self.batches.lock().iter() {
            rows.extend(rows_of(b)?);
        }
        Ok(rows)
    }

    /// The records collected so far, as rows, sorted (for comparisons as multisets).
    pub fn sorted_rows(&self) -> Result<Vec<Row>> {
        let mut rows = self.rows()?;
        rows.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        Ok(rows)
    }

    /// Number of records collected.
    pub fn len(&self) -> usize {
        self.batches.lock().iter().map(RecordBatch::num_rows).sum()
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Collect(Arc<Mutex<Vec<RecordBatch>>>);

impl Operator for Collect {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        self.0.lock().push(batch);
        Ok(())
    }
}

impl SinkBuilder for CollectSink {
    fn name(&self) -> String {
        "collect".into()
    }

    fn factory(self, _schema: &SchemaRef) -> Result<OperatorFactory> {
        let batches = self.batches;
        Ok(Arc::new(move |_| {
            Ok(Box::new(Collect(batches.clone())) as Box<dyn Operator>)
        }))
    }
}

/// Prints every record to stdout as one line of `field=value` pairs (timestamps in ISO 8601),
/// prefixed by the subtask (`2> ...`) when parallel, as Flink's print sink does.
#[derive(Debug, Clone, Default)]
pub struct PrintSink;

struct Print {
    prefix: String,
}

impl Operator for Print {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let options = FormatOptions::default().with_null("null");
        let schema = batch.schema();
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut stdout = std::io::stdout().lock();
        for row in 0..batch.num_rows() {
            let mut line = self.prefix.clone();
            for (i, (field, formatter)) in schema.fields().iter().zip(&formatters).enumerate() {
                if i > 0 {
                    line.push_str(", ");
                }
                line.push_str(field.name());
                line.push('=');
                line.push_str(&formatter.value(row).to_string());
            }
            writeln!(stdout, "{line}").map_err(|e| Error::io("printing", e))?;
        }
        Ok(())
    }
}

impl SinkBuilder for PrintSink {
    fn name(&self) -> String {
        "print".into()
    }

    fn factory(self, _schema: &SchemaRef) -> Result<OperatorFactory> {
        Ok(Arc::new(|info| {
            let prefix = if info.parallelism > 1 {
                format!("{}> ", info.index + 1)
            } else {
                String::new()
            };
            Ok(Box::new(Print { prefix }) as Box<dyn Operator>)
        }))
    }
}

/// Prints the first column of every record (text made by the caller, e.g. Flink SQL's
/// `+I[a, 1]`) as a line to stdout, prefixed by the subtask (`2> ...`) when parallel.
#[derive(Debug, Clone, Default)]
pub struct LinePrintSink;

struct PrintLines {
    prefix: String,
}

impl Operator for PrintLines {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let Some(lines) = batch
            .columns()
            .first()
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>())
        else {
            return Err(Error::user("a line sink takes a text column"));
        };
        let mut stdout = std::io::stdout().lock();
        for line in lines.iter().flatten() {
            writeln!(stdout, "{}{line}", self.prefix).map_err(|e| Error::io("printing", e))?;
        }
        Ok(())
    }
}

impl SinkBuilder for LinePrintSink {
    fn name(&self) -> String {
        "print".into()
    }

    fn factory(self, _schema: &SchemaRef) -> Result<OperatorFactory> {
        Ok(Arc::new(|info| {
            let prefix = if info.parallelism > 1 {
                format!("{}> ", info.index + 1)
            } else {
                String::new()
            };
            Ok(Box::new(PrintLines { prefix }) as Box<dyn Operator>)
        }))
    }
}

/// Drops every record (Flink's `DiscardingSink` / the `blackhole` connector); counts them.
#[derive(Debug, Clone, Default)]
pub struct DiscardSink {
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl DiscardSink {
    /// A new discarding sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records discarded so far.
    pub fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct Discard(Arc<std::sync::atomic::AtomicU64>);

impl Operator for Discard {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        self.0.fetch_add(
            batch.num_rows() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }
}

impl SinkBuilder for DiscardSink {
    fn name(&self) -> String {
        "discard".into()
    }

    fn factory(self, _schema: &SchemaRef) -> Result<OperatorFactory> {
        let count = self.count;
        Ok(Arc::new(move |_| {
            Ok(Box::new(Discard(count.clone())) as Box<dyn Operator>)
        }))
    }
}
