-- Nexmark q5, hot items: in every 10 s window sliding every 2 s, the auction(s) with the most bids
-- (all of them on a tie), with their bid count and the window's bounds.
CREATE TABLE nexmark_q5 (
    auction BIGINT,
    num BIGINT,
    starttime TIMESTAMP(3),
    endtime TIMESTAMP(3)
) WITH (${SINK});

INSERT INTO nexmark_q5
SELECT C.auction, C.num, C.window_start AS starttime, C.window_end AS endtime
FROM (
    SELECT auction, COUNT(*) AS num, window_start, window_end
    FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
    GROUP BY auction, window_start, window_end
) AS C
INNER JOIN (
    SELECT MAX(num) AS maxn, window_start, window_end
    FROM (
        SELECT auction, COUNT(*) AS num, window_start, window_end
        FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
        GROUP BY auction, window_start, window_end
    )
    GROUP BY window_start, window_end
) AS M
ON C.window_start = M.window_start AND C.window_end = M.window_end AND C.num >= M.maxn;
