package dev.strom.bench.nexmark;

/**
 * The Nexmark event generator, Java twin of Strom's Rust generator
 * (worker/src/connectors/nexmark/). Both follow docs/nexmark.md bit for bit; bench/flink/
 * nexmark-crosscheck.sh and the Rust test against testdata/java_seed42*.csv detect drift.
 *
 * <p>Every event is a pure function of (config, event number): {@code bid(c, k)} is the k-th
 * (0-based) bid, {@code auction(c, k)} the k-th auction, {@code person(c, k)} the k-th person.
 * All 64-bit arithmetic wraps like Rust's {@code wrapping_*}; shifts of random words are
 * unsigned ({@code >>>}). Event numbers and counts must stay below 2^62.
 */
public final class NexmarkGenerator {
    private NexmarkGenerator() {}

    // ---- event numbering ----

    public static final long PROPORTION_DENOMINATOR = 50;
    public static final long PERSON_PROPORTION = 1;
    public static final long AUCTION_PROPORTION = 3;
    public static final long BID_PROPORTION = 46;

    public static final long FIRST_PERSON_ID = 1000;
    public static final long FIRST_AUCTION_ID = 1000;
    public static final long FIRST_CATEGORY_ID = 10;
    public static final long NUM_CATEGORIES = 5;
    /** Hot ids are the first (bidders: second) id of each block of this many ids. */
    public static final long HOT_BLOCK = 100;
    public static final long HOT_CHANNEL_RATIO = 100;
    public static final long MAX_EXTRA_BYTES = 1L << 24;

    /** Event number of the k-th person. */
    public static long personEventNumber(long k) {
        return k * PROPORTION_DENOMINATOR;
    }

    /** Event number of the k-th auction. */
    public static long auctionEventNumber(long k) {
        return (k / AUCTION_PROPORTION) * PROPORTION_DENOMINATOR + PERSON_PROPORTION + k % AUCTION_PROPORTION;
    }

    /** Event number of the k-th bid. */
    public static long bidEventNumber(long k) {
        return (k / BID_PROPORTION) * PROPORTION_DENOMINATOR + PERSON_PROPORTION + AUCTION_PROPORTION
                + k % BID_PROPORTION;
    }

    /** Event time (epoch ms) of event number n. */
    public static long timestamp(NexmarkConfig c, long n) {
        long eps = Math.max(c.eventsPerSecond, 1L);
        return c.baseTimeMs + (n / eps) * 1000L + (n % eps) * 1000L / eps;
    }

    static long lastPerson(long n) {
        return n / PROPORTION_DENOMINATOR;
    }

    static long lastAuction(long n) {
        long epoch = n / PROPORTION_DENOMINATOR;
        long offset = n % PROPORTION_DENOMINATOR;
        if (offset < PERSON_PROPORTION) {
            return epoch * AUCTION_PROPORTION - 1;
        } else if (offset < PERSON_PROPORTION + AUCTION_PROPORTION) {
            return epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION;
        } else {
            return epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1;
        }
    }

    // ---- PRNG ----

    static final long GOLDEN = 0x9E3779B97F4A7C15L;
    static final long EVENT_MUL = 0xD1B54A32D192ED03L;

