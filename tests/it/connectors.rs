//! Connectors: file sink → file source round trips (CSV, JSON lines) at several parallelisms,
//! malformed input under both error policies, the Nexmark source against the row-at-a-time
//! generator, and the datagen sources against their formulas.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use strom::connectors::collection::CollectionSource;
use strom::connectors::datagen::{DatagenSource, KeyedEvents};
use strom::connectors::file::{FileSink, FileSource};
use strom::connectors::nexmark::{self, NexmarkConfig};
use strom::connectors::nexmark_source::NexmarkSource;
use strom::connectors::sinks::CollectSink;
use strom::operators::aggregate::Agg;
use strom::row::{Row, Value, batch_from_rows, rows_of};
use strom::stream::StreamEnv;
use strom::time::WatermarkStrategy;
use strom::{EngineConfig, ErrorPolicy};
use strom_tests::{Lcg, sorted};

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "strom-it-{tag}-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn env(name: &str, parallelism: u32, policy: ErrorPolicy) -> StreamEnv {
    StreamEnv::new(
        name,
        EngineConfig {
            parallelism,
            batch_size: 64,
            error_policy: policy,
            ..EngineConfig::default()
        },
    )
}

fn ts_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

fn round_trip_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Float64, false),
        Field::new("flag", DataType::Boolean, true),
        Field::new("ts", ts_ms(), false),
        Field::new("small", DataType::Int32, true),
        Field::new("big", DataType::UInt64, false),
        Field::new("ratio", DataType::Float32, false),
        Field::new("day", DataType::Date32, true),
        Field::new("label", DataType::Utf8, false),
    ]))
}

