//! The test bed's Kafka broker (tests/testbed/kafka.sh): Apache Kafka's own single-node KRaft broker,
//! driven by Kafka's own CLI classes (`java -cp "$STROM_TESTBED_KAFKA_LIBS/*" ...`), since the project
//! has no Kafka client of its own. Proves what a Kafka connector test relies on: keyed records land in
//! partitions by key, a consumer group reads every record exactly once and commits its offsets, and a
//! later member of the same group resumes from them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use strom_tests::testbed::{TestBed, run_ok};

/// Every CLI call is bounded: `timeout` ends a stuck JVM (and `run_ok` then fails the test).
const TOOL_LIMIT_SECS: &str = "120";
/// The console consumer gives up after this long without a record.
const CONSUMER_IDLE_MS: &str = "60000";

struct Kafka {
    bootstrap: String,
    libs: String,
}

/// One partition's row of `ConsumerGroupCommand --describe`.
#[derive(Debug, PartialEq, Eq)]
struct PartitionOffsets {
    current: u64,
    log_end: u64,
    lag: u64,
}

impl Kafka {
    fn from_testbed() -> Kafka {
        let bed = TestBed::get();
        Kafka {
            bootstrap: bed.var("STROM_TESTBED_KAFKA_BOOTSTRAP").to_string(),
            libs: bed.var("STROM_TESTBED_KAFKA_LIBS").to_string(),
        }
    }

    /// `java` running Kafka's CLI class CLASS against the broker, light on memory and JIT (the
    /// machine has 2 cores and the broker runs beside it).
    fn tool(&self, class: &str) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", TOOL_LIMIT_SECS, "java"])
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-cp")
            .arg(format!("{}/*", self.libs))
            .arg(class)
            .args(["--bootstrap-server", &self.bootstrap]);
        cmd
    }

    fn create_topic(&self, topic: &str, partitions: u32) {
        let out = run_ok(
            self.tool("org.apache.kafka.tools.TopicCommand")
                .args(["--create", "--topic", topic, "--replication-factor", "1"])
                .args(["--partitions", &partitions.to_string()]),
        );
        assert!(out.contains(&format!("Created topic {topic}.")), "{out}");
    }

    /// Produces `key:value` records with the console producer (acks=all; it flushes before it exits).
    fn produce(&self, topic: &str, records: &[(String, String)]) {
        let mut cmd = self.tool("org.apache.kafka.tools.ConsoleProducer");
        cmd.args(["--topic", topic, "--request-required-acks", "all"])
            .args(["--reader-property", "parse.key=true"])
            .args(["--reader-property", "key.separator=:"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
        let input: String = records.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output().unwrap();
        writer
            .join()
            .unwrap()
            .expect("write records to the console producer");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{stderr}",
            out.status
        );
        // The console producer reports a failed send on stderr and still exits 0.
        assert!(!stderr.contains("Error when sending message"), "{stderr}");
    }

    /// Consumes exactly `count` records as a member of `group` (from the beginning when the group
    /// has no committed offsets, else from them) and returns (partition, key, value) in the order
    /// read. The consumer commits its position when it closes.
    fn consume(&self, topic: &str, group: &str, count: usize) -> Vec<(u32, String, String)> {
        let out = run_ok(
            self.tool("org.apache.kafka.tools.consumer.ConsoleConsumer")
                .args(["--topic", topic, "--group", group, "--from-beginning"])
                .args(["--max-messages", &count.to_string()])
                .args(["--timeout-ms", CONSUMER_IDLE_MS])
                .args(["--formatter-property", "print.partition=true"])
                .args(["--formatter-property", "print.key=true"])
                .args(["--formatter-property", "key.separator=:"]),
        );
        // Lines are `Partition:P:KEY:VALUE`.
        let records: Vec<(u32, String, String)> = out
            .lines()
            .map(|line| {
                let rest = line
                    .strip_prefix("Partition:")
                    .unwrap_or_else(|| panic!("unexpected consumer output line {line:?}"));
                let mut fields = rest.splitn(3, ':');
                let (p, k, v) = (fields.next(), fields.next(), fields.next());
                match (p.and_then(|p| p.parse().ok()), k, v) {
                    (Some(p), Some(k), Some(v)) => (p, k.to_string(), v.to_string()),
                    _ => panic!("unexpected consumer output line {line:?}"),
                }
            })
            .collect();
        assert_eq!(
            records.len(),
            count,
            "the consumer read {} records, not {count}: {out}",
            records.len()
        );
        records
    }

    /// The group's committed offsets on `topic`, by partition.
    fn group_offsets(&self, group: &str, topic: &str) -> BTreeMap<u32, PartitionOffsets> {
        let out = run_ok(
            self.tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand")
                .args(["--describe", "--group", group]),
        );
        let mut lines = out.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines
            .find(|l| l.starts_with("GROUP"))
            .unwrap_or_else(|| panic!("no table in {out}"))
            .split_whitespace()
            .collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
        };
        let (c_topic, c_part) = (col("TOPIC"), col("PARTITION"));
        let (c_cur, c_end, c_lag) = (col("CURRENT-OFFSET"), col("LOG-END-OFFSET"), col("LAG"));
        let num = |row: &[&str], c: usize| -> u64 {
            row[c]
                .parse()
                .unwrap_or_else(|_| panic!("not a number in column {c}: {row:?}\n{out}"))
        };
        lines
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|row| row.get(c_topic) == Some(&topic))
            .map(|row| {
                let offsets = PartitionOffsets {
                    current: num(&row, c_cur),
                    log_end: num(&row, c_end),
                    lag: num(&row, c_lag),
                };
                (num(&row, c_part) as u32, offsets)
            })
            .collect()
    }
}

