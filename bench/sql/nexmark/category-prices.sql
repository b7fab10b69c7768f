-- Opening prices per category and 5 s window: sum, extremes and mean (an integer mean, as Flink
-- computes AVG over BIGINT), of auctions with a reserve above their opening bid.
CREATE TABLE category_prices (
    category BIGINT,
    window_end TIMESTAMP(3),
    auctions BIGINT,
    total BIGINT,
    lowest BIGINT,
    highest BIGINT,
    mean BIGINT
) WITH (${SINK});

INSERT INTO category_prices
SELECT category, window_end, COUNT(*), SUM(initialBid), MIN(initialBid), MAX(initialBid),
       AVG(initialBid)
FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(date_time), INTERVAL '5' SECOND))
WHERE reserve > initialBid
GROUP BY category, window_start, window_end;
