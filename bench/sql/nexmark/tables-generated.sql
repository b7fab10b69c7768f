-- The Nexmark streams as tables of the `nexmark` connector: the first ${EVENTS} events (of every
-- kind) at ${RATE} events per event-time second. Strom's connector is its generator; Flink's is
-- the twin in bench/flink (NexmarkTableFactory), row for row the same. Watermarks as in
-- `tables.sql`; columns are the generator's names (`item_name` where the CSV tables have
-- `itemName`), the same wherever the benchmark queries read them.
CREATE TABLE person (
    id BIGINT,
    name VARCHAR,
    email_address VARCHAR,
    credit_card VARCHAR,
    city VARCHAR,
    state VARCHAR,
    date_time TIMESTAMP(3),
    extra VARCHAR,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'nexmark', 'table' = 'person', 'events.num' = '${EVENTS}', 'event.rate' = '${RATE}');

CREATE TABLE auction (
    id BIGINT,
    item_name VARCHAR,
    description VARCHAR,
    initial_bid BIGINT,
    reserve BIGINT,
    date_time TIMESTAMP(3),
    expires TIMESTAMP(3),
    seller BIGINT,
    category BIGINT,
    extra VARCHAR,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'nexmark', 'table' = 'auction', 'events.num' = '${EVENTS}', 'event.rate' = '${RATE}');

CREATE TABLE bid (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    channel VARCHAR,
    url VARCHAR,
    date_time TIMESTAMP(3),
    extra VARCHAR,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'nexmark', 'table' = 'bid', 'events.num' = '${EVENTS}', 'event.rate' = '${RATE}');
