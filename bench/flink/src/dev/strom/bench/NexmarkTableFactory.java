package dev.strom.bench;

import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.connector.source.ScanTableSource;
import org.apache.flink.table.connector.source.SourceProvider;
import org.apache.flink.table.connector.source.abilities.SupportsProjectionPushDown;
import org.apache.flink.table.factories.DynamicTableSourceFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.LogicalTypeRoot;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.table.types.logical.TimestampType;

import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * Flink SQL table connector {@code 'connector' = 'nexmark'}: the Java twin of Strom's {@code nexmark}
 * connector (worker/src/sql/connectors.rs), generating the same rows from the same options.
 *
 * <pre>
 * CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
 *                   date_time TIMESTAMP(3), extra VARCHAR,
 *                   WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
 * WITH ('connector' = 'nexmark', 'table' = 'bid', 'events.num' = '10000000', 'event.rate' = '1000');
 * </pre>
 *
 * <p>Options (any other is an error):
 * <ul>
 *   <li>{@code table} (required): {@code bid}, {@code auction} or {@code person}.</li>
 *   <li>{@code events.num}: events of every kind; the table holds its share, i.e. the rows of its
 *       kind among the first {@code events.num} events (46 bids, 3 auctions, 1 person per 50). Absent:
 *       unbounded.</li>
 *   <li>{@code event.rate}: events per event-time second ({@code NexmarkConfig.eventsPerSecond},
 *       default 10,000,000).</li>
 *   <li>{@code seed}: the generator's seed (an unsigned 64-bit number, default 0).</li>
 * </ul>
 *
 * <p>The declared physical columns are picked by name from the kind's columns (any subset, any
 * order); their types must be BIGINT, VARCHAR/STRING (any length) or TIMESTAMP(3) as the column is.
 * The source emits no watermarks: a WATERMARK clause in the DDL is applied by Flink's planner.
 * Rows: {@link NexmarkRowSource}.
 */
public final class NexmarkTableFactory implements DynamicTableSourceFactory {
    public static final String IDENTIFIER = "nexmark";

    public static final ConfigOption<String> TABLE = ConfigOptions.key("table")
            .stringType()
            .noDefaultValue()
            .withDescription("Which Nexmark events: bid, auction or person.");
    public static final ConfigOption<String> EVENTS_NUM = ConfigOptions.key("events.num")
            .stringType()
            .noDefaultValue()
            .withDescription("Events of every kind; the table has the rows of its kind among them. Absent: unbounded.");
    public static final ConfigOption<String> EVENT_RATE = ConfigOptions.key("event.rate")
            .stringType()
            .noDefaultValue()
            .withDescription("Events per event-time second (default 10000000).");
    public static final ConfigOption<String> SEED = ConfigOptions.key("seed")
            .stringType()
            .noDefaultValue()
            .withDescription("Seed of the generator (unsigned 64-bit, default 0).");

    /** Unbounded tables stop at this index: the generator is exact only below 2^62. */
    static final long UNBOUNDED_END = 1L << 62;

    @Override
    public String factoryIdentifier() {
        return IDENTIFIER;
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        return new HashSet<>(List.of(TABLE));
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        return new HashSet<>(List.of(EVENTS_NUM, EVENT_RATE, SEED));
    }

