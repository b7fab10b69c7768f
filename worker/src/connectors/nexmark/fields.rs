//! Field formulas of the Nexmark generator: one function per field of each event kind.
//!
//! Each function computes one field of the event with number `n` from the config and the event's
//! random stream only, so the row-at-a-time generators (`person`, `auction`, `bid`) and the
//! columnar batch generators share them and agree by construction. Slot numbers and formulas are
//! the spec in `docs/nexmark.md`; the Java twin mirrors this file.

use super::NexmarkConfig;
use super::rng::{EventRng, TEXT32, WORD32, below, push_random_string};
use super::tables::{
    CHANNEL_COUNT, CITIES, FIRST_NAMES, HOT_CHANNELS, LAST_NAMES, PRICE_KNOTS, STATES,
};

/// Events per epoch, and the kinds' shares of an epoch (person first, then auctions, then bids).
pub(crate) const PROPORTION_DENOMINATOR: u64 = 50;
pub(crate) const PERSON_PROPORTION: u64 = 1;
pub(crate) const AUCTION_PROPORTION: u64 = 3;
pub(crate) const BID_PROPORTION: u64 = 46;

/// Ids of the first person/auction and the first category.
pub(crate) const FIRST_PERSON_ID: u64 = 1000;
pub(crate) const FIRST_AUCTION_ID: u64 = 1000;
pub(crate) const FIRST_CATEGORY_ID: u64 = 10;
/// Number of categories (ids 10..15).
pub(crate) const NUM_CATEGORIES: u64 = 5;

/// Hot auctions / bidders / sellers are the first id (bidders: the second) of each block of this
/// many consecutive ids.
pub(crate) const HOT_BLOCK: u64 = 100;

/// One bid in this many is on an ordinary channel; the others are on one of the hot channels.
pub(crate) const HOT_CHANNEL_RATIO: u64 = 100;

/// Event timestamp (epoch ms) of event number `n`: `base + floor(n * 1000 / eps)`, computed
/// without overflowing as `(n / eps) * 1000 + (n % eps) * 1000 / eps`. `eps == 0` counts as 1.
#[inline]
pub(crate) fn timestamp(cfg: &NexmarkConfig, n: u64) -> i64 {
    EventClock::new(cfg).at(n)
}

/// [`timestamp`] with its divisions by the event rate strength-reduced to multiplications; a
/// batch builds one and reads every row's time from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventClock {
    eps: u64,
    /// `floor((2^64 - 1) / eps)`, at least `2^64 / eps - 1`.
    inverse: u64,
    base: i64,
}

impl EventClock {
    #[inline]
    pub(crate) fn new(cfg: &NexmarkConfig) -> Self {
        let eps = cfg.events_per_second.max(1);
        Self {
            eps,
            inverse: u64::MAX / eps,
            base: cfg.base_time_ms,
        }
    }

    /// `(x / eps, x % eps)`. The estimate `x * inverse / 2^64` is `q` or `q - 1`, since
    /// `x * inverse / 2^64 > x / eps - 1`; one comparison corrects it.
    #[inline]
    fn div_rem(self, x: u64) -> (u64, u64) {
        let q = ((u128::from(x) * u128::from(self.inverse)) >> 64) as u64;
        let r = x - q * self.eps;
        if r >= self.eps {
            (q + 1, r - self.eps)
        } else {
            (q, r)
        }
    }

    /// The time of event `n`.
    #[inline]
    pub(crate) fn at(self, n: u64) -> i64 {
        let (seconds, rest) = self.div_rem(n);
        let (ms, _) = self.div_rem(rest.wrapping_mul(1000));
        let ms = seconds.wrapping_mul(1000).wrapping_add(ms);
        self.base.wrapping_add(ms as i64)
    }
}

/// [`EventClock::at`] for event numbers read in (mostly) ascending order: it keeps the span of
/// event numbers that share the last time it computed, and divides again only for an event
/// outside it (once per millisecond of event time when the numbers ascend).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClockSpan {
    clock: EventClock,
    /// Every `n` in `from..until` has the time `at` (none at first).
    from: u64,
    until: u64,
    at: i64,
}

impl ClockSpan {
    pub(crate) fn new(clock: EventClock) -> Self {
        Self {
            clock,
            from: 0,
            until: 0,
            at: 0,
        }
    }

    /// `self.clock.at(n)`.
    #[inline]
    pub(crate) fn at(&mut self, n: u64) -> i64 {
        if n.wrapping_sub(self.from) >= self.until.wrapping_sub(self.from) {
            self.enter(n);
        }
        self.at
    }

