//! Flink SQL scripts on the embedded runtime: planned by DataFusion, compiled onto Strom's
//! operators, compared with brute-force computations over the same generated input.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMillisecondType};
use strom::EngineConfig;
use strom::connectors::nexmark::{NexmarkConfig, auctions_batch, bids_batch};
use strom::sql::{compile, plan_script};
use strom::stream::StreamEnv;
use strom_api::StateBackendKind;

/// Events of every kind; 46 in 50 are bids.
const EVENTS: usize = 20_000;
const BIDS: usize = EVENTS / 50 * 46;
/// Events per event-time second: the bids span about 20 s.
const RATE: u64 = 1_000;

fn bids() -> RecordBatch {
    let cfg = NexmarkConfig {
        events_per_second: RATE,
        ..NexmarkConfig::default()
    };
    bids_batch(&cfg, 0, 1, BIDS, None).unwrap()
}

/// (auction, bidder, price, date_time) of every bid.
fn bid_rows() -> Vec<(i64, i64, i64, i64)> {
    let b = bids();
    let col = |name: &str| b.column(b.schema().index_of(name).unwrap()).clone();
    let (auction, bidder, price) = (col("auction"), col("bidder"), col("price"));
    let time = col("date_time");
    let (auction, bidder, price) = (
        auction.as_primitive::<Int64Type>(),
        bidder.as_primitive::<Int64Type>(),
        price.as_primitive::<Int64Type>(),
    );
    let time = time.as_primitive::<TimestampMillisecondType>();
    (0..b.num_rows())
        .map(|i| {
            (
                auction.value(i),
                bidder.value(i),
                price.value(i),
                time.value(i),
            )
        })
        .collect()
}

/// The `bid` table over Strom's Nexmark generator, with a watermark 4 s behind.
fn bid_table() -> String {
    format!(
        "CREATE TABLE bid (
            auction BIGINT,
            bidder BIGINT,
            price BIGINT,
            date_time TIMESTAMP(3),
            WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
        ) WITH (
            'connector' = 'nexmark',
            'table' = 'bid',
            'events.num' = '{EVENTS}',
            'event.rate' = '{RATE}'
        );"
    )
}

/// Runs a script at parallelism 2 on the embedded runtime.
pub(crate) fn run(script: &str) {
    run_on(script, 2, StateBackendKind::default());
}

/// Runs a script at `parallelism` with keyed state in `backend`.
fn run_on(script: &str, parallelism: u32, backend: StateBackendKind) {
    let planned = plan_script(script).unwrap_or_else(|e| panic!("{e}\n{script}"));
    let env = StreamEnv::new(
        "sql",
        EngineConfig {
            parallelism,
            state_backend: backend,
            ..EngineConfig::default()
        },
    );
    compile::compile(&planned, &env).unwrap();
    env.execute().unwrap();
}

/// Every line of the part files in `dir`, as a multiset.
fn lines(dir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            *out.entry(line.to_owned()).or_insert(0) += 1;
        }
    }
    out
}

fn multiset(rows: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r).or_insert(0) += 1;
    }
    out
}

/// Epoch milliseconds as Flink's CSV format writes `TIMESTAMP(3)`: `yyyy-MM-dd HH:mm:ss`, then the
/// milliseconds without trailing zeros, if any.
fn sql_time(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Days to civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let fraction = match rem % 1000 {
        0 => String::new(),
        f => format!(".{f:03}").trim_end_matches('0').to_owned(),
    };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}{fraction}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
    )
}

#[test]
fn projections_filters_case_and_decimal_arithmetic_equal_brute_force() {
    let dir = tempdir("sql-stateless");
    let out = dir.join("out");
    let script = format!(
        "{}
        CREATE TABLE out (
            auction BIGINT,
            bidder BIGINT,
            price_eur DECIMAL(23, 3),
            band VARCHAR,
            date_time TIMESTAMP(3)
        ) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        -- q1 and q2 at once: currency conversion of the bids on every 7th auction.
        INSERT INTO out
        SELECT auction, bidder, 0.908 * price AS price_eur,
               CASE WHEN price > 10000 THEN 'HIGH' WHEN price > 1000 THEN 'mid' ELSE lower('LOW') END,
               date_time
        FROM bid
        WHERE auction % 7 = 0 OR bidder = 1001;",
        bid_table(),
        out.display()
    );
    run(&script);
    let expected = multiset(
        bid_rows()
            .into_iter()
            .filter(|&(a, b, _, _)| a % 7 == 0 || b == 1001)
            .map(|(a, b, p, t)| {
                let eur = p * 908;
                let band = if p > 10_000 {
                    "HIGH"
                } else if p > 1000 {
                    "mid"
                } else {
                    "low"
                };
                format!(
                    "{a},{b},{}.{:03},{band},{}",
                    eur / 1000,
                    eur % 1000,
                    sql_time(t)
                )
            }),
    );
    assert!(expected.len() > 100, "too few rows to mean anything");
    assert_eq!(lines(&out), expected);
}

