//! A sink that reduces its input to a count and an order-independent checksum, so that a job's whole
//! output can be compared with another engine's (the Flink peer computes the same numbers, see
//! `bench/flink/README.md`) without the sink costing anything measurable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::connectors::SinkBuilder;
use crate::error::Result;
use crate::keys::field_index;
use crate::operator::{Operator, Output};
use crate::plan::OperatorFactory;

/// How one row's selected integer fields become its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowHash {
    /// `h = 0; for f: h = h * 31 + f` (wrapping).
    Fold,
    /// `(f0 * 31 + f1) * 17 + f2` (wrapping): the windowed count's `(key, window_end, count)`.
    WindowedCount,
}

impl RowHash {
    fn apply(self, fields: &[i64]) -> i64 {
        match self {
            RowHash::Fold => fields
                .iter()
                .fold(0i64, |h, &f| h.wrapping_mul(31).wrapping_add(f)),
            RowHash::WindowedCount => {
                let (k, w, c) = (
                    fields[0],
                    fields.get(1).copied().unwrap_or(0),
                    fields.get(2).copied().unwrap_or(0),
                );
                k.wrapping_mul(31)
                    .wrapping_add(w)
                    .wrapping_mul(17)
                    .wrapping_add(c)
            }
        }
    }
}

/// Counts rows and sums their hashes over the named integer or timestamp fields.
#[derive(Debug, Clone)]
pub struct ChecksumSink {
    fields: Vec<String>,
    hash: RowHash,
    rows: Arc<AtomicU64>,
    sum: Arc<AtomicU64>,
}

impl ChecksumSink {
    /// A checksum over `fields` with `hash`.
    pub fn new(fields: &[&str], hash: RowHash) -> Self {
        Self {
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            hash,
            rows: Arc::default(),
            sum: Arc::default(),
        }
    }

    /// Rows seen.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// The checksum as an unsigned 64-bit number (the same bits as the Flink peer's).
    pub fn checksum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }
}

struct Checksum {
    columns: Vec<usize>,
    hash: RowHash,
    rows: Arc<AtomicU64>,
    sum: Arc<AtomicU64>,
    local_rows: u64,
    local_sum: i64,
    values: Vec<i64>,
}

impl Operator for Checksum {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        let columns: Vec<_> = self
            .columns
            .iter()
            .map(|&c| cast(batch.column(c), &DataType::Int64))
            .collect::<Result<_, _>>()?;
        let arrays: Vec<_> = columns
            .iter()
            .map(|c| c.as_primitive::<Int64Type>())
            .collect();
        for row in 0..batch.num_rows() {
            self.values.clear();
            self.values.extend(
                arrays
                    .iter()
                    .map(|a| if a.is_null(row) { 0 } else { a.value(row) }),
            );
            self.local_sum = self.local_sum.wrapping_add(self.hash.apply(&self.values));
        }
        self.local_rows += batch.num_rows() as u64;
        Ok(())
    }

    fn end_of_input(&mut self, _out: &mut Output) -> Result<()> {
        self.rows.fetch_add(self.local_rows, Ordering::Relaxed);
        // Wrapping addition of the two's-complement bits.
        let mut current = self.sum.load(Ordering::Relaxed);
        loop {
            let next = current.wrapping_add(self.local_sum as u64);
            match self
                .sum
                .compare_exchange(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        self.local_rows = 0;
        self.local_sum = 0;
        Ok(())
    }
}

impl SinkBuilder for ChecksumSink {
    fn name(&self) -> String {
        format!("checksum({})", self.fields.join(", "))
    }

    fn factory(self, schema: &SchemaRef) -> Result<OperatorFactory> {
        let name = self.name();
        let columns = self
            .fields
            .iter()
            .map(|f| field_index(&name, schema, f))
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(move |_| {
            Ok(Box::new(Checksum {
                columns: columns.clone(),
                hash: self.hash,
                rows: self.rows.clone(),
                sum: self.sum.clone(),
                local_rows: 0,
                local_sum: 0,
                values: Vec::new(),
            }) as Box<dyn Operator>)
        }))
    }
}
