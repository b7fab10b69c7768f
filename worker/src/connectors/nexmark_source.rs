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

use arrow::datatypes::SchemaRef;

use super::SourceBuilder;
use super::nexmark::{self, EventKind, NexmarkConfig};
use super::throttle::{Admit, Throttle};
use crate::error::{Error, Result};
use crate::operator::{Source, SourceContext, SourcePoll};
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
        let full = nexmark::schema(self.kind);
        let indices = columns
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
            .collect::<Result<Vec<_>>>()?;
        self.schema = Arc::new(full.project(&indices)?);
        self.projection = Some(indices);
        Ok(self)
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
        format!("nexmark({})", kind_name(self.kind))
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn factory(self) -> SourceFactory {
        let spec = Arc::new(self);
        Arc::new(move |info| {
            let p = u64::from(info.parallelism.max(1));
            let i = u64::from(info.index);
            let end = spec.count.unwrap_or(UNBOUNDED_END);
            // Indexes i, i + p, … below `end`.
            let total = if end > i { (end - i - 1) / p + 1 } else { 0 };
            let throttle = spec
                .rate
                .map(|r| Throttle::new(r as f64 / info.parallelism.max(1) as f64));
            Ok(Box::new(NexmarkSubtask {
                spec: spec.clone(),
                first: i,
                step: p,
                next: 0,
                total,
                throttle,
            }) as Box<dyn Source>)
        })
    }
}

struct NexmarkSubtask {
    spec: Arc<NexmarkSource>,
    /// Index of this subtask's first event.
    first: u64,
    step: u64,
    /// How many of this subtask's events were generated.
    next: u64,
    /// How many it generates in all.
    total: u64,
    throttle: Option<Throttle>,
}

impl Source for NexmarkSubtask {
    fn poll(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll> {
        let left = self.total - self.next;
        if left == 0 {
            return Ok(SourcePoll::Finished);
        }
        let mut len = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(ctx.batch_size.max(1));
        if let Some(throttle) = &mut self.throttle {
            match throttle.admit(len) {
                Admit::Rows(n) => len = len.min(n),
                Admit::Wait(wait) => return Ok(SourcePoll::Pending(wait)),
            }
        }
        let start = self.first + self.next * self.step;
        let batch = nexmark::batch(
            self.spec.kind,
            &self.spec.cfg,
            start,
            self.step,
            len,
            self.spec.projection.as_deref(),
        )?;
        self.next += len as u64;
        Ok(SourcePoll::Data(batch))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use strom_api::ErrorPolicy;

    use super::*;
    use crate::operator::SubtaskInfo;

    fn drain(source: NexmarkSource, index: u32, parallelism: u32, batch: usize) -> Vec<u64> {
        let name = source.name();
        let factory = source.factory();
        let info = SubtaskInfo {
            name,
            index,
            parallelism,
            max_parallelism: 128,
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
