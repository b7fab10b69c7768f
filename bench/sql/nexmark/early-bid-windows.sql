-- Early bid windows: per 10 s of auction creation time, the early bids (placed from 1 s before to
-- 2 s after their auction was created), the auctions that had any, and the highest of their
-- prices. A window aggregation over an interval join's result, on the left side's time attribute,
-- which the join keeps.
CREATE VIEW early_bid_rows AS
SELECT A.id AS auction, A.date_time AS auction_time, B.price
FROM auction AS A, bid AS B
WHERE A.id = B.auction
  AND B.date_time BETWEEN A.date_time - INTERVAL '1' SECOND AND A.date_time + INTERVAL '2' SECOND;

CREATE TABLE early_bid_windows (
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3),
    bids BIGINT,
    auctions BIGINT,
    max_price BIGINT
) WITH (${SINK});

INSERT INTO early_bid_windows
SELECT window_start, window_end, COUNT(*), COUNT(DISTINCT auction), MAX(price)
FROM TABLE(TUMBLE(TABLE early_bid_rows, DESCRIPTOR(auction_time), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
