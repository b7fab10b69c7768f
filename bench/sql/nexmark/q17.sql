-- Nexmark q17, auction statistics report: per auction and day, how many bids were placed, in all
-- and in each of three price ranks (rank 1: price < 10,000; rank 2: 10,000 <= price < 1,000,000;
-- rank 3: price >= 1,000,000), and the lowest, highest, mean (an integer mean, as Flink computes
-- AVG over BIGINT) and total price of those bids. The result updates as bids arrive: the sink must
-- accept updates (keyed by auction and day; its final state is the answer).
CREATE TABLE nexmark_q17 (
    auction BIGINT,
    `day` VARCHAR,
    total_bids BIGINT,
    rank1_bids BIGINT,
    rank2_bids BIGINT,
    rank3_bids BIGINT,
    min_price BIGINT,
    max_price BIGINT,
    avg_price BIGINT,
    sum_price BIGINT,
    PRIMARY KEY (auction, `day`) NOT ENFORCED
) WITH (${SINK});

INSERT INTO nexmark_q17
SELECT
    auction,
    DATE_FORMAT(date_time, 'yyyy-MM-dd') AS `day`,
    COUNT(*) AS total_bids,
    COUNT(*) FILTER (WHERE price < 10000) AS rank1_bids,
    COUNT(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
    COUNT(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
    MIN(price) AS min_price,
    MAX(price) AS max_price,
    AVG(price) AS avg_price,
    SUM(price) AS sum_price
FROM bid
GROUP BY auction, DATE_FORMAT(date_time, 'yyyy-MM-dd');
