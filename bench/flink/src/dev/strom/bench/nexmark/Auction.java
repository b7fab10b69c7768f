package dev.strom.bench.nexmark;

import java.util.Objects;

/** A Nexmark auction (a Flink POJO: public fields, public no-arg constructor). Prices in cents. */
public class Auction {
    public long id;
    public String itemName;
    public String description;
    public long initialBid;
    public long reserve;
    /** Event time, epoch ms. */
    public long dateTime;
    /** Epoch ms. */
    public long expires;
    public long seller;
    public long category;
    public String extra;

    public Auction() {}

    @Override
    public boolean equals(Object o) {
        if (this == o) {
            return true;
        }
        if (!(o instanceof Auction)) {
            return false;
        }
        Auction a = (Auction) o;
        return id == a.id && initialBid == a.initialBid && reserve == a.reserve && dateTime == a.dateTime
                && expires == a.expires && seller == a.seller && category == a.category
                && Objects.equals(itemName, a.itemName) && Objects.equals(description, a.description)
                && Objects.equals(extra, a.extra);
    }

    @Override
    public int hashCode() {
        return Objects.hash(id, itemName, description, initialBid, reserve, dateTime, expires, seller, category, extra);
    }

    @Override
    public String toString() {
        return "Auction{id=" + id + ", itemName=" + itemName + ", description=" + description
                + ", initialBid=" + initialBid + ", reserve=" + reserve + ", dateTime=" + dateTime
                + ", expires=" + expires + ", seller=" + seller + ", category=" + category + ", extra=" + extra + "}";
    }
}
