-- Window top auctions: per 2 s hop of a 10 s window, the two auctions with the most bids (the
-- lowest id first on a tie). A window Top-N over a window aggregation's result, partitioned by
-- the window and ranked without showing the rank.
CREATE TABLE window_top_auctions (
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3),
    auction BIGINT,
    num BIGINT
) WITH (${SINK});

INSERT INTO window_top_auctions
SELECT window_start, window_end, auction, num
FROM (
    SELECT *, ROW_NUMBER() OVER (
        PARTITION BY window_start, window_end ORDER BY num DESC, auction ASC) AS rownum
    FROM (
        SELECT window_start, window_end, auction, COUNT(*) AS num
        FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
        GROUP BY window_start, window_end, auction
    )
)
WHERE rownum <= 2;
