//! One subtask of one task: a thread that runs a chain of operators (headed by a source, or fed by
//! input channels) in a loop, like Flink's mailbox-driven `StreamTask`. Blocking calls (a full channel,
//! later RocksDB) block this thread only; nothing here runs on an async executor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, Select};

use super::channel::{Barrier, EdgeWriter, Message, WatermarkValve};
use super::checkpointing::{Control, Report};
use super::metrics::SubtaskMetrics;
use crate::checkpoint::alignment::{Action, Aligner, Mode};
use crate::checkpoint::state::StateWriter;
use crate::checkpoint::storage::{Acked, AckedState};
use crate::connectors::dead_letter;
use crate::error::{Error, Result};
use crate::operator::{Emitted, Operator, Output, Source, SourceContext, SourcePoll};
use crate::time::{
    MAX_WATERMARK, MIN_WATERMARK, Timestamp, WatermarkStrategy, max_event_time, now_millis,
};

/// The id operators see for the implicit checkpoint at the end of a job without checkpointing.
pub const FINAL_CHECKPOINT: u64 = u64::MAX;

/// A node of the chain with the writers of the edges that leave it.
pub(crate) struct ChainNode {
    /// The node's stable id in snapshots.
    pub(crate) uid: String,
    /// `None` for the source at the head of a source task.
    pub(crate) operator: Option<Box<dyn Operator>>,
    /// (port, writer) of every edge leaving this node.
    pub(crate) writers: Vec<(usize, EdgeWriter)>,
}

/// The chain of one subtask.
pub(crate) struct Chain {
    pub(crate) nodes: Vec<ChainNode>,
    pub(crate) metrics: Arc<SubtaskMetrics>,
    pub(crate) index: u32,
    pub(crate) parallelism: u32,
    pub(crate) max_parallelism: u32,
    /// In-flight records restored from an unaligned checkpoint, processed before any new input.
    pub(crate) replay: Vec<(usize, RecordBatch)>,
}

/// The snapshot section holding an unaligned checkpoint's in-flight records.
pub(crate) const IN_FLIGHT: &str = "in-flight";

/// An unaligned checkpoint in progress at an operator: its state, taken at the first barrier, and
/// the records recorded since on the channels whose barrier has not come yet.
struct InFlight {
    id: u64,
    savepoint: bool,
    states: Vec<AckedState>,
    records: Vec<(usize, RecordBatch)>,
}

/// Encodes in-flight records (input, Arrow IPC stream) as section records.
fn encode_in_flight(records: &[(usize, RecordBatch)]) -> Result<Vec<u8>> {
    let mut section = Vec::new();
    for (input, batch) in records {
        let mut ipc = Vec::new();
        {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema())?;
            w.write(batch)?;
            w.finish()?;
        }
        crate::checkpoint::state::push_record(&mut section, &(*input as u32, ipc))?;
    }
    Ok(section)
}

/// Decodes what [`encode_in_flight`] wrote.
pub(crate) fn decode_in_flight(section: &[u8]) -> Result<Vec<(usize, RecordBatch)>> {
    let mut out = Vec::new();
    for record in crate::checkpoint::state::records(section) {
        let (input, ipc): (u32, Vec<u8>) = crate::checkpoint::state::decode(record?)?;
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
        for batch in reader {
            out.push((input as usize, batch?));
        }
    }
    Ok(out)
}

/// A subtask's line to the checkpoint coordinator.
pub(crate) struct Link {
    /// This subtask's number for the coordinator.
    pub(crate) task: usize,
    /// Triggers (sources), completions and aborts. Never sends when checkpointing is off.
    pub(crate) control: Receiver<Control>,
    /// `None` when checkpointing is off.
    pub(crate) reports: Option<crossbeam_channel::Sender<Report>>,
    pub(crate) mode: Mode,
}

impl Link {
    fn checkpointing(&self) -> bool {
        self.reports.is_some()
    }

