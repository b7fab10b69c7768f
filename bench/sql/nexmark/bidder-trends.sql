-- Bidder trends: every bid with, over its auction's last 10 bids, the distinct bidders and the
-- distinct channels. OVER aggregates with DISTINCT: rows leave the frame, and
-- their values are retracted from the distinct counts. (Flink takes no FILTER in OVER.)
CREATE TABLE bidder_trends (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    date_time TIMESTAMP(3),
    bidders_10 BIGINT,
    channels_10 BIGINT
) WITH (${SINK});

INSERT INTO bidder_trends
SELECT auction, bidder, price, date_time,
    COUNT(DISTINCT bidder) OVER w, COUNT(DISTINCT channel) OVER w
FROM bid
WINDOW w AS (PARTITION BY auction ORDER BY date_time ROWS BETWEEN 9 PRECEDING AND CURRENT ROW);
