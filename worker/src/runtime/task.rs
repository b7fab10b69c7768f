//! One subtask of one task: a thread that runs a chain of operators (headed by a source, or fed by
//! input channels) in a loop, like Flink's mailbox-driven `StreamTask`. Blocking calls (a full channel,
//! later RocksDB) block this thread only; nothing here runs on an async executor.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, Select};

use super::channel::{EdgeWriter, Message, WatermarkValve};
use super::metrics::SubtaskMetrics;
use crate::connectors::dead_letter;
use crate::error::{Error, Result};
use crate::operator::{Emitted, Operator, Output, Source, SourceContext, SourcePoll};
use crate::time::{
    MAX_WATERMARK, MIN_WATERMARK, Timestamp, WatermarkStrategy, max_event_time, now_millis,
};

/// A node of the chain with the writers of the edges that leave it.
pub(crate) struct ChainNode {
    /// `None` for the source at the head of a source task.
    pub(crate) operator: Option<Box<dyn Operator>>,
    /// (port, writer) of every edge leaving this node.
    pub(crate) writers: Vec<(usize, EdgeWriter)>,
}

/// The chain of one subtask.
pub(crate) struct Chain {
    pub(crate) nodes: Vec<ChainNode>,
    pub(crate) metrics: Arc<SubtaskMetrics>,
}

