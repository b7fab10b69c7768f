//! Apache Kafka: a source that reads a topic's partitions from offsets kept in checkpoints, and a
//! sink with Flink's three delivery guarantees. Both run on librdkafka (the `rdkafka` crate's
//! bundled build) through its blocking clients, on the task threads.
//!
//! **Source.** Each subtask reads the partitions `p` with `p % parallelism == index` (a restored
//! subtask reads the partitions its restored state names, so a restore at another parallelism
//! hands partitions over with their offsets). Partitions are splits: the runtime keeps a watermark
//! per partition. A record is one message's value, a CSV record or a JSON object, read as
//! [`FileSource`](super::file::FileSource) reads one; a malformed one goes to the job's error
//! policy with its `topic/partition@offset`. The offset a checkpoint keeps for a partition is the
//! one after the last record the source *emitted*, so a restore neither skips nor repeats one.
//! Where a fresh start begins is [`StartupMode`]; with [`BoundedMode::Latest`] the source ends at
//! the offsets the partitions ended at when it started (Flink's `scan.bounded.mode`).
//!
//! **Sink.** [`DeliveryGuarantee::None`] sends and forgets; [`DeliveryGuarantee::AtLeastOnce`] also
//! waits at every barrier until the broker has acknowledged everything sent before it;
//! [`DeliveryGuarantee::ExactlyOnce`] is a two-phase commit over Kafka transactions. Flink commits a
//! transaction it prepared before a failure by resuming it in a new producer (setting the producer
//! id and epoch it kept in the checkpoint); librdkafka cannot resume another producer's
//! transaction, and a new producer with the same transactional id aborts it. So Strom keeps the
//! records themselves in the checkpoint (a write-ahead log, as Flink's `GenericWriteAheadSink`):
//!
//! 1. records are encoded into the subtask's buffer for the current checkpoint;
//! 2. **pre-commit** at the barrier: the buffer becomes a pending unit of the snapshot;
//! 3. **commit** when the checkpoint completes: each pending unit is written in one transaction of
//!    the producer `<prefix>-<subtask>` that also commits, to the consumer group of the same name,
//!    a *marker*: offset = the checkpoint id, metadata = the writer's lineage (a token unique to the
//!    run of the subtask that wrote the unit). The marker is visible exactly when the records are.
//! 4. **restore**: the restored units all belong to completed checkpoints. For each, a producer
//!    with the unit's transactional id fences any zombie of the run that wrote it (aborting its
//!    open transaction), then the unit's marker says whether it was committed (same lineage, offset
//!    at least the unit's checkpoint); if not, it is written again, with its marker.
//!
//! Readers with `isolation.level=read_committed` see every record exactly once; records appear
//! when their checkpoint completes. A subtask's units are one list entry of its state, so a
//! rescale never splits a lineage (whose markers are in checkpoint order) between two subtasks.
//! Restoring an older savepoint than the latest checkpoint republishes what followed it, as in
//! Flink.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::json::writer::LineDelimited;
use arrow::json::{LineDelimitedWriter, WriterBuilder};
use arrow::record_batch::RecordBatch;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::file::{RecordDecoder, with_epoch_millis, write_csv_rows};
use super::{SinkBuilder, SourceBuilder};
use crate::checkpoint::state::{RestoredState, StateWriter, decode, encode};
use crate::error::{Error, Result};
use crate::operator::{Operator, Output, Source, SourceContext, SourcePoll, SubtaskInfo};
use crate::plan::{OperatorFactory, SourceFactory};

/// How long a request to the brokers (metadata, offsets, a transaction's commit) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle source waits before it polls again.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// How a message's value is read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// One CSV record, no header.
    Csv { delimiter: u8 },
    /// One JSON object.
    Json,
}

/// Where a source without restored offsets starts (Flink's `scan.startup.mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupMode {
    /// Each partition's first offset.
    Earliest,
    /// Each partition's end: only records written after the start.
    Latest,
    /// The consumer group's committed offsets (`group.id`); a partition without one starts where
    /// `auto.offset.reset` says (`earliest` or `latest`), or the start fails.
    GroupOffsets,
    /// The first offset whose record's timestamp is at least this (epoch milliseconds).
    Timestamp(i64),
    /// Per partition; partitions not named start at their first offset.
    Specific(BTreeMap<i32, i64>),
}