/// Rows with awkward values: delimiters, quotes and line breaks in strings, empty strings next to
/// nulls, extreme integers, floats needing all 17 digits, pre-1970 timestamps.
fn round_trip_rows(n: usize) -> Vec<Row> {
    let texts = [
        "plain",
        "",
        "a,b",
        "say \"hi\"",
        "two\nlines",
        "crlf\r\nend",
        "  padded  ",
        "ünïcødé ✓",
        "back\\slash",
        "tab\there",
        "{\"json\": [1, 2]}",
        "semi;colon",
        "\"",
    ];
    let mut rng = Lcg::new(42);
    (0..n)
        .map(|i| {
            let name = match rng.below(15) {
                0 | 1 => Value::Null,
                k => Value::Str(texts[(k as usize + i) % texts.len()].to_owned()),
            };
            let price = (rng.next_u64() as f64 - (1u64 << 52) as f64) / 7.0;
            let flag = match rng.below(3) {
                0 => Value::Null,
                1 => Value::Bool(true),
                _ => Value::Bool(false),
            };
            let ts = Value::Int(rng.below(4_000_000_000_000) as i64 - 1_000_000_000_000);
            let small = match i % 5 {
                0 => Value::Null,
                1 => Value::Int(i32::MIN.into()),
                2 => Value::Int(i32::MAX.into()),
                _ => Value::Int(rng.below(2000) as i64 - 1000),
            };
            let big = Value::UInt(if i % 7 == 0 { u64::MAX } else { rng.next_u64() });
            let ratio = Value::Float(f64::from((rng.below(1 << 20) as f32 - 1000.0) / 3.0));
            let day = if i % 6 == 0 {
                Value::Null
            } else {
                Value::Int(rng.below(40_000) as i64 - 5_000)
            };
            let label = Value::Str(texts[i % texts.len()].to_owned());
            vec![
                Value::Int(i as i64),
                name,
                Value::Float(price),
                flag,
                ts,
                small,
                big,
                ratio,
                day,
                label,
            ]
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Format {
    Csv,
    JsonLines,
}

fn round_trip(format: Format, parallelism: u32) {
    let dir = TempDir::new("round-trip");
    let out = dir.path().join("out");
    let schema = round_trip_schema();
    let rows = round_trip_rows(500);
    // What the rows are once in a batch (e.g. floats narrowed to the Float32 column).
    let expected = sorted(rows_of(&batch_from_rows(&schema, &rows).unwrap()).unwrap());

    let write = env("write", parallelism, ErrorPolicy::Fail);
    let source = CollectionSource::from_rows("rows", schema.clone(), &rows, 16).unwrap();
    let stream = write.from_source(source, None).rebalance();
    match format {
        Format::Csv => stream.sink(FileSink::csv(&out)),
        Format::JsonLines => stream.sink(FileSink::json_lines(&out)),
    };
    write.execute().unwrap();

    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let ext = match format {
        Format::Csv => "csv",
        Format::JsonLines => "jsonl",
    };
    let want: Vec<String> = (0..parallelism)
        .map(|i| format!("part-{i}.{ext}"))
        .collect();
    assert_eq!(
        names, want,
        "one part file per subtask, no in-progress file left"
    );

    let read = env("read", parallelism, ErrorPolicy::Fail);
    let source = match format {
        Format::Csv => FileSource::csv(&out, schema.clone()).unwrap(),
        Format::JsonLines => FileSource::json_lines(&out, schema.clone()).unwrap(),
    };
    assert_eq!(source.files().len(), parallelism as usize);
    let sink = CollectSink::new();
    read.from_source(source, None).sink(sink.clone());
    read.execute().unwrap();
    let got = sink.sorted_rows().unwrap();
    assert_eq!(got.len(), expected.len(), "{format:?} p={parallelism}");
    assert_eq!(got, expected, "{format:?} p={parallelism}");
}

#[test]
fn csv_round_trips_through_file_sink_and_source_at_p1_p2_p4() {
    for p in [1, 2, 4] {
        round_trip(Format::Csv, p);
    }
}

#[test]
fn json_lines_round_trip_through_file_sink_and_source_at_p1_p2_p4() {
    for p in [1, 2, 4] {
        round_trip(Format::JsonLines, p);
    }
}

#[test]
fn csv_sink_writes_epoch_millis_and_quotes_only_when_needed() {
    let dir = TempDir::new("csv-text");
    let schema = Arc::new(Schema::new(vec![
        Field::new("s", DataType::Utf8, true),
        Field::new("ts", ts_ms(), false),
    ]));
    let rows = vec![
        vec![Value::Str("a,b".into()), Value::Int(1_700_000_000_123)],
        vec![Value::Null, Value::Int(-1)],
        vec![Value::Str(String::new()), Value::Int(0)],
    ];
    let e = env("write", 1, ErrorPolicy::Fail);
    e.from_source(
        CollectionSource::from_rows("rows", schema, &rows, 10).unwrap(),
        None,
    )
    .sink(FileSink::csv(dir.path()));
    e.execute().unwrap();
    let text = std::fs::read_to_string(dir.path().join("part-0.csv")).unwrap();
    assert_eq!(text, "s,ts\n\"a,b\",1700000000123\n,-1\n\"\",0\n");
}

#[test]
fn file_source_reads_text_timestamps_custom_delimiter_and_no_header() {
    let dir = TempDir::new("text-ts");
    let file = dir.path().join("in.csv");
    std::fs::write(
        &file,
        "1;2023-11-14T22:13:20.123Z\n\n2;2023-11-14 22:13:21\r\n3;1700000000000\n4;2023-11-15T00:13:20.5+02:00\n",
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("ts", ts_ms(), false),
    ]));
    let e = env("read", 1, ErrorPolicy::Fail);
    let sink = CollectSink::new();
    e.from_source(
        FileSource::csv(&file, schema)
            .unwrap()
            .with_header(false)
            .with_delimiter(b';'),
        Some(WatermarkStrategy::ascending("ts")),
    )
    .sink(sink.clone());
    e.execute().unwrap();
    let got: Vec<(i64, i64)> = sink
        .sorted_rows()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_i64().unwrap(), r[1].as_i64().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (1, 1_700_000_000_123),
            (2, 1_700_000_001_000),
            (3, 1_700_000_000_000),
            (4, 1_700_000_000_500)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Malformed records
// ---------------------------------------------------------------------------------------------

fn bad_input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("ts", ts_ms(), false),
    ]))
}