#[test]
fn a_projection_pushed_into_the_generator_keeps_the_columns_its_filter_reads() {
    // `price` alone goes out, but the filter reads `auction` and `bidder`: the scan generates
    // those three (and `date_time`, for the watermark), and the rows equal brute force.
    let dir = tempdir("sql-pushdown");
    let out = dir.join("out");
    let query = "SELECT price * 2 AS doubled FROM bid WHERE auction % 7 = 0 OR bidder = 1001";
    let script = format!(
        "{}
        CREATE TABLE out (doubled BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        EXPLAIN {query};
        INSERT INTO out {query};",
        bid_table(),
        out.display()
    );
    let planned = plan_script(&script).unwrap();
    let text = compile::explain(&planned, &EngineConfig::default()).unwrap();
    assert!(
        text[0].contains("TableScan: bid projection=[auction, bidder, price]"),
        "{}",
        text[0]
    );
    // Nothing downstream reads event time: the filter goes into the generator, which makes
    // `price` only for the rows it keeps.
    assert!(
        text[0].contains(
            "nexmark(bids where bid.auction % Int64(7) = Int64(0) OR bid.bidder = Int64(1001))"
        ) && !text[0].contains("-> filter("),
        "{}",
        text[0]
    );
    // A window downstream reads event time: the filter stays after the watermarks, so that the
    // rows it drops still advance them.
    let windowed = "SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), \
        INTERVAL '5' SECOND)) WHERE auction % 7 = 0 GROUP BY window_start, window_end";
    let planned = plan_script(&format!("{}\nEXPLAIN {windowed};", bid_table())).unwrap();
    let text = compile::explain(&planned, &EngineConfig::default()).unwrap();
    assert!(
        text[0].contains("nexmark(bids) ") && !text[0].contains(" where "),
        "{}",
        text[0]
    );
    // Through a join too: each side's scan reads the columns the join, the filter above it
    // and the output read.
    let join = "SELECT A.auction, B.price FROM bid AS A JOIN bid AS B ON A.bidder = B.bidder";
    let planned = plan_script(&format!("{}\nEXPLAIN {join};", bid_table())).unwrap();
    let text = compile::explain(&planned, &EngineConfig::default()).unwrap();
    assert_eq!(
        text[0]
            .matches("TableScan: bid projection=[auction, bidder, price]")
            .count(),
        2,
        "{}",
        text[0]
    );
    run(&script);
    let expected = multiset(
        bid_rows()
            .into_iter()
            .filter(|&(a, b, _, _)| a % 7 == 0 || b == 1001)
            .map(|(_, _, p, _)| (2 * p).to_string()),
    );
    assert!(expected.len() > 100, "too few rows to mean anything");
    assert_eq!(lines(&out), expected);
}

#[test]
fn tumble_and_hop_window_aggregations_equal_brute_force() {
    let dir = tempdir("sql-windows");
    let (tumble, hop) = (dir.join("tumble"), dir.join("hop"));
    let script = format!(
        "{}
        CREATE TABLE per_auction (
            auction BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3),
            bids BIGINT, top BIGINT, total BIGINT, cheapest BIGINT, dear BIGINT
        ) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        CREATE TABLE busiest (window_end TIMESTAMP(3), bids BIGINT, bidders BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        CREATE VIEW small AS SELECT * FROM bid WHERE price < 50000000;
        INSERT INTO per_auction
        SELECT auction, window_start, window_end, COUNT(*), MAX(price), SUM(price), MIN(price),
            SUM(CASE WHEN price >= 5000000 THEN price END)
        FROM TABLE(TUMBLE(TABLE small, DESCRIPTOR(date_time), INTERVAL '5' SECOND))
        GROUP BY auction, window_start, window_end;
        INSERT INTO busiest
        SELECT window_end, COUNT(*) AS bids, COUNT(bidder)
        FROM TABLE(HOP(DATA => TABLE bid, TIMECOL => DESCRIPTOR(date_time),
                       SLIDE => INTERVAL '2' SECOND, SIZE => INTERVAL '6' SECOND))
        WHERE auction % 2 = 1
        GROUP BY window_start, window_end;",
        bid_table(),
        tumble.display(),
        hop.display()
    );
    run(&script);
    let rows = bid_rows();
    // TUMBLE: per (auction, 5 s window).
    // `dear` sums the prices of at least 5,000,000: a SUM of no values is NULL (an empty field).
    let mut per: BTreeMap<(i64, i64), (i64, i64, i64, i64, Option<i64>)> = BTreeMap::new();
    for &(a, _, p, t) in rows.iter().filter(|r| r.2 < 50_000_000) {
        let start = t.div_euclid(5000) * 5000;
        let e = per
            .entry((a, start))
            .or_insert((0, i64::MIN, 0, i64::MAX, None));
        let dear = match (e.4, p >= 5_000_000) {
            (sum, false) => sum,
            (sum, true) => Some(sum.unwrap_or(0) + p),
        };
        *e = (e.0 + 1, e.1.max(p), e.2 + p, e.3.min(p), dear);
    }
    assert!(per.values().any(|e| e.4.is_none()) && per.values().any(|e| e.4.is_some()));
    let expected = multiset(per.into_iter().map(|((a, s), (n, top, total, low, dear))| {
        format!(
            "{a},{},{},{n},{top},{total},{low},{}",
            sql_time(s),
            sql_time(s + 5000),
            dear.map_or(String::new(), |d| d.to_string())
        )
    }));
    assert_eq!(lines(&tumble), expected);
    // HOP: 6 s windows every 2 s, odd auctions only; every window a bid falls in.
    let mut windows: BTreeMap<i64, i64> = BTreeMap::new();
    for &(a, _, _, t) in &rows {
        if a % 2 != 1 {
            continue;
        }
        let last = t.div_euclid(2000) * 2000;
        for start in [last - 4000, last - 2000, last] {
            *windows.entry(start + 6000).or_insert(0) += 1;
        }
    }
    let expected = multiset(
        windows
            .into_iter()
            .map(|(end, n)| format!("{},{n},{n}", sql_time(end))),
    );
    assert_eq!(lines(&hop), expected);
}

#[test]
fn joins_sessions_and_cascaded_windows_equal_brute_force() {
    let dir = tempdir("sql-joins");
    let (pairs, sessions, busiest) = (dir.join("pairs"), dir.join("sessions"), dir.join("busiest"));
    let script = format!(
        "{}
        CREATE TABLE pairs (auction BIGINT, bidder BIGINT, low BIGINT, high BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        CREATE TABLE sessions (bidder BIGINT, bids BIGINT, s TIMESTAMP(3), e TIMESTAMP(3))
        WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        CREATE TABLE busiest (window_start TIMESTAMP(3), top BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        INSERT INTO pairs
        SELECT a.auction, a.bidder, a.price, b.price
        FROM bid AS a, bid AS b
        WHERE a.auction = b.auction AND b.bidder = a.bidder AND a.price < b.price;
        INSERT INTO sessions
        SELECT bidder, COUNT(*), window_start, window_end
        FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '1' SECOND))
        GROUP BY bidder, window_start, window_end;
        INSERT INTO busiest
        SELECT window_start, MAX(n)
        FROM (
            SELECT auction, COUNT(*) AS n, window_start, window_end
            FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND))
            GROUP BY auction, window_start, window_end
        )
        GROUP BY window_start, window_end;",
        bid_table(),
        pairs.display(),
        sessions.display(),
        busiest.display()
    );
    run(&script);
    let rows = bid_rows();
    // The self-join: every two bids of one bidder on one auction, the cheaper one first.
    let mut by_pair: BTreeMap<(i64, i64), Vec<i64>> = BTreeMap::new();
    for &(a, b, p, _) in &rows {
        by_pair.entry((a, b)).or_default().push(p);
    }
    let mut expected = Vec::new();
    for ((a, b), prices) in &by_pair {
        for low in prices {
            for high in prices.iter().filter(|h| *h > low) {
                expected.push(format!("{a},{b},{low},{high}"));
            }
        }
    }
    assert!(!expected.is_empty());
    assert_eq!(lines(&pairs), multiset(expected));
    // Sessions: a bidder's bids at most 1 s after the previous one are one session, which ends
    // 1 s after its last bid.
    let mut times: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for &(_, b, _, t) in &rows {
        times.entry(b).or_default().push(t);
    }
    let mut expected = Vec::new();
    for (b, mut ts) in times {
        ts.sort_unstable();
        let (mut start, mut last, mut n) = (ts[0], ts[0], 0);
        for t in ts {
            if t > last + 1000 {
                expected.push(format!(
                    "{b},{n},{},{}",
                    sql_time(start),
                    sql_time(last + 1000)
                ));
                (start, n) = (t, 0);
            }
            last = t;
            n += 1;
        }
        expected.push(format!(
            "{b},{n},{},{}",
            sql_time(start),
            sql_time(last + 1000)
        ));
    }
    assert_eq!(lines(&sessions), multiset(expected));
    // The most bids an auction had in each 2 s window.
    let mut counts: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for &(a, _, _, t) in &rows {
        *counts.entry((t.div_euclid(2000) * 2000, a)).or_insert(0) += 1;
    }
    let mut top: BTreeMap<i64, i64> = BTreeMap::new();
    for ((w, _), n) in counts {
        let e = top.entry(w).or_insert(0);
        *e = (*e).max(n);
    }
    let expected = multiset(top.into_iter().map(|(w, n)| format!("{},{n}", sql_time(w))));
    assert_eq!(lines(&busiest), expected);
}