/// Where a source ends (Flink's `scan.bounded.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundedMode {
    /// Never: a streaming source.
    Unbounded,
    /// At the offsets the partitions ended at when the source started.
    Latest,
}

/// A Kafka topic as a source.
#[derive(Debug, Clone)]
pub struct KafkaSource {
    topic: String,
    /// librdkafka's configuration (`bootstrap.servers`, `group.id`, `isolation.level`, ...).
    properties: BTreeMap<String, String>,
    schema: SchemaRef,
    format: ValueFormat,
    startup: StartupMode,
    bounded: BoundedMode,
}

impl KafkaSource {
    /// Reads `topic` from the brokers at `bootstrap` (`host:port,...`), from its earliest offsets,
    /// without end.
    pub fn new(bootstrap: &str, topic: &str, schema: SchemaRef, format: ValueFormat) -> Self {
        Self {
            topic: topic.to_owned(),
            properties: BTreeMap::from([("bootstrap.servers".to_owned(), bootstrap.to_owned())]),
            schema,
            format,
            startup: StartupMode::Earliest,
            bounded: BoundedMode::Unbounded,
        }
    }

    /// Sets a librdkafka configuration property (Flink's `properties.*`).
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.properties.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn startup(mut self, mode: StartupMode) -> Self {
        self.startup = mode;
        self
    }

    pub fn bounded(mut self, mode: BoundedMode) -> Self {
        self.bounded = mode;
        self
    }

    fn consumer(&self, group: Option<&str>) -> Result<BaseConsumer> {
        let mut config = ClientConfig::new();
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        if let Some(group) = group {
            config.set("group.id", group);
        } else if !self.properties.contains_key("group.id") {
            // Needed by librdkafka's consumer; nothing is committed for it.
            config.set("group.id", "strom");
        }
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .create()
            .map_err(|e| kafka_error(&self.topic, "creating a consumer", &e))
    }
}

fn kafka_error(topic: &str, doing: &str, e: &KafkaError) -> Error {
    Error::user(format!("kafka topic {topic}: {doing}: {e}"))
}

impl SourceBuilder for KafkaSource {
    fn name(&self) -> String {
        format!("kafka({})", self.topic)
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn factory(self) -> SourceFactory {
        let source = Arc::new(self);
        Arc::new(move |info| {
            // Fails now on columns a record cannot hold.
            decoder(&source, &info.name)?;
            Ok(Box::new(KafkaReader {
                source: source.clone(),
                info: info.clone(),
                consumer: None,
                parts: Vec::new(),
                restored: None,
            }) as Box<dyn Source>)
        })
    }
}

fn decoder(source: &KafkaSource, operator: &str) -> Result<RecordDecoder> {
    match source.format {
        ValueFormat::Csv { delimiter } => {
            RecordDecoder::csv(operator, source.schema.clone(), delimiter)
        }
        ValueFormat::Json => RecordDecoder::json(operator, source.schema.clone()),
    }
}

/// A partition's position, as a checkpoint keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct PartitionState {
    partition: i32,
    /// The offset after the last record emitted.
    next: i64,
    /// Where the partition ends, for a bounded source.
    stop: Option<i64>,
}

const PARTITIONS: &str = "partitions";

struct PartitionRead {
    state: PartitionState,
    /// The offset after the last message fetched (records up to it may wait in `decoder`).
    fetched: i64,
    done: bool,
    decoder: RecordDecoder,
}

struct KafkaReader {
    source: Arc<KafkaSource>,
    info: SubtaskInfo,
    consumer: Option<BaseConsumer>,
    parts: Vec<PartitionRead>,
    restored: Option<Vec<PartitionState>>,
}

impl KafkaReader {
    fn err(&self, doing: &str, e: &KafkaError) -> Error {
        self.info
            .fail(format!("kafka topic {}: {doing}: {e}", self.source.topic))
    }

