//! Tests of the Nexmark generator: the benchmark's shape (proportions, id references, hot keys,
//! timestamps), determinism, batch/row agreement, and agreement with the Java twin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMillisecondType};

use super::*;

fn cfg() -> NexmarkConfig {
    NexmarkConfig {
        seed: 7,
        ..NexmarkConfig::default()
    }
}

#[test]
fn proportions_over_5000_events() {
    let mut counts: HashMap<EventKind, u64> = HashMap::new();
    for n in 0..5000 {
        let (kind, k) = event_kind(n);
        *counts.entry(kind).or_default() += 1;
        assert_eq!(event_number(kind, k), n, "inverse at {n}");
    }
    assert_eq!(counts[&EventKind::Person], 100);
    assert_eq!(counts[&EventKind::Auction], 300);
    assert_eq!(counts[&EventKind::Bid], 4600);
    // The k-th of each kind is numbered in order, and the first ids are 1000.
    assert_eq!(event_number(EventKind::Person, 3), 150);
    assert_eq!(event_number(EventKind::Auction, 4), 52);
    assert_eq!(event_number(EventKind::Bid, 46), 54);
    assert_eq!(person(&cfg(), 0).id, 1000);
    assert_eq!(auction(&cfg(), 0).id, 1000);
    assert_eq!(auction(&cfg(), 17).id, 1017);
}

#[test]
fn ids_refer_only_to_already_generated_events() {
    for seed in [0, 7, 42] {
        let c = NexmarkConfig {
            seed,
            ..NexmarkConfig::default()
        };
        for k in 0..20_000 {
            let b = bid(&c, k);
            let n = event_number(EventKind::Bid, k);
            assert!(b.auction >= 1000 && b.bidder >= 1000, "bid {k}: {b:?}");
            let a_n = event_number(EventKind::Auction, (b.auction - 1000) as u64);
            let p_n = event_number(EventKind::Person, (b.bidder - 1000) as u64);
            assert!(
                a_n < n,
                "bid {k} (event {n}) on future auction {}",
                b.auction
            );
            assert!(p_n < n, "bid {k} (event {n}) by future person {}", b.bidder);
        }
        for k in 0..3000 {
            let a = auction(&c, k);
            let n = event_number(EventKind::Auction, k);
            assert!(a.seller >= 1000);
            let p_n = event_number(EventKind::Person, (a.seller - 1000) as u64);
            assert!(p_n < n, "auction {k} by future person {}", a.seller);
            assert!((10..15).contains(&a.category));
            assert!(a.expires > a.date_time);
            assert!(a.reserve >= a.initial_bid);
            assert!((100..=100_000_000).contains(&a.initial_bid));
        }
    }
}

#[test]
fn hot_keys_take_a_large_share() {
    let c = cfg();
    let mut by_auction: HashMap<i64, u64> = HashMap::new();
    let mut by_bidder: HashMap<i64, u64> = HashMap::new();
    let range = 100..1400u64; // all within the first block of 100 auctions / persons
    let total = (range.end - range.start) as f64;
    for k in range {
        let b = bid(&c, k);
        *by_auction.entry(b.auction).or_default() += 1;
        *by_bidder.entry(b.bidder).or_default() += 1;
    }
    let hot_auction = by_auction.get(&1000).copied().unwrap_or(0) as f64 / total;
    let hot_bidder = by_bidder.get(&1001).copied().unwrap_or(0) as f64 / total;
    // Expected 1 - 1/2 (plus the non-hot draws that land there) and 1 - 1/4.
    assert!(hot_auction > 0.45, "hot auction share {hot_auction}");
    assert!(hot_bidder > 0.70, "hot bidder share {hot_bidder}");
    let mut hot_seller = 0;
    for k in 0..300 {
        if auction(&c, k).seller == 1000 {
            hot_seller += 1;
        }
    }
    assert!(hot_seller > 200, "hot seller count {hot_seller}");
    // Channels: ~99% hot.
    let hot_channels = (0..2000)
        .filter(|&k| tables::HOT_CHANNELS.contains(&bid(&c, k).channel.as_str()))
        .count();
    assert!(hot_channels > 1940, "hot channel count {hot_channels}");
}