#[test]
fn interval_joins_equal_brute_force() {
    let dir = tempdir("sql-interval-join");
    let out = dir.join("close");
    // Strict and inclusive bounds, each side of the comparison: `b` from just after 1 s before
    // `a` to 2 s after it.
    let query = "SELECT a.auction, a.price, b.price, a.date_time, b.date_time
        FROM bid AS a JOIN bid AS b ON a.auction = b.auction
        WHERE a.date_time - INTERVAL '1' SECOND < b.date_time
          AND b.date_time <= a.date_time + INTERVAL '2' SECOND";
    let explained = plan_script(&format!("{}\nEXPLAIN {query};", bid_table())).unwrap();
    let graph = compile::explain(&explained, &EngineConfig::default()).unwrap();
    assert!(
        graph[0].contains("interval_join([-999ms, 2000ms])"),
        "{}",
        graph[0]
    );
    let script = format!(
        "{}
        CREATE TABLE close (auction BIGINT, a BIGINT, b BIGINT, ta TIMESTAMP(3), tb TIMESTAMP(3))
        WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        INSERT INTO close {query};",
        bid_table(),
        out.display()
    );
    run(&script);
    let rows = bid_rows();
    let mut by_auction: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for &(a, _, p, t) in &rows {
        by_auction.entry(a).or_default().push((p, t));
    }
    let mut expected = Vec::new();
    for (auction, bids) in &by_auction {
        for &(pa, ta) in bids {
            for &(pb, tb) in bids
                .iter()
                .filter(|(_, tb)| ta - 1000 < *tb && *tb <= ta + 2000)
            {
                expected.push(format!(
                    "{auction},{pa},{pb},{},{}",
                    sql_time(ta),
                    sql_time(tb)
                ));
            }
        }
    }
    assert!(expected.len() > rows.len(), "{}", expected.len());
    assert_eq!(lines(&out), multiset(expected));
}