/// A CSV file of good and bad lines: `(contents, good ids, bad (line, raw, reason fragment))`.
fn bad_csv(first_id: i64) -> (Vec<u8>, Vec<i64>, Vec<(u64, String, &'static str)>) {
    let mut out = Vec::new();
    let mut good = Vec::new();
    let mut bad = Vec::new();
    out.extend_from_slice(b"id,name,ts\n");
    let mut line = 1u64;
    let mut push_good = |out: &mut Vec<u8>, line: &mut u64, id: i64| {
        out.extend_from_slice(format!("{id},name {id},{}\n", 1_700_000_000_000 + id).as_bytes());
        *line += 1;
        good.push(id);
    };
    let mut id = first_id;
    for (raw, reason) in [
        ("1,2", "expected 3 fields, found 2"),
        ("x,abc,1700000000000", "'x' is not a valid Int64"),
        ("5,abc,yesterday", "is not a valid Timestamp"),
        ("6,a,b,c", "expected 3 fields, found 4"),
        (",abc,1700000000000", "missing value"),
        ("7,\"ab\"c,1700000000000", "after its closing quote"),
        ("99999999999999999999,abc,1", "is not a valid Int64"),
    ] {
        push_good(&mut out, &mut line, id);
        id += 1;
        line += 1;
        out.extend_from_slice(raw.as_bytes());
        out.push(b'\n');
        bad.push((line, raw.to_owned(), reason));
    }
    // Invalid UTF-8.
    push_good(&mut out, &mut line, id);
    id += 1;
    line += 1;
    out.extend_from_slice(b"8,\xff\xfe,1700000000000\n");
    bad.push((line, "8,\u{fffd}\u{fffd},1700000000000".to_owned(), "UTF-8"));
    // A quoted field that never closes: only its own line is lost; the lines after it are read.
    line += 1;
    out.extend_from_slice(b"9,\"never closed,1700000000000\n");
    bad.push((
        line,
        "9,\"never closed,1700000000000".to_owned(),
        "unterminated",
    ));
    for _ in 0..3 {
        push_good(&mut out, &mut line, id);
        id += 1;
    }
    (out, good, bad)
}

#[test]
fn malformed_csv_fails_the_job_naming_file_and_line() {
    let dir = TempDir::new("bad-fail");
    let file = dir.path().join("bad.csv");
    let (contents, _, bad) = bad_csv(100);
    std::fs::write(&file, contents).unwrap();
    let e = env("fail", 1, ErrorPolicy::Fail);
    e.from_source(FileSource::csv(&file, bad_input_schema()).unwrap(), None)
        .sink(CollectSink::new());
    let message = e.execute().unwrap_err().to_string();
    let first = &bad[0];
    assert!(
        message.contains(&format!("bad.csv:{}", first.0)) && message.contains(first.2),
        "{message}"
    );
}

#[test]
fn malformed_csv_records_go_to_dead_letters_exactly_once() {
    for p in [1, 2, 4] {
        let dir = TempDir::new("bad-dead");
        let mut good_ids = Vec::new();
        let mut expected_dead = Vec::new();
        let mut total = 0;
        for (f, first_id) in [("a.csv", 0), ("b.csv", 1000)] {
            let (contents, good, bad) = bad_csv(first_id);
            std::fs::write(dir.path().join(f), contents).unwrap();
            total += good.len() + bad.len();
            good_ids.extend(good);
            let path = dir.path().join(f);
            expected_dead
                .extend(bad.into_iter().map(|(line, raw, reason)| {
                    (format!("{}:{line}", path.display()), raw, reason)
                }));
        }
        // Hidden and marker files are not input.
        std::fs::write(dir.path().join(".hidden.csv"), "garbage\n").unwrap();
        std::fs::write(dir.path().join("_SUCCESS"), "").unwrap();

        let e = env("dead", p, ErrorPolicy::DeadLetter);
        let good_sink = CollectSink::new();
        let dead_sink = CollectSink::new();
        e.from_source(
            FileSource::csv(dir.path(), bad_input_schema()).unwrap(),
            None,
        )
        .sink(good_sink.clone());
        e.dead_letters().sink(dead_sink.clone());
        e.execute().unwrap();

        let mut got_ids: Vec<i64> = good_sink
            .rows()
            .unwrap()
            .iter()
            .map(|r| r[0].as_i64().unwrap())
            .collect();
        got_ids.sort_unstable();
        good_ids.sort_unstable();
        assert_eq!(got_ids, good_ids, "p={p}");

        // Dead letters: source, position, reason, raw.
        let dead = dead_sink.rows().unwrap();
        let mut got_dead: Vec<(String, String, String)> = dead
            .iter()
            .map(|r| {
                assert!(r[0].as_str().unwrap().starts_with("csv("), "{r:?}");
                (
                    r[1].as_str().unwrap().to_owned(),
                    r[3].as_str().unwrap().to_owned(),
                    r[2].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        got_dead.sort();
        expected_dead.sort();
        assert_eq!(got_dead.len(), expected_dead.len(), "p={p}: {got_dead:#?}");
        for ((pos, raw, reason), (want_pos, want_raw, fragment)) in
            got_dead.iter().zip(&expected_dead)
        {
            assert_eq!((pos, raw), (want_pos, want_raw), "p={p}");
            assert!(
                reason.contains(fragment),
                "p={p} {pos}: '{reason}' lacks '{fragment}'"
            );
        }
        assert_eq!(
            good_sink.len() + dead.len(),
            total,
            "nothing dropped silently"
        );
    }
}

#[test]
fn malformed_json_lines_fail_or_go_to_dead_letters() {
    let dir = TempDir::new("bad-json");
    let file = dir.path().join("events.jsonl");
    let lines = [
        (r#"{"id": 1, "name": "a", "ts": 1700000000000}"#, None),
        (
            r#"{"ts": "2023-11-14T22:13:20Z", "extra": {"x": [1, 2]}, "name": "b", "id": 2}"#,
            None,
        ),
        (r#"{"id": 3, "name": "c", "ts": 17"#, Some("invalid JSON")),
        (
            r#"{"id": 4, "name": "d"}"#,
            Some("missing required field 'ts'"),
        ),
        (
            r#"{"id": "5", "name": "e", "ts": 1}"#,
            Some("not a valid Int64"),
        ),
        (r#"{"id": 6, "name": null, "ts": 1}"#, Some("null")),
        (r#"{"id": 7, "name": ["x"], "ts": 1}"#, Some("an array")),
        (
            r#"{"id": 8.5, "name": "h", "ts": 1}"#,
            Some("not a valid Int64"),
        ),
        (r#"[1, 2, 3]"#, Some("JSON object")),
        (
            r#"{"id": 10, "name": "j\u00e9", "ts": "2023-11-14 22:13:20.250"}"#,
            None,
        ),
        (
            r#"{"id": 11, "name": "k", "ts": "soon"}"#,
            Some("not a valid Timestamp"),
        ),
    ];
    let mut text = String::new();
    for (line, _) in &lines {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("   \n");
    std::fs::write(&file, text).unwrap();

    // Fail: the first bad line (3) is named.
    let e = env("fail", 1, ErrorPolicy::Fail);
    e.from_source(
        FileSource::json_lines(&file, bad_input_schema()).unwrap(),
        None,
    )
    .sink(CollectSink::new());
    let message = e.execute().unwrap_err().to_string();
    assert!(
        message.contains("events.jsonl:3") && message.contains("invalid JSON"),
        "{message}"
    );

    // Dead letters: the good ones arrive, each bad one once.
    let e = env("dead", 1, ErrorPolicy::DeadLetter);
    let good = CollectSink::new();
    let dead = CollectSink::new();
    e.from_source(
        FileSource::json_lines(&file, bad_input_schema()).unwrap(),
        None,
    )
    .sink(good.clone());
    e.dead_letters().sink(dead.clone());
    e.execute().unwrap();
    assert_eq!(
        good.sorted_rows().unwrap(),
        [
            vec![Value::Int(1), "a".into(), Value::Int(1_700_000_000_000)],
            vec![Value::Int(2), "b".into(), Value::Int(1_700_000_000_000)],
            vec![Value::Int(10), "jé".into(), Value::Int(1_700_000_000_250)],
        ]
    );
    let mut got: Vec<(String, String, String)> = dead
        .rows()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[1].as_str().unwrap().to_owned(),
                r[2].as_str().unwrap().to_owned(),
                r[3].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, &str, &str)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, (line, reason))| {
            reason.map(|r| (format!("{}:{}", file.display(), i + 1), r, *line))
        })
        .collect();
    want.sort();
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for ((pos, reason, raw), (want_pos, fragment, want_raw)) in got.iter().zip(&want) {
        assert_eq!((pos, raw.as_str()), (want_pos, *want_raw));
        assert!(
            reason.contains(fragment),
            "{pos}: '{reason}' lacks '{fragment}'"
        );
    }
    assert_eq!(
        good.len() + got.len(),
        lines.len(),
        "nothing dropped silently"
    );
}

// ---------------------------------------------------------------------------------------------
// Nexmark
// ---------------------------------------------------------------------------------------------

fn bid_row(b: &nexmark::Bid) -> Row {
    vec![
        Value::Int(b.auction),
        Value::Int(b.bidder),
        Value::Int(b.price),
        Value::Str(b.channel.clone()),
        Value::Str(b.url.clone()),
        Value::Int(b.date_time),
        Value::Str(b.extra.clone()),
    ]
}

#[test]
fn nexmark_bids_equal_the_row_generator_at_p1_p2_p4() {
    let cfg = NexmarkConfig {
        seed: 11,
        extra_bytes: 8,
        events_per_second: 1000,
        ..NexmarkConfig::default()
    };
    let n = 1500u64;
    let expected = sorted((0..n).map(|k| bid_row(&nexmark::bid(&cfg, k))).collect());
    for p in [1, 2, 4] {
        let e = env("nexmark", p, ErrorPolicy::Fail);
        let sink = CollectSink::new();
        e.from_source(
            NexmarkSource::bids(cfg.clone(), Some(n)),
            Some(WatermarkStrategy::ascending("date_time")),
        )
        .sink(sink.clone());
        e.execute().unwrap();
        assert_eq!(sink.sorted_rows().unwrap(), expected, "p={p}");
    }
}

#[test]
fn nexmark_projection_generates_only_the_chosen_columns() {
    let cfg = NexmarkConfig::default();
    let n = 700u64;
    let source = NexmarkSource::bids(cfg.clone(), Some(n))
        .with_projection(&["auction", "price", "date_time"])
        .unwrap();
    let e = env("projected", 3, ErrorPolicy::Fail);
    let sink = CollectSink::new();
    let stream = e.from_source(source, Some(WatermarkStrategy::ascending("date_time")));
    let names: Vec<&str> = stream
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["auction", "price", "date_time"]);
    stream.sink(sink.clone());
    e.execute().unwrap();
    let expected = sorted(
        (0..n)
            .map(|k| {
                let b = nexmark::bid(&cfg, k);
                vec![
                    Value::Int(b.auction),
                    Value::Int(b.price),
                    Value::Int(b.date_time),
                ]
            })
            .collect(),
    );
    assert_eq!(sink.sorted_rows().unwrap(), expected);

    assert!(
        NexmarkSource::bids(cfg, Some(1))
            .with_projection(&["auction", "nope"])
            .is_err()
    );
}

#[test]
fn nexmark_auctions_and_persons_cover_their_ids() {
    let cfg = NexmarkConfig::default();
    for p in [1, 3] {
        let e = env("ids", p, ErrorPolicy::Fail);
        let auctions = CollectSink::new();
        let persons = CollectSink::new();
        e.from_source(NexmarkSource::auctions(cfg.clone(), Some(101)), None)
            .sink(auctions.clone());
        e.from_source(
            NexmarkSource::persons(cfg.clone(), Some(37))
                .with_projection(&["id", "name"])
                .unwrap(),
            None,
        )
        .sink(persons.clone());
        e.execute().unwrap();
        let ids = |s: &CollectSink| -> Vec<i64> {
            s.sorted_rows()
                .unwrap()
                .iter()
                .map(|r| r[0].as_i64().unwrap())
                .collect()
        };
        assert_eq!(ids(&auctions), (1000..1101).collect::<Vec<_>>());
        assert_eq!(ids(&persons), (1000..1037).collect::<Vec<_>>());
        let first = persons.sorted_rows().unwrap()[0].clone();
        assert_eq!(first[1], Value::Str(nexmark::person(&cfg, 0).name));
    }
}

// ---------------------------------------------------------------------------------------------
// Datagen
// ---------------------------------------------------------------------------------------------

/// The benchmark's generator, written out from its specification.
fn reference_event(n: u64) -> (i64, i64) {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z % 1000) as i64, 1_700_000_000_000 + (n / 1000) as i64)
}

#[test]
fn keyed_events_follow_the_formula() {
    let events = KeyedEvents::new(5000);
    let batch = events.batch(0..5000).unwrap();
    let rows = rows_of(&batch).unwrap();
    assert_eq!(batch.schema().field(0).name(), "key");
    assert_eq!(batch.schema().field(1).name(), "ts");
    assert_eq!(batch.schema().field(1).data_type(), &ts_ms());
    for (n, row) in rows.iter().enumerate() {
        let (key, ts) = reference_event(n as u64);
        assert_eq!(row, &vec![Value::Int(key), Value::Int(ts)], "event {n}");
    }
    // splitmix64(0) is the well-known first output of splitmix64 seeded with 0.
    assert_eq!(
        rows[0][0],
        Value::Int((0xE220_A839_7B1D_CDAFu64 % 1000) as i64)
    );
}

#[test]
fn keyed_events_counts_per_key_match_brute_force() {
    let n = 20_000u64;
    let mut brute: HashMap<i64, i64> = HashMap::new();
    for i in 0..n {
        *brute.entry(reference_event(i).0).or_default() += 1;
    }
    for p in [1, 3] {
        let e = env("keyed", p, ErrorPolicy::Fail);
        let raw = CollectSink::new();
        let counts = CollectSink::new();
        let events = e.from_source(
            KeyedEvents::new(n),
            Some(WatermarkStrategy::ascending("ts")),
        );
        events.sink(raw.clone());
        events
            .key_by(&["key"])
            .aggregate(&[Agg::count("n")])
            .sink(counts.clone());
        e.execute().unwrap();

        let expected = sorted(
            (0..n)
                .map(|i| {
                    let (k, t) = reference_event(i);
                    vec![Value::Int(k), Value::Int(t)]
                })
                .collect(),
        );
        assert_eq!(raw.sorted_rows().unwrap(), expected, "p={p}");
        // The rolling count emits a running count per record; the last is the largest.
        let mut finals: HashMap<i64, i64> = HashMap::new();
        for r in counts.rows().unwrap() {
            let (k, c) = (r[0].as_i64().unwrap(), r[1].as_i64().unwrap());
            let slot = finals.entry(k).or_default();
            *slot = (*slot).max(c);
        }
        assert_eq!(finals, brute, "p={p}");
    }
    // A different number of keys.
    let few = KeyedEvents::new(1000).with_keys(7).batch(0..1000).unwrap();
    for (i, row) in rows_of(&few).unwrap().iter().enumerate() {
        let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        assert_eq!(row[0], Value::Int((z % 7) as i64));
    }
}

#[test]
fn datagen_rows_are_the_same_at_any_parallelism() {
    let source = || {
        DatagenSource::new()
            .with_name("gen")
            .sequence("id", 1, 777)
            .random_int("user", 0, 9)
            .random_float("amount", -1.0, 1.0)
            .random_string("tag", 10)
            .event_time("ts", 100)
            .with_seed(5)
    };
    let reference = source();
    let expected = sorted((0..777).map(|r| reference.row(r)).collect());
    for p in [1, 2, 3] {
        let e = env("datagen", p, ErrorPolicy::Fail);
        let sink = CollectSink::new();
        e.from_source(source(), Some(WatermarkStrategy::ascending("ts")))
            .sink(sink.clone());
        e.execute().unwrap();
        let rows = sink.sorted_rows().unwrap();
        assert_eq!(rows, expected, "p={p}");
        let ids: Vec<i64> = rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
        assert_eq!(ids, (1..=777).collect::<Vec<_>>());
        for r in &rows {
            assert!((0..=9).contains(&r[1].as_i64().unwrap()));
            let f = r[2].as_f64().unwrap();
            assert!((-1.0..1.0).contains(&f));
            let tag = r[3].as_str().unwrap();
            assert!(tag.len() == 10 && tag.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
    // A row limit bounds a source without sequences.
    let e = env("limited", 2, ErrorPolicy::Fail);
    let sink = CollectSink::new();
    e.from_source(
        DatagenSource::new().random_int("x", 0, 3).with_limit(123),
        None,
    )
    .sink(sink.clone());
    e.execute().unwrap();
    assert_eq!(sink.len(), 123);
}

#[test]
fn rate_limited_generators_still_produce_everything() {
    // 300 rows at 30,000 rows/s: about 10 ms of pacing; only completeness is checked.
    let e = env("paced", 2, ErrorPolicy::Fail);
    let bids = CollectSink::new();
    let rows = CollectSink::new();
    e.from_source(
        NexmarkSource::bids(NexmarkConfig::default(), Some(300)).with_rate_limit(30_000),
        Some(WatermarkStrategy::ascending("date_time")),
    )
    .sink(bids.clone());
    e.from_source(
        DatagenSource::new()
            .sequence("id", 0, 299)
            .with_rate_limit(30_000),
        None,
    )
    .sink(rows.clone());
    e.execute().unwrap();
    assert_eq!(bids.len(), 300);
    let ids: Vec<i64> = rows
        .sorted_rows()
        .unwrap()
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (0..300).collect::<Vec<_>>());
}
