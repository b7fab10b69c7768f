//! The counter-based pseudo-random numbers behind the Nexmark generator.
//!
//! Every random choice of an event is a *draw*: a pure function of the seed, the event number
//! and a small slot number fixed per field (see `docs/nexmark.md`, "PRNG"). Nothing is carried
//! from one event to the next, so any event, and any single field of it, can be generated on its
//! own. The Java twin (`dev.strom.bench.nexmark.NexmarkGenerator`) implements the same functions
//! bit for bit; keep the two in step.

/// The splitmix64 increment (the 64-bit golden ratio); also spaces the slots of an event.
pub(crate) const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Odd multiplier that spreads event numbers before they are mixed with the seed.
pub(crate) const EVENT_MUL: u64 = 0xD1B5_4A32_D192_ED03;

/// The splitmix64 output function (Stafford's "mix13" variant).
#[inline]
pub(crate) fn mix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `floor(x * bound / 2^64)`: maps a uniform 64-bit word onto `[0, bound)`; `0` if `bound == 0`.
#[inline]
pub(crate) fn below(x: u64, bound: u64) -> u64 {
    ((u128::from(x) * u128::from(bound)) >> 64) as u64
}

/// The random source of one event: `draw(slot)` is the slot-th word of the event's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EventRng {
    base: u64,
}

impl EventRng {
    /// The stream of event number `n` under `seed`.
    #[inline]
    pub(crate) fn new(seed: u64, n: u64) -> Self {
        Self {
            base: mix64(seed ^ n.wrapping_mul(EVENT_MUL)),
        }
    }

    /// Word number `slot` of this event's stream.
    #[inline]
    pub(crate) fn draw(self, slot: u64) -> u64 {
        mix64(
            self.base
                .wrapping_add(slot.wrapping_add(1).wrapping_mul(GOLDEN)),
        )
    }

    /// `below(draw(slot), bound)`.
    #[inline]
    pub(crate) fn below(self, slot: u64, bound: u64) -> u64 {
        below(self.draw(slot), bound)
    }
}

/// Alphabet of free text (item names, descriptions, `extra`): letters, a space, common letters.
pub(crate) const TEXT32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz eaoti";

/// Alphabet of single words (e-mail parts, url path parts): letters only.
pub(crate) const WORD32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyzeaotin";

/// Appends `len` characters drawn from `alphabet`, driven by the 64-bit `key`.
///
/// Chunk `j` (0-based) is `w = mix64(key + (j + 1) * GOLDEN)`; it yields 12 characters,
/// character `i` of the chunk being `alphabet[(w >> (5 * i)) & 31]` (the top 4 bits are unused).
#[inline]
pub(crate) fn push_random_string(out: &mut Vec<u8>, key: u64, len: u64, alphabet: &[u8; 32]) {
    let mut left = len;
    let mut j: u64 = 0;
    while left > 0 {
        j += 1;
        let mut w = mix64(key.wrapping_add(j.wrapping_mul(GOLDEN)));
        let take = left.min(12);
        for _ in 0..take {
            out.push(alphabet[(w & 31) as usize]);
            w >>= 5;
        }
        left -= take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_handles_zero() {
        for i in 0..1000u64 {
            let x = mix64(i);
            assert!(below(x, 7) < 7);
            assert_eq!(below(x, 0), 0);
            assert_eq!(below(x, 1), 0);
        }
        assert_eq!(below(u64::MAX, 10), 9);
    }

    #[test]
    fn splitmix_reference_values() {
        // splitmix64 seeded with 0: the first output is mix64(GOLDEN).
        assert_eq!(mix64(GOLDEN), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn random_strings_have_the_requested_length() {
        for len in 0..40 {
            let mut v = Vec::new();
            push_random_string(&mut v, 99, len, TEXT32);
            assert_eq!(v.len() as u64, len);
            assert!(v.iter().all(|b| TEXT32.contains(b)));
        }
    }
}
