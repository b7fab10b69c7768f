-- Nexmark q9, winning bids: every auction with its winning bid, the highest among the bids placed
-- from the auction's start to its expiry (the earliest of them on a tie in price). The winner
-- changes as bids arrive: the sink must accept updates (keyed by the auction's id; its final state
-- is the answer). Flink's filesystem sink takes the query too, but writes every new winner as a
-- plain row: a history of winners, whose length depends on the order in which bids arrive.
CREATE TABLE nexmark_q9 (
    id BIGINT,
    itemName VARCHAR,
    description VARCHAR,
    initialBid BIGINT,
    reserve BIGINT,
    date_time TIMESTAMP(3),
    expires TIMESTAMP(3),
    seller BIGINT,
    category BIGINT,
    extra VARCHAR,
    bidder BIGINT,
    price BIGINT,
    bid_date_time TIMESTAMP(3),
    bid_extra VARCHAR,
    PRIMARY KEY (id) NOT ENFORCED
) WITH (${SINK});

INSERT INTO nexmark_q9
SELECT id, itemName, description, initialBid, reserve, date_time, expires, seller, category, extra,
       bidder, price, bid_date_time, bid_extra
FROM (
    SELECT A.id, A.itemName, A.description, A.initialBid, A.reserve, A.date_time, A.expires,
           A.seller, A.category, A.extra, B.bidder, B.price, B.date_time AS bid_date_time,
           B.extra AS bid_extra,
           ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC) AS rownum
    FROM auction AS A
    INNER JOIN bid AS B ON B.auction = A.id
    WHERE B.date_time BETWEEN A.date_time AND A.expires
) AS ranked
WHERE rownum = 1;