    fn report(&self, report: Report) {
        if let Some(r) = &self.reports {
            // The coordinator is gone only when the job is ending.
            let _ = r.send(report);
        }
    }
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

    /// Every input's data ended: flush each operator in chain order, then tell the consumers.
    fn end_of_data(&mut self) -> Result<()> {
        for pos in 0..self.nodes.len() {
            self.call(pos, |op, out| op.end_of_input(out))?;
        }
        self.broadcast_all(&Message::EndOfData)?;
        self.update_records_out();
        Ok(())
    }

    /// Snapshots every node of the chain (the source at its head too) for `barrier`, acknowledges
    /// it (or declines it if a node could not snapshot), then forwards the barrier.
    fn checkpoint(
        &mut self,
        source: Option<&mut dyn Source>,
        barrier: Barrier,
        link: &Link,
    ) -> Result<()> {
        match self.snapshot(source, barrier.id) {
            Ok(states) => link.report(Report::Ack {
                id: barrier.id,
                task: link.task,
                savepoint: barrier.savepoint,
                states: states.into_iter().map(Acked::Pending).collect(),
            }),
            Err(e) => {
                tracing::warn!(checkpoint = barrier.id, error = %e, "declining checkpoint");
                link.report(Report::Decline {
                    id: barrier.id,
                    task: link.task,
                    reason: e.to_string(),
                });
            }
        }
        self.broadcast_all(&Message::Barrier(barrier))
    }

    fn snapshot(
        &mut self,
        mut source: Option<&mut dyn Source>,
        id: u64,
    ) -> Result<Vec<AckedState>> {
        let mut states = Vec::with_capacity(self.nodes.len());
        for (pos, node) in self.nodes.iter_mut().enumerate() {
            let mut writer = StateWriter::default();
            match node.operator.as_deref_mut() {
                Some(op) => op.snapshot(id, &mut writer)?,
                None => {
                    if pos == 0
                        && let Some(s) = source.as_deref_mut()
                    {
                        s.snapshot(&mut writer)?;
                    }
                }
            }
            let (state, deferred) = writer.split();
            states.push(AckedState {
                uid: node.uid.clone(),
                subtask: self.index,
                parallelism: self.parallelism,
                state,
                deferred,
            });
        }
        Ok(states)
    }

    /// Checkpoint `id` completed: let every operator publish what it covers.
    fn checkpoint_complete(&mut self, id: u64) -> Result<()> {
        for node in &mut self.nodes {
            if let Some(op) = node.operator.as_deref_mut() {
                op.checkpoint_complete(id)?;
            }
        }
        Ok(())
    }

