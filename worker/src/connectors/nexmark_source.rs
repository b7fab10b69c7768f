//! The Nexmark source: persons, auctions or bids from the columnar generator in
//! [`super::nexmark`], split over parallel subtasks, with projection pushdown and an optional
//! wall-clock rate limit.
//!
//! Subtask `i` of `p` generates the events `k = i, i + p, i + 2p, …` (below the count) of its
//! kind, `batch_size` at a time, so the union over all subtasks is exactly the events `0..count`
//! whatever the parallelism, and `date_time` ascends within each subtask
//! (`WatermarkStrategy::ascending("date_time")` holds). This module only schedules generation; the
//! events themselves (and their agreement with the Java twin) are the generator's business.

use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::SourceBuilder;
use super::interleaved;
use super::nexmark::{self, EventKind, NexmarkConfig, RowFilter};
use crate::error::{Error, Result};
use crate::plan::SourceFactory;

/// Unbounded sources stop at this index: the generator is exact only below 2^62.
const UNBOUNDED_END: u64 = 1 << 62;

/// A Nexmark source of one kind of event (see the module docs for how it is split).
#[derive(Debug, Clone)]
pub struct NexmarkSource {
    cfg: NexmarkConfig,
    kind: EventKind,
    count: Option<u64>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    rate: Option<u64>,
    /// The pushed-down filter, and how it reads.
    filter: Option<(RowFilter, String)>,
}

impl NexmarkSource {
    /// The first `count` events of `kind` (`None`: unbounded), all columns, no rate limit.
    pub fn new(kind: EventKind, cfg: NexmarkConfig, count: Option<u64>) -> Self {
        Self {
            cfg,
            kind,
            count,
            projection: None,
            schema: nexmark::schema(kind),
            rate: None,
            filter: None,
        }
    }

    /// Bids `0..count` (`None`: unbounded).
    pub fn bids(cfg: NexmarkConfig, count: Option<u64>) -> Self {
        Self::new(EventKind::Bid, cfg, count)
    }

    /// Auctions `0..count` (`None`: unbounded).
    pub fn auctions(cfg: NexmarkConfig, count: Option<u64>) -> Self {
        Self::new(EventKind::Auction, cfg, count)
    }

    /// Persons `0..count` (`None`: unbounded).
    pub fn persons(cfg: NexmarkConfig, count: Option<u64>) -> Self {
        Self::new(EventKind::Person, cfg, count)
    }

    /// Generates only these columns, in this order (projection pushdown: the others are never
    /// computed). Fails on a name that is not a column of the kind's schema.
    pub fn with_projection(mut self, columns: &[&str]) -> Result<Self> {
        let indices = self.indices(columns)?;
        self.schema = Arc::new(nexmark::schema(self.kind).project(&indices)?);
        self.projection = Some(indices);
        Ok(self)
    }

    /// Emits only the rows `predicate` holds true for, given a batch of `columns` (in this order):
    /// the other columns are generated only for those rows (Flink's filter push-down). Event
    /// time advances by the rows emitted, so a planner pushes a filter only where nothing
    /// downstream reads the watermark. `text` says what the predicate is (the source's name
    /// shows it).
    pub fn with_filter(
        mut self,
        columns: &[&str],
        text: &str,
        predicate: impl Fn(&RecordBatch) -> Result<BooleanArray> + Send + Sync + 'static,
    ) -> Result<Self> {
        let filter = RowFilter {
            columns: self.indices(columns)?,
            predicate: Arc::new(move |batch| {
                predicate(batch)
                    .map_err(|e| ArrowError::ComputeError(format!("pushed-down filter: {e}")))
            }),
        };
        self.filter = Some((filter, text.to_owned()));
        Ok(self)
    }

    /// The indices of `columns` in the kind's schema.
    fn indices(&self, columns: &[&str]) -> Result<Vec<usize>> {
        let full = nexmark::schema(self.kind);
        columns
            .iter()
            .map(|c| {
                full.index_of(c).map_err(|_| {
                    Error::plan(
                        self.name(),
                        format!(
                            "no column '{c}' in {}; it has {}",
                            kind_name(self.kind),
                            full.fields()
                                .iter()
                                .map(|f| f.name().as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()
    }

    /// Emits at most `events_per_sec` events per second of wall-clock time in total, shared equally
    /// by the subtasks; 0 means no limit (the default). Event time is unaffected.
    pub fn with_rate_limit(mut self, events_per_sec: u64) -> Self {
        self.rate = (events_per_sec > 0).then_some(events_per_sec);
        self
    }
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Person => "persons",
        EventKind::Auction => "auctions",
        EventKind::Bid => "bids",
    }
}

impl SourceBuilder for NexmarkSource {
    fn name(&self) -> String {
        match &self.filter {
            None => format!("nexmark({})", kind_name(self.kind)),
            Some((_, text)) => format!("nexmark({} where {text})", kind_name(self.kind)),
        }
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn factory(self) -> SourceFactory {
        let spec = Arc::new(self);
        Arc::new(move |info| {
            Ok(interleaved::subtask(
                spec.clone(),
                info,
                spec.count.unwrap_or(UNBOUNDED_END),
                spec.rate,
            ))
        })
    }
}

impl interleaved::IndexedBatches for NexmarkSource {
    fn batch(&self, start: u64, step: u64, len: usize) -> Result<RecordBatch> {
        let projection = self.projection.as_deref();
        match &self.filter {
            None => nexmark::batch(self.kind, &self.cfg, start, step, len, projection),
            Some((filter, _)) => {
                nexmark::batch_where(self.kind, &self.cfg, (start, step, len), projection, filter)
            }
        }
        .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use strom_api::ErrorPolicy;

    use super::*;
    use crate::operator::{SourceContext, SourcePoll, SubtaskInfo};

    fn drain(source: NexmarkSource, index: u32, parallelism: u32, batch: usize) -> Vec<u64> {
        let name = source.name();
        let factory = source.factory();
        let info = SubtaskInfo {
            name,
            index,
            parallelism,
            max_parallelism: 128,
            state: Default::default(),
        };
        let mut s = factory(&info).unwrap();
        let mut ctx = SourceContext::new(info, batch, ErrorPolicy::Fail);
        let mut sizes = Vec::new();
        loop {
            match s.poll(&mut ctx).unwrap() {
                SourcePoll::Data(b) => sizes.push(b.num_rows() as u64),
                SourcePoll::Finished => return sizes,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn nexmark_subtasks_split_the_count() {
        let cfg = NexmarkConfig::default();
        for p in 1..=5u32 {
            let total: u64 = (0..p)
                .map(|i| {
                    drain(NexmarkSource::bids(cfg.clone(), Some(23)), i, p, 4)
                        .iter()
                        .sum::<u64>()
                })
                .sum();
            assert_eq!(total, 23, "p={p}");
        }
        assert_eq!(
            drain(NexmarkSource::persons(cfg, Some(10)), 0, 1, 4),
            vec![4, 4, 2]
        );
    }

    #[test]
    fn nexmark_projection_rejects_unknown_columns() {
        let err = NexmarkSource::bids(NexmarkConfig::default(), Some(1))
            .with_projection(&["price", "nope"])
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let ok = NexmarkSource::bids(NexmarkConfig::default(), Some(1))
            .with_projection(&["date_time", "auction"])
            .unwrap();
        let names: Vec<_> = ok
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["date_time", "auction"]);
    }
}
