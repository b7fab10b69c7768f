package dev.strom.bench;

import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;

import java.io.Serializable;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Terminal sink that counts output rows and sums a per-row hash (wrapping 64-bit arithmetic, so
 * the result is independent of row order and of how rows are spread over parallel writers).
 *
 * <p>Each parallel writer keeps a plain local count/sum and adds it once, at end of input, to
 * process-wide statics. This works because the MiniCluster runs in the same JVM as the driver
 * and the job's classes come from the application class path (no user-code jar), so the static
 * fields seen by the writers are the ones {@link Harness} reads.
 */
public final class ChecksumSink<T> implements Sink<T> {
    private static final long serialVersionUID = 1L;

    /** Row hash; must be a pure function of the row's fields, defined per job. */
    @FunctionalInterface
    public interface RowHash<T> extends Serializable {
        long hash(T row);
    }

    private static final AtomicLong ROWS = new AtomicLong();
    private static final AtomicLong SUM = new AtomicLong();

    private final RowHash<T> hasher;

    public ChecksumSink(RowHash<T> hasher) {
        this.hasher = hasher;
    }

    static void reset() {
        ROWS.set(0);
        SUM.set(0);
    }

    static long rows() {
        return ROWS.get();
    }

    static long checksum() {
        return SUM.get();
    }

    /**
     * The hash used by the Nexmark jobs: h = 0; for each field f in order: h = h * 31 + f
     * (wrapping signed 64-bit arithmetic, identical bits to u64 wrapping_mul/wrapping_add).
     */
    public static long fold(long... fields) {
        long h = 0;
        for (long f : fields) {
            h = h * 31 + f;
        }
        return h;
    }

    @Override
    public SinkWriter<T> createWriter(WriterInitContext context) {
        return new Writer<>(hasher);
    }

    private static final class Writer<T> implements SinkWriter<T> {
        private final RowHash<T> hasher;
        private long rows;
        private long sum;
        private boolean published;

        Writer(RowHash<T> hasher) {
            this.hasher = hasher;
        }

        @Override
        public void write(T element, Context context) {
            rows++;
            sum += hasher.hash(element);
        }

        @Override
        public void flush(boolean endOfInput) {
            if (endOfInput) {
                publish();
            }
        }

        private void publish() {
            if (!published) {
                published = true;
                ROWS.addAndGet(rows);
                SUM.addAndGet(sum);
            }
        }

        @Override
        public void close() {
            // Normally already published by flush(true); close() alone is not a completed input.
        }
    }
}