    /// Connects, decides which partitions to read from which offsets, and assigns them.
    fn open(&mut self) -> Result<BaseConsumer> {
        let source = self.source.clone();
        let topic = source.topic.as_str();
        let consumer = source.consumer(None)?;
        let states = match self.restored.take() {
            Some(states) => states,
            None => {
                let metadata = consumer
                    .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                    .map_err(|e| self.err("reading metadata", &e))?;
                let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
                    return Err(self
                        .info
                        .fail(format!("kafka topic {topic} does not exist")));
                };
                if let Some(e) = t.error() {
                    return Err(self.info.fail(format!(
                        "kafka topic {topic}: {}",
                        RDKafkaErrorCode::from(e)
                    )));
                }
                let mut states = Vec::new();
                for p in t.partitions() {
                    let partition = p.id();
                    if u32::try_from(partition)
                        .is_ok_and(|p| p % self.info.parallelism.max(1) == self.info.index)
                    {
                        states.push(self.start(&consumer, partition)?);
                    }
                }
                states
            }
        };
        let mut assignment = TopicPartitionList::new();
        for state in &states {
            let done = state.stop.is_some_and(|s| state.next >= s);
            if !done {
                assignment
                    .add_partition_offset(topic, state.partition, Offset::Offset(state.next))
                    .map_err(|e| self.err("assigning", &e))?;
            }
            self.parts.push(PartitionRead {
                state: *state,
                fetched: state.next,
                done,
                decoder: decoder(&source, &self.info.name)?,
            });
        }
        consumer
            .assign(&assignment)
            .map_err(|e| self.err("assigning partitions", &e))?;
        Ok(consumer)
    }

    /// Where a fresh start reads `partition` from, and where it ends.
    fn start(&self, consumer: &BaseConsumer, partition: i32) -> Result<PartitionState> {
        let topic = self.source.topic.as_str();
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(|e| self.err("reading offsets", &e))?;
        let next = match &self.source.startup {
            StartupMode::Earliest => low,
            StartupMode::Latest => high,
            StartupMode::Specific(offsets) => offsets.get(&partition).copied().unwrap_or(low),
            StartupMode::Timestamp(ms) => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(topic, partition, Offset::Offset(*ms))
                    .map_err(|e| self.err("finding offsets by time", &e))?;
                let found = consumer
                    .offsets_for_times(tpl, REQUEST_TIMEOUT)
                    .map_err(|e| self.err("finding offsets by time", &e))?;
                match found.find_partition(topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => high,
                }
            }
            StartupMode::GroupOffsets => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, partition);
                let committed = consumer
                    .committed_offsets(tpl, REQUEST_TIMEOUT)
                    .map_err(|e| self.err("reading the group's committed offsets", &e))?;
                match committed
                    .find_partition(topic, partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) => o,
                    _ => match self
                        .source
                        .properties
                        .get("auto.offset.reset")
                        .map(String::as_str)
                    {
                        Some("earliest" | "smallest" | "beginning") => low,
                        Some("latest" | "largest" | "end") => high,
                        _ => {
                            return Err(self.info.fail(format!(
                                "kafka topic {topic}: partition {partition} has no committed \
                                 offset for the group, and auto.offset.reset is not earliest or \
                                 latest"
                            )));
                        }
                    },
                }
            }
        };
        let stop = match self.source.bounded {
            BoundedMode::Unbounded => None,
            BoundedMode::Latest => Some(high),
        };
        Ok(PartitionState {
            partition,
            next: next.clamp(low, high),
            stop,
        })
    }

    fn part(&mut self, partition: i32) -> Option<&mut PartitionRead> {
        self.parts
            .iter_mut()
            .find(|p| p.state.partition == partition)
    }

    /// Fetches up to `limit` messages into the partitions' decoders.
    fn fetch(&mut self, ctx: &mut SourceContext, limit: usize) -> Result<()> {
        let topic = self.source.topic.clone();
        let Some(consumer) = self.consumer.take() else {
            return Ok(());
        };
        let result = (|| {
            for _ in 0..limit {
                let message = match consumer.poll(Duration::ZERO) {
                    None => return Ok(()),
                    Some(Err(KafkaError::PartitionEOF(partition))) => {
                        let position = consumer.position().ok().and_then(|tpl| {
                            tpl.find_partition(&topic, partition).map(|e| e.offset())
                        });
                        if let Some(part) = self.part(partition) {
                            let at = match position {
                                Some(Offset::Offset(o)) => o.max(part.fetched),
                                _ => part.fetched,
                            };
                            if part.state.stop.is_some_and(|s| at >= s) {
                                part.fetched = at.max(part.fetched);
                                part.done = true;
                            }
                        }
                        continue;
                    }
                    Some(Err(e)) => return Err(self.err("reading", &e)),
                    Some(Ok(m)) => m,
                };
                let offset = message.offset();
                let Some(part) = self.part(message.partition()) else {
                    continue;
                };
                if part.done || part.state.stop.is_some_and(|s| offset >= s) {
                    part.done = true;
                    continue;
                }
                part.fetched = offset + 1;
                if part.state.stop.is_some_and(|s| part.fetched >= s) {
                    part.done = true;
                }
                // A message without a value (a tombstone) holds no record, as in Flink's formats.
                let Some(payload) = message.payload() else {
                    continue;
                };
                let bad = match std::str::from_utf8(payload) {
                    Ok(text) => part.decoder.push(text).err().map(|r| (r, text.to_owned())),
                    Err(_) => Some((
                        "the value is not valid UTF-8".to_owned(),
                        String::from_utf8_lossy(payload).into_owned(),
                    )),
                };
                if let Some((reason, raw)) = bad {
                    ctx.malformed(
                        format!("{topic}/{}@{offset}", message.partition()),
                        reason,
                        raw,
                    )?;
                }
            }
            Ok(())
        })();
        self.consumer = Some(consumer);
        result
    }
}

