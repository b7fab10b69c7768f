-- Window first bids: the first bid of every channel in every 10 s of event time. Flink's window
-- deduplication: a window Top-1 by the time attribute, ascending.
CREATE TABLE window_first_bids (
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3),
    channel VARCHAR,
    auction BIGINT,
    bidder BIGINT,
    bid_time TIMESTAMP(3)
) WITH (${SINK});

INSERT INTO window_first_bids
SELECT window_start, window_end, channel, auction, bidder, date_time
FROM (
    SELECT *, ROW_NUMBER() OVER (
        PARTITION BY window_start, window_end, channel ORDER BY date_time ASC) AS rownum
    FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
)
WHERE rownum = 1;
