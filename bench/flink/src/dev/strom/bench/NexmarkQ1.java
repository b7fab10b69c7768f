package dev.strom.bench;

import dev.strom.bench.nexmark.Bid;

import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

/**
 * Nexmark q1, currency conversion:
 * {@code SELECT auction, bidder, 0.908 * price AS price, dateTime, extra FROM bid}.
 *
 * <p>Choice: integer arithmetic instead of DECIMAL, exactly {@code price * 908 / 1000} on Java
 * longs (truncating division). Every bid yields one output row (a new Bid with the converted
 * price, all other fields unchanged). results = N.
 *
 * <p>Checksum: sum over output rows of fold(auction, bidder, price, dateTime) with the CONVERTED
 * price; fold(f1..fk) = (((0 * 31 + f1) * 31 + f2) * 31 + ...) * 31 + fk; all wrapping 64-bit.
 */
public final class NexmarkQ1 {
    public static final String JOB = "nexmark-q1";

    private NexmarkQ1() {}

    static final class ToEuro implements MapFunction<Bid, Bid> {
        private static final long serialVersionUID = 1L;

        @Override
        public Bid map(Bid b) {
            Bid out = new Bid();
            out.auction = b.auction;
            out.bidder = b.bidder;
            out.price = b.price * 908 / 1000;
            out.channel = b.channel;
            out.url = b.url;
            out.dateTime = b.dateTime;
            out.extra = b.extra;
            return out;
        }
    }

    public static void main(String[] args) {
        Harness h = Harness.parse(JOB, args, NexmarkSupport.OPTIONS);
        StreamExecutionEnvironment env = h.env();
        NexmarkSupport.bids(h, env, false)
                .map(new ToEuro())
                .returns(NexmarkSupport.bidType())
                .name("q1-dollar-to-euro")
                .sinkTo(new ChecksumSink<Bid>(NexmarkSupport::bidHash))
                .name("checksum-sink");
        h.run(JOB, env);
    }
}
