//! Keys and key groups: how a keyed stream's records are spread over subtasks.
//!
//! A key is the row-format encoding (see [`crate::row`]) of the record's key columns. Its **key group**
//! is `xxh3_64(key bytes) mod max_parallelism` (XXH3, 64-bit, seed 0). A subtask `i` of an operator at
//! parallelism `p` owns the contiguous key-group range `[ceil(i * m / p), ceil((i + 1) * m / p))` with
//! `m = max_parallelism`, and key group `g` belongs to subtask `g * p / m`, exactly as Flink assigns
//! them. Both the key encoding and this mapping are part of the savepoint format: keyed state is
//! stored by key group, which is what lets it be redistributed when a job is rescaled.

use std::ops::Range;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::row;

/// The key group a key belongs to.
#[inline]
pub fn key_group(key: &[u8], max_parallelism: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(max_parallelism.max(1))) as u32
}

/// The subtask of an operator at `parallelism` that owns `key_group`.
#[inline]
pub fn subtask_for_key_group(key_group: u32, parallelism: u32, max_parallelism: u32) -> u32 {
    (u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism.max(1))) as u32
}

/// The key groups subtask `index` of an operator at `parallelism` owns.
pub fn key_group_range(index: u32, parallelism: u32, max_parallelism: u32) -> Range<u32> {
    let (i, p, m) = (
        u64::from(index),
        u64::from(parallelism.max(1)),
        u64::from(max_parallelism),
    );
    let start = (i * m).div_ceil(p);
    let end = ((i + 1) * m).div_ceil(p);
    (start as u32)..(end as u32)
}

/// Which columns form the key of a keyed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Names of the key columns, in order.
    pub names: Vec<String>,
    /// Their indices in the stream's schema.
    pub indices: Vec<usize>,
}

impl KeySpec {
    /// Resolves `names` against `schema`, rejecting unknown fields and types that cannot be keys.
    pub fn resolve(operator: &str, schema: &SchemaRef, names: &[&str]) -> Result<Self> {
        if names.is_empty() {
            return Err(Error::plan(operator, "a key needs at least one field"));
        }
        let mut indices = Vec::with_capacity(names.len());
        for name in names {
            let index = field_index(operator, schema, name)?;
            let data_type = schema.field(index).data_type();
            if !row::is_key_type(data_type) {
                return Err(Error::plan(
                    operator,
                    format!(
                        "field '{name}' has type {data_type}, which cannot be a key \
                         (keys are integers, strings, booleans, dates or timestamps)"
                    ),
                ));
            }
            indices.push(index);
        }
        Ok(Self {
            names: names.iter().map(|s| (*s).to_owned()).collect(),
            indices,
        })
    }

    /// The key columns of `batch`.
    pub fn columns(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        self.indices
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect()
    }

    /// The key columns' types in `schema`.
    pub fn types<'a>(&self, schema: &'a SchemaRef) -> Vec<&'a DataType> {
        self.indices
            .iter()
            .map(|&i| schema.field(i).data_type())
            .collect()
    }
}

/// The index of field `name`, or a planning error naming the operator and the field.
pub fn field_index(operator: &str, schema: &SchemaRef, name: &str) -> Result<usize> {
    schema.index_of(name).map_err(|_| {
        let known: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        Error::plan(
            operator,
            format!(
                "unknown field '{name}' (the input has {})",
                known.join(", ")
            ),
        )
    })
}

/// The encoded keys of every row of a batch, in one buffer.
#[derive(Debug, Default)]
pub struct KeyRows {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl KeyRows {
    /// Encodes the key of every row of `batch`.
    pub fn encode(&mut self, spec: &KeySpec, batch: &RecordBatch) -> Result<()> {
        self.data.clear();
        self.ends.clear();
        let n = batch.num_rows();
        self.ends.reserve(n);
        if let [index] = spec.indices[..] {
            let column = batch.column(index);
            if column.data_type() == &DataType::Int64 && column.null_count() == 0 {
                // The common case, without per-value dispatch.
                self.data.reserve(n * 9);
                for &v in column.as_primitive::<Int64Type>().values().iter() {
                    self.data.push(1);
                    self.data
                        .extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
                    self.ends.push(self.data.len());
                }
                return Ok(());
            }
        }
        let columns = spec.columns(batch);
        for i in 0..n {
            row::encode_row(&columns, i, &mut self.data)?;
            self.ends.push(self.data.len());
        }
        Ok(())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The key of row `i`.
    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    /// Iterates over the keys in row order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_all_key_groups_and_agree_with_assignment() {
        for m in [1u32, 7, 128, 1000] {
            for p in 1..=m.min(9) {
                let mut next = 0;
                for i in 0..p {
                    let r = key_group_range(i, p, m);
                    assert_eq!(r.start, next, "m={m} p={p} i={i}");
                    for g in r.clone() {
                        assert_eq!(subtask_for_key_group(g, p, m), i, "m={m} p={p} g={g}");
                    }
                    next = r.end;
                }
                assert_eq!(next, m);
            }
        }
    }

    #[test]
    fn key_group_of_a_key_is_stable() {
        // Part of the savepoint format: these values must never change.
        let mut key = Vec::new();
        row::encode_owned(&row::Value::Int(42), &DataType::Int64, &mut key).unwrap();
        assert_eq!(key, [1, 0x80, 0, 0, 0, 0, 0, 0, 42]);
        assert_eq!(
            key_group(&key, 128),
            (xxhash_rust::xxh3::xxh3_64(&key) % 128) as u32
        );
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2D06_8005_38D3_94C2);
    }
}
