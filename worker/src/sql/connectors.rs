//! Tables' `WITH (...)` options to Strom's sources and sinks, under Flink's option names where
//! Flink has the connector:
//!
//! | connector | as a source | as a sink |
//! | --- | --- | --- |
//! | `filesystem` | `path` (a file or a directory), `format` = `csv` (no header, `csv.field-delimiter`) or `json` (one object per line) | the same: part files in the directory `path`; timestamps as `yyyy-MM-dd HH:mm:ss.SSS`; `PARTITIONED BY` tables write `<col>=<value>` directories (`sink.partition-commit.policy.kind` = `success-file`: a `_SUCCESS` file each when the input ends) |
//! | `datagen` | `number-of-rows`, `rows-per-second`, `fields.F.kind` = `random` / `sequence`, `fields.F.min` / `max` / `start` / `end` / `length` | — |
//! | `nexmark` | Strom's generator as flat tables: `table` = `bid` / `auction` / `person`, `events.num` (events of every kind, as in Flink's Nexmark connector; the table has its share), `event.rate` (events per event-time second), `seed`; the declared columns are picked by name | — |
//! | `kafka` | `topic`, `properties.bootstrap.servers`, `properties.*` (to librdkafka: `group.id`, `isolation.level`, ...), `format` / `value.format` = `csv` / `json`, `scan.startup.mode` = `group-offsets` (default) / `earliest-offset` / `latest-offset` / `timestamp` (`scan.startup.timestamp-millis`) / `specific-offsets` (`scan.startup.specific-offsets`), `scan.bounded.mode` = `unbounded` / `latest-offset`; offsets kept in checkpoints | the same `topic`, `properties.*` and format; `sink.delivery-guarantee` = `at-least-once` (default) / `none` / `exactly-once` (Kafka transactions, `sink.transactional-id-prefix`); one message per row; `key.fields` (`a;b`) with `key.format` give it a key |
//! | `upsert-kafka` | — | the same options; the PRIMARY KEY is each message's key (`key.format`, `value.format`): inserts and updates are the row, deletions tombstones, `-U` rows are not written; takes updating results |
//! | `print` | — | every row to stdout |
//! | `blackhole` | — | drops every row |
//!
//! An option the connector does not know is an error, as in Flink.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use datafusion_physical_expr::PhysicalExpr;

use crate::connectors::datagen::{DatagenSource, FieldGen};
use crate::connectors::file::{FileSink, FileSource};
use crate::connectors::kafka::{
    BoundedMode, DeliveryGuarantee, KafkaSink, KafkaSource, StartupMode, ValueFormat,
};
use crate::connectors::nexmark::{EventKind, NexmarkConfig};
use crate::connectors::nexmark_source::NexmarkSource;
use crate::connectors::sinks::{DiscardSink, LinePrintSink};
use crate::error::Error;
use crate::operators::group_aggregate::RowKind;
use crate::stream::{DataStream, StreamEnv};
use crate::time::WatermarkStrategy;

use super::script::{SqlError, TableDef};

/// How Flink's CSV and JSON formats write `TIMESTAMP(3)`, up to the seconds.
const SQL_TIMESTAMP: &str = "%Y-%m-%d %H:%M:%S";

/// A table's options, each read at most once; what is left over is an error.
struct Options<'a> {
    table: &'a TableDef,
    left: BTreeMap<String, String>,
}

impl<'a> Options<'a> {
    fn new(table: &'a TableDef) -> Self {
        Self {
            table,
            left: table.options.clone(),
        }
    }

    fn err(&self, message: impl Into<String>) -> SqlError {
        SqlError::at(
            self.table.at,
            format!("table {}: {}", self.table.name, message.into()),
        )
    }

    fn take(&mut self, key: &str) -> Option<String> {
        self.left.remove(key)
    }

    fn required(&mut self, key: &str) -> Result<String, SqlError> {
        self.take(key)
            .ok_or_else(|| self.err(format!("option '{key}' is required")))
    }

