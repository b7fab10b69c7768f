package dev.strom.bench;

import dev.strom.bench.nexmark.Auction;
import dev.strom.bench.nexmark.Bid;
import dev.strom.bench.nexmark.NexmarkConfig;
import dev.strom.bench.nexmark.NexmarkGenerator;
import dev.strom.bench.nexmark.Person;

import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.TimestampData;
import org.apache.flink.table.data.binary.BinaryRowData;
import org.apache.flink.table.data.writer.BinaryRowWriter;

import java.io.Serializable;
import java.nio.charset.StandardCharsets;

/**
 * The Nexmark tables as Flink rows: which kind, the generator settings and the declared columns
 * (indices into the kind's columns, in declaration order). {@link #newMaker()} builds the per-reader
 * row maker, which writes {@link BinaryRowData} directly (no reflection, no boxing; Flink copies and
 * serializes binary rows with a memcpy, and its generated code reads them without conversion).
 *
 * <p>Columns and types are those of Strom's generator (worker/src/connectors/nexmark/mod.rs).
 */
final class NexmarkRows implements Serializable {
    private static final long serialVersionUID = 1L;

    static final char BIGINT = 'L';
    static final char STRING = 'S';
    static final char TIMESTAMP = 'T';

    /** The three tables: their columns (Strom's names) and types. */
    enum Kind {
        PERSON("person",
                new String[] {"id", "name", "email_address", "credit_card", "city", "state", "date_time", "extra"},
                "LSSSSSTS"),
        AUCTION("auction",
                new String[] {"id", "item_name", "description", "initial_bid", "reserve", "date_time", "expires",
                    "seller", "category", "extra"},
                "LSSLLTTLLS"),
        BID("bid",
                new String[] {"auction", "bidder", "price", "channel", "url", "date_time", "extra"},
                "LLLSSTS");

        final String tableName;
        final String[] columns;
        final char[] types;

        Kind(String tableName, String[] columns, String types) {
            this.tableName = tableName;
            this.columns = columns;
            this.types = types.toCharArray();
        }

        static Kind byName(String table) {
            for (Kind k : values()) {
                if (k.tableName.equals(table)) {
                    return k;
                }
            }
            return null;
        }

        int columnIndex(String name) {
            for (int i = 0; i < columns.length; i++) {
                if (columns[i].equals(name)) {
                    return i;
                }
            }
            return -1;
        }

        /**
         * Rows of this kind among the first {@code events} events (unsigned): per 50 events one person
         * (offset 0), three auctions (offsets 1..3), 46 bids (offsets 4..49).
         */
        long rowsAmong(long events) {
            long epochs = Long.divideUnsigned(events, NexmarkGenerator.PROPORTION_DENOMINATOR);
            long rest = Long.remainderUnsigned(events, NexmarkGenerator.PROPORTION_DENOMINATOR);
            long first;
            long perEpoch;
            switch (this) {
                case PERSON:
                    first = 0;
                    perEpoch = NexmarkGenerator.PERSON_PROPORTION;
                    break;
                case AUCTION:
                    first = NexmarkGenerator.PERSON_PROPORTION;
                    perEpoch = NexmarkGenerator.AUCTION_PROPORTION;
                    break;
                default:
                    first = NexmarkGenerator.PERSON_PROPORTION + NexmarkGenerator.AUCTION_PROPORTION;
                    perEpoch = NexmarkGenerator.BID_PROPORTION;
                    break;
            }
            // epochs * perEpoch <= events / 50 * 46 < 2^64: no overflow as an unsigned number;
            // values >= 2^63 are capped by the caller.
            long rows = epochs * perEpoch + Math.min(Math.max(rest - first, 0), perEpoch);
            return rows < 0 ? Long.MAX_VALUE : rows;
        }
    }

    final Kind kind;
    final long seed;
    final long eventsPerSecond;
    /** Declared column i is the kind's column {@code columns[i]}. */
    final int[] columns;

    NexmarkRows(Kind kind, long seed, long eventsPerSecond, int[] columns) {
        this.kind = kind;
        this.seed = seed;
        this.eventsPerSecond = eventsPerSecond;
        this.columns = columns.clone();
    }

    NexmarkRows withColumns(int[] newColumns) {
        return new NexmarkRows(kind, seed, eventsPerSecond, newColumns);
    }

    String[] columnNames() {
        String[] names = new String[columns.length];
        for (int i = 0; i < names.length; i++) {
            names[i] = kind.columns[columns[i]];
        }
        return names;
    }

    NexmarkConfig config() {
        NexmarkConfig c = new NexmarkConfig();
        c.seed = seed;
        c.eventsPerSecond = eventsPerSecond;
        return c;
    }

    Maker newMaker() {
        return new Maker(this);
    }

