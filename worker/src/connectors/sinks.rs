//! Simple sinks: collect into memory (tests and tools), print to stdout, discard.

use std::io::Write;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
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

/// Prints every record to stdout as one line of comma-separated values, prefixed by the subtask
/// (`2> ...`) as Flink's print sink does when parallel.
#[derive(Debug, Clone, Default)]
pub struct PrintSink;

struct Print {
    prefix: String,
}

fn render(row: &Row) -> String {
    row.iter()
        .map(|v| match v {
            crate::row::Value::Null => "null".to_owned(),
            crate::row::Value::Bool(b) => b.to_string(),
            crate::row::Value::Int(i) => i.to_string(),
            crate::row::Value::UInt(i) => i.to_string(),
            crate::row::Value::Float(f) => f.to_string(),
            crate::row::Value::Str(s) => s.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Operator for Print {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        for row in rows_of(&batch)? {
            writeln!(stdout, "{}{}", self.prefix, render(&row))
                .map_err(|e| Error::io("printing", e))?;
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