#[test]
fn timestamps_are_monotonic_in_the_event_number() {
    for eps in [1, 3, 1000, 7_777, 10_000_000] {
        let c = NexmarkConfig {
            events_per_second: eps,
            ..cfg()
        };
        let mut prev = i64::MIN;
        for n in 0..20_000 {
            let t = event_timestamp(&c, n);
            assert!(t >= prev, "eps {eps}: event {n}");
            assert_eq!(
                t - c.base_time_ms,
                (u128::from(n) * 1000 / u128::from(eps)) as i64
            );
            prev = t;
        }
        let mut prev = i64::MIN;
        for k in 0..2000 {
            let b = bid(&c, k);
            assert_eq!(
                b.date_time,
                event_timestamp(&c, event_number(EventKind::Bid, k))
            );
            assert!(b.date_time >= prev);
            prev = b.date_time;
        }
    }
    let c = NexmarkConfig {
        events_per_second: 0,
        ..cfg()
    };
    assert_eq!(event_timestamp(&c, 3), c.base_time_ms + 3000);
}

#[test]
fn the_event_clock_divides_exactly() {
    // The strength-reduced clock against the divisions it replaces, over rates that are powers of
    // two, odd, tiny and huge, and event numbers up to 2^64 - 1 (where `% eps * 1000` wraps).
    let plain = |eps: u64, n: u64| {
        (n / eps)
            .wrapping_mul(1000)
            .wrapping_add((n % eps).wrapping_mul(1000) / eps)
    };
    let rates = [
        1,
        2,
        3,
        7,
        1000,
        1 << 20,
        999_983,
        1_000_000,
        u64::from(u32::MAX),
        1 << 54,
        (1 << 62) + 1,
        u64::MAX - 1,
        u64::MAX,
    ];
    let mut x = 0x1234_5678_9ABC_DEF0_u64;
    for eps in rates {
        let c = NexmarkConfig {
            events_per_second: eps,
            base_time_ms: 0,
            ..cfg()
        };
        let clock = fields::EventClock::new(&c);
        let edges = [
            0,
            1,
            eps - 1,
            eps,
            eps.wrapping_add(1),
            u64::MAX - 1,
            u64::MAX,
        ];
        for n in edges.into_iter().chain((0..5000).map(|_| {
            x = rng::mix64(x);
            x >> (x % 64)
        })) {
            assert_eq!(clock.at(n), plain(eps, n) as i64, "eps {eps}, event {n}");
        }
    }
}

#[test]
fn the_clock_span_agrees_with_the_clock_in_any_order() {
    // Ascending runs (the batch generator's case) with strides around the span width, jumps back,
    // and the ends of the event-number range where a span's bounds saturate.
    let mut x = 0x00DD_BA11_u64;
    for eps in [1, 3, 7, 999, 1000, 1001, 999_983, 10_000_000, u64::MAX] {
        let clock = fields::EventClock::new(&NexmarkConfig {
            events_per_second: eps,
            ..cfg()
        });
        let mut span = fields::ClockSpan::new(clock);
        let mut numbers: Vec<u64> = Vec::new();
        for stride in [1, 2, 5, 46, 1003, 10_007] {
            let from = numbers.last().map_or(0, |n| n / 3);
            numbers.extend((0..300).map(|i| from + i * stride));
        }
        numbers.extend([u64::MAX - 2, u64::MAX - 1, u64::MAX, 0, u64::MAX, 7]);
        numbers.extend((0..2000).map(|_| {
            x = rng::mix64(x);
            x >> (x % 64)
        }));
        for n in numbers {
            assert_eq!(span.at(n), clock.at(n), "eps {eps}, event {n}");
        }
    }
}