    /// Moves the span to the one holding `n`. The offset from `base` is `m = floor(n * 1000 / eps)`
    /// (taken modulo 2^64), so the span is the `n` with `m * eps <= n * 1000 < (m + 1) * eps`,
    /// i.e. `ceil(m * eps / 1000) <= n < ceil((m + 1) * eps / 1000)`; in `u128`, where
    /// `(m + 1) * eps <= n * 1000 + eps` cannot overflow.
    #[cold]
    fn enter(&mut self, n: u64) {
        let eps = u128::from(self.clock.eps);
        let n128 = u128::from(n);
        let m = n128 / eps * 1000 + n128 % eps * 1000 / eps;
        let first = |m: u128| (m * eps).div_ceil(1000);
        self.from = u64::try_from(first(m)).unwrap_or(u64::MAX);
        self.until = u64::try_from(first(m + 1)).unwrap_or(u64::MAX);
        self.at = self.clock.at(n);
    }
}

/// Base-0 id of the newest person at event `n` (the event's own person if it is one).
#[inline]
pub(crate) fn last_person(n: u64) -> u64 {
    n / PROPORTION_DENOMINATOR
}

/// Base-0 id of the newest auction at event `n` (the event's own auction if it is one).
/// Only meaningful for auction and bid events (n >= 1).
#[inline]
pub(crate) fn last_auction(n: u64) -> u64 {
    let epoch = n / PROPORTION_DENOMINATOR;
    let offset = n % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        (epoch * AUCTION_PROPORTION).wrapping_sub(1)
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION
    } else {
        epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
    }
}

/// `if c { a } else { b }` without a branch (for random `c`, where a branch mispredicts).
#[inline]
fn select(c: bool, a: u64, b: u64) -> u64 {
    let mask = u64::from(c).wrapping_neg();
    (a & mask) | (b & !mask)
}

/// A uniformly chosen base-0 id among the `num_active_people` newest persons up to `last`.
#[inline]
fn recent_person(cfg: &NexmarkConfig, last: u64, word: u64) -> u64 {
    let active = cfg.num_active_people.min(last + 1).max(1);
    last + 1 - active + below(word, active)
}

/// A price in cents, log-uniform-ish over [100, 10^8): see `docs/nexmark.md`, "Prices".
#[inline]
pub(crate) fn price(word: u64) -> i64 {
    // 10^decade by table: `pow` loops, and its trip count is random.
    const POW10: [u64; 8] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];
    let t = below(word, 6 << 24);
    let decade = ((t >> 24) & 7) as usize;
    let j = ((t >> 20) & 15) as usize;
    let frac = t & 0xF_FFFF;
    let (lo, hi) = (PRICE_KNOTS[j], PRICE_KNOTS[j + 1]);
    let mantissa = lo + (((hi - lo) * frac) >> 20);
    ((mantissa * POW10[decade] + 5_000) / 10_000) as i64
}

/// Largest honoured `extra_bytes`; larger settings count as this.
pub(crate) const MAX_EXTRA_BYTES: u64 = 1 << 24;

/// Appends the `extra` padding: empty if `extra_bytes == 0`, otherwise a TEXT32 string whose
/// length is uniform in `[e - e/5, e + e/5]` (length from `slot`, characters from `slot + 1`),
/// where `e = min(extra_bytes, MAX_EXTRA_BYTES)`.
#[inline]
pub(crate) fn extra(cfg: &NexmarkConfig, r: EventRng, slot: u64, out: &mut Vec<u8>) {
    if cfg.extra_bytes == 0 {
        return;
    }
    let e = (cfg.extra_bytes as u64).min(MAX_EXTRA_BYTES);
    let delta = e / 5;
    let len = e - delta + r.below(slot, 2 * delta + 1);
    push_random_string(out, r.draw(slot + 1), len, TEXT32);
}

// ---- persons (slots 0..=10) ----

#[inline]
pub(crate) fn person_id(n: u64) -> i64 {
    (FIRST_PERSON_ID + last_person(n)) as i64
}

pub(crate) fn person_name(r: EventRng, out: &mut Vec<u8>) {
    let first = FIRST_NAMES[r.below(0, FIRST_NAMES.len() as u64) as usize];
    let last = LAST_NAMES[r.below(1, LAST_NAMES.len() as u64) as usize];
    out.extend_from_slice(first.as_bytes());
    out.push(b' ');
    out.extend_from_slice(last.as_bytes());
}

pub(crate) fn person_email(r: EventRng, out: &mut Vec<u8>) {
    push_random_string(out, r.draw(3), 4 + r.below(2, 7), WORD32);
    out.push(b'@');
    push_random_string(out, r.draw(5), 3 + r.below(4, 6), WORD32);
    out.extend_from_slice(b".com");
}

