-- Writes the Nexmark streams (the first ${EVENTS} events of Strom's generator, ${RATE} events per
-- event-time second) as CSV files under ${INPUT}, the input both engines read
-- (`tables.sql`). Strom only: `nexmark` here is Strom's generator, not Flink's connector.
CREATE TABLE gen_person (
    id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR, city VARCHAR,
    state VARCHAR, date_time TIMESTAMP(3), extra VARCHAR
) WITH ('connector' = 'nexmark', 'table' = 'person', 'events.num' = '${EVENTS}', 'event.rate' = '${RATE}');
CREATE TABLE gen_auction (
    id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT, reserve BIGINT,
    date_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR
) WITH ('connector' = 'nexmark', 'table' = 'auction', 'events.num' = '${EVENTS}', 'event.rate' = '${RATE}');
CREATE TABLE gen_bid (
    auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
    date_time TIMESTAMP(3), extra VARCHAR
) WITH ('connector' = 'nexmark', 'table' = 'bid', 'events.num' = '${EVENTS}', 'event.rate' = '${RATE}');

CREATE TABLE person_files (
    id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR, city VARCHAR,
    state VARCHAR, date_time TIMESTAMP(3), extra VARCHAR
) WITH ('connector' = 'filesystem', 'path' = '${INPUT}/person', 'format' = 'csv');
CREATE TABLE auction_files (
    id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT, reserve BIGINT,
    date_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR
) WITH ('connector' = 'filesystem', 'path' = '${INPUT}/auction', 'format' = 'csv');
CREATE TABLE bid_files (
    auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
    date_time TIMESTAMP(3), extra VARCHAR
) WITH ('connector' = 'filesystem', 'path' = '${INPUT}/bid', 'format' = 'csv');

INSERT INTO person_files SELECT * FROM gen_person;
INSERT INTO auction_files SELECT * FROM gen_auction;
INSERT INTO bid_files SELECT * FROM gen_bid;