#[test]
fn batches_step_event_numbers_across_epochs_and_the_end_of_the_range() {
    // Strides below, at and above the kinds' shares of an epoch, and `k` wrapping past 2^64 - 1.
    let c = cfg();
    for kind in [EventKind::Person, EventKind::Auction, EventKind::Bid] {
        for (start, step) in [
            (0, 1),
            (2, 3),
            (1, 46),
            (45, 47),
            (7, 1000),
            (u64::MAX - 9, 4),
        ] {
            let time = schema(kind).index_of("date_time").unwrap();
            let b = batch(kind, &c, start, step, 40, Some(&[0, time])).unwrap();
            let expected: Vec<(i64, i64)> = (0..40u64)
                .map(|i| {
                    let k = start.wrapping_add(i.wrapping_mul(step));
                    match kind {
                        EventKind::Person => (person(&c, k).id, person(&c, k).date_time),
                        EventKind::Auction => (auction(&c, k).id, auction(&c, k).date_time),
                        EventKind::Bid => (bid(&c, k).auction, bid(&c, k).date_time),
                    }
                })
                .collect();
            let got: Vec<(i64, i64)> = i64s(&b, b.schema().field(0).name())
                .into_iter()
                .zip(i64s(&b, "date_time"))
                .collect();
            assert_eq!(got, expected, "{kind:?} {start} {step}");
            if kind == EventKind::Bid {
                let b = batch(kind, &c, start, step, 40, Some(&[1])).unwrap();
                let bidders: Vec<i64> = (0..40u64)
                    .map(|i| bid(&c, start.wrapping_add(i.wrapping_mul(step))).bidder)
                    .collect();
                assert_eq!(i64s(&b, "bidder"), bidders, "{start} {step}");
            }
        }
    }
}

#[test]
fn extra_columns_without_padding_are_empty_strings_at_any_length() {
    // The column is a slice of one array per thread, which grows when a longer batch comes.
    let c = cfg();
    for len in [5, 300, 0, 7, 1000, 999] {
        let b = bids_batch(&c, 11, 2, len, Some(&[6, 0])).unwrap();
        assert_eq!(b.num_rows(), len);
        assert_eq!(strs(&b, "extra"), vec![String::new(); len], "{len}");
    }
}

fn i64s(batch: &RecordBatch, name: &str) -> Vec<i64> {
    let col = batch.column_by_name(name).unwrap();
    if let Some(a) = col.as_primitive_opt::<Int64Type>() {
        a.values().to_vec()
    } else {
        col.as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec()
    }
}

fn strs(batch: &RecordBatch, name: &str) -> Vec<String> {
    let a = batch.column_by_name(name).unwrap().as_string::<i32>();
    assert_eq!(a.null_count(), 0);
    a.iter().map(|s| s.unwrap().to_string()).collect()
}

fn configs() -> Vec<NexmarkConfig> {
    vec![
        cfg(),
        NexmarkConfig {
            seed: 99,
            extra_bytes: 40,
            events_per_second: 1000,
            ..NexmarkConfig::default()
        },
    ]
}

#[test]
fn batches_equal_row_at_a_time_generation() {
    for c in configs() {
        for (start, step, len) in [(0, 1, 700), (5, 3, 333), (123_456, 4, 50), (9, 1, 0)] {
            let ks: Vec<u64> = (0..len as u64).map(|i| start + i * step).collect();

            let b = bids_batch(&c, start, step, len, None).unwrap();
            assert_eq!(b.schema(), bid_schema());
            let rows: Vec<Bid> = ks.iter().map(|&k| bid(&c, k)).collect();
            let rebuilt: Vec<Bid> = (0..len)
                .map(|i| Bid {
                    auction: i64s(&b, "auction")[i],
                    bidder: i64s(&b, "bidder")[i],
                    price: i64s(&b, "price")[i],
                    channel: strs(&b, "channel")[i].clone(),
                    url: strs(&b, "url")[i].clone(),
                    date_time: i64s(&b, "date_time")[i],
                    extra: strs(&b, "extra")[i].clone(),
                })
                .collect();
            assert_eq!(rebuilt, rows);

            let a = auctions_batch(&c, start, step, len, None).unwrap();
            assert_eq!(a.schema(), auction_schema());
            let rows: Vec<Auction> = ks.iter().map(|&k| auction(&c, k)).collect();
            let rebuilt: Vec<Auction> = (0..len)
                .map(|i| Auction {
                    id: i64s(&a, "id")[i],
                    item_name: strs(&a, "item_name")[i].clone(),
                    description: strs(&a, "description")[i].clone(),
                    initial_bid: i64s(&a, "initial_bid")[i],
                    reserve: i64s(&a, "reserve")[i],
                    date_time: i64s(&a, "date_time")[i],
                    expires: i64s(&a, "expires")[i],
                    seller: i64s(&a, "seller")[i],
                    category: i64s(&a, "category")[i],
                    extra: strs(&a, "extra")[i].clone(),
                })
                .collect();
            assert_eq!(rebuilt, rows);

            let p = persons_batch(&c, start, step, len, None).unwrap();
            assert_eq!(p.schema(), person_schema());
            let rows: Vec<Person> = ks.iter().map(|&k| person(&c, k)).collect();
            let rebuilt: Vec<Person> = (0..len)
                .map(|i| Person {
                    id: i64s(&p, "id")[i],
                    name: strs(&p, "name")[i].clone(),
                    email_address: strs(&p, "email_address")[i].clone(),
                    credit_card: strs(&p, "credit_card")[i].clone(),
                    city: strs(&p, "city")[i].clone(),
                    state: strs(&p, "state")[i].clone(),
                    date_time: i64s(&p, "date_time")[i],
                    extra: strs(&p, "extra")[i].clone(),
                })
                .collect();
            assert_eq!(rebuilt, rows);
        }
    }
}