pub(crate) fn person_credit_card(r: EventRng, out: &mut Vec<u8>) {
    let v = r.below(6, 10_000_000_000_000_000);
    let mut div = 1_000_000_000_000_000u64;
    for i in 0..16 {
        if i > 0 && i % 4 == 0 {
            out.push(b' ');
        }
        out.push(b'0' + ((v / div) % 10) as u8);
        div /= 10;
    }
}

#[inline]
pub(crate) fn person_city(r: EventRng) -> &'static str {
    CITIES[r.below(7, CITIES.len() as u64) as usize]
}

#[inline]
pub(crate) fn person_state(r: EventRng) -> &'static str {
    STATES[r.below(8, STATES.len() as u64) as usize]
}

pub(crate) const PERSON_EXTRA_SLOT: u64 = 9;

// ---- auctions (slots 0..=11) ----

#[inline]
pub(crate) fn auction_id(n: u64) -> i64 {
    (FIRST_AUCTION_ID + last_auction(n)) as i64
}

pub(crate) fn auction_item_name(r: EventRng, out: &mut Vec<u8>) {
    push_random_string(out, r.draw(7), 4 + r.below(6, 17), TEXT32);
}

pub(crate) fn auction_description(r: EventRng, out: &mut Vec<u8>) {
    push_random_string(out, r.draw(9), 20 + r.below(8, 81), TEXT32);
}

#[inline]
pub(crate) fn auction_initial_bid(r: EventRng) -> i64 {
    price(r.draw(3))
}

#[inline]
pub(crate) fn auction_reserve(r: EventRng) -> i64 {
    auction_initial_bid(r) + price(r.draw(4))
}

/// `date_time + 1 + below(draw(5), max(2 * horizon, 1))`, where `horizon` is the event-time
/// span of the next `num_in_flight_auctions * 50 / 3` events.
#[inline]
pub(crate) fn auction_expires(cfg: &NexmarkConfig, clock: EventClock, n: u64, r: EventRng) -> i64 {
    let now = clock.at(n);
    let ahead = cfg
        .num_in_flight_auctions
        .wrapping_mul(PROPORTION_DENOMINATOR)
        / AUCTION_PROPORTION;
    let horizon = clock.at(n.wrapping_add(ahead)).wrapping_sub(now);
    let span = horizon.wrapping_mul(2).max(1) as u64;
    now.wrapping_add(1).wrapping_add(r.below(5, span) as i64)
}

#[inline]
pub(crate) fn auction_seller(cfg: &NexmarkConfig, n: u64, r: EventRng) -> i64 {
    let last = last_person(n);
    let base0 = if r.below(0, cfg.hot_seller_ratio) > 0 {
        last / HOT_BLOCK * HOT_BLOCK
    } else {
        recent_person(cfg, last, r.draw(1))
    };
    (FIRST_PERSON_ID + base0) as i64
}

#[inline]
pub(crate) fn auction_category(r: EventRng) -> i64 {
    (FIRST_CATEGORY_ID + r.below(2, NUM_CATEGORIES)) as i64
}

pub(crate) const AUCTION_EXTRA_SLOT: u64 = 10;

// ---- bids (slots 0..=8) ----

#[inline]
pub(crate) fn bid_auction(cfg: &NexmarkConfig, n: u64, r: EventRng) -> i64 {
    let last = last_auction(n);
    // Both candidates, then a select: the choice is a coin flip, a branch would mispredict.
    let hot = last / HOT_BLOCK * HOT_BLOCK;
    let min = last.saturating_sub(cfg.num_in_flight_auctions);
    let recent = min + r.below(1, last - min + 1);
    let base0 = select(r.below(0, cfg.hot_auction_ratio) > 0, hot, recent);
    (FIRST_AUCTION_ID + base0) as i64
}

#[inline]
pub(crate) fn bid_bidder(cfg: &NexmarkConfig, n: u64, r: EventRng) -> i64 {
    let last = last_person(n);
    let hot = (last / HOT_BLOCK * HOT_BLOCK + 1).min(last);
    let recent = recent_person(cfg, last, r.draw(3));
    let base0 = select(r.below(2, cfg.hot_bidder_ratio) > 0, hot, recent);
    (FIRST_PERSON_ID + base0) as i64
}

#[inline]
pub(crate) fn bid_price(r: EventRng) -> i64 {
    price(r.draw(4))
}

/// Index into the channel table: a hot channel (0..4) unless `below(draw(5), 100) == 0`.
#[inline]
pub(crate) fn bid_channel_index(r: EventRng) -> usize {
    if r.below(5, HOT_CHANNEL_RATIO) > 0 {
        r.below(6, HOT_CHANNELS.len() as u64) as usize
    } else {
        HOT_CHANNELS.len() + r.below(6, CHANNEL_COUNT) as usize
    }
}

pub(crate) const BID_EXTRA_SLOT: u64 = 7;
