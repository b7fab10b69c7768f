-- Nexmark q20, expand bid with auction: every bid on an auction of category 10, with that
-- auction's details beside the bid's own columns (the auction's event time as `auction_date_time`,
-- its extra as `auction_extra`).
CREATE TABLE nexmark_q20 (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    channel VARCHAR,
    url VARCHAR,
    bid_date_time TIMESTAMP(3),
    bid_extra VARCHAR,
    itemName VARCHAR,
    description VARCHAR,
    initialBid BIGINT,
    reserve BIGINT,
    auction_date_time TIMESTAMP(3),
    expires TIMESTAMP(3),
    seller BIGINT,
    category BIGINT,
    auction_extra VARCHAR
) WITH (${SINK});

INSERT INTO nexmark_q20
SELECT
    B.auction, B.bidder, B.price, B.channel, B.url,
    B.date_time AS bid_date_time, B.extra AS bid_extra,
    A.itemName, A.description, A.initialBid, A.reserve,
    A.date_time AS auction_date_time, A.expires, A.seller, A.category,
    A.extra AS auction_extra
FROM bid AS B
INNER JOIN auction AS A ON B.auction = A.id
WHERE A.category = 10;