/// Records `key:value` with distinct values; keys `k0000`.. so a later batch can reuse earlier keys.
fn records(keys: std::ops::Range<usize>, batch: &str) -> Vec<(String, String)> {
    keys.map(|i| (format!("k{i:04}"), format!("{batch}-v{i}")))
        .collect()
}

fn key_values(consumed: &[(u32, String, String)]) -> BTreeSet<(String, String)> {
    consumed
        .iter()
        .map(|(_, k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Records read per partition.
fn per_partition(consumed: &[(u32, String, String)]) -> BTreeMap<u32, u64> {
    let mut counts = BTreeMap::new();
    for (p, _, _) in consumed {
        *counts.entry(*p).or_insert(0) += 1;
    }
    counts
}

/// The group offsets of a group that has read and committed all of each partition's `n` records.
fn fully_read(counts: &BTreeMap<u32, u64>) -> BTreeMap<u32, PartitionOffsets> {
    counts
        .iter()
        .map(|(&p, &n)| {
            let offsets = PartitionOffsets {
                current: n,
                log_end: n,
                lag: 0,
            };
            (p, offsets)
        })
        .collect()
}

#[test]
fn consumer_group_reads_every_record_once_and_resumes_from_committed_offsets() {
    const N: usize = 300;
    const M: usize = 50;
    let kafka = Kafka::from_testbed();
    let unique = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic = format!("strom-smoke-{}-{unique}", std::process::id());
    let group = format!("{topic}-group");
    kafka.create_topic(&topic, 3);

    // N keyed records, read by one member of a new group.
    let first = records(0..N, "a");
    kafka.produce(&topic, &first);
    let consumed = kafka.consume(&topic, &group, N);
    let read = key_values(&consumed);
    assert_eq!(read.len(), N, "duplicates among the records read");
    assert_eq!(read, first.iter().cloned().collect::<BTreeSet<_>>());
    // Keys spread over all three partitions (the producer partitions by key).
    let counts = per_partition(&consumed);
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    let partition_of: BTreeMap<String, u32> =
        consumed.iter().map(|(p, k, _)| (k.clone(), *p)).collect();

    // The group committed exactly what it read: per partition the count read, lag 0, N in all.
    assert_eq!(kafka.group_offsets(&group, &topic), fully_read(&counts));
    assert_eq!(counts.values().sum::<u64>(), N as u64);

    // M more, reusing the first M keys with new values; the group resumes after its commits
    // (--from-beginning applies only to a group without offsets), so it reads exactly these.
    let second = records(0..M, "b");
    kafka.produce(&topic, &second);
    let consumed = kafka.consume(&topic, &group, M);
    assert_eq!(
        key_values(&consumed),
        second.iter().cloned().collect::<BTreeSet<_>>()
    );
    // A key's records stay in one partition.
    for (p, k, _) in &consumed {
        assert_eq!(partition_of[k], *p, "key {k} moved partitions");
    }
    let mut counts = counts;
    for (p, n) in per_partition(&consumed) {
        *counts.get_mut(&p).unwrap() += n;
    }
    assert_eq!(kafka.group_offsets(&group, &topic), fully_read(&counts));
    assert_eq!(counts.values().sum::<u64>(), (N + M) as u64);
}
