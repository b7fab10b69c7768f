-- Nexmark q0, pass-through: every bid, unchanged. Measures the cost of reading and writing.
CREATE TABLE nexmark_q0 (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    date_time TIMESTAMP(3),
    extra VARCHAR
) WITH (${SINK});

INSERT INTO nexmark_q0
SELECT auction, bidder, price, date_time, extra FROM bid;
