//! The data plane between TaskManagers: every channel whose producer and consumer subtasks run in
//! different processes is one gRPC stream (`TaskManager.Exchange`) from the producer's process to
//! the consumer's, with **credit-based flow control** as in Flink's network stack:
//!
//! - the consumer's side grants `channel_capacity` credits when the stream opens and one more each
//!   time it has handed a frame to the local consumer's bounded channel;
//! - the producer's side sends a frame only while it holds a credit, and otherwise waits (that
//!   wait is the channel's backpressure, reported per channel).
//!
//! So a slow consumer holds at most `channel_capacity` frames in flight per channel, and the
//! producer's task blocks on its own bounded channel exactly as it does in one process: memory
//! stays bounded whatever the speeds. Batches travel as Arrow IPC; watermarks, barriers and the
//! ends of input travel in band, in order, as their own frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use tokio::runtime::Handle;
use tonic::transport::Channel;

use super::proto::task_manager_client::TaskManagerClient;
use super::proto::{self, Credit, DataFrame, data_frame::Kind};
use crate::error::{Error, Result};
use crate::runtime::channel::{Barrier, Message};

/// How often blocked exchange threads look whether their attempt was cancelled.
const POLL: Duration = Duration::from_millis(100);

/// Counters of one remote channel (producer side), reported in heartbeats and metrics.
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// `<job>/<attempt>/<edge>/<producer>-><consumer>`.
    pub name: String,
    /// Nanoseconds the producer's side waited for credit (backpressure from the consumer).
    pub credit_wait_ns: AtomicU64,
    pub frames: AtomicU64,
    /// Messages waiting in the producer's local channel, last seen.
    pub queued: AtomicU64,
    pub closed: AtomicBool,
}

/// Encodes one message as a frame's payload.
pub(crate) fn encode(message: &Message) -> Result<Kind> {
    Ok(match message {
        Message::Data(batch) => {
            let mut ipc = Vec::with_capacity(batch.get_array_memory_size() / 2 + 512);
            {
                let mut writer =
                    arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema())?;
                writer.write(batch)?;
                writer.finish()?;
            }
            Kind::Batch(proto::Batch { ipc, reset: true })
        }
        Message::Watermark(w) => Kind::Watermark(*w),
        Message::Idle(idle) => Kind::Idle(*idle),
        Message::Barrier(b) => Kind::Barrier(proto::Barrier {
            id: b.id,
            timestamp_ms: b.timestamp_ms,
            stop: b.stop,
            savepoint: b.savepoint,
        }),
        Message::EndOfData => Kind::EndOfData(proto::Empty {}),
        Message::EndOfInput => Kind::EndOfInput(proto::Empty {}),
    })
}

/// Decodes a frame's payload.
pub(crate) fn decode(kind: Kind) -> Result<Message> {
    Ok(match kind {
        Kind::Batch(b) => {
            let mut reader =
                arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(b.ipc), None)?;
            match reader.next() {
                Some(batch) => Message::Data(batch?),
                None => return Err(Error::Cluster("an empty batch frame".into())),
            }
        }
        Kind::Watermark(w) => Message::Watermark(w),
        Kind::Idle(idle) => Message::Idle(idle),
        Kind::Barrier(b) => Message::Barrier(Barrier {
            id: b.id,
            timestamp_ms: b.timestamp_ms,
            stop: b.stop,
            savepoint: b.savepoint,
        }),
        Kind::EndOfData(_) => Message::EndOfData,
        Kind::EndOfInput(_) => Message::EndOfInput,
    })
}

/// HTTP/2 flow-control windows of the data plane. Credits already bound what is in flight; the
/// windows only need to be large enough that HTTP/2 never stalls a batch frame (the default 64 KiB
/// window is smaller than one batch, which would cost a round trip per batch).
pub const STREAM_WINDOW: u32 = 16 << 20;
pub const CONNECTION_WINDOW: u32 = 64 << 20;

/// Largest gRPC message either side accepts (a batch frame).
pub const MAX_FRAME: usize = 256 << 20;

/// Starts the producer's side of one remote channel: a thread that takes what the local producer
/// sends on `local`, waits for credit and sends it to the consumer's TaskManager. It ends after the
/// end of input, when the stream breaks (the consumer's process is gone: the producer then sees
/// its channel close and fails, which fails the attempt over) or when `stop` is set.
pub(crate) fn spawn_outbound(
    rt: Handle,
    client: TaskManagerClient<Channel>,
    id: proto::ChannelId,
    local: Receiver<Message>,
    stop: Arc<AtomicBool>,
    stats: Arc<ChannelStats>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("exchange-out".into())
        .spawn(move || {
            if let Err(e) = outbound(&rt, client, id, &local, &stop, &stats)
                && !stop.load(Ordering::Relaxed)
            {
                tracing::warn!(channel = %stats.name, error = %e, "outbound channel broke");
            }
            stats.closed.store(true, Ordering::Relaxed);
        })
        .map_err(|e| Error::io("spawning an exchange thread", e))
}