/// (id, seller, date_time) of every auction.
fn auction_rows() -> Vec<(i64, i64, i64)> {
    let cfg = NexmarkConfig {
        events_per_second: RATE,
        ..NexmarkConfig::default()
    };
    let b = auctions_batch(&cfg, 0, 1, EVENTS / 50 * 3, None).unwrap();
    let col = |name: &str| b.column(b.schema().index_of(name).unwrap()).clone();
    let (id, seller, time) = (col("id"), col("seller"), col("date_time"));
    let (id, seller) = (
        id.as_primitive::<Int64Type>(),
        seller.as_primitive::<Int64Type>(),
    );
    let time = time.as_primitive::<TimestampMillisecondType>();
    (0..b.num_rows())
        .map(|i| (id.value(i), seller.value(i), time.value(i)))
        .collect()
}

#[test]
fn temporal_joins_pick_the_version_valid_at_each_left_record() {
    // Auctions as the versions of their seller: each bid meets the latest auction its bidder had
    // opened by the time of the bid.
    let versions = format!(
        "CREATE TABLE auction (
            id BIGINT,
            seller BIGINT,
            date_time TIMESTAMP(3),
            PRIMARY KEY (seller) NOT ENFORCED,
            WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
        ) WITH (
            'connector' = 'nexmark',
            'table' = 'auction',
            'events.num' = '{EVENTS}',
            'event.rate' = '{RATE}'
        );"
    );
    let query = |join: &str, filter: &str| {
        format!(
            "SELECT B.bidder, B.price, B.date_time, A.id, A.date_time
             FROM bid AS B {join} auction FOR SYSTEM_TIME AS OF B.date_time AS A
             ON B.bidder = A.seller {filter}"
        )
    };
    let explained = plan_script(&format!(
        "{}\n{versions}\nEXPLAIN {};",
        bid_table(),
        query("JOIN", "")
    ))
    .unwrap();
    let graph = compile::explain(&explained, &EngineConfig::default()).unwrap();
    assert!(graph[0].contains("temporal_join"), "{}", graph[0]);

    let (bids, auctions) = (bid_rows(), auction_rows());
    let latest = |bidder: i64, t: i64| {
        auctions
            .iter()
            .filter(|&&(_, seller, at)| seller == bidder && at <= t)
            .max_by_key(|&&(_, _, at)| at)
    };
    let mut inner = Vec::new();
    let mut left = Vec::new();
    for &(_, bidder, price, t) in &bids {
        let row = format!("{bidder},{price},{}", sql_time(t));
        match latest(bidder, t) {
            Some(&(id, _, at)) => {
                let joined = format!("{row},{id},{}", sql_time(at));
                if price > 1_000_000 {
                    inner.push(joined.clone());
                }
                left.push(joined);
            }
            None => left.push(format!("{row},,")),
        }
    }
    assert!(
        inner.len() > 100 && left.len() > inner.len(),
        "{} {}",
        inner.len(),
        left.len()
    );
    let cases = [
        ("JOIN", "WHERE B.price > 1000000", multiset(inner)),
        ("LEFT JOIN", "", multiset(left)),
    ];
    let runs = [
        (1, StateBackendKind::Hashmap),
        (3, StateBackendKind::Hashmap),
        (2, StateBackendKind::Rocksdb),
    ];
    for (join, filter, expected) in cases {
        for (parallelism, backend) in runs {
            let dir = tempdir("sql-temporal-join");
            let out = dir.join("out");
            let script = format!(
                "{}
                {versions}
                CREATE TABLE out (bidder BIGINT, price BIGINT, t TIMESTAMP(3), id BIGINT,
                                  at TIMESTAMP(3))
                WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
                INSERT INTO out {};",
                bid_table(),
                out.display(),
                query(join, filter)
            );
            run_on(&script, parallelism, backend);
            assert_eq!(
                lines(&out),
                expected,
                "{join} at parallelism {parallelism} on {backend:?}"
            );
        }
    }
}

