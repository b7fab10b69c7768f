-- Nexmark q21, add channel id: every bid with a channel id: 0, 1, 2 or 3 for the channels apple,
-- google, facebook and baidu (in any letter case), otherwise the value of the `channel_id`
-- parameter of the bid's url; bids with neither are left out.
CREATE TABLE nexmark_q21 (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    channel VARCHAR,
    channel_id VARCHAR
) WITH (${SINK});

INSERT INTO nexmark_q21
SELECT auction, bidder, price, channel, channel_id
FROM (
    SELECT
        auction, bidder, price, channel,
        CASE LOWER(channel)
            WHEN 'apple' THEN '0'
            WHEN 'google' THEN '1'
            WHEN 'facebook' THEN '2'
            WHEN 'baidu' THEN '3'
            ELSE REGEXP_EXTRACT(url, '(&|^|\?)channel_id=([^&]*)', 2)
        END AS channel_id
    FROM bid
) AS B
WHERE channel_id IS NOT NULL;
