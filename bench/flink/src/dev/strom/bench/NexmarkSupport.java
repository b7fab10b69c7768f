package dev.strom.bench;

import dev.strom.bench.nexmark.Bid;
import dev.strom.bench.nexmark.NexmarkConfig;
import dev.strom.bench.nexmark.NexmarkGenerator;

import org.apache.flink.api.common.eventtime.SerializableTimestampAssigner;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

import java.time.Duration;

/**
 * Shared pieces of the Nexmark jobs: the bid source and the bid row hash.
 *
 * <p>Source: DataGeneratorSource over k in [0, N) emitting {@code NexmarkGenerator.bid(config, k)}
 * (the k-th bid, a pure function of k and the config). Flink splits [0, N) into P contiguous
 * ranges, one per source subtask. The config is {@code new NexmarkConfig()} with the generator's
 * defaults, except {@code seed} when {@code --seed S} is given and {@code eventsPerSecond} (the
 * event-time rate) when {@code --events-per-second R} is given.
 *
 * <p>Event time (q5, q7): the bid's {@code dateTime} (epoch ms);
 * watermarks {@code forBoundedOutOfOrderness(0)}, i.e. watermark = max dateTime seen - 1 per split.
 */
final class NexmarkSupport {
    static final String[] OPTIONS = {"seed", "events-per-second"};

    private NexmarkSupport() {}

    static TypeInformation<Bid> bidType() {
        return Types.POJO(Bid.class);
    }

    /** k -> k-th bid. The config is rebuilt on the task (only primitives are shipped). */
    static final class BidGenerator implements GeneratorFunction<Long, Bid> {
        private static final long serialVersionUID = 1L;

        private final Long seed;
        private final Long eventsPerSecond;
        private transient NexmarkConfig config;

        BidGenerator(Long seed, Long eventsPerSecond) {
            this.seed = seed;
            this.eventsPerSecond = eventsPerSecond;
        }

        @Override
        public void open(SourceReaderContext readerContext) {
            config = newConfig();
        }

        NexmarkConfig newConfig() {
            NexmarkConfig c = new NexmarkConfig();
            if (seed != null) {
                c.seed = seed;
            }
            if (eventsPerSecond != null) {
                c.eventsPerSecond = eventsPerSecond;
            }
            return c;
        }

        @Override
        public Bid map(Long k) {
            if (config == null) {
                config = newConfig();
            }
            return NexmarkGenerator.bid(config, k);
        }
    }

    static final class BidTime implements SerializableTimestampAssigner<Bid> {
        private static final long serialVersionUID = 1L;

        @Override
        public long extractTimestamp(Bid b, long recordTimestamp) {
            return b.dateTime;
        }
    }

    static final class ByAuction implements KeySelector<Bid, Long> {
        private static final long serialVersionUID = 1L;

        @Override
        public Long getKey(Bid b) {
            return b.auction;
        }
    }

    /** The N generated bids; with {@code eventTime} timestamps/watermarks come from dateTime. */
    static DataStream<Bid> bids(Harness h, StreamExecutionEnvironment env, boolean eventTime) {
        Long seed = h.extra("seed") == null ? null : h.extraLong("seed", 0);
        Long eps = h.extra("events-per-second") == null ? null : h.extraLong("events-per-second", 0);
        DataGeneratorSource<Bid> source =
                new DataGeneratorSource<>(new BidGenerator(seed, eps), h.events, bidType());
        WatermarkStrategy<Bid> wm = eventTime
                ? WatermarkStrategy.<Bid>forBoundedOutOfOrderness(Duration.ZERO).withTimestampAssigner(new BidTime())
                : WatermarkStrategy.noWatermarks();
        return env.fromSource(source, wm, "nexmark-bids", bidType());
    }

    /** Row hash over (auction, bidder, price, dateTime): fold h = h * 31 + field, from h = 0. */
    static long bidHash(Bid b) {
        return ChecksumSink.fold(b.auction, b.bidder, b.price, b.dateTime);
    }
}