#[test]
fn cumulate_windows_equal_brute_force() {
    let dir = tempdir("sql-cumulate");
    let out = dir.join("cumulative");
    let script = format!(
        "{}
        CREATE TABLE cumulative (s TIMESTAMP(3), e TIMESTAMP(3), bids BIGINT, top BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        INSERT INTO cumulative
        SELECT window_start, window_end, COUNT(*), MAX(price)
        FROM TABLE(CUMULATE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '1' SECOND, INTERVAL '4' SECOND))
        GROUP BY window_start, window_end;",
        bid_table(),
        out.display()
    );
    run(&script);
    // Every 4 s cycle has windows ending 1, 2, 3 and 4 s after its start; a bid is in those
    // of its cycle that end after it.
    let mut windows: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for (_, _, price, t) in bid_rows() {
        let start = t.div_euclid(4000) * 4000;
        for end in (1..=4).map(|k| start + k * 1000).filter(|&end| end > t) {
            let w = windows.entry((start, end)).or_insert((0, i64::MIN));
            w.0 += 1;
            w.1 = w.1.max(price);
        }
    }
    assert!(windows.len() >= 16, "{}", windows.len());
    let expected = multiset(
        windows
            .into_iter()
            .map(|((s, e), (n, top))| format!("{},{},{n},{top}", sql_time(s), sql_time(e))),
    );
    assert_eq!(lines(&out), expected);
}