fn outbound(
    rt: &Handle,
    mut client: TaskManagerClient<Channel>,
    id: proto::ChannelId,
    local: &Receiver<Message>,
    stop: &AtomicBool,
    stats: &ChannelStats,
) -> Result<()> {
    let broken = |e: &dyn std::fmt::Display| Error::Cluster(format!("exchange: {e}"));
    let (frames, frames_rx) = tokio::sync::mpsc::channel::<DataFrame>(2);
    frames
        .blocking_send(DataFrame {
            channel: Some(id),
            kind: None,
        })
        .map_err(|e| broken(&e))?;
    let response = rt
        .block_on(client.exchange(tokio_stream::wrappers::ReceiverStream::new(frames_rx)))
        .map_err(|e| broken(&e))?;
    let mut credit_stream = response.into_inner();
    let (credit_tx, credit_rx) = crossbeam_channel::unbounded::<u32>();
    rt.spawn(async move {
        while let Ok(Some(Credit { credits })) = credit_stream.message().await {
            if credit_tx.send(credits).is_err() {
                break;
            }
        }
    });
    let mut credits: u64 = 0;
    loop {
        let message = match local.recv_timeout(POLL) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => return Ok(()),
            Err(RecvTimeoutError::Timeout) => continue,
            // The producer ended (cancelled or failed): close the stream.
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        stats.queued.store(local.len() as u64, Ordering::Relaxed);
        credits += credit_rx.try_iter().map(u64::from).sum::<u64>();
        if credits == 0 {
            let waited = Instant::now();
            while credits == 0 {
                match credit_rx.recv_timeout(POLL) {
                    Ok(n) => credits += u64::from(n),
                    Err(RecvTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => {
                        return Ok(());
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(broken(&"the consumer's side closed the channel"));
                    }
                }
            }
            stats
                .credit_wait_ns
                .fetch_add(waited.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        credits -= 1;
        let end = matches!(message, Message::EndOfInput);
        let frame = DataFrame {
            channel: None,
            kind: Some(encode(&message)?),
        };
        frames.blocking_send(frame).map_err(|e| broken(&e))?;
        stats.frames.fetch_add(1, Ordering::Relaxed);
        if end {
            return Ok(());
        }
    }
}

/// Runs the consumer's side of one remote channel on the calling (blocking) thread: grants the
/// initial credits, hands every frame to the local consumer's channel and grants a credit for it.
/// Returns when the producer's side ends the stream, the stream breaks or `stop` is set; dropping
/// `local` then tells the consumer (which fails unless the input had ended).
pub(crate) fn inbound(
    rt: &Handle,
    mut stream: tonic::Streaming<DataFrame>,
    local: Sender<Message>,
    credits: tokio::sync::mpsc::UnboundedSender<std::result::Result<Credit, tonic::Status>>,
    capacity: u32,
    stop: &AtomicBool,
) -> Result<()> {
    let _ = credits.send(Ok(Credit { credits: capacity }));
    loop {
        let next = rt.block_on(async { tokio::time::timeout(POLL, stream.message()).await });
        let frame = match next {
            Err(_) if stop.load(Ordering::Relaxed) => return Ok(()),
            Err(_) => continue,
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(status)) => {
                return Err(Error::Cluster(format!(
                    "exchange stream broke: {}",
                    status.message()
                )));
            }
        };
        let Some(kind) = frame.kind else { continue };
        let mut message = decode(kind)?;
        let end = matches!(message, Message::EndOfInput);
        loop {
            match local.send_timeout(message, POLL) {
                Ok(()) => break,
                Err(SendTimeoutError::Timeout(back)) => {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    message = back;
                }
                Err(SendTimeoutError::Disconnected(_)) => return Ok(()),
            }
        }
        if end {
            return Ok(());
        }
        let _ = credits.send(Ok(Credit { credits: 1 }));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    use super::*;

    #[test]
    fn every_message_survives_the_wire() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
            ],
        )
        .unwrap();
        let barrier = Barrier {
            id: 7,
            timestamp_ms: 99,
            stop: true,
            savepoint: true,
        };
        let messages = vec![
            Message::Data(batch.clone()),
            Message::Watermark(-5),
            Message::Idle(true),
            Message::Barrier(barrier),
            Message::EndOfData,
            Message::EndOfInput,
        ];
        for m in messages {
            let back = decode(encode(&m).unwrap()).unwrap();
            match (&m, &back) {
                (Message::Data(a), Message::Data(b)) => assert_eq!(a, b),
                (Message::Watermark(a), Message::Watermark(b)) => assert_eq!(a, b),
                (Message::Idle(a), Message::Idle(b)) => assert_eq!(a, b),
                (Message::Barrier(a), Message::Barrier(b)) => assert_eq!(a, b),
                (Message::EndOfData, Message::EndOfData)
                | (Message::EndOfInput, Message::EndOfInput) => {}
                other => panic!("{other:?}"),
            }
        }
    }
}
