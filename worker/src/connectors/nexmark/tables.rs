//! Fixed string and number tables of the Nexmark generator (Strom's own, not the benchmark's).
//!
//! The Java twin holds the same tables in the same order; `docs/nexmark.md` lists them too.
//! The channel table is derived from a fixed key, independent of the configured seed, and is
//! built once per process.

use std::sync::OnceLock;

use super::rng::{EventRng, WORD32, push_random_string};

/// First names of persons (`name` = first + " " + last).
pub(crate) const FIRST_NAMES: [&str; 24] = [
    "Ada", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kaia",
    "Lars", "Mira", "Nils", "Olga", "Pavel", "Quinn", "Rosa", "Soren", "Tariq", "Uma", "Viktor",
    "Wanda", "Yara",
];

/// Last names of persons.
pub(crate) const LAST_NAMES: [&str; 24] = [
    "Abbott",
    "Brandt",
    "Castillo",
    "Dahl",
    "Eriksen",
    "Fischer",
    "Gallo",
    "Haas",
    "Ibarra",
    "Jansen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Novak",
    "Okafor",
    "Petrov",
    "Quint",
    "Rossi",
    "Schultz",
    "Tanaka",
    "Ulrich",
    "Varga",
    "Weber",
    "Zeller",
];

/// Cities of persons (drawn independently of the state).
pub(crate) const CITIES: [&str; 16] = [
    "Portland",
    "Boise",
    "Sacramento",
    "Fresno",
    "Eugene",
    "Spokane",
    "Reno",
    "Tucson",
    "Denver",
    "Omaha",
    "Madison",
    "Albany",
    "Savannah",
    "Duluth",
    "Bend",
    "Modesto",
];

/// US states of persons; contains OR, ID and CA, which Nexmark q3 filters on.
pub(crate) const STATES: [&str; 8] = ["OR", "ID", "CA", "WA", "NV", "AZ", "UT", "MT"];

/// `round(10^(j/16) * 1e6)` for j in 0..=16: the knots of the price curve.
pub(crate) const PRICE_KNOTS: [u64; 17] = [
    1_000_000, 1_154_782, 1_333_521, 1_539_927, 1_778_279, 2_053_525, 2_371_374, 2_738_420,
    3_162_278, 3_651_741, 4_216_965, 4_869_675, 5_623_413, 6_493_816, 7_498_942, 8_659_643,
    10_000_000,
];

/// Names of the hot channels, channel indexes 0..4.
pub(crate) const HOT_CHANNELS: [&str; 4] = ["Web", "iOS", "Android", "Partner"];

/// Number of ordinary (non-hot) channels, channel indexes 4..4 + CHANNEL_COUNT.
pub(crate) const CHANNEL_COUNT: u64 = 10_000;

/// Key of the channel table's random words ("channels" in ASCII).
pub(crate) const CHANNEL_KEY: u64 = 0x6368_616E_6E65_6C73;

/// Every channel's name and url, indexed by channel index.
#[derive(Debug)]
pub(crate) struct ChannelTable {
    pub(crate) names: Vec<String>,
    pub(crate) urls: Vec<String>,
}

/// The channel table (built on first use).
pub(crate) fn channels() -> &'static ChannelTable {
    static TABLE: OnceLock<ChannelTable> = OnceLock::new();
    TABLE.get_or_init(build_channels)
}

fn build_channels() -> ChannelTable {
    let total = HOT_CHANNELS.len() as u64 + CHANNEL_COUNT;
    let mut names = Vec::with_capacity(total as usize);
    let mut urls = Vec::with_capacity(total as usize);
    for c in 0..total {
        let name = match HOT_CHANNELS.get(c as usize) {
            Some(hot) => (*hot).to_string(),
            None => format!("channel-{}", c - HOT_CHANNELS.len() as u64),
        };
        let rng = EventRng::new(CHANNEL_KEY, c);
        let mut url = b"https://auction.strom.example".to_vec();
        for slot in 0..3 {
            url.push(b'/');
            push_random_string(&mut url, rng.draw(slot), 5, WORD32);
        }
        url.extend_from_slice(format!("/lot?channel_id={c}").as_bytes());
        names.push(name);
        urls.push(String::from_utf8_lossy(&url).into_owned());
    }
    ChannelTable { names, urls }
}
