//! A source over data given in the program: batches and explicit watermarks, in order. Subtask 0
//! produces everything; the others end at once. Its items are replayed exactly, which makes it the
//! scripted input of tests (where lateness must not depend on timing).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::SourceBuilder;
use crate::error::Result;
use crate::operator::{Source, SourceContext, SourcePoll};
use crate::plan::SourceFactory;
use crate::row::{Row, batch_from_rows};
use crate::time::Timestamp;

/// One item of a collection source.
#[derive(Debug, Clone)]
pub enum Item {
    Batch(RecordBatch),
    Watermark(Timestamp),
}

/// A source replaying `items`.
#[derive(Debug, Clone)]
pub struct CollectionSource {
    name: String,
    schema: SchemaRef,
    items: Arc<Vec<Item>>,
}

impl CollectionSource {
    /// A source of these items.
    pub fn new(name: &str, schema: SchemaRef, items: Vec<Item>) -> Self {
        Self {
            name: name.into(),
            schema,
            items: Arc::new(items),
        }
    }

    /// A source of rows, `per_batch` rows to a batch.
    pub fn from_rows(
        name: &str,
        schema: SchemaRef,
        rows: &[Row],
        per_batch: usize,
    ) -> Result<Self> {
        let items = rows
            .chunks(per_batch.max(1))
            .map(|chunk| Ok(Item::Batch(batch_from_rows(&schema, chunk)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::new(name, schema, items))
    }
}

struct Replay {
    items: Arc<Vec<Item>>,
    next: usize,
}

impl Source for Replay {
    fn poll(&mut self, _ctx: &mut SourceContext) -> Result<SourcePoll> {
        let Some(item) = self.items.get(self.next) else {
            return Ok(SourcePoll::Finished);
        };
        self.next += 1;
        Ok(match item {
            Item::Batch(b) => SourcePoll::Data(b.clone()),
            Item::Watermark(w) => SourcePoll::Watermark(*w),
        })
    }
}

impl SourceBuilder for CollectionSource {
    fn name(&self) -> String {
        format!("collection({})", self.name)
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn factory(self) -> SourceFactory {
        let items = self.items;
        Arc::new(move |info| {
            let items = if info.index == 0 {
                items.clone()
            } else {
                Arc::new(Vec::new())
            };
            Ok(Box::new(Replay { items, next: 0 }) as Box<dyn Source>)
        })
    }
}
