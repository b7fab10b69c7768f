-- Bid trends: every bid with its auction's bids of the 10 s before it (an OVER aggregation on
-- event time, RANGE frame): how many, their average and their highest price.
CREATE TABLE bid_trends (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    date_time TIMESTAMP(3),
    bids_10s BIGINT,
    avg_10s BIGINT,
    max_10s BIGINT
) WITH (${SINK});

INSERT INTO bid_trends
SELECT auction, bidder, price, date_time,
    COUNT(*) OVER w, AVG(price) OVER w, MAX(price) OVER w
FROM bid
WINDOW w AS (
    PARTITION BY auction
    ORDER BY date_time
    RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW);
