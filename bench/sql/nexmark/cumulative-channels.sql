-- Bids per channel so far in each 10 s period, reported every 2 s (CUMULATE windows growing by 2 s
-- up to 10 s): how many bids, their total and their highest price.
CREATE TABLE cumulative_channels (
    channel VARCHAR,
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3),
    bids BIGINT,
    total BIGINT,
    highest BIGINT
) WITH (${SINK});

INSERT INTO cumulative_channels
SELECT channel, window_start, window_end, COUNT(*), SUM(price), MAX(price)
FROM TABLE(
    CUMULATE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY channel, window_start, window_end;