    fn number<T: std::str::FromStr>(&mut self, key: &str) -> Result<Option<T>, SqlError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.err(format!("option '{key}': '{v}' is not a number"))),
        }
    }

    /// Takes every `properties.*` option, without the prefix (Flink hands them to the Kafka client;
    /// Strom to librdkafka, whose names are the same for the common ones).
    fn properties(&mut self) -> Vec<(String, String)> {
        let keys: Vec<String> = self
            .left
            .keys()
            .filter(|k| k.starts_with("properties."))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| {
                let v = self.left.remove(&k)?;
                Some((k["properties.".len()..].to_owned(), v))
            })
            .collect()
    }

    /// Fails on any option not read.
    fn done(self) -> Result<(), SqlError> {
        match self.left.keys().next() {
            None => Ok(()),
            Some(k) => Err(self.err(format!(
                "option '{k}' is not known to the '{}' connector",
                self.table
                    .options
                    .get("connector")
                    .map_or("", String::as_str)
            ))),
        }
    }
}

/// The table's physical columns as an Arrow schema.
pub fn physical_schema(table: &TableDef) -> SchemaRef {
    Arc::new(Schema::new(
        table
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

/// Whether the table's connector picks its columns by name, so that a scan may declare fewer
/// columns than the table (projection push-down): the generators do.
pub fn projects_by_name(table: &TableDef) -> bool {
    table.options.get("connector").map(String::as_str) == Some("nexmark")
}

/// A WHERE predicate pushed into a table's connector (Flink's filter push-down; the `nexmark`
/// connector takes one): the table's columns it reads, and the predicate over a batch of those
/// columns, in this order.
pub struct SourceFilter {
    pub columns: Vec<String>,
    pub predicate: Arc<dyn PhysicalExpr>,
    /// The predicate as written in the plan.
    pub text: String,
}

/// A stream of the table's physical columns, from its connector, and whether it took `watermark`
/// (a connector with splits generates watermarks per split; the others leave it to the caller).
/// With `filter`, only the rows it keeps (for a connector that [`projects_by_name`]).
pub fn source(
    env: &StreamEnv,
    table: &TableDef,
    watermark: Option<WatermarkStrategy>,
    filter: Option<&SourceFilter>,
) -> Result<(DataStream, bool), SqlError> {
    let mut pushed = false;
    if filter.is_some() && !projects_by_name(table) {
        return Err(SqlError::at(
            table.at,
            format!(
                "table {}: its connector takes no pushed-down filter",
                table.name
            ),
        ));
    }
    let mut o = Options::new(table);
    let connector = o.required("connector")?;
    let schema = physical_schema(table);
    let plan_err = |e: Error| SqlError::at(table.at, format!("table {}: {e}", table.name));
    let stream = match connector.as_str() {
        "filesystem" => {
            let path = o.required("path")?;
            let format = o.required("format")?;
            let file_schema = decimals_as_text(&schema);
            let source = match format.as_str() {
                "csv" => {
                    let delimiter = match o.take("csv.field-delimiter") {
                        None => b',',
                        Some(d) if d.len() == 1 && d.is_ascii() => d.as_bytes()[0],
                        Some(d) => {
                            return Err(
                                o.err(format!("csv.field-delimiter '{d}' is not one character"))
                            );
                        }
                    };
                    FileSource::csv(&path, file_schema.clone())
                        .map_err(plan_err)?
                        .with_header(false)
                        .with_delimiter(delimiter)
                }
                "json" => FileSource::json_lines(&path, file_schema.clone()).map_err(plan_err)?,
                other => {
                    return Err(o.err(format!("format '{other}' is not supported (csv, json)")));
                }
            };
            decimals_back(env.from_source(source, None), &file_schema, &schema)
        }
        "kafka" => {
            let topic = o.required("topic")?;
            let bootstrap = o.required("properties.bootstrap.servers")?;
            let format = kafka_format(&mut o)?;
            let startup = match o.take("scan.startup.mode").as_deref() {
                None | Some("group-offsets") => StartupMode::GroupOffsets,
                Some("earliest-offset") => StartupMode::Earliest,
                Some("latest-offset") => StartupMode::Latest,
                Some("timestamp") => StartupMode::Timestamp(
                    o.number("scan.startup.timestamp-millis")?.ok_or_else(|| {
                        o.err("scan.startup.mode 'timestamp' needs 'scan.startup.timestamp-millis'")
                    })?,
                ),
                Some("specific-offsets") => {
                    let text = o.required("scan.startup.specific-offsets")?;
                    StartupMode::Specific(specific_offsets(&text).map_err(|e| o.err(e))?)
                }
                Some(other) => {
                    return Err(o.err(format!(
                        "scan.startup.mode '{other}' is not supported (earliest-offset, \
                         latest-offset, group-offsets, timestamp, specific-offsets)"
                    )));
                }
            };
            let bounded = match o.take("scan.bounded.mode").as_deref() {
                None | Some("unbounded") => BoundedMode::Unbounded,
                Some("latest-offset") => BoundedMode::Latest,
                Some(other) => {
                    return Err(o.err(format!(
                        "scan.bounded.mode '{other}' is not supported (unbounded, latest-offset)"
                    )));
                }
            };
            let value_schema = decimals_as_text(&schema);
            let mut source = KafkaSource::new(&bootstrap, &topic, value_schema.clone(), format)
                .startup(startup)
                .bounded(bounded);
            for (key, value) in o.properties() {
                source = source.property(&key, &value);
            }
            pushed = watermark.is_some();
            decimals_back(env.from_source(source, watermark), &value_schema, &schema)
        }
        "datagen" => {
            let rows: Option<u64> = o.number("number-of-rows")?;
            let rate: Option<u64> = o.number("rows-per-second")?;
            let mut source = DatagenSource::new().with_name(&table.name);
            for c in &table.columns {
                let key = |k: &str| format!("fields.{}.{k}", c.name);
                let kind = o.take(&key("kind")).unwrap_or_else(|| "random".into());
                let generator = match (&c.data_type, kind.as_str()) {
                    (t, "sequence") if t.is_integer() => {
                        let start = o.number(&key("start"))?;
                        let end = o.number(&key("end"))?;
                        let (Some(start), Some(end)) = (start, end) else {
                            return Err(o.err(format!(
                                "field {}: a sequence needs {} and {}",
                                c.name,
                                key("start"),
                                key("end")
                            )));
                        };
                        FieldGen::Sequence { start, end }
                    }
                    (t, "random") if t.is_integer() => FieldGen::Random {
                        min: o.number(&key("min"))?.unwrap_or(0),
                        max: o.number(&key("max"))?.unwrap_or(i64::from(i32::MAX)),
                    },
                    (DataType::Float32 | DataType::Float64, "random") => FieldGen::RandomFloat {
                        min: o.number(&key("min"))?.unwrap_or(0.0),
                        max: o.number(&key("max"))?.unwrap_or(1.0),
                    },
                    (DataType::Utf8, "random") => FieldGen::RandomString {
                        length: o.number(&key("length"))?.unwrap_or(100),
                    },
                    (DataType::Timestamp(..), "random") => FieldGen::EventTime {
                        base_ms: NexmarkConfig::default().base_time_ms,
                        rows_per_second: rate.unwrap_or(10_000),
                    },
                    (t, k) => {
                        return Err(o.err(format!(
                            "field {} ({t}): datagen cannot generate it as '{k}'",
                            c.name
                        )));
                    }
                };
                source = source.field(&c.name, generator);
            }
            if let Some(rows) = rows {
                source = source.with_limit(rows);
            }
            if let Some(rate) = rate {
                source = source.with_rate_limit(rate);
            }
            source.validate().map_err(plan_err)?;
            let generated = env.from_source(source, None);
            let target = schema.clone();
            generated.map_batches("datagen types", schema.clone(), move |batch| {
                cast_to(&batch, &target)
            })
        }
        "nexmark" => {
            let kind = match o.required("table")?.as_str() {
                "bid" => EventKind::Bid,
                "auction" => EventKind::Auction,
                "person" => EventKind::Person,
                other => {
                    return Err(o.err(format!(
                        "nexmark table '{other}' is not one of bid, auction, person"
                    )));
                }
            };
            let defaults = NexmarkConfig::default();
            let config = NexmarkConfig {
                seed: o.number("seed")?.unwrap_or(defaults.seed),
                events_per_second: o
                    .number("event.rate")?
                    .unwrap_or(defaults.events_per_second),
                ..defaults
            };
            // As in Flink's Nexmark connector, `events.num` counts events of every kind.
            let rows = o
                .number::<u64>("events.num")?
                .map(|events| rows_among(kind, events));
            let columns: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
            let mut source = NexmarkSource::new(kind, config, rows)
                .with_projection(&columns)
                .map_err(plan_err)?;
            if let Some(f) = filter {
                let predicate = f.predicate.clone();
                let columns: Vec<&str> = f.columns.iter().map(String::as_str).collect();
                source = source
                    .with_filter(&columns, &f.text, move |batch| {
                        let v = predicate
                            .evaluate(batch)
                            .and_then(|v| v.into_array(batch.num_rows()))
                            .map_err(|e| Error::user(e.strip_backtrace()))?;
                        v.as_boolean_opt()
                            .cloned()
                            .ok_or_else(|| Error::user("a filter gave no booleans"))
                    })
                    .map_err(plan_err)?;
            }
            let generated = crate::connectors::SourceBuilder::schema(&source);
            for (want, got) in schema.fields().iter().zip(generated.fields()) {
                if want.data_type() != got.data_type() {
                    return Err(o.err(format!(
                        "column {} is {} in nexmark's {}, not {}",
                        want.name(),
                        got.data_type(),
                        table.name,
                        want.data_type()
                    )));
                }
            }
            let stream = env.from_source(source, None);
            let target = schema.clone();
            stream.map_batches("nexmark columns", schema.clone(), move |batch| {
                cast_to(&batch, &target)
            })
        }
        other => {
            return Err(o.err(format!(
                "connector '{other}' cannot be read (filesystem, kafka, datagen, nexmark)"
            )));
        }
    };
    o.done()?;
    Ok((stream, pushed))
}

/// `PARTITIONED BY`: the sink's partition columns and its commit options. Strom's file sink
/// writes bounded input and commits every partition when the input ends (`_SUCCESS` files for the
/// `success-file` policy); the trigger, delay, time extractor and rolling options, which decide
/// when Flink commits a partition of an unbounded stream, are taken and have nothing to decide.
fn partitioned(
    sink: FileSink,
    table: &TableDef,
    o: &mut Options<'_>,
) -> Result<FileSink, SqlError> {
    let policy = o.take("sink.partition-commit.policy.kind");
    for key in [
        "sink.partition-commit.trigger",
        "sink.partition-commit.delay",
        "sink.partition-commit.watermark-time-zone",
        "partition.time-extractor.timestamp-pattern",
        "partition.time-extractor.kind",
        "sink.rolling-policy.rollover-interval",
        "sink.rolling-policy.check-interval",
        "sink.rolling-policy.file-size",
        "sink.rolling-policy.inactivity-interval",
    ] {
        if o.take(key).is_some() && table.partition_by.is_empty() {
            return Err(o.err(format!("option '{key}' is for a PARTITIONED BY table")));
        }
    }
    let mut success = false;
    for kind in policy.iter().flat_map(|p| p.split(',')).map(str::trim) {
        match kind {
            "success-file" => success = true,
            other => {
                return Err(o.err(format!(
                    "sink.partition-commit.policy.kind '{other}' is not supported (success-file)"
                )));
            }
        }
    }
    if table.partition_by.is_empty() {
        return Ok(sink);
    }
    let columns: Vec<&str> = table.partition_by.iter().map(String::as_str).collect();
    Ok(sink.partition_by(&columns).with_success_files(success))
}

/// Files and Kafka messages hold decimals as text; they are cast after reading.
fn decimals_as_text(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Decimal128(..) => Field::new(f.name(), DataType::Utf8, f.is_nullable()),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

/// `stream` of `read` (from [`decimals_as_text`]) cast to the table's `schema`.
fn decimals_back(stream: DataStream, read: &SchemaRef, schema: &SchemaRef) -> DataStream {
    if read == schema {
        return stream;
    }
    let target = schema.clone();
    stream.map_batches("decimals", schema.clone(), move |batch| {
        cast_to(&batch, &target)
    })
}

/// The Kafka connector's `format` (or `value.format`): `csv` or `json`.
fn kafka_format(o: &mut Options<'_>) -> Result<ValueFormat, SqlError> {
    let format = match (o.take("format"), o.take("value.format")) {
        (Some(f), None) | (None, Some(f)) => f,
        (Some(_), Some(_)) => return Err(o.err("set one of 'format' and 'value.format'")),
        (None, None) => return Err(o.err("option 'format' is required")),
    };
    match format.as_str() {
        "json" => Ok(ValueFormat::Json),
        "csv" => match o.take("csv.field-delimiter") {
            None => Ok(ValueFormat::Csv { delimiter: b',' }),
            Some(d) if d.len() == 1 && d.is_ascii() => Ok(ValueFormat::Csv {
                delimiter: d.as_bytes()[0],
            }),
            Some(d) => Err(o.err(format!("csv.field-delimiter '{d}' is not one character"))),
        },
        other => Err(o.err(format!("format '{other}' is not supported (csv, json)"))),
    }
}

/// Flink's `scan.startup.specific-offsets`: `partition:0,offset:42;partition:1,offset:300`.
fn specific_offsets(text: &str) -> Result<BTreeMap<i32, i64>, String> {
    let mut offsets = BTreeMap::new();
    for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || format!("scan.startup.specific-offsets: '{item}' is not partition:P,offset:O");
        let (p, o) = item.split_once(',').ok_or_else(bad)?;
        let p = p.trim().strip_prefix("partition:").ok_or_else(bad)?;
        let o = o.trim().strip_prefix("offset:").ok_or_else(bad)?;
        offsets.insert(
            p.trim().parse().map_err(|_| bad())?,
            o.trim().parse().map_err(|_| bad())?,
        );
    }
    Ok(offsets)
}

/// How many events of `kind` the first `events` events hold.
fn rows_among(kind: EventKind, events: u64) -> u64 {
    // `event_number` is increasing in the index: search for the first index past the end.
    let (mut low, mut high) = (0u64, events);
    while low < high {
        let mid = low + (high - low) / 2;
        if crate::connectors::nexmark::event_number(kind, mid) < events {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    low
}

/// Writes `stream` (of the table's physical columns) to the table's connector.
/// Writes `stream` (of the table's physical columns, then [`OP_COLUMN`] if `changelog`) to the
/// table's connector. Only `print` and `blackhole` take a changelog, as in Flink.
pub fn sink(stream: &DataStream, table: &TableDef, changelog: bool) -> Result<(), SqlError> {
    let mut o = Options::new(table);
    let connector = o.required("connector")?;
    if changelog && !matches!(connector.as_str(), "print" | "blackhole" | "upsert-kafka") {
        return Err(o.err(format!(
            "the '{connector}' connector takes only insertions, and the query's result is \
             updated (a GROUP BY without windows emits updates and deletions): write it to \
             'upsert-kafka', 'print' or 'blackhole'"
        )));
    }
    match connector.as_str() {
        "filesystem" => {
            let path = o.required("path")?;
            let format = o.required("format")?;
            let sink = match format.as_str() {
                "csv" => {
                    let mut s = FileSink::csv(&path).with_header(false);
                    if let Some(d) = o.take("csv.field-delimiter") {
                        if d.len() != 1 || !d.is_ascii() {
                            return Err(
                                o.err(format!("csv.field-delimiter '{d}' is not one character"))
                            );
                        }
                        s = s.with_delimiter(d.as_bytes()[0]);
                    }
                    s
                }
                "json" => FileSink::json_lines(&path),
                other => {
                    return Err(o.err(format!("format '{other}' is not supported (csv, json)")));
                }
            };
            let sink = partitioned(sink, table, &mut o)?;
            let text = text_schema(stream.schema());
            let as_text = stream.map_batches("to text", text.clone(), move |batch| {
                to_text(&batch, &text, sql_timestamp)
            });
            as_text.sink(sink);
        }
        "print" => {
            let line = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, false)]));
            let target = line.clone();
            stream
                .map_batches("to text", line, move |batch| {
                    print_lines(&batch, &target, changelog)
                })
                .sink(LinePrintSink);
        }
        "blackhole" => {
            stream.sink(DiscardSink::new());
        }
        "kafka" | "upsert-kafka" => {
            let upsert = connector == "upsert-kafka";
            let topic = o.required("topic")?;
            let bootstrap = o.required("properties.bootstrap.servers")?;
            let format = kafka_format(&mut o)?;
            // The key: upsert-kafka's is the primary key; kafka's, `key.fields` if given.
            let key_fields = if upsert {
                if table.primary_key.is_empty() {
                    return Err(
                        o.err("an 'upsert-kafka' table needs a PRIMARY KEY (its messages' key)")
                    );
                }
                if o.take("key.fields").is_some() {
                    return Err(o.err(
                        "'upsert-kafka' keys its messages by the PRIMARY KEY: key.fields is not \
                         an option of it",
                    ));
                }
                table.primary_key.clone()
            } else {
                o.take("key.fields")
                    .map(|f| f.split(';').map(|c| c.trim().to_owned()).collect())
                    .unwrap_or_default()
            };
            let key_format = match o.take("key.format") {
                None if key_fields.is_empty() => None,
                None => return Err(o.err("option 'key.format' is required with a message key")),
                Some(_) if key_fields.is_empty() => {
                    return Err(o.err("key.format needs key.fields, the columns of the key"));
                }
                Some(f) => Some(match f.as_str() {
                    "json" => ValueFormat::Json,
                    "csv" => ValueFormat::Csv { delimiter: b',' },
                    other => {
                        return Err(
                            o.err(format!("key.format '{other}' is not supported (csv, json)"))
                        );
                    }
                }),
            };
            if let Some(missing) = key_fields
                .iter()
                .find(|k| !table.columns.iter().any(|c| &c.name == *k))
            {
                return Err(o.err(format!(
                    "the key column {missing} is not a column of the table"
                )));
            }
            let guarantee = match o.take("sink.delivery-guarantee").as_deref() {
                None | Some("at-least-once") => DeliveryGuarantee::AtLeastOnce,
                Some("none") => DeliveryGuarantee::None,
                Some("exactly-once") => DeliveryGuarantee::ExactlyOnce {
                    transactional_id_prefix: o.required("sink.transactional-id-prefix")?,
                },
                Some(other) => {
                    return Err(o.err(format!(
                        "sink.delivery-guarantee '{other}' is not one of none, at-least-once, \
                         exactly-once"
                    )));
                }
            };
            let mut sink = KafkaSink::new(&bootstrap, &topic, format).guarantee(guarantee);
            if let Some(key_format) = key_format {
                let fields: Vec<&str> = key_fields.iter().map(String::as_str).collect();
                sink = sink.key(&fields, key_format);
            }
            if upsert && changelog {
                sink = sink.upsert();
            }
            for (key, value) in o.properties() {
                sink = sink.property(&key, &value);
            }
            let text = text_schema(stream.schema());
            let as_text = stream.map_batches("to text", text.clone(), move |batch| {
                to_text(&batch, &text, sql_timestamp)
            });
            as_text.sink(sink);
        }
        other => {
            return Err(o.err(format!(
                "connector '{other}' cannot be written (filesystem, kafka, upsert-kafka, print, blackhole)"
            )));
        }
    }
    o.done()
}

/// Flink's print connector's lines: `+I[a, 1, 2023-11-14T22:13:20.500]`, the row kind (from the
/// last column of a changelog, else `+I`) and the values (`null` for none).
fn print_lines(
    batch: &RecordBatch,
    schema: &SchemaRef,
    changelog: bool,
) -> crate::error::Result<RecordBatch> {
    let fields = batch.num_columns() - usize::from(changelog);
    let value_schema = Arc::new(Schema::new(batch.schema().fields()[..fields].to_vec()));
    let text_schema = text_schema(&value_schema);
    let values = RecordBatch::try_new(value_schema, batch.columns()[..fields].to_vec())?;
    let text = to_text(&values, &text_schema, print_timestamp)?;
    let options = arrow::util::display::FormatOptions::default().with_null("null");
    let formatters = text
        .columns()
        .iter()
        .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    let kinds = changelog.then(|| {
        batch
            .column(fields)
            .as_primitive::<arrow::datatypes::Int8Type>()
            .clone()
    });
    let mut lines = arrow::array::StringBuilder::new();
    let mut line = String::new();
    for row in 0..batch.num_rows() {
        line.clear();
        let kind = kinds
            .as_ref()
            .and_then(|k| RowKind::from_code(k.value(row)))
            .unwrap_or(RowKind::Insert);
        line.push_str(kind.short());
        line.push('[');
        for (i, f) in formatters.iter().enumerate() {
            if i > 0 {
                line.push_str(", ");
            }
            line.push_str(&f.value(row).to_string());
        }
        line.push(']');
        lines.append_value(&line);
    }
    Ok(RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(lines.finish()) as ArrayRef],
    )?)
}

