-- Window top bids: the three highest bids of every 10 s of event time (the earliest first on a
-- tie in price), with their rank. A window Top-N over a windowing TVF's rows: partitioned by
-- window_start and window_end, each window's ranking goes out once, when the window closes.
CREATE TABLE window_top_bids (
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3),
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    bid_time TIMESTAMP(3),
    rownum BIGINT
) WITH (${SINK});

INSERT INTO window_top_bids
SELECT window_start, window_end, auction, bidder, price, date_time, rownum
FROM (
    SELECT *, ROW_NUMBER() OVER (
        PARTITION BY window_start, window_end ORDER BY price DESC, date_time ASC) AS rownum
    FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
)
WHERE rownum <= 3;
