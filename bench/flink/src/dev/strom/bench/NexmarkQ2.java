package dev.strom.bench;

import dev.strom.bench.nexmark.Bid;

import org.apache.flink.api.common.functions.FilterFunction;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

/**
 * Nexmark q2, selection: {@code SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0}.
 *
 * <p>Output rows: (auction, price) of the bids with {@code auction % 123 == 0} (Java long
 * remainder; auction ids are non-negative).
 *
 * <p>Checksum: the query projects to (auction, price), so bidder/dateTime are not in the output
 * and the row hash is fold(auction, price) = auction * 31 + price; checksum = sum over output
 * rows, wrapping 64-bit.
 */
public final class NexmarkQ2 {
    public static final String JOB = "nexmark-q2";

    private NexmarkQ2() {}

    static final class AuctionMod123 implements FilterFunction<Bid> {
        private static final long serialVersionUID = 1L;

        @Override
        public boolean filter(Bid b) {
            return b.auction % 123 == 0;
        }
    }

    static final class Project implements MapFunction<Bid, Tuple2<Long, Long>> {
        private static final long serialVersionUID = 1L;

        @Override
        public Tuple2<Long, Long> map(Bid b) {
            return Tuple2.of(b.auction, b.price);
        }
    }

    static long rowHash(Tuple2<Long, Long> r) {
        return ChecksumSink.fold(r.f0, r.f1);
    }

    public static void main(String[] args) {
        Harness h = Harness.parse(JOB, args, NexmarkSupport.OPTIONS);
        StreamExecutionEnvironment env = h.env();
        NexmarkSupport.bids(h, env, false)
                .filter(new AuctionMod123())
                .name("q2-filter")
                .map(new Project())
                .returns(Types.TUPLE(Types.LONG, Types.LONG))
                .name("q2-project")
                .sinkTo(new ChecksumSink<Tuple2<Long, Long>>(NexmarkQ2::rowHash))
                .name("checksum-sink");
        h.run(JOB, env);
    }
}