impl Source for KafkaReader {
    fn poll(&mut self, ctx: &mut SourceContext) -> Result<SourcePoll> {
        if self.consumer.is_none() {
            self.consumer = Some(self.open()?);
        }
        let target = ctx.batch_size.max(1);
        let buffered: usize = self.parts.iter().map(|p| p.decoder.rows()).sum();
        if buffered < target {
            self.fetch(ctx, target - buffered)?;
        }
        // The partition with the most records waiting goes out, as a split of its own.
        let fullest = self
            .parts
            .iter_mut()
            .filter(|p| p.decoder.rows() > 0)
            .max_by_key(|p| p.decoder.rows());
        if let Some(part) = fullest {
            let batch = part.decoder.finish()?;
            part.state.next = part.fetched;
            let split = u32::try_from(part.state.partition).unwrap_or(0);
            if let Some(batch) = batch {
                return Ok(SourcePoll::SplitData(split, batch));
            }
        }
        // Nothing waits: what was fetched (malformed records, tombstones) is accounted for.
        for part in &mut self.parts {
            part.state.next = part.fetched;
        }
        if self.parts.iter().all(|p| p.done) {
            return Ok(SourcePoll::Finished);
        }
        Ok(SourcePoll::Pending(IDLE_POLL))
    }

    fn snapshot(&mut self, out: &mut StateWriter) -> Result<()> {
        // A barrier before the first poll: the positions are decided now, so that a restore of
        // this snapshot reads what this subtask would have.
        if self.consumer.is_none() {
            self.consumer = Some(self.open()?);
        }
        for p in &self.parts {
            out.list_entry(PARTITIONS, encode(&p.state)?);
        }
        Ok(())
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        let mut states = Vec::new();
        for bytes in state.list(PARTITIONS) {
            states.push(decode::<PartitionState>(bytes)?);
        }
        self.restored = Some(states);
        Ok(())
    }