    /**
     * Makes the row of the k-th event of the kind. One per reader (not thread-safe).
     *
     * <p>Strings are written as their UTF-8 bytes with {@code writeBinary}: a VARCHAR and a BINARY
     * field have the same layout in a BinaryRowData (up to 7 bytes inline, else offset and length),
     * and {@code writeString} would first copy a short string into a thread-local buffer (a
     * ThreadLocal lookup per field, measurably slow).
     */
    static final class Maker {
        private static final byte[] EMPTY = new byte[0];

        private final Kind kind;
        private final NexmarkConfig config;
        private final int[] columns;
        private final BinaryRowData buffer;
        private final BinaryRowWriter writer;
        /**
         * Encoded strings of the columns drawn from fixed tables (channel, url, city, state): the
         * generator returns the same String instances for them, so they are encoded once. A
         * direct-mapped cache keyed by identity (slot = the String's cached hash); a miss (or a
         * collision) encodes the string and takes the slot.
         */
        private final String[] fixedKeys = new String[FIXED_SLOTS];
        private final byte[][] fixedValues = new byte[FIXED_SLOTS][];
        private static final int FIXED_SLOTS = 1 << 16;

        Maker(NexmarkRows rows) {
            this.kind = rows.kind;
            this.config = rows.config();
            this.columns = rows.columns.clone();
            this.buffer = new BinaryRowData(columns.length);
            this.writer = new BinaryRowWriter(buffer, 128);
        }

        /** The row of the k-th event of the kind: a fresh compact BinaryRowData. */
        RowData row(long k) {
            writer.reset();
            switch (kind) {
                case BID:
                    writeBid(NexmarkGenerator.bid(config, k));
                    break;
                case AUCTION:
                    writeAuction(NexmarkGenerator.auction(config, k));
                    break;
                default:
                    writePerson(NexmarkGenerator.person(config, k));
                    break;
            }
            writer.complete();
            return buffer.copy();
        }

        private void writeBid(Bid b) {
            BinaryRowWriter w = writer;
            for (int i = 0; i < columns.length; i++) {
                switch (columns[i]) {
                    case 0: w.writeLong(i, b.auction); break;
                    case 1: w.writeLong(i, b.bidder); break;
                    case 2: w.writeLong(i, b.price); break;
                    case 3: w.writeBinary(i, fixed(b.channel)); break;
                    case 4: w.writeBinary(i, fixed(b.url)); break;
                    case 5: w.writeTimestamp(i, TimestampData.fromEpochMillis(b.dateTime), 3); break;
                    default: w.writeBinary(i, string(b.extra)); break;
                }
            }
        }

        private void writeAuction(Auction a) {
            BinaryRowWriter w = writer;
            for (int i = 0; i < columns.length; i++) {
                switch (columns[i]) {
                    case 0: w.writeLong(i, a.id); break;
                    case 1: w.writeBinary(i, string(a.itemName)); break;
                    case 2: w.writeBinary(i, string(a.description)); break;
                    case 3: w.writeLong(i, a.initialBid); break;
                    case 4: w.writeLong(i, a.reserve); break;
                    case 5: w.writeTimestamp(i, TimestampData.fromEpochMillis(a.dateTime), 3); break;
                    case 6: w.writeTimestamp(i, TimestampData.fromEpochMillis(a.expires), 3); break;
                    case 7: w.writeLong(i, a.seller); break;
                    case 8: w.writeLong(i, a.category); break;
                    default: w.writeBinary(i, string(a.extra)); break;
                }
            }
        }

        private void writePerson(Person p) {
            BinaryRowWriter w = writer;
            for (int i = 0; i < columns.length; i++) {
                switch (columns[i]) {
                    case 0: w.writeLong(i, p.id); break;
                    case 1: w.writeBinary(i, string(p.name)); break;
                    case 2: w.writeBinary(i, string(p.emailAddress)); break;
                    case 3: w.writeBinary(i, string(p.creditCard)); break;
                    case 4: w.writeBinary(i, fixed(p.city)); break;
                    case 5: w.writeBinary(i, fixed(p.state)); break;
                    case 6: w.writeTimestamp(i, TimestampData.fromEpochMillis(p.dateTime), 3); break;
                    default: w.writeBinary(i, string(p.extra)); break;
                }
            }
        }

        private byte[] fixed(String s) {
            int h = s.hashCode();
            int slot = (h ^ (h >>> 16)) & (FIXED_SLOTS - 1);
            if (fixedKeys[slot] == s) {
                return fixedValues[slot];
            }
            byte[] b = s.getBytes(StandardCharsets.UTF_8);
            fixedKeys[slot] = s;
            fixedValues[slot] = b;
            return b;
        }

        private static byte[] string(String s) {
            return s.isEmpty() ? EMPTY : s.getBytes(StandardCharsets.UTF_8);
        }
    }
}
