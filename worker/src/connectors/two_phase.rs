//! An exactly-once file sink by two-phase commit, writing to any [`CheckpointStore`] (a local
//! directory or an S3 bucket), as Flink's `FileSink`:
//!
//! 1. records are encoded (JSON lines or CSV) into the subtask's buffer for the current checkpoint;
//! 2. **pre-commit** at the barrier: the buffer is written as a staged object
//!    `<dir>/_staging/part-<subtask>-<checkpoint>-<writer>` (`<writer>` tells this run of the
//!    subtask from any other, e.g. a zombie of an attempt a lost JobManager left behind, which
//!    may still write under the same checkpoint id but is never committed), and the staged objects not yet committed are the
//!    subtask's snapshot (operator list state);
//! 3. **commit** when the checkpoint completes: each staged object becomes
//!    `<dir>/part-<subtask>-<checkpoint>.<ext>` (copy, then delete the staged one).
//!
//! A restore commits the restored pending objects again; a commit whose staged object is gone and
//! whose final object exists was done before, so commits are idempotent. Records after the last
//! completed checkpoint are never published: they are replayed; their staged files are deleted by
//! the restore (those of subtask indices the restored job no longer has stay, unpublished). A
//! checkpoint whose staging write fails is declined (the records stay buffered for the next one);
//! the job goes on.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::json::writer::LineDelimited;
use arrow::json::{LineDelimitedWriter, WriterBuilder};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::SinkBuilder;
use super::file::{push_csv_text, with_epoch_millis, write_csv};
use crate::checkpoint::state::{RestoredState, StateWriter, decode, encode};
use crate::checkpoint::store::CheckpointStore;
use crate::error::{Error, Result};
use crate::operator::{Operator, Output};
use crate::plan::OperatorFactory;

/// How records are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwoPhaseFormat {
    JsonLines,
    /// With a header line in every file.
    Csv,
}

impl TwoPhaseFormat {
    fn extension(self) -> &'static str {
        match self {
            TwoPhaseFormat::JsonLines => "jsonl",
            TwoPhaseFormat::Csv => "csv",
        }
    }
}

/// The exactly-once file sink.
#[derive(Debug, Clone)]
pub struct ExactlyOnceFileSink {
    store: Arc<dyn CheckpointStore>,
    dir: String,
    format: TwoPhaseFormat,
}

impl ExactlyOnceFileSink {
    /// JSON-lines files under `dir` in `store`.
    pub fn new(store: Arc<dyn CheckpointStore>, dir: &str) -> Self {
        Self {
            store,
            dir: dir.trim_end_matches('/').to_owned(),
            format: TwoPhaseFormat::JsonLines,
        }
    }

    /// CSV files (a header line each) instead.
    pub fn csv(mut self) -> Self {
        self.format = TwoPhaseFormat::Csv;
        self
    }

    /// Keys of the committed files, sorted.
    pub fn committed(&self) -> Result<Vec<String>> {
        let staging = format!("{}/_staging/", self.dir);
        Ok(self
            .store
            .list(&format!("{}/", self.dir))?
            .into_iter()
            .filter(|k| !k.starts_with(&staging))
            .collect())
    }
}

impl SinkBuilder for ExactlyOnceFileSink {
    fn name(&self) -> String {
        format!("exactly-once-file-sink({})", self.dir)
    }

    fn factory(self, schema: &SchemaRef) -> Result<OperatorFactory> {
        let schema = schema.clone();
        let sink = Arc::new(self);
        Ok(Arc::new(move |info| {
            Ok(Box::new(TwoPhaseWriter {
                sink: sink.clone(),
                schema: schema.clone(),
                subtask: info.index,
                buffer: Vec::new(),
                csv_line: String::new(),
                pending: Vec::new(),
                writer: writer_token(),
            }) as Box<dyn Operator>)
        }))
    }
}

/// A staged object waiting for its checkpoint to complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    checkpoint: u64,
    staged: String,
    target: String,
}

const PENDING: &str = "pending";

