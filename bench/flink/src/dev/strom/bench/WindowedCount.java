package dev.strom.bench;

import org.apache.flink.api.common.eventtime.SerializableTimestampAssigner;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

import java.time.Duration;

/**
 * Windowed count: events per key per 1 s tumbling event-time window.
 *
 * <p>Input, a pure function of the event index n in [0, N):
 * <pre>
 *   key(n) = splitmix64(n) mod 1000        (splitmix64 result taken as UNSIGNED 64-bit)
 *   ts(n)  = 1_700_000_000_000 + n / 1000  (epoch ms; integer division: 1 M events per second)
 *   splitmix64(n): z = n + 0x9E3779B97F4A7C15
 *                  z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9
 *                  z = (z ^ (z >>> 27)) * 0x94D049BB133111EB
 *                  return z ^ (z >>> 31)            (all wrapping 64-bit)
 * </pre>
 * Source: DataGeneratorSource over [0, N); Flink splits the index range into P contiguous
 * ranges, so timestamps ascend within each split and {@code forMonotonousTimestamps()} holds.
 *
 * <p>Pipeline: keyBy(key) -> TumblingEventTimeWindows(1 s) -> incremental count
 * (AggregateFunction + ProcessWindowFunction for the window end) -> sink. All windows fire
 * (the bounded source ends with a final MAX watermark), so every non-empty (key, window) is output.
 *
 * <p>Output rows: (key, window_end, count), window_end = exclusive window end in epoch ms
 * (= window start + 1000; windows aligned to epoch multiples of 1000 ms).
 *
 * <p>Checksum: sum over output rows of {@code (key * 31 + window_end) * 17 + count}, wrapping
 * 64-bit arithmetic, printed as unsigned.
 */
public final class WindowedCount {
    public static final String JOB = "windowed-count";
    public static final long BASE_TS = 1_700_000_000_000L;
    public static final long KEYS = 1000;

    private WindowedCount() {}

    public static long splitmix64(long n) {
        long z = n + 0x9E3779B97F4A7C15L;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** Event n as (key, ts). */
    static final class EventGenerator implements GeneratorFunction<Long, Tuple2<Long, Long>> {
        private static final long serialVersionUID = 1L;

        @Override
        public Tuple2<Long, Long> map(Long index) {
            long n = index;
            return Tuple2.of(Long.remainderUnsigned(splitmix64(n), KEYS), BASE_TS + n / 1000);
        }
    }

    static final class EventTimestamp implements SerializableTimestampAssigner<Tuple2<Long, Long>> {
        private static final long serialVersionUID = 1L;

        @Override
        public long extractTimestamp(Tuple2<Long, Long> e, long recordTimestamp) {
            return e.f1;
        }
    }

    static final class KeyOf implements KeySelector<Tuple2<Long, Long>, Long> {
        private static final long serialVersionUID = 1L;

        @Override
        public Long getKey(Tuple2<Long, Long> e) {
            return e.f0;
        }
    }

    static final class Count implements AggregateFunction<Tuple2<Long, Long>, Long, Long> {
        private static final long serialVersionUID = 1L;

        @Override
        public Long createAccumulator() {
            return 0L;
        }

        @Override
        public Long add(Tuple2<Long, Long> value, Long acc) {
            return acc + 1;
        }

        @Override
        public Long getResult(Long acc) {
            return acc;
        }

        @Override
        public Long merge(Long a, Long b) {
            return a + b;
        }
    }

    static final class EmitRow extends ProcessWindowFunction<Long, Tuple3<Long, Long, Long>, Long, TimeWindow> {
        private static final long serialVersionUID = 1L;

        @Override
        public void process(Long key, Context ctx, Iterable<Long> counts, Collector<Tuple3<Long, Long, Long>> out) {
            long end = ctx.window().getEnd();
            for (Long c : counts) {
                out.collect(Tuple3.of(key, end, c));
            }
        }
    }

    static long rowHash(Tuple3<Long, Long, Long> r) {
        return (r.f0 * 31 + r.f1) * 17 + r.f2;
    }

    public static void main(String[] args) {
        Harness h = Harness.parse(JOB, args);
        StreamExecutionEnvironment env = h.env();

        TypeInformation<Tuple2<Long, Long>> eventType = Types.TUPLE(Types.LONG, Types.LONG);
        DataGeneratorSource<Tuple2<Long, Long>> source =
                new DataGeneratorSource<>(new EventGenerator(), h.events, eventType);

        env.fromSource(source,
                        WatermarkStrategy.<Tuple2<Long, Long>>forMonotonousTimestamps()
                                .withTimestampAssigner(new EventTimestamp()),
                        "events")
                .keyBy(new KeyOf(), Types.LONG)
                .window(TumblingEventTimeWindows.of(Duration.ofSeconds(1)))
                .aggregate(new Count(), new EmitRow(), Types.LONG, Types.LONG,
                        Types.TUPLE(Types.LONG, Types.LONG, Types.LONG))
                .name("count-per-key-window")
                .sinkTo(new ChecksumSink<Tuple3<Long, Long, Long>>(WindowedCount::rowHash))
                .name("checksum-sink");

        h.run(JOB, env);
    }
}
