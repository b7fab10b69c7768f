-- Early bids: every bid placed from 1 s before to 2 s after its auction was created (an interval
-- join on event time), with the auction's item and seller. Both times are time attributes after
-- the join, and Flink's sink takes one: the bid's is cast to a plain TIMESTAMP.
CREATE TABLE early_bids (
    auction BIGINT,
    itemName VARCHAR,
    seller BIGINT,
    bidder BIGINT,
    price BIGINT,
    auction_time TIMESTAMP(3),
    bid_time TIMESTAMP(3)
) WITH (${SINK});

INSERT INTO early_bids
SELECT A.id, A.itemName, A.seller, B.bidder, B.price, A.date_time, CAST(B.date_time AS TIMESTAMP(3))
FROM auction AS A, bid AS B
WHERE A.id = B.auction
  AND B.date_time BETWEEN A.date_time - INTERVAL '1' SECOND AND A.date_time + INTERVAL '2' SECOND;
