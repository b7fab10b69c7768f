-- The first half of Nexmark q5: bids per auction in 10 s windows sliding every 2 s.
CREATE TABLE hot_auctions (
    auction BIGINT,
    num BIGINT,
    starttime TIMESTAMP(3),
    endtime TIMESTAMP(3)
) WITH (${SINK});

INSERT INTO hot_auctions
SELECT auction, COUNT(*) AS num, window_start AS starttime, window_end AS endtime
FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;
