package dev.strom.bench;

import dev.strom.bench.nexmark.Bid;

import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

/**
 * Nexmark q0, pass-through: {@code SELECT auction, bidder, price, dateTime, extra FROM bid}.
 *
 * <p>Every generated bid is output unchanged (source chained to the sink; measures the source and
 * the framework's per-record overhead). results = N.
 *
 * <p>Checksum: sum over output rows of fold(auction, bidder, price, dateTime), where
 * fold(f1..fk) = (((0 * 31 + f1) * 31 + f2) * 31 + ...) * 31 + fk; all wrapping 64-bit.
 */
public final class NexmarkQ0 {
    public static final String JOB = "nexmark-q0";

    private NexmarkQ0() {}

    public static void main(String[] args) {
        Harness h = Harness.parse(JOB, args, NexmarkSupport.OPTIONS);
        StreamExecutionEnvironment env = h.env();
        NexmarkSupport.bids(h, env, false)
                .sinkTo(new ChecksumSink<Bid>(NexmarkSupport::bidHash))
                .name("checksum-sink");
        h.run(JOB, env);
    }
}
