-- Nexmark q18, find last bid: for every bidder and auction, the bidder's latest bid on that auction
-- (by event time). A deduplication: ROW_NUMBER() over each bidder and auction, newest first, kept
-- where it is 1. The result updates as bids arrive: the sink must accept updates (keyed by bidder
-- and auction; its final state is the answer).
CREATE TABLE nexmark_q18 (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    channel VARCHAR,
    url VARCHAR,
    date_time TIMESTAMP(3),
    extra VARCHAR,
    PRIMARY KEY (bidder, auction) NOT ENFORCED
) WITH (${SINK});

INSERT INTO nexmark_q18
SELECT auction, bidder, price, channel, url, date_time, extra
FROM (
    SELECT *,
           ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS rank_number
    FROM bid
) AS newest
WHERE rank_number <= 1;
