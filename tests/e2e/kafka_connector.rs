//! Strom's Kafka connector against the test bed's real broker: a Flink SQL job reads a topic and
//! writes its window aggregation to another exactly once; a DataStream job that fails twice
//! copies a topic with every record exactly once (offsets restored from checkpoints, pending
//! transactions published once); a malformed message fails the job with its position. Input is
//! written and output read back with librdkafka clients of the test's own (`read_committed`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::datatypes::{DataType, Field, Schema};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use strom::checkpoint::alignment::Mode;
use strom::checkpoint::store::{CheckpointStore, LocalStore};
use strom::connectors::kafka::{
    BoundedMode, DeliveryGuarantee, KafkaSink, KafkaSource, StartupMode, ValueFormat,
};
use strom::connectors::sinks::CollectSink;
use strom::runtime::RunOptions;
use strom::runtime::recovery::{JobStatus, RestartStrategy, run_with};
use strom::stream::StreamEnv;
use strom::{EngineConfig, sql};
use strom_tests::eo::{Chaos, checkpointing, temp_dir};
use strom_tests::testbed::TestBed;

/// The longest a test waits for the broker to hand back what it holds.
const READ_LIMIT: Duration = Duration::from_secs(120);

fn nonce() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Creates `topic` with `partitions` partitions (librdkafka's admin client: no JVM to start).
fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(READ_LIMIT));
    let results = futures::executor::block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &options,
    ))
    .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Writes `(partition, value)` messages and waits until the broker has them all.
