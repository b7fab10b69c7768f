package dev.strom.bench.nexmark;

import java.util.Objects;

/** A Nexmark bid (a Flink POJO: public fields, public no-arg constructor). Prices in cents. */
public class Bid {
    public long auction;
    public long bidder;
    public long price;
    public String channel;
    public String url;
    /** Event time, epoch ms. */
    public long dateTime;
    public String extra;

    public Bid() {}

    @Override
    public boolean equals(Object o) {
        if (this == o) {
            return true;
        }
        if (!(o instanceof Bid)) {
            return false;
        }
        Bid b = (Bid) o;
        return auction == b.auction && bidder == b.bidder && price == b.price && dateTime == b.dateTime
                && Objects.equals(channel, b.channel) && Objects.equals(url, b.url)
                && Objects.equals(extra, b.extra);
    }

    @Override
    public int hashCode() {
        return Objects.hash(auction, bidder, price, channel, url, dateTime, extra);
    }

    @Override
    public String toString() {
        return "Bid{auction=" + auction + ", bidder=" + bidder + ", price=" + price + ", channel=" + channel
                + ", url=" + url + ", dateTime=" + dateTime + ", extra=" + extra + "}";
    }
}