#[test]
fn projections_select_columns_in_the_given_order() {
    let c = cfg();
    for kind in [EventKind::Person, EventKind::Auction, EventKind::Bid] {
        let full = batch(kind, &c, 10, 2, 100, None).unwrap();
        let width = schema(kind).fields().len();
        let projection: Vec<usize> = (0..width).rev().step_by(2).collect();
        let projected = batch(kind, &c, 10, 2, 100, Some(&projection)).unwrap();
        assert_eq!(projected, full.project(&projection).unwrap());
        let none = batch(kind, &c, 10, 2, 100, Some(&[])).unwrap();
        assert_eq!((none.num_columns(), none.num_rows()), (0, 100));
        assert!(batch(kind, &c, 0, 1, 10, Some(&[width])).is_err());
    }
    // The benchmark's hot projection.
    let b = bids_batch(&c, 0, 1, 10, Some(&[0, 2, 5])).unwrap();
    let names: Vec<_> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["auction", "price", "date_time"]);
}

#[test]
fn a_filtered_batch_equals_the_full_batch_filtered() {
    let c = cfg();
    // Keeps rows whose first filter column is a multiple of 3: over persons' ids, auctions'
    // sellers, bids' prices (with a null for every fifth row, which drops it as SQL's WHERE does).
    for (kind, column) in [
        (EventKind::Person, 0),
        (EventKind::Auction, 7),
        (EventKind::Bid, 2),
    ] {
        let filter = RowFilter {
            columns: vec![column, 0],
            predicate: std::sync::Arc::new(|b: &RecordBatch| {
                let v = b.column(0).as_primitive::<Int64Type>();
                Ok((0..b.num_rows())
                    .map(|i| (i % 5 != 0).then_some(v.value(i) % 3 == 0))
                    .collect())
            }),
        };
        let full = batch(kind, &c, 3, 2, 400, None).unwrap();
        let tested = full.project(&[column, 0]).unwrap();
        let keep = (filter.predicate)(&tested).unwrap();
        let expected = arrow::compute::filter_record_batch(&full, &keep).unwrap();
        assert!(
            expected.num_rows() > 50 && expected.num_rows() < 350,
            "{kind:?} keeps {}",
            expected.num_rows()
        );
        let width = schema(kind).fields().len();
        let every: Vec<usize> = (0..width).rev().collect();
        for projection in [None, Some(&every[..]), Some(&[width - 1][..])] {
            let got = batch_where(kind, &c, (3, 2, 400), projection, &filter).unwrap();
            let want = match projection {
                None => expected.clone(),
                Some(p) => expected.project(p).unwrap(),
            };
            assert_eq!(got, want, "{kind:?} {projection:?}");
        }
    }
}

