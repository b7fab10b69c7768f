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
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/**
 * Nexmark q7, highest bid: per 10 s tumbling window, the bids whose price equals the window's
 * maximum price.
 *
 * <p>Reference (Nexmark, Flink SQL): MAX(price) per TUMBLE(dateTime, 10 s) window, joined back
 * with the bids on price = maxprice and dateTime BETWEEN window_end - 10 s AND window_end.
 *
 * <p>Choices, in the straightforward DataStream form:
 * <ul>
 *   <li>Event time = bid.dateTime (epoch ms); watermark bounded out-of-orderness 0.</li>
 *   <li>Windows: {@code TumblingEventTimeWindows.of(10 s)}, epoch-aligned [s, s + 10000) with
 *       s a multiple of 10000. A bid belongs only to its own window (half-open interval; the
 *       SQL's inclusive BETWEEN, which can also match a bid lying exactly on window_end, is not
 *       reproduced). Every non-empty window is evaluated, including the partial last one.</li>
 *   <li>Stage 1 (parallel pre-aggregation): keyBy(auction) -> tumbling window -> incremental
 *       aggregate keeping the max price of that auction in the window and the bids having it
 *       -> (window_end, bid) for each such bid.</li>
 *   <li>Stage 2: keyBy(window_end) -> KeyedProcessFunction keeping the window's max price and the
 *       bids having it; an event-time timer at window_end - 1 emits them.</li>
 *   <li>Ties: ALL bids whose price equals the window max are emitted (as the SQL join).</li>
 * </ul>
 *
 * <p>Output rows: (window_end, bid) — the full bid (auction, bidder, price, dateTime, extra...)
 * plus window_end = exclusive window end (epoch ms).
 *
 * <p>Checksum: sum over output rows of fold(auction, price, bidder, window_end) =
 * ((auction * 31 + price) * 31 + bidder) * 31 + window_end, wrapping 64-bit.
 */
public final class NexmarkQ7 {
    public static final String JOB = "nexmark-q7";

    private NexmarkQ7() {}

    /**
     * Accumulator (max price, bids with that price). Mutated in place: the input bids come from
     * the network (fresh objects per record), so holding references is safe.
     */
    static final class MaxBids implements AggregateFunction<Bid, Tuple2<Long, List<Bid>>, Tuple2<Long, List<Bid>>> {
        private static final long serialVersionUID = 1L;

        @Override
        public Tuple2<Long, List<Bid>> createAccumulator() {
            return Tuple2.of(Long.MIN_VALUE, new ArrayList<>());
        }

        @Override
        public Tuple2<Long, List<Bid>> add(Bid b, Tuple2<Long, List<Bid>> acc) {
            if (b.price > acc.f0) {
                acc.f0 = b.price;
                acc.f1.clear();
                acc.f1.add(b);
            } else if (b.price == acc.f0) {
                acc.f1.add(b);
            }
            return acc;
        }

        @Override
        public Tuple2<Long, List<Bid>> getResult(Tuple2<Long, List<Bid>> acc) {
            return acc;
        }

        @Override
        public Tuple2<Long, List<Bid>> merge(Tuple2<Long, List<Bid>> a, Tuple2<Long, List<Bid>> b) {
            if (a.f0 > b.f0) {
                return a;
            }
            if (b.f0 > a.f0) {
                return b;
            }
            List<Bid> all = new ArrayList<>(a.f1);
            all.addAll(b.f1);
            return Tuple2.of(a.f0, all);
        }
    }

    /** Emits (window_end, bid) for each max bid of one auction in one window. */
    static final class EmitCandidates
            extends ProcessWindowFunction<Tuple2<Long, List<Bid>>, Tuple2<Long, Bid>, Long, TimeWindow> {
        private static final long serialVersionUID = 1L;

        @Override
        public void process(Long auction, Context ctx, Iterable<Tuple2<Long, List<Bid>>> results,
                            Collector<Tuple2<Long, Bid>> out) {
            long end = ctx.window().getEnd();
            for (Tuple2<Long, List<Bid>> r : results) {
                for (Bid b : r.f1) {
                    out.collect(Tuple2.of(end, b));
                }
            }
        }
    }

    static final class ByWindowEnd implements KeySelector<Tuple2<Long, Bid>, Long> {
        private static final long serialVersionUID = 1L;

        @Override
        public Long getKey(Tuple2<Long, Bid> r) {
            return r.f0;
        }
    }

    /** Keyed by window_end: keeps the window's max price and all bids having it. */
    static final class HighestPerWindow
            extends KeyedProcessFunction<Long, Tuple2<Long, Bid>, Tuple2<Long, Bid>> {
        private static final long serialVersionUID = 1L;

        private transient ValueState<Long> maxPrice;
        private transient ListState<Bid> highest;

        @Override
        public void open(OpenContext openContext) {
            maxPrice = getRuntimeContext().getState(new ValueStateDescriptor<>("max-price", Types.LONG));
            highest = getRuntimeContext().getListState(
                    new ListStateDescriptor<>("highest-bids", NexmarkSupport.bidType()));
        }

        @Override
        public void processElement(Tuple2<Long, Bid> r, Context ctx, Collector<Tuple2<Long, Bid>> out)
                throws Exception {
            Bid b = r.f1;
            Long max = maxPrice.value();
            if (max == null) {
                ctx.timerService().registerEventTimeTimer(r.f0 - 1);
            }
            if (max == null || b.price > max) {
                maxPrice.update(b.price);
                highest.clear();
                highest.add(b);
            } else if (b.price == max) {
                highest.add(b);
            }
        }

        @Override
        public void onTimer(long timestamp, OnTimerContext ctx, Collector<Tuple2<Long, Bid>> out)
                throws Exception {
            long windowEnd = ctx.getCurrentKey();
            for (Bid b : highest.get()) {
                out.collect(Tuple2.of(windowEnd, b));
            }
            maxPrice.clear();
            highest.clear();
        }
    }

    static long rowHash(Tuple2<Long, Bid> r) {
        Bid b = r.f1;
        return ChecksumSink.fold(b.auction, b.price, b.bidder, r.f0);
    }

    public static void main(String[] args) {
        Harness h = Harness.parse(JOB, args, NexmarkSupport.OPTIONS);
        StreamExecutionEnvironment env = h.env();
        TypeInformation<Bid> bidType = NexmarkSupport.bidType();
        TypeInformation<Tuple2<Long, List<Bid>>> accType = Types.TUPLE(Types.LONG, Types.LIST(bidType));
        TypeInformation<Tuple2<Long, Bid>> rowType = Types.TUPLE(Types.LONG, bidType);

        NexmarkSupport.bids(h, env, true)
                .keyBy(new NexmarkSupport.ByAuction(), Types.LONG)
                .window(TumblingEventTimeWindows.of(Duration.ofSeconds(10)))
                .aggregate(new MaxBids(), new EmitCandidates(), accType, accType, rowType)
                .name("q7-max-per-auction-window")
                .keyBy(new ByWindowEnd(), Types.LONG)
                .process(new HighestPerWindow(), rowType)
                .name("q7-max-per-window")
                .sinkTo(new ChecksumSink<Tuple2<Long, Bid>>(NexmarkQ7::rowHash))
                .name("checksum-sink");
        h.run(JOB, env);
    }
}