    /// Always the partitions, even one: a partition read to its end no longer holds the
    /// watermark back, and the one left must not inherit the finished one's event time.
    fn open_splits(&self) -> Option<Vec<u32>> {
        Some(
            self.parts
                .iter()
                .filter(|p| !p.done || p.decoder.rows() > 0)
                .filter_map(|p| u32::try_from(p.state.partition).ok())
                .collect(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Sink
// ---------------------------------------------------------------------------------------------

/// What a sink promises (Flink's `sink.delivery-guarantee`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    /// Send and forget: records may be lost or repeated after a failure.
    None,
    /// Every record is acknowledged by the broker before the checkpoint after it completes;
    /// records may be repeated after a failure.
    AtLeastOnce,
    /// Kafka transactions, records visible to `read_committed` readers exactly once, when their
    /// checkpoint completes. Transactional ids are `<prefix>-<subtask>`; the prefix must be unique
    /// to the job among the jobs writing to the cluster.
    ExactlyOnce { transactional_id_prefix: String },
}

/// A Kafka topic as a sink: one message per record, the value in [`ValueFormat`], and a key of
/// some of the record's columns if [`KafkaSink::key`] says so; timestamps as epoch milliseconds
/// (the SQL planner turns them into Flink's text first).
///
/// [`KafkaSink::upsert`] makes it Flink's `upsert-kafka` sink: the input is a changelog (its last
/// column the row kind), an insertion or update writes the row under its key, a deletion writes
/// the key with no value (a tombstone, which compacted topics drop), and `-U` rows are not
/// written: the topic's last message per key is the row's state.
#[derive(Debug, Clone)]
pub struct KafkaSink {
    topic: String,
    properties: BTreeMap<String, String>,
    format: ValueFormat,
    guarantee: DeliveryGuarantee,
    /// The key's columns (by name) and their format.
    key: Option<(Vec<String>, ValueFormat)>,
    upsert: bool,
}

/// One message: its key and its value (none: a tombstone).
type Outgoing = (Option<Vec<u8>>, Option<Vec<u8>>);

impl KafkaSink {
    /// Writes to `topic` on the brokers at `bootstrap`, at least once.
    pub fn new(bootstrap: &str, topic: &str, format: ValueFormat) -> Self {
        Self {
            topic: topic.to_owned(),
            properties: BTreeMap::from([("bootstrap.servers".to_owned(), bootstrap.to_owned())]),
            format,
            guarantee: DeliveryGuarantee::AtLeastOnce,
            key: None,
            upsert: false,
        }
    }

    /// Sets a librdkafka configuration property.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.properties.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Each message's key: the values of `columns`, in `format`.
    pub fn key(mut self, columns: &[&str], format: ValueFormat) -> Self {
        self.key = Some((columns.iter().map(|c| (*c).to_owned()).collect(), format));
        self
    }

    /// The input is a changelog to be written as upserts and tombstones (see the type's docs).
    pub fn upsert(mut self) -> Self {
        self.upsert = true;
        self
    }

    pub fn guarantee(mut self, guarantee: DeliveryGuarantee) -> Self {
        self.guarantee = guarantee;
        self
    }

    fn producer(&self, transactional_id: Option<&str>) -> Result<BaseProducer<Deliveries>> {
        let mut config = ClientConfig::new();
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        if let Some(id) = transactional_id {
            config.set("transactional.id", id);
        }
        config
            .create_with_context(Deliveries::default())
            .map_err(|e| kafka_error(&self.topic, "creating a producer", &e))
    }

    /// Encodes a batch's rows as messages.
    fn encode(&self, batch: &RecordBatch, out: &mut Vec<Outgoing>) -> Result<()> {
        let (rows, kinds) = if self.upsert {
            let last = batch
                .num_columns()
                .checked_sub(1)
                .ok_or_else(|| Error::user("an upsert sink's input has no row kind column"))?;
            let kinds = batch
                .column(last)
                .as_any()
                .downcast_ref::<arrow::array::Int8Array>()
                .ok_or_else(|| Error::user("an upsert sink's last column is not the row kind"))?
                .clone();
            (batch.project(&(0..last).collect::<Vec<_>>())?, Some(kinds))
        } else {
            (batch.clone(), None)
        };
        let mut values = Vec::with_capacity(rows.num_rows());
        Self::encode_values(self.format, &rows, &mut values)?;
        let mut keys = Vec::new();
        if let Some((columns, format)) = &self.key {
            let indices = columns
                .iter()
                .map(|c| rows.schema().index_of(c))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Self::encode_values(*format, &rows.project(&indices)?, &mut keys)?;
        }
        let mut keys = keys.into_iter();
        for (row, value) in values.into_iter().enumerate() {
            let key = keys.next();
            // Row kinds: 0 +I, 1 -U, 2 +U, 3 -D.
            match kinds.as_ref().map(|k| k.value(row)) {
                Some(1) => {}
                Some(3) => out.push((key, None)),
                _ => out.push((key, Some(value))),
            }
        }
        Ok(())
    }

    /// Encodes a batch's rows as message values (or keys).
    fn encode_values(
        format: ValueFormat,
        batch: &RecordBatch,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        match format {
            ValueFormat::Json => {
                let mut lines = Vec::new();
                let mut writer: LineDelimitedWriter<&mut Vec<u8>> = WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(&mut lines);
                writer.write(&with_epoch_millis(batch)?)?;
                writer.finish()?;
                // The JSON writer escapes line breaks inside strings: a line is a record.
                out.extend(
                    lines
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .map(<[u8]>::to_vec),
                );
            }
            ValueFormat::Csv { delimiter } => {
                let mut text = String::new();
                let mut ends = Vec::with_capacity(batch.num_rows());
                write_csv_rows(batch, delimiter, &mut text, Some(&mut ends))?;
                let mut start = 0;
                for end in ends {
                    // Without the line break that ends the record.
                    out.push(text.as_bytes()[start..end - 1].to_vec());
                    start = end;
                }
            }
        }
        Ok(())
    }
}

/// Collects the first failed delivery of a producer.
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result
            && let Ok(mut failed) = self.failed.lock()
        {
            failed.get_or_insert_with(|| e.to_string());
        }
    }
}

impl SinkBuilder for KafkaSink {
    fn name(&self) -> String {
        format!("kafka-sink({})", self.topic)
    }

