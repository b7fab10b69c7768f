-- Nexmark q7, highest bid: per 10 s tumbling window, the bids at the window's highest price (all of
-- them on a tie). A bid matches a window's maximum when it was placed from 10 s before the
-- window's end up to and including the end.
CREATE TABLE nexmark_q7 (
    auction BIGINT,
    price BIGINT,
    bidder BIGINT,
    date_time TIMESTAMP(3),
    extra VARCHAR
) WITH (${SINK});

INSERT INTO nexmark_q7
SELECT B.auction, B.price, B.bidder, B.date_time, B.extra
FROM bid AS B
INNER JOIN (
    SELECT MAX(price) AS maxprice, window_end
    FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
    GROUP BY window_start, window_end
) AS M
ON B.price = M.maxprice
WHERE B.date_time BETWEEN M.window_end - INTERVAL '10' SECOND AND M.window_end;