impl Chain {
    /// Routes what node `pos` emitted: to the next node of the chain and to the edges leaving `pos`.
    fn deliver(&mut self, pos: usize, items: Vec<Emitted>) -> Result<()> {
        for item in items {
            match item {
                Emitted::Data(batch) => {
                    for (port, writer) in &mut self.nodes[pos].writers {
                        if *port == 0 {
                            writer.send_data(batch.clone())?;
                        }
                    }
                    if pos + 1 < self.nodes.len() {
                        self.call(pos + 1, |op, out| op.process(0, batch, out))?;
                    }
                }
                Emitted::Side(port, batch) => {
                    for (p, writer) in &mut self.nodes[pos].writers {
                        if *p == port {
                            writer.send_data(batch.clone())?;
                        }
                    }
                }
                Emitted::Watermark(watermark) => {
                    if pos + 1 == self.nodes.len() {
                        self.metrics.watermark.store(watermark, Ordering::Relaxed);
                    }
                    let message = Message::Watermark(watermark);
                    for (_, writer) in &mut self.nodes[pos].writers {
                        writer.broadcast(&message)?;
                    }
                    if pos + 1 < self.nodes.len() {
                        self.watermark_at(pos + 1, watermark)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Calls the operator at `pos` and routes its output.
    fn call(
        &mut self,
        pos: usize,
        f: impl FnOnce(&mut dyn Operator, &mut Output) -> Result<()>,
    ) -> Result<()> {
        let mut out = Output::default();
        if let Some(op) = self.nodes[pos].operator.as_deref_mut() {
            f(op, &mut out)?;
        }
        self.deliver(pos, out.items)
    }

    fn watermark_at(&mut self, pos: usize, watermark: Timestamp) -> Result<()> {
        let forwards = self.nodes[pos]
            .operator
            .as_ref()
            .is_some_and(|op| op.forwards_watermarks());
        self.call(pos, |op, out| {
            op.on_watermark(watermark, out)?;
            if forwards {
                out.emit_watermark(watermark);
            }
            Ok(())
        })
    }

    /// Data entering the head operator of an operator task.
    fn input(&mut self, input: usize, batch: RecordBatch) -> Result<()> {
        self.metrics
            .records_in
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        self.call(0, |op, out| op.process(input, batch, out))
    }

    fn next_processing_time(&self) -> Option<Timestamp> {
        self.nodes
            .iter()
            .filter_map(|n| n.operator.as_ref()?.next_processing_time())
            .min()
    }

    fn fire_processing_time(&mut self, now: Timestamp) -> Result<()> {
        for pos in 0..self.nodes.len() {
            let due = self.nodes[pos]
                .operator
                .as_ref()
                .and_then(|op| op.next_processing_time())
                .is_some_and(|t| t <= now);
            if due {
                self.call(pos, |op, out| op.on_processing_time(now, out))?;
            }
        }
        Ok(())
    }

    fn broadcast_all(&mut self, message: &Message) -> Result<()> {
        for node in &mut self.nodes {
            for (_, writer) in &mut node.writers {
                writer.broadcast(message)?;
            }
        }
        Ok(())
    }

    /// Every input ended: flush each operator in chain order, then end every outgoing edge.
    fn finish(&mut self) -> Result<()> {
        for pos in 0..self.nodes.len() {
            self.call(pos, |op, out| op.end_of_input(out))?;
        }
        self.broadcast_all(&Message::EndOfInput)?;
        self.update_records_out();
        Ok(())
    }

    fn update_records_out(&self) {
        let total: u64 = self
            .nodes
            .iter()
            .flat_map(|n| n.writers.iter().map(|(_, w)| w.records_out))
            .sum();
        self.metrics.records_out.store(total, Ordering::Relaxed);
    }
}

/// Runs a source subtask until its input ends, the job is cancelled, or something fails.
pub(crate) fn run_source(
    mut source: Box<dyn Source>,
    mut ctx: SourceContext,
    watermarks: Option<(WatermarkStrategy, usize)>,
    mut chain: Chain,
    cancelled: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let mut max_seen = MIN_WATERMARK;
    let mut emitted = MIN_WATERMARK;
    let mut idle = false;
    let mut waiting_since: Option<Timestamp> = None;
    loop {
        if cancelled.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let now = now_millis();
        if chain.next_processing_time().is_some_and(|t| t <= now) {
            chain.fire_processing_time(now)?;
        }
        let poll = source.poll(&mut ctx)?;
        if !ctx.dead_letters.is_empty() {
            let batch = dead_letter::to_batch(std::mem::take(&mut ctx.dead_letters))?;
            chain.deliver(0, vec![Emitted::Side(dead_letter::PORT, batch)])?;
        }
        chain
            .metrics
            .malformed
            .store(ctx.malformed, Ordering::Relaxed);
        match poll {
            SourcePoll::Data(batch) | SourcePoll::SplitData(_, batch) => {
                waiting_since = None;
                if idle {
                    idle = false;
                    chain.broadcast_all(&Message::Idle(false))?;
                }
                chain
                    .metrics
                    .records_in
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                let mut items = Vec::with_capacity(2);
                if let Some((strategy, column)) = &watermarks
                    && let Some(max) = max_event_time(batch.column(*column))?
                {
                    max_seen = max_seen.max(max);
                    let watermark = strategy.watermark_for(max_seen);
                    items.push(Emitted::Data(batch));
                    if watermark > emitted {
                        emitted = watermark;
                        items.push(Emitted::Watermark(watermark));
                    }
                } else {
                    items.push(Emitted::Data(batch));
                }
                chain.deliver(0, items)?;
                chain.update_records_out();
            }
            SourcePoll::Watermark(watermark) => {
                if watermark > emitted {
                    emitted = watermark;
                    chain.deliver(0, vec![Emitted::Watermark(watermark)])?;
                }
            }
            SourcePoll::Pending(wait) => {
                let since = *waiting_since.get_or_insert(now);
                let timeout = watermarks.as_ref().and_then(|(s, _)| s.idle_timeout_ms);
                if !idle && timeout.is_some_and(|t| now - since >= t) {
                    idle = true;
                    chain.broadcast_all(&Message::Idle(true))?;
                }
                let until_timer = chain
                    .next_processing_time()
                    .map(|t| Duration::from_millis(u64::try_from(t - now).unwrap_or(0)));
                std::thread::sleep(until_timer.map_or(wait, |t| t.min(wait)));
            }
            SourcePoll::Finished => {
                if emitted < MAX_WATERMARK {
                    chain.deliver(0, vec![Emitted::Watermark(MAX_WATERMARK)])?;
                }
                return chain.finish();
            }
        }
    }
}

/// Runs an operator subtask until every input has ended or something fails.
pub(crate) fn run_operator(
    mut chain: Chain,
    inputs: Vec<(Receiver<Message>, usize)>,
) -> Result<()> {
    let mut valve = WatermarkValve::new(inputs.len());
    let mut select = Select::new();
    for (receiver, _) in &inputs {
        select.recv(receiver);
    }
    let mut barriers: Vec<(u64, usize)> = Vec::new();
    loop {
        if valve.all_finished() {
            return chain.finish();
        }
        let deadline = chain.next_processing_time();
        let operation = match deadline {
            None => select.select(),
            Some(t) => {
                let now = now_millis();
                let wait = Duration::from_millis(u64::try_from(t - now).unwrap_or(0));
                match select.select_timeout(wait) {
                    Ok(op) => op,
                    Err(_) => {
                        chain.fire_processing_time(now_millis())?;
                        continue;
                    }
                }
            }
        };
        let channel = operation.index();
        let (receiver, input) = &inputs[channel];
        let message = operation.recv(receiver).map_err(|_| Error::Cancelled)?;
        match message {
            Message::Data(batch) => chain.input(*input, batch)?,
            Message::Watermark(w) => {
                if let Some(combined) = valve.watermark(channel, w) {
                    chain.watermark_at(0, combined)?;
                }
            }
            Message::Idle(is_idle) => {
                let (advanced, status) = valve.idle(channel, is_idle);
                if let Some(combined) = advanced {
                    chain.watermark_at(0, combined)?;
                }
                if let Some(status) = status {
                    chain.broadcast_all(&Message::Idle(status))?;
                }
            }
            Message::Barrier(id) => {
                // Forwarded once every channel has delivered it (alignment comes with checkpoints).
                let seen = match barriers.iter_mut().find(|(b, _)| *b == id) {
                    Some((_, n)) => {
                        *n += 1;
                        *n
                    }
                    None => {
                        barriers.push((id, 1));
                        1
                    }
                };
                if seen == inputs.len() {
                    barriers.retain(|(b, _)| *b != id);
                    chain.broadcast_all(&Message::Barrier(id))?;
                }
            }
            Message::EndOfInput => {
                select.remove(channel);
                if let Some(combined) = valve.finish(channel) {
                    chain.watermark_at(0, combined)?;
                }
            }
        }
        chain.update_records_out();
    }
}
