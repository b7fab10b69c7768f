package dev.strom.bench;

import dev.strom.bench.nexmark.Bid;

import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

import java.time.Duration;
import java.util.Collections;

/**
 * Nexmark q5, hot items: for every 10 s window sliding by 2 s, the auction(s) with the most bids.
 *
 * <p>Reference (Nexmark, Flink SQL): count(*) per (auction, HOP(dateTime, 2 s, 10 s) window),
 * joined with the per-window max of those counts on {@code num >= maxn}.
 *
 * <p>Choices, in the straightforward DataStream form:
 * <ul>
 *   <li>Event time = bid.dateTime (epoch ms); watermark bounded out-of-orderness 0.</li>
 *   <li>Windows: {@code SlidingEventTimeWindows.of(10 s, 2 s)}, aligned to the epoch: window
 *       [s, s + 10000) for every s that is a multiple of 2000; each bid is in 5 windows.
 *       Every window containing at least one bid is evaluated, including the partial ones at
 *       the start and end of the bounded input (the final MAX watermark fires them all).</li>
 *   <li>Stage 1: keyBy(auction) -> sliding window -> incremental count -> (auction, window_end,
 *       count).</li>
 *   <li>Stage 2: keyBy(window_end) -> KeyedProcessFunction keeping the max count and the
 *       auctions having it; an event-time timer at window_end - 1 (the timestamp of the stage-1
 *       rows, reached only after every stage-1 subtask has emitted that window) emits them.</li>
 *   <li>Ties: ALL auctions whose count equals the window's max are emitted (as the SQL join).</li>
 * </ul>
 *
 * <p>Output rows: (auction, window_end, count), window_end = exclusive end (epoch ms).
 *
 * <p>Checksum: sum over output rows of fold(auction, window_end, count) =
 * (auction * 31 + window_end) * 31 + count, wrapping 64-bit.
 */
public final class NexmarkQ5 {
    public static final String JOB = "nexmark-q5";

    private NexmarkQ5() {}

    static final class CountBids implements AggregateFunction<Bid, Long, Long> {
        private static final long serialVersionUID = 1L;

        @Override
        public Long createAccumulator() {
            return 0L;
        }

        @Override
        public Long add(Bid value, Long acc) {
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

    /** (auction, window_end, count). */
    static final class EmitAuctionCount
            extends ProcessWindowFunction<Long, Tuple3<Long, Long, Long>, Long, TimeWindow> {
        private static final long serialVersionUID = 1L;

        @Override
        public void process(Long auction, Context ctx, Iterable<Long> counts,
                            Collector<Tuple3<Long, Long, Long>> out) {
            long end = ctx.window().getEnd();
            for (Long c : counts) {
                out.collect(Tuple3.of(auction, end, c));
            }
        }
    }

    static final class ByWindowEnd implements KeySelector<Tuple3<Long, Long, Long>, Long> {
        private static final long serialVersionUID = 1L;

        @Override
        public Long getKey(Tuple3<Long, Long, Long> r) {
            return r.f1;
        }
    }

    /** Keyed by window_end: keeps the max count and all auctions reaching it. */
    static final class HottestPerWindow
            extends KeyedProcessFunction<Long, Tuple3<Long, Long, Long>, Tuple3<Long, Long, Long>> {
        private static final long serialVersionUID = 1L;

        private transient ValueState<Long> maxCount;
        private transient ListState<Long> hottest;

        @Override
        public void open(OpenContext openContext) {
            maxCount = getRuntimeContext().getState(new ValueStateDescriptor<>("max-count", Types.LONG));
            hottest = getRuntimeContext().getListState(new ListStateDescriptor<>("hottest-auctions", Types.LONG));
        }

        @Override
        public void processElement(Tuple3<Long, Long, Long> r, Context ctx,
                                   Collector<Tuple3<Long, Long, Long>> out) throws Exception {
            long count = r.f2;
            Long max = maxCount.value();
            if (max == null) {
                ctx.timerService().registerEventTimeTimer(r.f1 - 1);
            }
            if (max == null || count > max) {
                maxCount.update(count);
                hottest.update(Collections.singletonList(r.f0));
            } else if (count == max) {
                hottest.add(r.f0);
            }
        }

        @Override
        public void onTimer(long timestamp, OnTimerContext ctx,
                            Collector<Tuple3<Long, Long, Long>> out) throws Exception {
            long windowEnd = ctx.getCurrentKey();
            Long max = maxCount.value();
            if (max != null) {
                for (Long auction : hottest.get()) {
                    out.collect(Tuple3.of(auction, windowEnd, max));
                }
            }
            maxCount.clear();
            hottest.clear();
        }
    }

    static long rowHash(Tuple3<Long, Long, Long> r) {
        return ChecksumSink.fold(r.f0, r.f1, r.f2);
    }

    public static void main(String[] args) {
        Harness h = Harness.parse(JOB, args, NexmarkSupport.OPTIONS);
        StreamExecutionEnvironment env = h.env();
        TypeInformation<Tuple3<Long, Long, Long>> rowType = Types.TUPLE(Types.LONG, Types.LONG, Types.LONG);

        NexmarkSupport.bids(h, env, true)
                .keyBy(new NexmarkSupport.ByAuction(), Types.LONG)
                .window(SlidingEventTimeWindows.of(Duration.ofSeconds(10), Duration.ofSeconds(2)))
                .aggregate(new CountBids(), new EmitAuctionCount(), Types.LONG, Types.LONG, rowType)
                .name("q5-count-per-auction-window")
                .keyBy(new ByWindowEnd(), Types.LONG)
                .process(new HottestPerWindow(), rowType)
                .name("q5-max-per-window")
                .sinkTo(new ChecksumSink<Tuple3<Long, Long, Long>>(NexmarkQ5::rowHash))
                .name("checksum-sink");
        h.run(JOB, env);
    }
}
