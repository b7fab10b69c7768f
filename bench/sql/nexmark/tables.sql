-- The Nexmark streams as Flink SQL tables over the CSV files `generate.sql` wrote under ${INPUT}.
-- Columns as the Nexmark benchmark names them, but for event time: `date_time` (Flink's parser
-- takes `dateTime` for its DATETIME keyword unless quoted). Watermarks trail by 4 s.
CREATE TABLE person (
    id BIGINT,
    name VARCHAR,
    emailAddress VARCHAR,
    creditCard VARCHAR,
    city VARCHAR,
    state VARCHAR,
    date_time TIMESTAMP(3),
    extra VARCHAR,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${INPUT}/person', 'format' = 'csv');

CREATE TABLE auction (
    id BIGINT,
    itemName VARCHAR,
    description VARCHAR,
    initialBid BIGINT,
    reserve BIGINT,
    date_time TIMESTAMP(3),
    expires TIMESTAMP(3),
    seller BIGINT,
    category BIGINT,
    extra VARCHAR,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${INPUT}/auction', 'format' = 'csv');

CREATE TABLE bid (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    channel VARCHAR,
    url VARCHAR,
    date_time TIMESTAMP(3),
    extra VARCHAR,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${INPUT}/bid', 'format' = 'csv');

-- The auctions again, as a versioned table: each auction is the new version of its seller (a
-- temporal join reads the version valid at a time, by the primary key).
CREATE TABLE auction_by_seller (
    id BIGINT,
    itemName VARCHAR,
    description VARCHAR,
    initialBid BIGINT,
    reserve BIGINT,
    date_time TIMESTAMP(3),
    expires TIMESTAMP(3),
    seller BIGINT,
    category BIGINT,
    extra VARCHAR,
    PRIMARY KEY (seller) NOT ENFORCED,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${INPUT}/auction', 'format' = 'csv');
