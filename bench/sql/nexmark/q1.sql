-- Nexmark q1, currency conversion: each bid's price from dollars to euros (rate 0.908).
CREATE TABLE nexmark_q1 (
    auction BIGINT,
    bidder BIGINT,
    price DECIMAL(23, 3),
    date_time TIMESTAMP(3),
    extra VARCHAR
) WITH (${SINK});

INSERT INTO nexmark_q1
SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid;
