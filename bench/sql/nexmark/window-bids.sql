-- Window bids: every bid with the auction created in the same 10 s tumbling window (a window
-- join: both inputs are windowing TVFs, joined on their windows and the auction id).
CREATE TABLE window_bids (
    auction BIGINT,
    seller BIGINT,
    bidder BIGINT,
    price BIGINT,
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3)
) WITH (${SINK});

INSERT INTO window_bids
SELECT A.id, A.seller, B.bidder, B.price, A.window_start, A.window_end
FROM (SELECT * FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(date_time), INTERVAL '10' SECOND))) A
JOIN (SELECT * FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))) B
ON A.id = B.auction AND A.window_start = B.window_start AND A.window_end = B.window_end;
