//! Deterministic Nexmark event generator: persons, auctions and bids as rows or Arrow batches.
//!
//! Events follow the Nexmark benchmark's model (per 50 events: 1 person, 3 auctions, 46 bids;
//! bids and auctions refer to recent persons and auctions, with "hot" keys), but every event is a
//! pure function of `(seed, event number)`: there is no generator state, so any range or stride
//! of events can be produced independently by parallel subtasks. The full spec, which the Java
//! twin used by the Flink peer benchmark (`bench/flink/src/dev/strom/bench/nexmark/`) follows too,
//! is `docs/nexmark.md`; `testdata/java_seed42*.csv` pin the agreement between the two.

mod batch;
mod fields;
mod rng;
mod tables;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub use batch::{RowFilter, auctions_batch, batch, batch_where, bids_batch, persons_batch};

use fields::{
    AUCTION_EXTRA_SLOT, AUCTION_PROPORTION, BID_EXTRA_SLOT, BID_PROPORTION, PERSON_EXTRA_SLOT,
    PERSON_PROPORTION, PROPORTION_DENOMINATOR,
};
use rng::EventRng;

/// Generator settings. Every event is a pure function of these and its event number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexmarkConfig {
    /// Seed of all random choices.
    pub seed: u64,
    /// Event-time rate: event `n` is stamped `base_time_ms + floor(n * 1000 / events_per_second)`
    /// (0 counts as 1). Default 10,000,000.
    pub events_per_second: u64,
    /// Event time of event 0, epoch ms. Default 1,700,000,000,000 (2023-11-14T22:13:20Z).
    pub base_time_ms: i64,
    /// Average length of every event's `extra` padding (uniform within ±20%); 0 (the default)
    /// leaves `extra` empty.
    pub extra_bytes: usize,
    /// Persons a non-hot seller or bidder is drawn from (the newest ones). Default 1000.
    pub num_active_people: u64,
    /// Auctions a non-hot bid is drawn from (the newest ones, plus one). Default 100.
    pub num_in_flight_auctions: u64,
    /// A bid goes to the hot auction with probability `1 - 1/hot_auction_ratio`. Default 2.
    pub hot_auction_ratio: u64,
    /// A bid comes from the hot bidder with probability `1 - 1/hot_bidder_ratio`. Default 4.
    pub hot_bidder_ratio: u64,
    /// An auction is by the hot seller with probability `1 - 1/hot_seller_ratio`. Default 4.
    pub hot_seller_ratio: u64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            events_per_second: 10_000_000,
            base_time_ms: 1_700_000_000_000,
            extra_bytes: 0,
            num_active_people: 1000,
            num_in_flight_auctions: 100,
            hot_auction_ratio: 2,
            hot_bidder_ratio: 4,
            hot_seller_ratio: 4,
        }
    }
}

/// The three kinds of Nexmark events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Person,
    Auction,
    Bid,
}

/// Event number of the `k`-th (0-based) event of `kind`.
///
/// Each epoch of 50 events holds one person (offset 0), three auctions (offsets 1..4) and 46 bids
/// (offsets 4..50).
pub fn event_number(kind: EventKind, k: u64) -> u64 {
    let (per_epoch, first) = epoch_share(kind);
    (k / per_epoch)
        .wrapping_mul(PROPORTION_DENOMINATOR)
        .wrapping_add(first + k % per_epoch)
}

/// How many of each epoch's events are of `kind`, and the offset of its first one.
fn epoch_share(kind: EventKind) -> (u64, u64) {
    match kind {
        EventKind::Person => (PERSON_PROPORTION, 0),
        EventKind::Auction => (AUCTION_PROPORTION, PERSON_PROPORTION),
        EventKind::Bid => (BID_PROPORTION, PERSON_PROPORTION + AUCTION_PROPORTION),
    }
}

/// Inverse of [`event_number`]: the kind of event `n` and its index `k` among that kind.
pub fn event_kind(n: u64) -> (EventKind, u64) {
    let epoch = n / PROPORTION_DENOMINATOR;
    let offset = n % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        (EventKind::Person, epoch * PERSON_PROPORTION + offset)
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        (
            EventKind::Auction,
            epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION,
        )
    } else {
        (
            EventKind::Bid,
            epoch * BID_PROPORTION + offset - PERSON_PROPORTION - AUCTION_PROPORTION,
        )
    }
}

/// Event time (epoch ms) of event number `n`.
pub fn event_timestamp(cfg: &NexmarkConfig, n: u64) -> i64 {
    fields::timestamp(cfg, n)
}

/// A person (a new user of the auction site).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub id: i64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: String,
    pub state: String,
    /// Epoch ms.
    pub date_time: i64,
    pub extra: String,
}

/// An auction (an item put up for sale).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auction {
    pub id: i64,
    pub item_name: String,
    pub description: String,
    /// Cents.
    pub initial_bid: i64,
    /// Cents.
    pub reserve: i64,
    /// Epoch ms.
    pub date_time: i64,
    /// Epoch ms.
    pub expires: i64,
    pub seller: i64,
    pub category: i64,
    pub extra: String,
}

/// A bid on an auction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bid {
    pub auction: i64,
    pub bidder: i64,
    /// Cents.
    pub price: i64,
    pub channel: String,
    pub url: String,
    /// Epoch ms.
    pub date_time: i64,
    pub extra: String,
}