fn produce(bootstrap: &str, topic: &str, messages: &[(i32, String)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .unwrap();
    for (partition, value) in messages {
        let mut record = BaseRecord::<(), str>::to(topic)
            .partition(*partition)
            .payload(value.as_str());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(READ_LIMIT).unwrap();
}

/// Every committed message of `topic` (all partitions, from the start to their current end), as a
/// `read_committed` consumer sees them.
fn read_committed(bootstrap: &str, topic: &str, partitions: i32) -> Vec<String> {
    read_messages(bootstrap, topic, partitions)
        .into_iter()
        .map(|(_, value)| value.expect("a message with a value"))
        .collect()
}

/// Like [`read_committed`], with each message's key; `None` for no key or no value (a tombstone).
fn read_messages(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Vec<(Option<String>, Option<String>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", nonce()))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut at_end = vec![false; partitions as usize];
    let mut values = Vec::new();
    let deadline = Instant::now() + READ_LIMIT;
    while !at_end.iter().all(|e| *e) {
        assert!(
            Instant::now() < deadline,
            "{topic}: not every partition reached its end within {READ_LIMIT:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => at_end[p as usize] = true,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                at_end[m.partition() as usize] = false;
                let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
                values.push((text(m.key()), text(m.payload())));
            }
        }
    }
    values
}

fn bootstrap() -> String {
    TestBed::get()
        .var("STROM_TESTBED_KAFKA_BOOTSTRAP")
        .to_string()
}

/// Events `i`: name `n{i % 7}`, amount `i % 100`, time 10 ms apart (ascending in each partition).
const BASE_MS: i64 = 1_700_000_000_000;

fn event(i: i64) -> String {
    let ts = arrow::temporal_conversions::timestamp_ms_to_datetime(BASE_MS + i * 10).unwrap();
    format!(
        r#"{{"id":{i},"name":"n{}","amount":{},"ts":"{}"}}"#,
        i % 7,
        i % 100,
        ts.format("%Y-%m-%d %H:%M:%S%.3f")
    )
}

#[test]
fn a_sql_job_reads_kafka_and_writes_its_window_totals_to_kafka_exactly_once() {
    let bootstrap = bootstrap();
    let n = nonce();
    let (input, output) = (format!("sql-in-{n}"), format!("sql-out-{n}"));
    create_topic(&bootstrap, &input, 3);
    create_topic(&bootstrap, &output, 2);
    let events = 20_000i64;
    let messages: Vec<(i32, String)> = (0..events).map(|i| ((i % 3) as i32, event(i))).collect();
    produce(&bootstrap, &input, &messages);

    let script = format!(
        "CREATE TABLE events (
            id BIGINT, name STRING, amount BIGINT, ts TIMESTAMP(3),
            WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
        ) WITH (
            'connector' = 'kafka', 'topic' = '{input}',
            'properties.bootstrap.servers' = '{bootstrap}',
            'properties.group.id' = 'strom-sql-{n}',
            'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
            'format' = 'json'
        );
        CREATE TABLE totals (
            name STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT, total BIGINT
        ) WITH (
            'connector' = 'kafka', 'topic' = '{output}',
            'properties.bootstrap.servers' = '{bootstrap}',
            'format' = 'json',
            'sink.delivery-guarantee' = 'exactly-once',
            'sink.transactional-id-prefix' = 'strom-sql-{n}'
        );
        INSERT INTO totals
        SELECT name, window_start, window_end, COUNT(*), SUM(amount)
        FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND))
        GROUP BY name, window_start, window_end;"
    );
    let script = sql::plan_script(&script).unwrap();
    let config = EngineConfig {
        parallelism: 2,
        batch_size: 512,
        ..EngineConfig::default()
    };
    let env = StreamEnv::new("kafka-sql", config);
    sql::compile::compile(&script, &env).unwrap();
    let graph = env.build().unwrap();
    let dir = temp_dir(&format!("kafka-sql-{n}"));
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(dir.join("checkpoints")));
    let options = RunOptions {
        checkpoints: Some(checkpointing(checkpoints, 20, Mode::ExactlyOnce)),
        restore: None,
        local_dir: Some(dir.join("local")),
    };
    let status = Arc::new(JobStatus::default());
    run_with(&graph, &options, RestartStrategy::None, &status, |_| {}).unwrap();

    // The reference: every event's window, by brute force.
    let mut expected: BTreeMap<(String, String, String), (i64, i64)> = BTreeMap::new();
    let text = |ms: i64| {
        arrow::temporal_conversions::timestamp_ms_to_datetime(ms)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    for i in 0..events {
        let t = BASE_MS + i * 10;
        let start = t - t.rem_euclid(10_000);
        let e = expected
            .entry((format!("n{}", i % 7), text(start), text(start + 10_000)))
            .or_default();
        e.0 += 1;
        e.1 += i % 100;
    }
    let mut actual: BTreeMap<(String, String, String), (i64, i64)> = BTreeMap::new();
    for line in read_committed(&bootstrap, &output, 2) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("{k} in {line}"))
                .to_owned()
        };
        // Window bounds are whole seconds: Flink writes them without a fraction.
        let key = (s("name"), s("window_start"), s("window_end"));
        let value = (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap());
        assert!(
            actual.insert(key.clone(), value).is_none(),
            "{key:?} was written twice"
        );
    }
    assert_eq!(actual, expected);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The state an upsert topic's messages leave per key: the last value, unless a tombstone came
/// after it.
fn upserted(messages: Vec<(Option<String>, Option<String>)>) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for (key, value) in messages {
        let key = key.expect("every upsert message has a key");
        match value {
            Some(v) => state.insert(key, v),
            None => state.remove(&key),
        };
    }
    state
}