#[test]
fn over_aggregations_equal_brute_force() {
    let dir = tempdir("sql-over");
    let (rows_out, range_out) = (dir.join("rows"), dir.join("range"));
    // Per auction, in event time: over the row and the 2 before it, and over the 2 s before it
    // (ties share a RANGE frame; the generator gives every bid its own millisecond).
    let script = format!(
        "{}
        CREATE TABLE by_rows (auction BIGINT, price BIGINT, t TIMESTAMP(3), s BIGINT, c BIGINT, lo BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        CREATE TABLE by_range (auction BIGINT, price BIGINT, t TIMESTAMP(3), s BIGINT, c BIGINT, hi BIGINT)
        WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        INSERT INTO by_rows
        SELECT auction, price, date_time,
          SUM(price) OVER (PARTITION BY auction ORDER BY date_time ROWS BETWEEN 2 PRECEDING AND CURRENT ROW),
          COUNT(*) OVER (PARTITION BY auction ORDER BY date_time ROWS BETWEEN 2 PRECEDING AND CURRENT ROW),
          MIN(price) OVER (PARTITION BY auction ORDER BY date_time ROWS BETWEEN 2 PRECEDING AND CURRENT ROW)
        FROM bid;
        INSERT INTO by_range
        SELECT auction, price, date_time,
          SUM(price) OVER w, COUNT(*) OVER w, MAX(price) OVER w
        FROM bid
        WINDOW w AS (PARTITION BY auction ORDER BY date_time
                     RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW);",
        bid_table(),
        rows_out.display(),
        range_out.display()
    );
    run(&script);
    let rows = bid_rows();
    let mut by_auction: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for &(a, _, p, t) in &rows {
        by_auction.entry(a).or_default().push((t, p));
    }
    let (mut expected_rows, mut expected_range) = (Vec::new(), Vec::new());
    for (auction, bids) in &mut by_auction {
        bids.sort();
        for (i, &(t, p)) in bids.iter().enumerate() {
            let last3 = &bids[i.saturating_sub(2)..=i];
            expected_rows.push(format!(
                "{auction},{p},{},{},{},{}",
                sql_time(t),
                last3.iter().map(|b| b.1).sum::<i64>(),
                last3.len(),
                last3.iter().map(|b| b.1).min().unwrap()
            ));
            let within: Vec<i64> = bids
                .iter()
                .filter(|(u, _)| t - 2000 <= *u && *u <= t)
                .map(|b| b.1)
                .collect();
            expected_range.push(format!(
                "{auction},{p},{},{},{},{}",
                sql_time(t),
                within.iter().sum::<i64>(),
                within.len(),
                within.iter().max().unwrap()
            ));
        }
    }
    assert_eq!(expected_rows.len(), BIDS);
    assert_eq!(lines(&rows_out), multiset(expected_rows));
    assert_eq!(lines(&range_out), multiset(expected_range));
}

#[test]
fn window_tvf_rows_and_window_joins_equal_brute_force() {
    let dir = tempdir("sql-window-join");
    let (rows_out, join_out) = (dir.join("rows"), dir.join("join"));
    // HOP's rows (each bid in every 6 s window sliding by 2 s that holds it), and a window self
    // join: the bids of one auction in the same 5 s tumbling window, pairwise.
    let script = format!(
        "{}
        CREATE TABLE hop_rows (auction BIGINT, price BIGINT, ws TIMESTAMP(3), we TIMESTAMP(3))
        WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        CREATE TABLE pairs (auction BIGINT, a BIGINT, b BIGINT, ws TIMESTAMP(3))
        WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
        INSERT INTO hop_rows
        SELECT auction, price, window_start, window_end
        FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '6' SECOND))
        WHERE price > 5000;
        INSERT INTO pairs
        SELECT L.auction, L.price, R.price, L.window_start
        FROM (SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '5' SECOND))) L
        JOIN (SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '5' SECOND))) R
        ON L.auction = R.auction AND L.window_start = R.window_start AND L.window_end = R.window_end;",
        bid_table(),
        rows_out.display(),
        join_out.display()
    );
    let explained = plan_script(&format!(
        "{}\nEXPLAIN SELECT L.auction FROM
         (SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '5' SECOND))) L
         JOIN (SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '5' SECOND))) R
         ON L.auction = R.auction AND L.window_start = R.window_start AND L.window_end = R.window_end;",
        bid_table()
    ))
    .unwrap();
    let graph = compile::explain(&explained, &EngineConfig::default()).unwrap();
    assert!(
        graph[0].contains("interval_join([0ms, 0ms])"),
        "{}",
        graph[0]
    );
    run(&script);
    let rows = bid_rows();
    let mut expected_rows = Vec::new();
    for &(a, _, p, t) in rows.iter().filter(|r| r.2 > 5000) {
        let last = t - t.rem_euclid(2000);
        for start in [last - 4000, last - 2000, last] {
            expected_rows.push(format!(
                "{a},{p},{},{}",
                sql_time(start),
                sql_time(start + 6000)
            ));
        }
    }
    let mut by_window: BTreeMap<(i64, i64), Vec<i64>> = BTreeMap::new();
    for &(a, _, p, t) in &rows {
        by_window
            .entry((a, t - t.rem_euclid(5000)))
            .or_default()
            .push(p);
    }
    let mut expected_pairs = Vec::new();
    for ((a, start), prices) in &by_window {
        for pa in prices {
            for pb in prices {
                expected_pairs.push(format!("{a},{pa},{pb},{}", sql_time(*start)));
            }
        }
    }
    assert!(!expected_rows.is_empty() && expected_pairs.len() > rows.len());
    assert_eq!(lines(&rows_out), multiset(expected_rows));
    assert_eq!(lines(&join_out), multiset(expected_pairs));
}

