-- Bidder sessions: per bidder and session of bids less than 10 s apart, the bids and the distinct
-- auctions bid on. COUNT(DISTINCT ...) in session windows, whose accumulators merge when sessions
-- do.
CREATE TABLE bidder_sessions (
    bidder BIGINT,
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3),
    bids BIGINT,
    auctions BIGINT
) WITH (${SINK});

INSERT INTO bidder_sessions
SELECT bidder, window_start, window_end, COUNT(*), COUNT(DISTINCT auction)
FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY bidder, window_start, window_end;