    /// The end of a job without checkpoints is its only, implicit, checkpoint: operators that
    /// publish on completion (two-phase-commit sinks) publish now.
    fn complete_without_checkpoints(&mut self) -> Result<()> {
        self.snapshot(None, FINAL_CHECKPOINT)?;
        self.checkpoint_complete(FINAL_CHECKPOINT)
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

/// A source's watermarks from its records' event times: per split when it reads several, so that
/// a split ahead of the others never makes their records late.
struct SourceWatermarks {
    strategy: Option<(WatermarkStrategy, usize)>,
    max_seen: hashbrown::HashMap<u32, Timestamp>,
    emitted: Timestamp,
}

impl SourceWatermarks {
    /// The watermark to emit after `batch` (of `split`, if the source has splits), if it advanced.
    fn after_batch(
        &mut self,
        split: Option<u32>,
        batch: &RecordBatch,
        open: Option<Vec<u32>>,
    ) -> Result<Option<Timestamp>> {
        let Some((strategy, column)) = &self.strategy else {
            return Ok(None);
        };
        let Some(max) = max_event_time(batch.column(*column))? else {
            return Ok(None);
        };
        let seen = self.max_seen.entry(split.unwrap_or(0)).or_insert(max);
        *seen = (*seen).max(max);
        let watermark = match open {
            Some(splits) => {
                let mut min: Option<Timestamp> = None;
                for s in splits {
                    match self.max_seen.get(&s) {
                        // A split that has produced nothing yet holds the watermark back.
                        None => return Ok(None),
                        Some(&m) => {
                            let w = strategy.watermark_for(m);
                            min = Some(min.map_or(w, |x| x.min(w)));
                        }
                    }
                }
                match min {
                    Some(w) => w,
                    None => return Ok(None),
                }
            }
            None => strategy.watermark_for(*seen),
        };
        Ok(self.advance(watermark))
    }

    fn advance(&mut self, watermark: Timestamp) -> Option<Timestamp> {
        (watermark > self.emitted).then(|| {
            self.emitted = watermark;
            watermark
        })
    }
}

/// Waits on the control channel only; checks for cancellation in between.
fn next_control(link: &Link, cancelled: &AtomicBool) -> Result<Control> {
    loop {
        if cancelled.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        match link.control.recv_timeout(Duration::from_millis(50)) {
            Ok(c) => return Ok(c),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Err(Error::Cancelled),
        }
    }
}

/// What became of a stop-with-savepoint a subtask forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopFate {
    /// The savepoint completed: the subtask has published what it covers and ends.
    Stopped,
    /// The savepoint was aborted: the subtask carries on, as Flink's do when a stop-with-savepoint
    /// fails. `end`: the final checkpoint (taken after every source ended) completed meanwhile.
    Aborted { end: bool },
}

/// After a stop-with-savepoint barrier: wait for the savepoint's fate, publishing what completes
/// meanwhile.
fn await_stop(chain: &mut Chain, id: u64, link: &Link, cancelled: &AtomicBool) -> Result<StopFate> {
    let mut ended = false;
    loop {
        match next_control(link, cancelled)? {
            Control::Complete { id: done, end } => {
                chain.checkpoint_complete(done)?;
                if done >= id {
                    return Ok(StopFate::Stopped);
                }
                ended |= end;
            }
            Control::Abort { id: aborted } if aborted == id => {
                return Ok(StopFate::Aborted { end: ended });
            }
            Control::Abort { .. } | Control::Trigger(_) => {}
        }
    }
}

/// Runs a source subtask until its input ends (and, with checkpointing, a checkpoint taken after
/// the end has completed), the job stops with a savepoint or is cancelled, or something fails.
pub(crate) fn run_source(
    mut source: Box<dyn Source>,
    mut ctx: SourceContext,
    watermarks: Option<(WatermarkStrategy, usize)>,
    mut chain: Chain,
    link: Link,
    cancelled: &AtomicBool,
) -> Result<()> {
    let idle_timeout = watermarks.as_ref().and_then(|(s, _)| s.idle_timeout_ms);
    let mut marks = SourceWatermarks {
        strategy: watermarks,
        max_seen: hashbrown::HashMap::new(),
        emitted: MIN_WATERMARK,
    };
    let mut idle = false;
    let mut waiting_since: Option<Timestamp> = None;
    loop {
        if cancelled.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        while let Ok(control) = link.control.try_recv() {
            match control {
                Control::Trigger(barrier) => {
                    chain.checkpoint(Some(source.as_mut()), barrier, &link)?;
                    if barrier.stop
                        && await_stop(&mut chain, barrier.id, &link, cancelled)?
                            == StopFate::Stopped
                    {
                        return Ok(());
                    }
                }
                Control::Complete { id, .. } => chain.checkpoint_complete(id)?,
                Control::Abort { .. } => {}
            }
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
        let (split, batch) = match poll {
            SourcePoll::Data(batch) => (None, batch),
            SourcePoll::SplitData(split, batch) => (Some(split), batch),
            SourcePoll::Watermark(watermark) => {
                if let Some(w) = marks.advance(watermark) {
                    chain.deliver(0, vec![Emitted::Watermark(w)])?;
                }
                continue;
            }
            SourcePoll::Pending(wait) => {
                let since = *waiting_since.get_or_insert(now);
                if !idle && idle_timeout.is_some_and(|t| now - since >= t) {
                    idle = true;
                    chain.broadcast_all(&Message::Idle(true))?;
                }
                let until_timer = chain
                    .next_processing_time()
                    .map(|t| Duration::from_millis(u64::try_from(t - now).unwrap_or(0)));
                let wait = until_timer.map_or(wait, |t| t.min(wait));
                // Sleep on the control channel, so that a checkpoint is not delayed by the wait.
                match link.control.recv_timeout(wait) {
                    Ok(Control::Trigger(barrier)) => {
                        chain.checkpoint(Some(source.as_mut()), barrier, &link)?;
                        if barrier.stop
                            && await_stop(&mut chain, barrier.id, &link, cancelled)?
                                == StopFate::Stopped
                        {
                            return Ok(());
                        }
                    }
                    Ok(Control::Complete { id, .. }) => chain.checkpoint_complete(id)?,
                    Ok(Control::Abort { .. }) | Err(_) => {}
                }
                continue;
            }
            SourcePoll::Finished => {
                if marks.emitted < MAX_WATERMARK {
                    chain.deliver(0, vec![Emitted::Watermark(MAX_WATERMARK)])?;
                }
                chain.end_of_data()?;
                return finish_source(source, chain, &link, cancelled);
            }
        };
        waiting_since = None;
        if idle {
            idle = false;
            chain.broadcast_all(&Message::Idle(false))?;
        }
        chain
            .metrics
            .records_in
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        let open = split.and_then(|_| source.open_splits());
        let watermark = marks.after_batch(split, &batch, open)?;
        let mut items = Vec::with_capacity(2);
        items.push(Emitted::Data(batch));
        if let Some(w) = watermark {
            items.push(Emitted::Watermark(w));
        }
        chain.deliver(0, items)?;
        chain.update_records_out();
    }
}

/// A source whose data ended (a subtask restored without a split ends at its first poll). Without
/// checkpointing it ends the job's input at once. With it, it still takes part in checkpoints and
/// ends once the final checkpoint (taken after every source ended) has completed, which makes
/// sinks commit the last records, or, like a source still reading, once a stop-with-savepoint
/// barrier it forwarded has completed: the coordinator takes no final checkpoint after a stop.
fn finish_source(
    mut source: Box<dyn Source>,
    mut chain: Chain,
    link: &Link,
    cancelled: &AtomicBool,
) -> Result<()> {
    if !link.checkpointing() {
        chain.complete_without_checkpoints()?;
        return chain.broadcast_all(&Message::EndOfInput);
    }
    link.report(Report::SourceFinished);
    loop {
        match next_control(link, cancelled)? {
            Control::Trigger(barrier) => {
                chain.checkpoint(Some(source.as_mut()), barrier, link)?;
                if barrier.stop {
                    match await_stop(&mut chain, barrier.id, link, cancelled)? {
                        StopFate::Stopped => return Ok(()),
                        StopFate::Aborted { end: true } => {
                            return chain.broadcast_all(&Message::EndOfInput);
                        }
                        StopFate::Aborted { end: false } => {}
                    }
                }
            }
            Control::Complete { id, end } => {
                chain.checkpoint_complete(id)?;
                if end {
                    return chain.broadcast_all(&Message::EndOfInput);
                }
            }
            Control::Abort { .. } => {}
        }
    }
}

/// Runs an operator subtask until every input has ended (and its last checkpoint completed), the
/// job stops with a savepoint, or something fails.
pub(crate) fn run_operator(
    mut chain: Chain,
    inputs: Vec<(Receiver<Message>, usize)>,
    link: Link,
    cancelled: &AtomicBool,
) -> Result<()> {
    let channels = inputs.len();
    let mut valve = WatermarkValve::new(channels);
    let mut aligner = Aligner::new(link.mode, channels);
    let mut data_ended = vec![false; channels];
    let mut closed = vec![false; channels];
    let mut data_done = false;
    // The newest barrier snapshotted here, and the newest checkpoint known complete.
    let mut last_snapshot: Option<u64> = None;
    let mut last_complete: Option<u64> = None;
    let mut pending_stop: Option<u64> = None;
    let mut in_flight: Option<InFlight> = None;
    // Barriers seen lately, so that an alignment completed by the end of a channel knows its barrier.
    let mut seen: Vec<Barrier> = Vec::new();
    for (input, batch) in std::mem::take(&mut chain.replay) {
        chain.input(input, batch)?;
    }
    loop {
        if closed.iter().all(|&c| c) {
            // Every input ended. With checkpointing, wait until the checkpoint that covered the
            // end is complete, so that what it covers is published before the job ends.
            if !link.checkpointing() {
                chain.complete_without_checkpoints()?;
            } else if let Some(last) = last_snapshot {
                while last_complete.is_none_or(|c| c < last) {
                    match next_control(&link, cancelled)? {
                        Control::Complete { id, .. } => {
                            chain.checkpoint_complete(id)?;
                            last_complete = Some(id);
                        }
                        Control::Abort { .. } | Control::Trigger(_) => {}
                    }
                }
            }
            return chain.broadcast_all(&Message::EndOfInput);
        }
        // Channels blocked by alignment or closed are not read.
        let mut select = Select::new();
        select.recv(&link.control);
        let mut readable = Vec::with_capacity(channels);
        for (ch, (receiver, _)) in inputs.iter().enumerate() {
            if !closed[ch] && !aligner.is_blocked(ch) {
                select.recv(receiver);
                readable.push(ch);
            }
        }
        // Read until the set of readable channels changes.
        loop {
            let deadline = chain.next_processing_time();
            let operation = match deadline {
                None => select.select_timeout(Duration::from_millis(100)),
                Some(t) => {
                    let wait = Duration::from_millis(u64::try_from(t - now_millis()).unwrap_or(0));
                    select.select_timeout(wait.min(Duration::from_millis(100)))
                }
            };
            let Ok(operation) = operation else {
                if cancelled.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
                if chain
                    .next_processing_time()
                    .is_some_and(|t| t <= now_millis())
                {
                    chain.fire_processing_time(now_millis())?;
                }
                continue;
            };
            if operation.index() == 0 {
                let control = operation
                    .recv(&link.control)
                    .map_err(|_| Error::Cancelled)?;
                match control {
                    Control::Complete { id, .. } => {
                        chain.checkpoint_complete(id)?;
                        last_complete = Some(id);
                        if pending_stop.is_some_and(|s| id >= s) {
                            return Ok(());
                        }
                    }
                    Control::Abort { id } => {
                        if pending_stop == Some(id) {
                            pending_stop = None;
                        }
                    }
                    Control::Trigger(_) => {}
                }
                continue;
            }
            let ch = readable[operation.index() - 1];
            let (receiver, input) = &inputs[ch];
            let message = operation.recv(receiver).map_err(|_| Error::Cancelled)?;
            let mut changed = false;
            match message {
                Message::Data(batch) => {
                    if aligner.is_recording(ch)
                        && let Some(f) = &mut in_flight
                    {
                        f.records.push((*input, batch.clone()));
                    }
                    chain.input(*input, batch)?
                }
                Message::Watermark(w) => {
                    if let Some(combined) = valve.watermark(ch, w) {
                        chain.watermark_at(0, combined)?;
                    }
                }
                Message::Idle(is_idle) => {
                    let (advanced, status) = valve.idle(ch, is_idle);
                    if let Some(combined) = advanced {
                        chain.watermark_at(0, combined)?;
                    }
                    if let Some(status) = status {
                        chain.broadcast_all(&Message::Idle(status))?;
                    }
                }
                Message::Barrier(barrier) => {
                    if !seen.iter().any(|b| b.id == barrier.id) {
                        if seen.len() >= 16 {
                            seen.remove(0);
                        }
                        seen.push(barrier);
                    }
                    for action in aligner.on_barrier(ch, barrier.id) {
                        act(
                            &mut chain,
                            action,
                            barrier,
                            &seen,
                            &link,
                            &mut last_snapshot,
                            &mut in_flight,
                        )?;
                    }
                    if barrier.stop && last_snapshot == Some(barrier.id) {
                        pending_stop = Some(barrier.id);
                    }
                    changed = true;
                }
                Message::EndOfData => {
                    data_ended[ch] = true;
                    if let Some(combined) = valve.finish(ch) {
                        chain.watermark_at(0, combined)?;
                    }
                    if !data_done && data_ended.iter().all(|&e| e) {
                        data_done = true;
                        chain.end_of_data()?;
                    }
                }
                Message::EndOfInput => {
                    closed[ch] = true;
                    let barrier = Barrier {
                        id: 0,
                        timestamp_ms: 0,
                        stop: false,
                        savepoint: false,
                    };
                    for action in aligner.on_end_of_input(ch) {
                        act(
                            &mut chain,
                            action,
                            barrier,
                            &seen,
                            &link,
                            &mut last_snapshot,
                            &mut in_flight,
                        )?;
                    }
                    changed = true;
                }
            }
            chain.update_records_out();
            if pending_stop.is_some() {
                // After a stop-with-savepoint barrier nothing more is read: wait for its fate.
                let Some(id) = pending_stop else { break };
                if await_stop(&mut chain, id, &link, cancelled)? == StopFate::Stopped {
                    return Ok(());
                }
                pending_stop = None;
                changed = true;
            }
            if changed {
                break;
            }
        }
    }
}

/// Carries out an alignment decision.
fn act(
    chain: &mut Chain,
    action: Action,
    barrier: Barrier,
    seen: &[Barrier],
    link: &Link,
    last_snapshot: &mut Option<u64>,
    in_flight: &mut Option<InFlight>,
) -> Result<()> {
    // The barrier the action is about, as it arrived (a savepoint's barrier says so).
    let of = |id: u64| {
        seen.iter()
            .rev()
            .find(|b| b.id == id)
            .copied()
            .unwrap_or(Barrier { id, ..barrier })
    };
    match action {
        Action::Snapshot(id) if link.mode == Mode::Unaligned => {
            // Snapshot now and let the barrier go on; the in-flight records follow at `Persist`.
            let barrier = of(id);
            match chain.snapshot(None, id) {
                Ok(states) => {
                    *in_flight = Some(InFlight {
                        id,
                        savepoint: barrier.savepoint,
                        states,
                        records: Vec::new(),
                    });
                }
                Err(e) => link.report(Report::Decline {
                    id,
                    task: link.task,
                    reason: e.to_string(),
                }),
            }
            chain.broadcast_all(&Message::Barrier(barrier))?;
            *last_snapshot = Some(id);
        }
        Action::Snapshot(id) => {
            let barrier = of(id);
            chain.checkpoint(None, barrier, link)?;
            *last_snapshot = Some(id);
        }
        Action::Persist(id) => {
            if let Some(mut f) = in_flight.take().filter(|f| f.id == id) {
                if !f.records.is_empty() {
                    let key_group = crate::keys::key_group_range(
                        chain.index,
                        chain.parallelism,
                        chain.max_parallelism,
                    )
                    .start;
                    let bytes = encode_in_flight(&f.records)?;
                    if let Some(head) = f.states.first_mut() {
                        head.state
                            .keyed
                            .entry(key_group)
                            .or_default()
                            .insert(IN_FLIGHT.to_owned(), bytes);
                    }
                }
                link.report(Report::Ack {
                    id,
                    task: link.task,
                    savepoint: f.savepoint,
                    states: f.states.into_iter().map(Acked::Pending).collect(),
                });
            }
        }
        Action::Abandon(id) => {
            if in_flight.as_ref().is_some_and(|f| f.id == id) {
                *in_flight = None;
            }
            link.report(Report::Decline {
                id,
                task: link.task,
                reason: "a newer barrier arrived during alignment".into(),
            })
        }
    }
    Ok(())
}