    fn factory(self, schema: &SchemaRef) -> Result<OperatorFactory> {
        let _ = schema;
        let sink = Arc::new(self);
        Ok(Arc::new(move |info| {
            Ok(Box::new(KafkaWriter {
                sink: sink.clone(),
                info: info.clone(),
                producer: None,
                buffer: Vec::new(),
                pending: Vec::new(),
                lineage: lineage_token(),
            }) as Box<dyn Operator>)
        }))
    }
}

/// A token no other run of any subtask has: the process, the time and a counter.
fn lineage_token() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}-{n}", std::process::id())
}

/// The records of one checkpoint, waiting for it to complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unit {
    checkpoint: u64,
    records: Vec<Outgoing>,
}

/// A subtask's pending units: one list entry, so that a rescale keeps a lineage together.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    /// The transactional id and marker group of the subtask that wrote them.
    transactional_id: String,
    lineage: String,
    units: Vec<Unit>,
}

const PENDING: &str = "pending";

struct KafkaWriter {
    sink: Arc<KafkaSink>,
    info: SubtaskInfo,
    producer: Option<BaseProducer<Deliveries>>,
    /// Exactly-once: messages since the last barrier.
    buffer: Vec<Outgoing>,
    /// Exactly-once: units of checkpoints not known to be complete.
    pending: Vec<Unit>,
    lineage: String,
}

impl KafkaWriter {
    fn err(&self, doing: &str, e: impl std::fmt::Display) -> Error {
        self.info
            .fail(format!("kafka topic {}: {doing}: {e}", self.sink.topic))
    }

    fn transactional_id(&self) -> Option<String> {
        match &self.sink.guarantee {
            DeliveryGuarantee::ExactlyOnce {
                transactional_id_prefix,
            } => Some(format!("{transactional_id_prefix}-{}", self.info.index)),
            _ => None,
        }
    }

    /// The subtask's producer, made (and, for transactions, initialised) on first use.
    fn producer(&mut self) -> Result<&BaseProducer<Deliveries>> {
        if self.producer.is_none() {
            let id = self.transactional_id();
            let producer = self.sink.producer(id.as_deref())?;
            if id.is_some() {
                producer
                    .init_transactions(REQUEST_TIMEOUT)
                    .map_err(|e| self.err("initialising transactions", e))?;
            }
            self.producer = Some(producer);
        }
        self.producer
            .as_ref()
            .ok_or_else(|| self.info.fail("no producer"))
    }