    static long mix64(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** floor(x * bound / 2^64) with x unsigned; bound must be in [0, 2^63). */
    static long below(long x, long bound) {
        return Math.multiplyHigh(x, bound) + ((x >> 63) & bound);
    }

    /** The stream base of event n. */
    static long base(long seed, long n) {
        return mix64(seed ^ (n * EVENT_MUL));
    }

    /** Word number {@code slot} of the stream with base {@code base}. */
    static long draw(long base, long slot) {
        return mix64(base + (slot + 1) * GOLDEN);
    }

    static long below(long base, long slot, long bound) {
        return below(draw(base, slot), bound);
    }

    static final String TEXT32 = "abcdefghijklmnopqrstuvwxyz eaoti";
    static final String WORD32 = "abcdefghijklmnopqrstuvwxyzeaotin";

    static void randomString(StringBuilder out, long key, long len, String alphabet) {
        long left = len;
        long j = 0;
        while (left > 0) {
            j++;
            long w = mix64(key + j * GOLDEN);
            long take = Math.min(left, 12);
            for (long i = 0; i < take; i++) {
                out.append(alphabet.charAt((int) (w & 31)));
                w >>>= 5;
            }
            left -= take;
        }
    }

    // ---- tables (same order as the Rust tables.rs) ----

    static final String[] FIRST_NAMES = {
        "Ada", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kaia",
        "Lars", "Mira", "Nils", "Olga", "Pavel", "Quinn", "Rosa", "Soren", "Tariq", "Uma", "Viktor",
        "Wanda", "Yara",
    };
    static final String[] LAST_NAMES = {
        "Abbott", "Brandt", "Castillo", "Dahl", "Eriksen", "Fischer", "Gallo", "Haas", "Ibarra", "Jansen",
        "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Quint", "Rossi", "Schultz", "Tanaka",
        "Ulrich", "Varga", "Weber", "Zeller",
    };
    static final String[] CITIES = {
        "Portland", "Boise", "Sacramento", "Fresno", "Eugene", "Spokane", "Reno", "Tucson", "Denver", "Omaha",
        "Madison", "Albany", "Savannah", "Duluth", "Bend", "Modesto",
    };
    static final String[] STATES = {"OR", "ID", "CA", "WA", "NV", "AZ", "UT", "MT"};
    static final long[] PRICE_KNOTS = {
        1_000_000L, 1_154_782L, 1_333_521L, 1_539_927L, 1_778_279L, 2_053_525L, 2_371_374L, 2_738_420L,
        3_162_278L, 3_651_741L, 4_216_965L, 4_869_675L, 5_623_413L, 6_493_816L, 7_498_942L, 8_659_643L,
        10_000_000L,
    };
    static final long[] POW10 = {1L, 10L, 100L, 1_000L, 10_000L, 100_000L};
    static final String[] HOT_CHANNELS = {"Web", "iOS", "Android", "Partner"};
    static final long CHANNEL_COUNT = 10_000;
    static final long CHANNEL_KEY = 0x6368616E6E656C73L;

    static final String[] CHANNEL_NAMES;
    static final String[] CHANNEL_URLS;

    static {
        int total = HOT_CHANNELS.length + (int) CHANNEL_COUNT;
        CHANNEL_NAMES = new String[total];
        CHANNEL_URLS = new String[total];
        StringBuilder sb = new StringBuilder(80);
        for (int c = 0; c < total; c++) {
            CHANNEL_NAMES[c] = c < HOT_CHANNELS.length ? HOT_CHANNELS[c] : "channel-" + (c - HOT_CHANNELS.length);
            long b = base(CHANNEL_KEY, c);
            sb.setLength(0);
            sb.append("https://auction.strom.example");
            for (long slot = 0; slot < 3; slot++) {
                sb.append('/');
                randomString(sb, draw(b, slot), 5, WORD32);
            }
            sb.append("/lot?channel_id=").append(c);
            CHANNEL_URLS[c] = sb.toString();
        }
    }

    // ---- shared field formulas ----

    static long recentPerson(NexmarkConfig c, long last, long word) {
        long active = Math.max(Math.min(c.numActivePeople, last + 1), 1L);
        return last + 1 - active + below(word, active);
    }

    /** A price in cents, log-uniform-ish over [100, 10^8). */
    static long price(long word) {
        long t = below(word, 6L << 24);
        int decade = (int) (t >>> 24);
        int j = (int) ((t >>> 20) & 15);
        long frac = t & 0xFFFFFL;
        long lo = PRICE_KNOTS[j];
        long hi = PRICE_KNOTS[j + 1];
        long mantissa = lo + (((hi - lo) * frac) >>> 20);
        return (mantissa * POW10[decade] + 5_000L) / 10_000L;
    }

    static String extra(NexmarkConfig c, long base, long slot) {
        if (c.extraBytes == 0) {
            return "";
        }
        long e = Math.min(c.extraBytes, MAX_EXTRA_BYTES);
        long delta = e / 5;
        long len = e - delta + below(base, slot, 2 * delta + 1);
        StringBuilder sb = new StringBuilder((int) len);
        randomString(sb, draw(base, slot + 1), len, TEXT32);
        return sb.toString();
    }

    // ---- the three kinds ----

    /** The k-th (0-based) person. */
    public static Person person(NexmarkConfig c, long k) {
        long n = personEventNumber(k);
        long r = base(c.seed, n);
        Person p = new Person();
        p.id = FIRST_PERSON_ID + lastPerson(n);
        p.name = FIRST_NAMES[(int) below(r, 0, FIRST_NAMES.length)] + " "
                + LAST_NAMES[(int) below(r, 1, LAST_NAMES.length)];
        StringBuilder sb = new StringBuilder(24);
        randomString(sb, draw(r, 3), 4 + below(r, 2, 7), WORD32);
        sb.append('@');
        randomString(sb, draw(r, 5), 3 + below(r, 4, 6), WORD32);
        sb.append(".com");
        p.emailAddress = sb.toString();
        long v = below(r, 6, 10_000_000_000_000_000L);
        sb.setLength(0);
        long div = 1_000_000_000_000_000L;
        for (int i = 0; i < 16; i++) {
            if (i > 0 && i % 4 == 0) {
                sb.append(' ');
            }
            sb.append((char) ('0' + (v / div) % 10));
            div /= 10;
        }
        p.creditCard = sb.toString();
        p.city = CITIES[(int) below(r, 7, CITIES.length)];
        p.state = STATES[(int) below(r, 8, STATES.length)];
        p.dateTime = timestamp(c, n);
        p.extra = extra(c, r, 9);
        return p;
    }

    /** The k-th (0-based) auction; its id is 1000 + k. */
    public static Auction auction(NexmarkConfig c, long k) {
        long n = auctionEventNumber(k);
        long r = base(c.seed, n);
        Auction a = new Auction();
        a.id = FIRST_AUCTION_ID + lastAuction(n);
        StringBuilder sb = new StringBuilder(100);
        randomString(sb, draw(r, 7), 4 + below(r, 6, 17), TEXT32);
        a.itemName = sb.toString();
        sb.setLength(0);
        randomString(sb, draw(r, 9), 20 + below(r, 8, 81), TEXT32);
        a.description = sb.toString();
        a.initialBid = price(draw(r, 3));
        a.reserve = a.initialBid + price(draw(r, 4));
        long now = timestamp(c, n);
        a.dateTime = now;
        long ahead = c.numInFlightAuctions * PROPORTION_DENOMINATOR / AUCTION_PROPORTION;
        long horizon = timestamp(c, n + ahead) - now;
        long span = Math.max(horizon * 2, 1L);
        a.expires = now + 1 + below(r, 5, span);
        long last = lastPerson(n);
        long seller;
        if (below(r, 0, c.hotSellerRatio) > 0) {
            seller = last / HOT_BLOCK * HOT_BLOCK;
        } else {
            seller = recentPerson(c, last, draw(r, 1));
        }
        a.seller = FIRST_PERSON_ID + seller;
        a.category = FIRST_CATEGORY_ID + below(r, 2, NUM_CATEGORIES);
        a.extra = extra(c, r, 10);
        return a;
    }

    /** The k-th (0-based) bid. */
    public static Bid bid(NexmarkConfig c, long k) {
        long n = bidEventNumber(k);
        long r = base(c.seed, n);
        Bid b = new Bid();
        long lastA = lastAuction(n);
        long auction;
        if (below(r, 0, c.hotAuctionRatio) > 0) {
            auction = lastA / HOT_BLOCK * HOT_BLOCK;
        } else {
            long min = Math.max(lastA - c.numInFlightAuctions, 0L);
            auction = min + below(r, 1, lastA - min + 1);
        }
        b.auction = FIRST_AUCTION_ID + auction;
        long lastP = lastPerson(n);
        long bidder;
        if (below(r, 2, c.hotBidderRatio) > 0) {
            bidder = Math.min(lastP / HOT_BLOCK * HOT_BLOCK + 1, lastP);
        } else {
            bidder = recentPerson(c, lastP, draw(r, 3));
        }
        b.bidder = FIRST_PERSON_ID + bidder;
        b.price = price(draw(r, 4));
        int channel;
        if (below(r, 5, HOT_CHANNEL_RATIO) > 0) {
            channel = (int) below(r, 6, HOT_CHANNELS.length);
        } else {
            channel = HOT_CHANNELS.length + (int) below(r, 6, CHANNEL_COUNT);
        }
        b.channel = CHANNEL_NAMES[channel];
        b.url = CHANNEL_URLS[channel];
        b.dateTime = timestamp(c, n);
        b.extra = extra(c, r, 7);
        return b;
    }
}
