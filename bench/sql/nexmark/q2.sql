-- Nexmark q2, selection: the bids on a fixed set of auctions (every 123rd).
CREATE TABLE nexmark_q2 (
    auction BIGINT,
    price BIGINT
) WITH (${SINK});

INSERT INTO nexmark_q2
SELECT auction, price FROM bid WHERE auction % 123 = 0;