#[test]
fn deterministic_per_seed_and_different_across_seeds() {
    let a = cfg();
    let b = NexmarkConfig { seed: 8, ..cfg() };
    assert_eq!(crosscheck_csv(&a, 50), crosscheck_csv(&a.clone(), 50));
    let (x, y) = (
        bids_batch(&a, 0, 1, 500, None).unwrap(),
        bids_batch(&a, 0, 1, 500, None).unwrap(),
    );
    assert_eq!(x, y);
    let prices_a: Vec<i64> = (0..200).map(|k| bid(&a, k).price).collect();
    let prices_b: Vec<i64> = (0..200).map(|k| bid(&b, k).price).collect();
    let same = prices_a
        .iter()
        .zip(&prices_b)
        .filter(|(p, q)| p == q)
        .count();
    assert!(same < 5, "{same} equal prices across seeds");
    assert_ne!(
        person(&a, 3).name + &person(&a, 4).name,
        person(&b, 3).name + &person(&b, 4).name
    );
    // Event k does not depend on which other events were generated.
    assert_eq!(bid(&a, 1_000_000), bid(&a, 1_000_000));
    assert_eq!(
        strs(&bids_batch(&a, 1_000_000, 1, 1, None).unwrap(), "url")[0],
        bid(&a, 1_000_000).url
    );
}

#[test]
fn prices_cover_the_benchmark_range() {
    let c = cfg();
    let prices: Vec<i64> = (0..50_000).map(|k| bid(&c, k).price).collect();
    let min = prices.iter().copied().min().unwrap();
    let max = prices.iter().copied().max().unwrap();
    assert!((100..200).contains(&min), "min {min}");
    assert!((50_000_000..=100_000_000).contains(&max), "max {max}");
    // Log-uniform: about a sixth per decade.
    let below_1000 = prices.iter().filter(|&&p| p < 1000).count() as f64 / 50_000.0;
    assert!(
        (0.15..0.19).contains(&below_1000),
        "share below $10: {below_1000}"
    );
    assert_eq!(fields::price(0), 100);
    assert!((99_999_000..100_000_000).contains(&fields::price(u64::MAX)));
}

/// Seed 42, defaults, 300 of each kind: `Dump 42 300` of the Java twin.
const JAVA_SEED42: &str = include_str!("testdata/java_seed42.csv");
/// Seed 42, 50 of each kind, extra_bytes 32, 1000 events/s: `Dump 42 50 32 1000`.
const JAVA_SEED42_EXTRA: &str = include_str!("testdata/java_seed42_extra32_eps1000.csv");

fn assert_same_lines(rust: &str, java: &str) {
    for (i, (r, j)) in rust.lines().zip(java.lines()).enumerate() {
        assert_eq!(r, j, "line {} differs (left Rust, right Java)", i + 1);
    }
    assert_eq!(rust.lines().count(), java.lines().count());
}

#[test]
fn rust_matches_the_java_twin() {
    let c = NexmarkConfig {
        seed: 42,
        ..NexmarkConfig::default()
    };
    assert_same_lines(&crosscheck_csv(&c, 300), JAVA_SEED42);
    let c = NexmarkConfig {
        seed: 42,
        extra_bytes: 32,
        events_per_second: 1000,
        ..NexmarkConfig::default()
    };
    assert_same_lines(&crosscheck_csv(&c, 50), JAVA_SEED42_EXTRA);
}

/// Writes a Rust dump for `bench/flink/nexmark-crosscheck.sh`: `NEXMARK_DUMP_ARGS` =
/// "SEED N [EXTRA_BYTES [EVENTS_PER_SECOND]]" (the Java `Dump` arguments), output to the file
/// `NEXMARK_DUMP_OUT`.
#[test]
#[ignore = "run by bench/flink/nexmark-crosscheck.sh"]
fn write_crosscheck_dump() {
    let args = std::env::var("NEXMARK_DUMP_ARGS").expect("NEXMARK_DUMP_ARGS");
    let out = std::env::var("NEXMARK_DUMP_OUT").expect("NEXMARK_DUMP_OUT");
    let args: Vec<u64> = args
        .split_whitespace()
        .map(|a| a.parse().unwrap())
        .collect();
    assert!((2..=4).contains(&args.len()), "need SEED N [EXTRA [EPS]]");
    let mut c = NexmarkConfig {
        seed: args[0],
        ..NexmarkConfig::default()
    };
    if let Some(&e) = args.get(2) {
        c.extra_bytes = e as usize;
    }
    if let Some(&eps) = args.get(3) {
        c.events_per_second = eps;
    }
    std::fs::write(out, crosscheck_csv(&c, args[1])).unwrap();
}