    @Override
    public DynamicTableSource createDynamicTableSource(Context context) {
        FactoryUtil.TableFactoryHelper helper = FactoryUtil.createTableFactoryHelper(this, context);
        helper.validate(); // unknown options are an error
        ReadableConfig options = helper.getOptions();
        String table = context.getObjectIdentifier().asSummaryString();

        NexmarkRows.Kind kind = NexmarkRows.Kind.byName(options.get(TABLE));
        if (kind == null) {
            throw new ValidationException(String.format(
                    "table %s: nexmark table '%s' is not one of bid, auction, person", table, options.get(TABLE)));
        }
        long seed = options.getOptional(SEED).map(v -> unsigned(table, SEED, v)).orElse(0L);
        long rate = options.getOptional(EVENT_RATE).map(v -> signed(table, EVENT_RATE, v)).orElse(10_000_000L);
        long end = options.getOptional(EVENTS_NUM)
                .map(v -> Math.min(kind.rowsAmong(unsigned(table, EVENTS_NUM, v)), UNBOUNDED_END))
                .orElse(-1L);
        boolean bounded = end >= 0;

        RowType row = (RowType) context.getPhysicalRowDataType().getLogicalType();
        int[] columns = new int[row.getFieldCount()];
        for (int i = 0; i < columns.length; i++) {
            String name = row.getFieldNames().get(i);
            int c = kind.columnIndex(name);
            if (c < 0) {
                throw new ValidationException(String.format(
                        "table %s: no column '%s' in nexmark's %s; it has %s",
                        table, name, kind.tableName, String.join(", ", kind.columns)));
            }
            LogicalType declared = row.getTypeAt(i);
            if (!typeFits(kind.types[c], declared)) {
                throw new ValidationException(String.format(
                        "table %s: column %s is %s in nexmark's %s, not %s",
                        table, name, typeName(kind.types[c]), kind.tableName, declared.asSummaryString()));
            }
            columns[i] = c;
        }
        return new NexmarkTableSource(
                new NexmarkRows(kind, seed, rate, columns), bounded ? end : UNBOUNDED_END, bounded);
    }

    static boolean typeFits(char type, LogicalType declared) {
        switch (type) {
            case NexmarkRows.BIGINT:
                return declared.getTypeRoot() == LogicalTypeRoot.BIGINT;
            case NexmarkRows.STRING:
                return declared.getTypeRoot() == LogicalTypeRoot.VARCHAR;
            case NexmarkRows.TIMESTAMP:
                return declared.getTypeRoot() == LogicalTypeRoot.TIMESTAMP_WITHOUT_TIME_ZONE
                        && ((TimestampType) declared).getPrecision() == 3;
            default:
                return false;
        }
    }

    static String typeName(char type) {
        switch (type) {
            case NexmarkRows.BIGINT:
                return "BIGINT";
            case NexmarkRows.STRING:
                return "VARCHAR";
            default:
                return "TIMESTAMP(3)";
        }
    }

    /** A number in [0, 2^64) as its 64 bits (Strom parses these options as u64, after trimming). */
    private static long unsigned(String table, ConfigOption<String> key, String value) {
        try {
            String v = value.trim();
            if (v.startsWith("-")) {
                throw new NumberFormatException(v);
            }
            return Long.parseUnsignedLong(v.startsWith("+") ? v.substring(1) : v);
        } catch (NumberFormatException e) {
            throw new ValidationException(String.format(
                    "table %s: option '%s': '%s' is not a number", table, key.key(), value));
        }
    }

    /** A number in [0, 2^63): the Java generator holds it in a signed long. */
    private static long signed(String table, ConfigOption<String> key, String value) {
        long v = unsigned(table, key, value);
        if (v < 0) {
            throw new ValidationException(String.format(
                    "table %s: option '%s': %s is too large (at most 2^63 - 1)", table, key.key(), value));
        }
        return v;
    }

    /** The scan: the generated rows of one kind, with projection pushdown. */
    static final class NexmarkTableSource implements ScanTableSource, SupportsProjectionPushDown {
        private NexmarkRows rows;
        private final long end;
        private final boolean bounded;

        NexmarkTableSource(NexmarkRows rows, long end, boolean bounded) {
            this.rows = rows;
            this.end = end;
            this.bounded = bounded;
        }

        @Override
        public ChangelogMode getChangelogMode() {
            return ChangelogMode.insertOnly();
        }

        @Override
        public ScanRuntimeProvider getScanRuntimeProvider(ScanContext context) {
            return SourceProvider.of(new NexmarkRowSource(rows, end, bounded));
        }

        @Override
        public boolean supportsNestedProjection() {
            return false;
        }

        @Override
        public void applyProjection(int[][] projectedFields, DataType producedDataType) {
            int[] projected = new int[projectedFields.length];
            for (int i = 0; i < projected.length; i++) {
                projected[i] = rows.columns[projectedFields[i][0]];
            }
            rows = rows.withColumns(projected);
        }

        @Override
        public DynamicTableSource copy() {
            return new NexmarkTableSource(rows, end, bounded);
        }

        @Override
        public String asSummaryString() {
            return "Nexmark(" + rows.kind.tableName + ", rows " + (bounded ? String.valueOf(end) : "unbounded")
                    + ", columns " + Arrays.toString(rows.columnNames()) + ")";
        }
    }
}
