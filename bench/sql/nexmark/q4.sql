-- Nexmark q4, average price per category: an auction closes at its highest bid among the bids
-- placed from its start to its expiry; per category, the mean of those closing prices (an integer
-- mean, as Flink computes AVG over BIGINT). The result updates as bids arrive: the sink must accept
-- updates (keyed by category; its final state is the answer).
CREATE TABLE nexmark_q4 (
    category BIGINT,
    avg_price BIGINT,
    PRIMARY KEY (category) NOT ENFORCED
) WITH (${SINK});

INSERT INTO nexmark_q4
SELECT category, AVG(closing_price) AS avg_price
FROM (
    SELECT A.id, A.category, MAX(B.price) AS closing_price
    FROM auction AS A
    INNER JOIN bid AS B ON B.auction = A.id
    WHERE B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY A.id, A.category
) AS closed
GROUP BY category;
