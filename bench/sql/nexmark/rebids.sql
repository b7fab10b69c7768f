-- Rebids: the bids above the initial price of the latest auction their bidder had opened as a
-- seller by then (an inner event-time temporal join, with a condition on both sides).
CREATE TABLE rebids (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    bid_time TIMESTAMP(3),
    own_auction BIGINT,
    own_initial_bid BIGINT
) WITH (${SINK});

INSERT INTO rebids
SELECT B.auction, B.bidder, B.price, B.date_time, A.id, A.initialBid
FROM bid AS B
JOIN auction_by_seller FOR SYSTEM_TIME AS OF B.date_time AS A
ON B.bidder = A.seller
WHERE B.price > A.initialBid;
