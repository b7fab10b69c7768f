-- Nexmark q19, auction top-10 price: every auction's ten highest bids, with their rank (1 the
-- highest). A Top-N: ROW_NUMBER() over each auction by price, highest first, kept up to 10. The
-- ranks change as bids arrive: the sink must accept updates (keyed by auction and rank; its final
-- state is the answer).
CREATE TABLE nexmark_q19 (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    channel VARCHAR,
    url VARCHAR,
    date_time TIMESTAMP(3),
    extra VARCHAR,
    rank_number BIGINT,
    PRIMARY KEY (auction, rank_number) NOT ENFORCED
) WITH (${SINK});

INSERT INTO nexmark_q19
SELECT *
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number
    FROM bid
) AS ranked
WHERE rank_number <= 10;