/// Casts every column of `batch` to the type `schema` has at its position.
pub fn cast_to(batch: &RecordBatch, schema: &SchemaRef) -> crate::error::Result<RecordBatch> {
    columns_as(batch.columns().to_vec(), schema)
}

/// A batch of `schema` from `columns`, each cast to its field's type where it differs.
pub fn columns_as(columns: Vec<ArrayRef>, schema: &SchemaRef) -> crate::error::Result<RecordBatch> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                super::kernels::cast(&c, f.data_type())
            }
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// `schema` with its decimal and timestamp columns as text.
fn text_schema(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Decimal128(..) | DataType::Timestamp(..) => {
                    Field::new(f.name(), DataType::Utf8, f.is_nullable())
                }
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

/// A timestamp as Flink's CSV and JSON formats write `TIMESTAMP(3)`: `yyyy-MM-dd HH:mm:ss`, then
/// the milliseconds without trailing zeros, if any (`.5`, `.021`).
fn sql_timestamp(ms: i64) -> Option<String> {
    let t = arrow::temporal_conversions::timestamp_ms_to_datetime(ms)?;
    let mut text = t.format(SQL_TIMESTAMP).to_string();
    let fraction = ms.rem_euclid(1000);
    if fraction != 0 {
        let digits = format!("{fraction:03}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    Some(text)
}

/// A `TIMESTAMP(3)` as Flink's print connector shows it (Java's `LocalDateTime`):
/// `2023-11-14T22:13`, with `:ss` unless the seconds and milliseconds are zero, and `.SSS` unless
/// the milliseconds are.
fn print_timestamp(ms: i64) -> Option<String> {
    let t = arrow::temporal_conversions::timestamp_ms_to_datetime(ms)?;
    let mut text = t.format("%Y-%m-%dT%H:%M").to_string();
    let (second, milli) = (ms.div_euclid(1000).rem_euclid(60), ms.rem_euclid(1000));
    if second != 0 || milli != 0 {
        text.push_str(&format!(":{second:02}"));
    }
    if milli != 0 {
        text.push_str(&format!(".{milli:03}"));
    }
    Some(text)
}

/// Decimals and timestamps as Flink's formats write them (timestamps through `timestamp`).
fn to_text(
    batch: &RecordBatch,
    schema: &SchemaRef,
    timestamp: fn(i64) -> Option<String>,
) -> crate::error::Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Timestamp(..) => {
                let ms = cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
                let ms = ms.as_primitive::<TimestampMillisecondType>();
                let strings: arrow::array::StringArray =
                    ms.iter().map(|v| v.and_then(timestamp)).collect();
                Ok(Arc::new(strings) as ArrayRef)
            }
            DataType::Decimal128(..) => cast(c, &DataType::Utf8),
            _ => Ok(c.clone()),
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_num_counts_events_of_every_kind() {
        // 50 events: 1 person, 3 auctions, 46 bids.
        assert_eq!(rows_among(EventKind::Person, 100), 2);
        assert_eq!(rows_among(EventKind::Auction, 100), 6);
        assert_eq!(rows_among(EventKind::Bid, 100), 92);
        assert_eq!(rows_among(EventKind::Auction, 52), 4);
        assert_eq!(rows_among(EventKind::Bid, 3), 0);
    }

    #[test]
    fn timestamps_are_printed_as_flinks_print_connector_prints_them() {
        assert_eq!(
            print_timestamp(1_700_000_000_000).unwrap(),
            "2023-11-14T22:13:20"
        );
        assert_eq!(
            print_timestamp(1_700_000_000_220).unwrap(),
            "2023-11-14T22:13:20.220"
        );
        assert_eq!(
            print_timestamp(1_699_999_980_000).unwrap(),
            "2023-11-14T22:13"
        );
        assert_eq!(
            print_timestamp(1_699_999_980_005).unwrap(),
            "2023-11-14T22:13:00.005"
        );
    }

    #[test]
    fn timestamps_are_written_as_flink_writes_them() {
        assert_eq!(
            sql_timestamp(1_700_000_000_000).unwrap(),
            "2023-11-14 22:13:20"
        );
        assert_eq!(
            sql_timestamp(1_700_000_000_700).unwrap(),
            "2023-11-14 22:13:20.7"
        );
        assert_eq!(
            sql_timestamp(1_700_000_000_021).unwrap(),
            "2023-11-14 22:13:20.021"
        );
        assert_eq!(sql_timestamp(-1).unwrap(), "1969-12-31 23:59:59.999");
    }

    #[test]
    fn specific_offsets_are_read_as_flink_writes_them() {
        assert_eq!(
            specific_offsets("partition:0,offset:42;partition:3, offset:7;").unwrap(),
            BTreeMap::from([(0, 42), (3, 7)])
        );
        let err = specific_offsets("partition:0;offset:1").unwrap_err();
        assert!(err.contains("'partition:0'"), "{err}");
        assert!(specific_offsets("partition:x,offset:1").is_err());
    }
}