fn ts_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// Schema of persons: id, name, email_address, credit_card, city, state, date_time, extra.
pub fn person_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("name", DataType::Utf8, false),
                Field::new("email_address", DataType::Utf8, false),
                Field::new("credit_card", DataType::Utf8, false),
                Field::new("city", DataType::Utf8, false),
                Field::new("state", DataType::Utf8, false),
                Field::new("date_time", ts_ms(), false),
                Field::new("extra", DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// Schema of auctions: id, item_name, description, initial_bid, reserve, date_time, expires,
/// seller, category, extra.
pub fn auction_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("item_name", DataType::Utf8, false),
                Field::new("description", DataType::Utf8, false),
                Field::new("initial_bid", DataType::Int64, false),
                Field::new("reserve", DataType::Int64, false),
                Field::new("date_time", ts_ms(), false),
                Field::new("expires", ts_ms(), false),
                Field::new("seller", DataType::Int64, false),
                Field::new("category", DataType::Int64, false),
                Field::new("extra", DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// Schema of bids: auction, bidder, price, channel, url, date_time, extra.
pub fn bid_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("auction", DataType::Int64, false),
                Field::new("bidder", DataType::Int64, false),
                Field::new("price", DataType::Int64, false),
                Field::new("channel", DataType::Utf8, false),
                Field::new("url", DataType::Utf8, false),
                Field::new("date_time", ts_ms(), false),
                Field::new("extra", DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// Schema of events of `kind`.
pub fn schema(kind: EventKind) -> SchemaRef {
    match kind {
        EventKind::Person => person_schema(),
        EventKind::Auction => auction_schema(),
        EventKind::Bid => bid_schema(),
    }
}

/// Runs a field writer into a fresh string (every generated byte is ASCII).
fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut buf = Vec::new();
    write(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The `k`-th (0-based) person.
pub fn person(cfg: &NexmarkConfig, k: u64) -> Person {
    let n = event_number(EventKind::Person, k);
    let r = EventRng::new(cfg.seed, n);
    Person {
        id: fields::person_id(n),
        name: text(|b| fields::person_name(r, b)),
        email_address: text(|b| fields::person_email(r, b)),
        credit_card: text(|b| fields::person_credit_card(r, b)),
        city: fields::person_city(r).to_string(),
        state: fields::person_state(r).to_string(),
        date_time: fields::timestamp(cfg, n),
        extra: text(|b| fields::extra(cfg, r, PERSON_EXTRA_SLOT, b)),
    }
}

/// The `k`-th (0-based) auction; its id is `1000 + k`.
pub fn auction(cfg: &NexmarkConfig, k: u64) -> Auction {
    let n = event_number(EventKind::Auction, k);
    let r = EventRng::new(cfg.seed, n);
    let clock = fields::EventClock::new(cfg);
    Auction {
        id: fields::auction_id(n),
        item_name: text(|b| fields::auction_item_name(r, b)),
        description: text(|b| fields::auction_description(r, b)),
        initial_bid: fields::auction_initial_bid(r),
        reserve: fields::auction_reserve(r),
        date_time: clock.at(n),
        expires: fields::auction_expires(cfg, clock, n, r),
        seller: fields::auction_seller(cfg, n, r),
        category: fields::auction_category(r),
        extra: text(|b| fields::extra(cfg, r, AUCTION_EXTRA_SLOT, b)),
    }
}

/// The `k`-th (0-based) bid.
pub fn bid(cfg: &NexmarkConfig, k: u64) -> Bid {
    let n = event_number(EventKind::Bid, k);
    let r = EventRng::new(cfg.seed, n);
    let channel = fields::bid_channel_index(r);
    let table = tables::channels();
    Bid {
        auction: fields::bid_auction(cfg, n, r),
        bidder: fields::bid_bidder(cfg, n, r),
        price: fields::bid_price(r),
        channel: table.names.get(channel).cloned().unwrap_or_default(),
        url: table.urls.get(channel).cloned().unwrap_or_default(),
        date_time: fields::timestamp(cfg, n),
        extra: text(|b| fields::extra(cfg, r, BID_EXTRA_SLOT, b)),
    }
}

/// The cross-check dump (see `bench/flink/nexmark-crosscheck.sh`): the first `count` persons,
/// then auctions, then bids, one CSV line each, `\n`-terminated, in the format of the Java
/// `dev.strom.bench.nexmark.Dump`:
///
/// * `P,k,id,name,email_address,credit_card,city,state,date_time,extra`
/// * `A,k,id,item_name,description,initial_bid,reserve,date_time,expires,seller,category,extra`
/// * `B,k,auction,bidder,price,channel,url,date_time,extra`
///
/// No field contains a comma, quote or newline, so there is no quoting.
pub fn crosscheck_csv(cfg: &NexmarkConfig, count: u64) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    // Writing into a String cannot fail; the results are ignored for that reason.
    for k in 0..count {
        let p = person(cfg, k);
        let _ = writeln!(
            s,
            "P,{k},{},{},{},{},{},{},{},{}",
            p.id, p.name, p.email_address, p.credit_card, p.city, p.state, p.date_time, p.extra
        );
    }
    for k in 0..count {
        let a = auction(cfg, k);
        let _ = writeln!(
            s,
            "A,{k},{},{},{},{},{},{},{},{},{},{}",
            a.id,
            a.item_name,
            a.description,
            a.initial_bid,
            a.reserve,
            a.date_time,
            a.expires,
            a.seller,
            a.category,
            a.extra
        );
    }
    for k in 0..count {
        let b = bid(cfg, k);
        let _ = writeln!(
            s,
            "B,{k},{},{},{},{},{},{},{}",
            b.auction, b.bidder, b.price, b.channel, b.url, b.date_time, b.extra
        );
    }
    s
}