struct TwoPhaseWriter {
    sink: Arc<ExactlyOnceFileSink>,
    schema: SchemaRef,
    subtask: u32,
    /// Encoded records since the last pre-commit.
    buffer: Vec<u8>,
    csv_line: String,
    pending: Vec<Pending>,
    /// Unique to this instance (process and creation), part of its staged files' names.
    writer: String,
}

/// A name no other writer instance, in this process or another, has.
fn writer_token() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:x}{:x}{n:x}", std::process::id(), nanos)
}

impl TwoPhaseWriter {
    fn header(&self) -> Vec<u8> {
        let mut line = String::new();
        for (i, f) in self.schema.fields().iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            push_csv_text(&mut line, f.name(), b',');
        }
        line.push('\n');
        line.into_bytes()
    }

    fn commit(&self, p: &Pending) -> Result<()> {
        let store = &self.sink.store;
        match store.get(&p.staged)? {
            Some(bytes) => {
                store.put(&p.target, &bytes)?;
                store.delete(&p.staged)
            }
            None if store.get(&p.target)?.is_some() => Ok(()), // committed before a failure
            None => Err(Error::Storage(format!(
                "staged file {} of checkpoint {} is missing and was never committed",
                p.staged, p.checkpoint
            ))),
        }
    }
}

impl Operator for TwoPhaseWriter {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        match self.sink.format {
            TwoPhaseFormat::JsonLines => {
                let mut writer: LineDelimitedWriter<&mut Vec<u8>> = WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(&mut self.buffer);
                writer.write(&with_epoch_millis(&batch)?)?;
                writer.finish()?;
            }
            TwoPhaseFormat::Csv => {
                self.csv_line.clear();
                write_csv(&batch, b',', &mut self.csv_line)?;
                self.buffer.extend_from_slice(self.csv_line.as_bytes());
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        if !self.buffer.is_empty() {
            let name = format!("part-{}-{checkpoint_id}", self.subtask);
            let staged = format!("{}/_staging/{name}-{}", self.sink.dir, self.writer);
            let target = format!("{}/{name}.{}", self.sink.dir, self.sink.format.extension());
            let bytes = match self.sink.format {
                TwoPhaseFormat::Csv => {
                    let mut b = self.header();
                    b.extend_from_slice(&self.buffer);
                    b
                }
                TwoPhaseFormat::JsonLines => std::mem::take(&mut self.buffer),
            };
            if let Err(e) = self.sink.store.put(&staged, &bytes) {
                // Keep the records for the next checkpoint; this one is declined.
                if self.sink.format == TwoPhaseFormat::JsonLines {
                    self.buffer = bytes;
                }
                return Err(e);
            }
            self.buffer.clear();
            self.pending.push(Pending {
                checkpoint: checkpoint_id,
                staged,
                target,
            });
        }
        for p in &self.pending {
            out.list_entry(PENDING, encode(p)?);
        }
        Ok(())
    }

    fn checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        let (done, later): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.checkpoint <= checkpoint_id);
        self.pending = later;
        for (i, p) in done.iter().enumerate() {
            if let Err(e) = self.commit(p) {
                // Not committed yet: keep them, a later notification or a restore retries.
                self.pending.extend(done[i..].iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        // Everything pending in a completed checkpoint belongs to it: commit now.
        for bytes in state.list(PENDING) {
            let p: Pending = decode(bytes)?;
            self.commit(&p)?;
        }
        // Staged files this subtask index wrote for checkpoints after the restored one never
        // completed: they are garbage (only this subtask writes its index's names).
        let prefix = format!("{}/_staging/part-{}-", self.sink.dir, self.subtask);
        for key in self.sink.store.list(&prefix)? {
            let rest = &key[prefix.len()..];
            let orphan = rest
                .split('-')
                .next()
                .unwrap_or(rest)
                .parse::<u64>()
                .is_ok_and(|id| id > state.checkpoint_id);
            if orphan {
                self.sink.store.delete(&key)?;
            }
        }
        Ok(())
    }
}