    /// Sends messages, waiting for room in librdkafka's queue when it is full.
    fn send_all(&self, producer: &BaseProducer<Deliveries>, messages: &[Outgoing]) -> Result<()> {
        for (key, value) in messages {
            let mut record = BaseRecord::<[u8], [u8]>::to(&self.sink.topic);
            if let Some(key) = key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = value {
                record = record.payload(value.as_slice());
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(self.err("sending", e)),
                }
            }
        }
        producer.poll(Duration::ZERO);
        failed_delivery(producer).map_or(Ok(()), |e| Err(self.err("delivering", e)))
    }

    /// Writes `units` of `lineage` in transactions of `producer`, each with its marker.
    fn publish(
        &self,
        producer: &BaseProducer<Deliveries>,
        transactional_id: &str,
        lineage: &str,
        units: &[Unit],
    ) -> Result<()> {
        let marker_group = self.marker_group(transactional_id)?;
        let group = marker_group
            .group_metadata()
            .ok_or_else(|| self.info.fail("the marker group has no metadata"))?;
        for unit in units {
            let attempt = (|| {
                producer
                    .begin_transaction()
                    .map_err(|e| self.err("beginning a transaction", e))?;
                self.send_all(producer, &unit.records)?;
                let marker = self.marker(unit.checkpoint, lineage)?;
                producer
                    .send_offsets_to_transaction(&marker, &group, REQUEST_TIMEOUT)
                    .map_err(|e| self.err("adding the marker to the transaction", e))?;
                producer
                    .commit_transaction(REQUEST_TIMEOUT)
                    .map_err(|e| self.err("committing a transaction", e))
            })();
            if let Err(e) = attempt {
                let _ = producer.abort_transaction(REQUEST_TIMEOUT);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A consumer of the marker group named like the transactional id (never subscribed).
    fn marker_group(&self, transactional_id: &str) -> Result<BaseConsumer> {
        let mut config = ClientConfig::new();
        for (k, v) in &self.sink.properties {
            config.set(k, v);
        }
        config
            .set("group.id", transactional_id)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| self.err("creating the marker group's consumer", e))
    }

    fn marker(&self, checkpoint: u64, lineage: &str) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        let offset = i64::try_from(checkpoint).unwrap_or(i64::MAX);
        tpl.add_partition_offset(&self.sink.topic, 0, Offset::Offset(offset))
            .map_err(|e| self.err("making the marker", e))?;
        if let Some(mut e) = tpl.find_partition(&self.sink.topic, 0) {
            e.set_metadata(lineage);
        }
        Ok(tpl)
    }

    /// The last committed marker of a marker group: (checkpoint, lineage).
    fn committed_marker(&self, transactional_id: &str) -> Result<Option<(i64, String)>> {
        let consumer = self.marker_group(transactional_id)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.sink.topic, 0);
        let committed = consumer
            .committed_offsets(tpl, REQUEST_TIMEOUT)
            .map_err(|e| self.err("reading the marker", e))?;
        Ok(committed
            .find_partition(&self.sink.topic, 0)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some((o, e.metadata().to_owned())),
                _ => None,
            }))
    }
}

fn failed_delivery(producer: &BaseProducer<Deliveries>) -> Option<String> {
    producer
        .context()
        .failed
        .lock()
        .ok()
        .and_then(|mut f| f.take())
}

impl Operator for KafkaWriter {
    fn process(&mut self, _input: usize, batch: RecordBatch, _out: &mut Output) -> Result<()> {
        match self.sink.guarantee {
            DeliveryGuarantee::ExactlyOnce { .. } => {
                let mut values = std::mem::take(&mut self.buffer);
                let encoded = self.sink.encode(&batch, &mut values);
                self.buffer = values;
                encoded
            }
            _ => {
                let mut values = Vec::with_capacity(batch.num_rows());
                self.sink.encode(&batch, &mut values)?;
                self.producer()?;
                let producer = self
                    .producer
                    .as_ref()
                    .ok_or_else(|| self.info.fail("no producer"))?;
                self.send_all(producer, &values)
            }
        }
    }

    fn snapshot(&mut self, checkpoint_id: u64, out: &mut StateWriter) -> Result<()> {
        match self.sink.guarantee {
            DeliveryGuarantee::None => Ok(()),
            DeliveryGuarantee::AtLeastOnce => {
                if let Some(producer) = &self.producer {
                    producer
                        .flush(REQUEST_TIMEOUT)
                        .map_err(|e| self.err("flushing", e))?;
                    if let Some(e) = failed_delivery(producer) {
                        return Err(self.err("delivering", e));
                    }
                }
                Ok(())
            }
            DeliveryGuarantee::ExactlyOnce { .. } => {
                if !self.buffer.is_empty() {
                    self.pending.push(Unit {
                        checkpoint: checkpoint_id,
                        records: std::mem::take(&mut self.buffer),
                    });
                }
                if !self.pending.is_empty() {
                    let pending = Pending {
                        transactional_id: self.transactional_id().unwrap_or_default(),
                        lineage: self.lineage.clone(),
                        units: self.pending.clone(),
                    };
                    out.list_entry(PENDING, encode(&pending)?);
                }
                Ok(())
            }
        }
    }

