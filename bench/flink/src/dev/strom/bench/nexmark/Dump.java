package dev.strom.bench.nexmark;

import java.io.BufferedWriter;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;

/**
 * Prints the first N persons, then auctions, then bids as CSV (one line per event, '\n'
 * line ends, no quoting: no generated field holds a comma), for the cross-check against the
 * Rust generator (bench/flink/nexmark-crosscheck.sh, Rust {@code crosscheck_csv}).
 *
 * <pre>
 *   java dev.strom.bench.nexmark.Dump SEED N [EXTRA_BYTES [EVENTS_PER_SECOND]]
 *
 *   P,k,id,name,email_address,credit_card,city,state,date_time,extra
 *   A,k,id,item_name,description,initial_bid,reserve,date_time,expires,seller,category,extra
 *   B,k,auction,bidder,price,channel,url,date_time,extra
 * </pre>
 * Timestamps are epoch ms; every other setting is the NexmarkConfig default.
 */
public final class Dump {
    private Dump() {}

    public static void main(String[] args) throws IOException {
        if (args.length < 2 || args.length > 4) {
            System.err.println("usage: Dump SEED N [EXTRA_BYTES [EVENTS_PER_SECOND]]");
            System.exit(2);
        }
        NexmarkConfig c = new NexmarkConfig();
        c.seed = Long.parseUnsignedLong(args[0]);
        long count = Long.parseLong(args[1]);
        if (args.length > 2) {
            c.extraBytes = Long.parseLong(args[2]);
        }
        if (args.length > 3) {
            c.eventsPerSecond = Long.parseLong(args[3]);
        }
        Writer out = new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8));
        for (long k = 0; k < count; k++) {
            Person p = NexmarkGenerator.person(c, k);
            out.write("P," + k + "," + p.id + "," + p.name + "," + p.emailAddress + "," + p.creditCard + ","
                    + p.city + "," + p.state + "," + p.dateTime + "," + p.extra + "\n");
        }
        for (long k = 0; k < count; k++) {
            Auction a = NexmarkGenerator.auction(c, k);
            out.write("A," + k + "," + a.id + "," + a.itemName + "," + a.description + "," + a.initialBid + ","
                    + a.reserve + "," + a.dateTime + "," + a.expires + "," + a.seller + "," + a.category + ","
                    + a.extra + "\n");
        }
        for (long k = 0; k < count; k++) {
            Bid b = NexmarkGenerator.bid(c, k);
            out.write("B," + k + "," + b.auction + "," + b.bidder + "," + b.price + "," + b.channel + "," + b.url
                    + "," + b.dateTime + "," + b.extra + "\n");
        }
        out.flush();
    }
}
