-- Per 10 s window, the number of bids and the highest price (also in euros), over 1 M generated
-- Nexmark events.
-- Run it with `strom sql examples/sql/top-bids.sql`.
SET 'parallelism.default' = '2';

CREATE TABLE bid (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    date_time TIMESTAMP(3),
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (
    'connector' = 'nexmark',
    'table' = 'bid',
    'events.num' = '1000000',
    'event.rate' = '10000'
);

CREATE TABLE top_bids (
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3),
    bids BIGINT,
    top_price BIGINT,
    top_price_eur DECIMAL(23, 3)
) WITH ('connector' = 'print');

INSERT INTO top_bids
SELECT window_start, window_end, COUNT(*), MAX(price), 0.908 * MAX(price)
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