#[test]
fn updating_sql_results_go_to_upsert_kafka_as_keyed_upserts_and_tombstones() {
    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::Int64Type;
    use strom::connectors::nexmark::{NexmarkConfig, bids_batch};
    let bootstrap = bootstrap();
    let n = nonce();
    let (counts, top) = (format!("upsert-counts-{n}"), format!("upsert-top-{n}"));
    create_topic(&bootstrap, &counts, 2);
    create_topic(&bootstrap, &top, 1);
    const EVENTS: usize = 20_000;
    let sink = |topic: &str| {
        format!(
            "'connector' = 'upsert-kafka', 'topic' = '{topic}',
             'properties.bootstrap.servers' = '{bootstrap}',
             'key.format' = 'json', 'value.format' = 'json'"
        )
    };
    // Bids per bidder: every count is an update of its key. The five auctions with the highest
    // total price (the rank not shown): an auction that leaves them is deleted.
    let script = format!(
        "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT)
         WITH ('connector' = 'nexmark', 'table' = 'bid', 'events.num' = '{EVENTS}',
               'event.rate' = '1000');
         CREATE TABLE bid_counts (bidder BIGINT, bids BIGINT, PRIMARY KEY (bidder) NOT ENFORCED)
         WITH ({});
         CREATE TABLE top_auctions (auction BIGINT, total BIGINT,
                                    PRIMARY KEY (auction) NOT ENFORCED)
         WITH ({});
         INSERT INTO bid_counts SELECT bidder, COUNT(*) FROM bid GROUP BY bidder;
         INSERT INTO top_auctions
         SELECT auction, total FROM (
             SELECT *, ROW_NUMBER() OVER (ORDER BY total DESC, auction ASC) AS rownum
             FROM (SELECT auction, SUM(price) AS total FROM bid GROUP BY auction))
         WHERE rownum <= 5;",
        sink(&counts),
        sink(&top)
    );
    let script = sql::plan_script(&script).unwrap();
    let env = StreamEnv::new(
        "upsert-kafka",
        EngineConfig {
            parallelism: 2,
            ..EngineConfig::default()
        },
    );
    sql::compile::compile(&script, &env).unwrap();
    env.execute().unwrap();

    // The reference, by brute force over the same generated bids.
    let cfg = NexmarkConfig {
        events_per_second: 1000,
        ..NexmarkConfig::default()
    };
    let bids: RecordBatch = bids_batch(&cfg, 0, 1, EVENTS / 50 * 46, None).unwrap();
    let column = |name: &str| {
        bids.column(bids.schema().index_of(name).unwrap())
            .as_primitive::<Int64Type>()
            .clone()
    };
    let (auction, bidder, price) = (column("auction"), column("bidder"), column("price"));
    let mut per_bidder: BTreeMap<i64, i64> = BTreeMap::new();
    let mut per_auction: BTreeMap<i64, i64> = BTreeMap::new();
    for i in 0..bids.num_rows() {
        *per_bidder.entry(bidder.value(i)).or_default() += 1;
        *per_auction.entry(auction.value(i)).or_default() += price.value(i);
    }
    let expected_counts: BTreeMap<String, String> = per_bidder
        .iter()
        .map(|(b, c)| {
            (
                format!(r#"{{"bidder":{b}}}"#),
                format!(r#"{{"bidder":{b},"bids":{c}}}"#),
            )
        })
        .collect();
    let mut totals: Vec<(i64, i64)> = per_auction.into_iter().collect();
    totals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let expected_top: BTreeMap<String, String> = totals[..5]
        .iter()
        .map(|(a, t)| {
            (
                format!(r#"{{"auction":{a}}}"#),
                format!(r#"{{"auction":{a},"total":{t}}}"#),
            )
        })
        .collect();

    let count_messages = read_messages(&bootstrap, &counts, 2);
    assert!(
        count_messages.len() > expected_counts.len(),
        "updates were written"
    );
    assert_eq!(upserted(count_messages), expected_counts);
    let top_messages = read_messages(&bootstrap, &top, 1);
    assert!(
        top_messages.iter().any(|(_, v)| v.is_none()),
        "auctions that left the top five were deleted with tombstones"
    );
    assert_eq!(upserted(top_messages), expected_top);
}

#[test]
fn failures_neither_lose_nor_repeat_a_record_from_kafka_to_kafka() {
    let bootstrap = bootstrap();
    let n = nonce();
    let (input, output) = (format!("copy-in-{n}"), format!("copy-out-{n}"));
    create_topic(&bootstrap, &input, 4);
    create_topic(&bootstrap, &output, 3);
    let records = 30_000i64;
    let messages: Vec<(i32, String)> = (0..records)
        .map(|i| ((i % 4) as i32, format!(r#"{{"id":{i},"v":{}}}"#, i * 3)))
        .collect();
    produce(&bootstrap, &input, &messages);

    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let env = StreamEnv::new(
        "kafka-copy",
        EngineConfig {
            parallelism: 2,
            batch_size: 256,
            ..EngineConfig::default()
        },
    );
    // Two failures, at records a third and two thirds of the way through.
    let chaos = Chaos::new(vec![10_000, 20_000]);
    let check = chaos.clone();
    let source = KafkaSource::new(&bootstrap, &input, schema.clone(), ValueFormat::Json)
        .startup(StartupMode::Earliest)
        .bounded(BoundedMode::Latest);
    env.from_source(source, None)
        .uid("in")
        .map_batches("chaos", schema, move |b| {
            check.check(b.num_rows() as u64)?;
            // Slow enough that checkpoints complete between the failures.
            std::thread::sleep(Duration::from_millis(3));
            Ok(b)
        })
        .sink(
            KafkaSink::new(&bootstrap, &output, ValueFormat::Json).guarantee(
                DeliveryGuarantee::ExactlyOnce {
                    transactional_id_prefix: format!("copy-{n}"),
                },
            ),
        )
        .uid("out");
    let graph = env.build().unwrap();
    let dir = temp_dir(&format!("kafka-copy-{n}"));
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(LocalStore::new(dir.join("checkpoints")));
    let options = RunOptions {
        checkpoints: Some(checkpointing(checkpoints, 30, Mode::ExactlyOnce)),
        restore: None,
        local_dir: Some(dir.join("local")),
    };
    let status = Arc::new(JobStatus::default());
    run_with(
        &graph,
        &options,
        RestartStrategy::FixedDelay {
            attempts: 3,
            delay_ms: 10,
        },
        &status,
        |_| {},
    )
    .unwrap();
    assert_eq!(chaos.fired(), 2, "both failures were injected");
    assert_eq!(status.restarts(), 2);
    assert!(
        !status.restored_from().is_empty(),
        "a restart restored a checkpoint (offsets and pending transactions)"
    );

    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for line in read_committed(&bootstrap, &output, 3) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let id = v["id"].as_i64().unwrap();
        assert_eq!(v["v"].as_i64(), Some(id * 3), "{line}");
        *seen.entry(id).or_default() += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(
        repeated.is_empty(),
        "records written more than once: {repeated:?}"
    );
    let missing: Vec<i64> = (0..records)
        .filter(|i| !seen.contains_key(i))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "records never written: {missing:?}");
    assert_eq!(seen.len() as i64, records);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_malformed_message_fails_the_job_with_its_topic_partition_and_offset() {
    let bootstrap = bootstrap();
    let topic = format!("bad-{}", nonce());
    create_topic(&bootstrap, &topic, 1);
    let messages: Vec<(i32, String)> = vec![
        (0, r#"{"id":1}"#.into()),
        (0, r#"{"id":2}"#.into()),
        (0, r#"{"id":"three"}"#.into()),
        (0, r#"{"id":4}"#.into()),
    ];
    produce(&bootstrap, &topic, &messages);
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let env = StreamEnv::new("kafka-bad", EngineConfig::default());
    let source = KafkaSource::new(&bootstrap, &topic, schema, ValueFormat::Json)
        .bounded(BoundedMode::Latest);
    env.from_source(source, None).sink(CollectSink::new());
    let err = env.execute().unwrap_err().to_string();
    assert!(err.contains(&format!("{topic}/0@2")), "{err}");
    assert!(err.contains("id"), "{err}");
}
