//! Assigns event time and generates watermarks in the middle of a stream (Flink's
//! `assignTimestampsAndWatermarks`). Watermarks from upstream are dropped; this operator's own take
//! their place, one after every batch that moves them forward.

use arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::operator::{Operator, Output};
use crate::time::{MAX_WATERMARK, MIN_WATERMARK, Timestamp, WatermarkStrategy, max_event_time};

/// The watermark generator operator.
pub struct WatermarkAssigner {
    pub(crate) strategy: WatermarkStrategy,
    pub(crate) column: usize,
    pub(crate) max_seen: Timestamp,
    pub(crate) emitted: Timestamp,
}

impl WatermarkAssigner {
    pub(crate) fn new(strategy: WatermarkStrategy, column: usize) -> Self {
        Self {
            strategy,
            column,
            max_seen: MIN_WATERMARK,
            emitted: MIN_WATERMARK,
        }
    }
}

impl Operator for WatermarkAssigner {
    fn process(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let array = batch.column(self.column);
        let max = max_event_time(array)?;
        out.emit(batch);
        if let Some(max) = max {
            self.max_seen = self.max_seen.max(max);
            let watermark = self.strategy.watermark_for(self.max_seen);
            if watermark > self.emitted {
                self.emitted = watermark;
                out.emit_watermark(watermark);
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Output) -> Result<()> {
        // Only the end of input passes through: it is what fires every remaining window.
        if watermark == MAX_WATERMARK && self.emitted < MAX_WATERMARK {
            self.emitted = MAX_WATERMARK;
            out.emit_watermark(MAX_WATERMARK);
        }
        Ok(())
    }

    fn forwards_watermarks(&self) -> bool {
        false
    }
}
