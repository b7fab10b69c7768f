-- Seller bid windows: per 10 s of bid time, the bids and how many of them came from bidders who
-- had opened an auction by then. A window over a temporal join's result, which keeps the bid's
-- time attribute.
CREATE VIEW seller_bid_rows AS
SELECT B.bidder, B.date_time, A.id AS own_auction
FROM bid AS B
LEFT JOIN auction_by_seller FOR SYSTEM_TIME AS OF B.date_time AS A
ON B.bidder = A.seller;

CREATE TABLE seller_bid_windows (
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3),
    bids BIGINT,
    seller_bids BIGINT
) WITH (${SINK});

INSERT INTO seller_bid_windows
SELECT window_start, window_end, COUNT(*), COUNT(own_auction)
FROM TABLE(TUMBLE(TABLE seller_bid_rows, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
