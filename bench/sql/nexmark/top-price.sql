-- The first half of Nexmark q7: the highest price in each 10 s window, and how many bids and
-- bidders it saw.
CREATE TABLE top_price (
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3),
    maxprice BIGINT,
    bids BIGINT
) WITH (${SINK});

INSERT INTO top_price
SELECT window_start, window_end, MAX(price) AS maxprice, COUNT(bidder) AS bids
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