#[test]
fn what_the_streaming_planner_cannot_take_is_an_error_at_its_line() {
    let cases = [
        (
            "CREATE TABLE t (auction BIGINT, date_time TIMESTAMP(3)) WITH ('connector' = 'nexmark', 'table' = 'bid');\n\
             SELECT auction, COUNT(*) FROM TABLE(\n  TUMBLE(TABLE t, DESCRIPTOR(date_time), INTERVAL '1' SECOND)) GROUP BY auction, window_start, window_end",
            3,
            "WATERMARK FOR date_time",
        ),
        (
            "CREATE TABLE t (auction BIGINT) WITH ('connector' = 'nexmark', 'table' = 'bid', 'rows' = '5');\nSELECT * FROM t",
            1,
            "option 'rows' is not known",
        ),
        (
            "CREATE TABLE t (auction BIGINT) WITH ('connector' = 'nexmark', 'table' = 'bid');\n\
             CREATE TABLE counts (auction BIGINT, n BIGINT) WITH ('connector' = 'filesystem', 'path' = '/nowhere', 'format' = 'csv');\n\
             INSERT INTO counts SELECT auction, COUNT(*) FROM t GROUP BY auction",
            2,
            "takes only insertions",
        ),
        (
            "CREATE TABLE t (auction BIGINT) WITH ('connector' = 'nexmark', 'table' = 'bid');\n\
             CREATE TABLE a (auction BIGINT) WITH ('connector' = 'nexmark', 'table' = 'auction');\n\
             SELECT * FROM t JOIN a ON t.auction > a.auction",
            3,
            "needs an equality",
        ),
        (
            "CREATE TABLE t (auction BIGINT, price BIGINT) WITH ('connector' = 'nexmark', 'table' = 'bid');\n\
             SELECT auction, SUM(price) OVER (PARTITION BY auction) FROM t",
            2,
            "its input has no time attribute",
        ),
        (
            "CREATE TABLE t (auction BIGINT, price BIGINT) WITH ('connector' = 'nexmark', 'table' = 'bid');\n\
             SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price) AS r FROM t)\n\
             WHERE r > 3",
            2,
            "supported as rn <= N",
        ),
        (
            "CREATE TABLE t (auction BIGINT, bidder BIGINT, date_time TIMESTAMP(3), WATERMARK FOR date_time AS date_time) WITH ('connector' = 'nexmark', 'table' = 'bid');\n\
             CREATE TABLE a (seller BIGINT, date_time TIMESTAMP(3), WATERMARK FOR date_time AS date_time) WITH ('connector' = 'nexmark', 'table' = 'auction');\n\
             SELECT * FROM t\n  JOIN a FOR SYSTEM_TIME AS OF t.date_time ON t.bidder = a.seller",
            4,
            "has no PRIMARY KEY",
        ),
        (
            "CREATE TABLE t (auction BIGINT, bidder BIGINT, date_time TIMESTAMP(3), WATERMARK FOR date_time AS date_time) WITH ('connector' = 'nexmark', 'table' = 'bid');\n\
             CREATE TABLE a (seller BIGINT, date_time TIMESTAMP(3), PRIMARY KEY (seller) NOT ENFORCED, WATERMARK FOR date_time AS date_time) WITH ('connector' = 'nexmark', 'table' = 'auction');\n\
             SELECT * FROM t JOIN a FOR SYSTEM_TIME AS OF t.auction ON t.bidder = a.seller",
            3,
            "not the left side's event-time attribute",
        ),
    ];
    for (sql, line, says) in cases {
        let planned = plan_script(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let env = StreamEnv::new("sql", EngineConfig::default());
        let e = compile::compile(&planned, &env).unwrap_err();
        assert_eq!(e.line, line, "{sql}: {e}");
        assert!(e.message.contains(says), "{sql}: {e}");
    }
}

#[test]
fn explain_prints_the_strom_job_graph_of_a_query() {
    let script = format!(
        "{}\nEXPLAIN SELECT auction, COUNT(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '5' SECOND)) GROUP BY auction, window_start, window_end;",
        bid_table()
    );
    let planned = plan_script(&script).unwrap();
    let text = compile::explain(&planned, &EngineConfig::default()).unwrap();
    assert_eq!(text.len(), 1);
    let text = &text[0];
    for part in [
        "TableScan: __window_0",
        "nexmark(bids)",
        "watermarks(date_time)",
        "window(tumbling 5000ms; count(*)",
        "print",
    ] {
        assert!(text.contains(part), "{part} missing from:\n{text}");
    }
}

#[test]
fn an_aggregation_written_twice_is_planned_once() {
    // q5's shape: the same HOP count on both sides of a join. Flink reuses the sub-plan; so does
    // Strom, and the job has one sliding window operator, feeding both sides.
    let counts = "SELECT auction, COUNT(*) AS num, window_start, window_end \
        FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) \
        GROUP BY auction, window_start, window_end";
    let script = format!(
        "{}\nEXPLAIN SELECT C.auction, C.num FROM ({counts}) AS C \
         JOIN (SELECT MAX(num) AS maxn, window_start, window_end FROM ({counts}) \
               GROUP BY window_start, window_end) AS M \
         ON C.window_start = M.window_start AND C.window_end = M.window_end AND C.num >= M.maxn;",
        bid_table()
    );
    let planned = plan_script(&script).unwrap();
    let text = &compile::explain(&planned, &EngineConfig::default()).unwrap()[0];
    let graph = &text[text.find("== Strom job graph ==").unwrap()..];
    assert_eq!(graph.matches("window(sliding").count(), 1, "{graph}");
    assert_eq!(graph.matches("nexmark(bids)").count(), 1, "{graph}");
    assert_eq!(graph.matches("window(tumbling").count(), 1, "{graph}");
}

/// A fresh directory under the system's temp dir, removed when dropped (some tests write
/// hundreds of megabytes).
struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("strom-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

#[test]
fn the_example_script_compiles_to_a_job() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sql/top-bids.sql");
    let planned = plan_script(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        planned.settings,
        [("parallelism.default".to_owned(), "2".to_owned())]
    );
    let env = StreamEnv::new("example", EngineConfig::default());
    compile::compile(&planned, &env).unwrap();
    let graph = env.build().unwrap();
    let text =
        strom::plan::physical::explain(&graph, &strom::plan::physical::plan(&graph).unwrap());
    assert!(text.contains("window(tumbling 10000ms"), "{text}");
    assert!(text.contains("print"), "{text}");
}
