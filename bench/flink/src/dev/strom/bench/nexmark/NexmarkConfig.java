package dev.strom.bench.nexmark;

import java.io.Serializable;

/**
 * Settings of the Nexmark generator; the Java twin of Strom's {@code NexmarkConfig}
 * (worker/src/connectors/nexmark/mod.rs). Every event is a pure function of these settings and
 * its event number; see docs/nexmark.md. Unsigned Rust fields are held in {@code long}s and
 * must stay below 2^63 (the spec's ranges are far smaller).
 */
public final class NexmarkConfig implements Serializable {
    private static final long serialVersionUID = 1L;

    /** Seed of all random choices (the bits of Rust's u64). */
    public long seed = 0L;
    /** Event-time rate: event n is stamped baseTimeMs + floor(n * 1000 / eventsPerSecond); 0 counts as 1. */
    public long eventsPerSecond = 10_000_000L;
    /** Event time of event 0, epoch ms (2023-11-14T22:13:20Z). */
    public long baseTimeMs = 1_700_000_000_000L;
    /** Average length of every event's extra padding (uniform within +-20%); 0 leaves it empty. */
    public long extraBytes = 0L;
    /** Persons a non-hot seller or bidder is drawn from (the newest ones). */
    public long numActivePeople = 1000L;
    /** Auctions a non-hot bid is drawn from (the newest ones, plus one). */
    public long numInFlightAuctions = 100L;
    /** A bid goes to the hot auction with probability 1 - 1/hotAuctionRatio. */
    public long hotAuctionRatio = 2L;
    /** A bid comes from the hot bidder with probability 1 - 1/hotBidderRatio. */
    public long hotBidderRatio = 4L;
    /** An auction is by the hot seller with probability 1 - 1/hotSellerRatio. */
    public long hotSellerRatio = 4L;

    public NexmarkConfig() {}

    @Override
    public String toString() {
        return "NexmarkConfig{seed=" + seed + ", eventsPerSecond=" + eventsPerSecond
                + ", baseTimeMs=" + baseTimeMs + ", extraBytes=" + extraBytes
                + ", numActivePeople=" + numActivePeople + ", numInFlightAuctions=" + numInFlightAuctions
                + ", hotAuctionRatio=" + hotAuctionRatio + ", hotBidderRatio=" + hotBidderRatio
                + ", hotSellerRatio=" + hotSellerRatio + "}";
    }
}
