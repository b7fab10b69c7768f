-- The first half of Nexmark q7: the highest price in each 10 s window (also in euros), how many
-- bids it saw, and their total in euros.
CREATE TABLE top_price (
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3),
    maxprice BIGINT,
    bids BIGINT,
    maxprice_eur DECIMAL(23, 3),
    total_eur DECIMAL(38, 3)
) WITH (${SINK});

INSERT INTO top_price
SELECT window_start, window_end, MAX(price) AS maxprice, COUNT(bidder) AS bids,
       MAX(0.908 * price) AS maxprice_eur, SUM(0.908 * price) AS total_eur
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
