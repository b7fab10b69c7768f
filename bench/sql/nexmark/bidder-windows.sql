-- Bidder windows: per 10 s window, every 2 s, how many bidders bid, how many of them bid above
-- 10 000.00, how many such bids there were, the highest bid on the Google channel and the lowest
-- bidder id among bids under 10.00. Window aggregates with DISTINCT and FILTER (WHERE ...), over
-- sliding windows, whose panes merge.
CREATE TABLE bidder_windows (
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3),
    bidders BIGINT,
    rich_bidders BIGINT,
    rich_bids BIGINT,
    google_max BIGINT,
    cheap_min_bidder BIGINT
) WITH (${SINK});

INSERT INTO bidder_windows
SELECT window_start, window_end,
       COUNT(DISTINCT bidder),
       COUNT(DISTINCT bidder) FILTER (WHERE price > 1000000),
       COUNT(*) FILTER (WHERE price > 1000000),
       MAX(price) FILTER (WHERE channel = 'Google'),
       MIN(bidder) FILTER (WHERE price < 1000)
FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end;
