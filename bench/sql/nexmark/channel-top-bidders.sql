-- Channel top bidders: per channel, the three bidders with the most bids so far (the lowest id
-- first on a tie), with their rank. A Top-N over an updating input (a GROUP BY without windows):
-- a bidder's count changes with every bid, and a bidder may climb into the top three or fall
-- out of it.
CREATE TABLE channel_top_bidders (
    channel VARCHAR,
    bidder BIGINT,
    bids BIGINT,
    rownum BIGINT,
    PRIMARY KEY (channel, rownum) NOT ENFORCED
) WITH (${SINK});

INSERT INTO channel_top_bidders
SELECT channel, bidder, bids, rownum
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY channel ORDER BY bids DESC, bidder ASC) AS rownum
    FROM (SELECT channel, bidder, COUNT(*) AS bids FROM bid GROUP BY channel, bidder)
)
WHERE rownum <= 3;
