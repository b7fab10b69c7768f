-- Nexmark q8, monitor new users: the people who opened an auction in the same 10 s tumbling window
-- in which they registered: their id and name, and the window's start.
CREATE TABLE nexmark_q8 (
    id BIGINT,
    name VARCHAR,
    starttime TIMESTAMP(3)
) WITH (${SINK});

INSERT INTO nexmark_q8
SELECT P.id, P.name, P.window_start AS starttime
FROM (
    SELECT id, name, window_start, window_end
    FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
    GROUP BY id, name, window_start, window_end
) AS P
INNER JOIN (
    SELECT seller, window_start, window_end
    FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
    GROUP BY seller, window_start, window_end
) AS A
ON P.id = A.seller AND P.window_start = A.window_start AND P.window_end = A.window_end;