    fn checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (done, later): (Vec<Unit>, Vec<Unit>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|u| u.checkpoint <= checkpoint_id);
        self.pending = later;
        let id = self.transactional_id().unwrap_or_default();
        self.producer()?;
        let producer = self
            .producer
            .as_ref()
            .ok_or_else(|| self.info.fail("no producer"))?;
        // On failure the job fails; its restore publishes what this did not (its marker says).
        self.publish(producer, &id, &self.lineage, &done)
    }

    fn restore(&mut self, state: &RestoredState) -> Result<()> {
        for bytes in state.list(PENDING) {
            let pending: Pending = decode(bytes)?;
            // Fences the run that wrote the units: its open transaction is aborted.
            let producer = self.sink.producer(Some(&pending.transactional_id))?;
            producer
                .init_transactions(REQUEST_TIMEOUT)
                .map_err(|e| self.err("initialising transactions", e))?;
            let published = match self.committed_marker(&pending.transactional_id)? {
                Some((checkpoint, lineage)) if lineage == pending.lineage => checkpoint,
                _ => -1,
            };
            let missing: Vec<Unit> = pending
                .units
                .into_iter()
                .filter(|u| i64::try_from(u.checkpoint).unwrap_or(i64::MAX) > published)
                .collect();
            self.publish(
                &producer,
                &pending.transactional_id,
                &pending.lineage,
                &missing,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![
                    Some("a,b"),
                    Some("two\nlines"),
                    None,
                ])),
            ],
        )
        .unwrap()
    }

    fn values(format: ValueFormat) -> Vec<String> {
        let sink = KafkaSink::new("localhost:9092", "t", format);
        let mut out = Vec::new();
        sink.encode(&batch(), &mut out).unwrap();
        out.into_iter()
            .map(|(key, v)| {
                assert!(key.is_none());
                String::from_utf8(v.unwrap()).unwrap()
            })
            .collect()
    }

    #[test]
    fn every_row_is_one_message_even_with_line_breaks_in_values() {
        assert_eq!(
            values(ValueFormat::Csv { delimiter: b',' }),
            ["1,\"a,b\"", "2,\"two\nlines\"", "3,"]
        );
        assert_eq!(
            values(ValueFormat::Json),
            [
                r#"{"id":1,"text":"a,b"}"#,
                r#"{"id":2,"text":"two\nlines"}"#,
                r#"{"id":3,"text":null}"#
            ]
        );
    }

    #[test]
    fn messages_read_back_as_the_rows_they_were_written_from() {
        for format in [ValueFormat::Csv { delimiter: b',' }, ValueFormat::Json] {
            let source = KafkaSource::new("localhost:9092", "t", batch().schema(), format);
            let mut decoder = decoder(&source, "kafka(t)").unwrap();
            for v in values(format) {
                decoder.push(&v).unwrap();
            }
            assert_eq!(decoder.finish().unwrap().unwrap(), batch(), "{format:?}");
            assert!(decoder.finish().unwrap().is_none());
            let err = decoder.push("x,y,z").unwrap_err();
            assert!(!err.is_empty());
        }
    }

    #[test]
    fn an_upsert_sink_writes_rows_under_their_key_and_deletions_as_tombstones() {
        use crate::operators::group_aggregate::OP_COLUMN;
        let b = batch();
        let mut columns = b.columns().to_vec();
        // +I, -U, -D.
        columns.push(Arc::new(arrow::array::Int8Array::from(vec![0, 1, 3])));
        let mut fields = b.schema().fields().to_vec();
        fields.push(Arc::new(Field::new(OP_COLUMN, DataType::Int8, false)));
        let changelog = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let sink = KafkaSink::new("localhost:9092", "t", ValueFormat::Json)
            .key(&["id"], ValueFormat::Json)
            .upsert();
        let mut out = Vec::new();
        sink.encode(&changelog, &mut out).unwrap();
        let text = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8(b.clone()).unwrap());
        let messages: Vec<(Option<String>, Option<String>)> =
            out.iter().map(|(k, v)| (text(k), text(v))).collect();
        assert_eq!(
            messages,
            [
                (
                    Some(r#"{"id":1}"#.to_owned()),
                    Some(r#"{"id":1,"text":"a,b"}"#.to_owned())
                ),
                (Some(r#"{"id":3}"#.to_owned()), None),
            ]
        );
    }
}
