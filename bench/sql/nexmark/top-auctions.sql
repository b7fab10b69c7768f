-- Top auctions: the five auctions with the highest total of bid prices so far (the lowest id first
-- on a tie), over all bids: a Top-N without PARTITION BY over an updating input, its rank not
-- shown (though a subquery selects it: only the outer query says it is not read).
CREATE TABLE top_auctions (
    auction BIGINT,
    total BIGINT,
    PRIMARY KEY (auction) NOT ENFORCED
) WITH (${SINK});

INSERT INTO top_auctions
SELECT auction, total
FROM (
    SELECT *
    FROM (
        SELECT *, ROW_NUMBER() OVER (ORDER BY total DESC, auction ASC) AS rownum
        FROM (SELECT auction, SUM(price) AS total FROM bid GROUP BY auction)
    )
    WHERE rownum <= 5
) AS top_five;
