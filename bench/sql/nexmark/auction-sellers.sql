-- Auction sellers: every auction with the name and city of its seller among the persons whose id
-- is a multiple of 3 (a LEFT JOIN: an auction without such a seller keeps nulls; one whose seller
-- arrives later is first written with nulls, then deleted and written again with the seller). An
-- updating result: the sink must take updates, and its final state is the answer.
CREATE TABLE auction_sellers (
    id BIGINT,
    seller BIGINT,
    name VARCHAR,
    city VARCHAR
) WITH (${SINK});

INSERT INTO auction_sellers
SELECT A.id, A.seller, P.name, P.city
FROM auction AS A
LEFT JOIN (SELECT id, name, city FROM person WHERE MOD(id, 3) = 0) AS P
ON A.seller = P.id;
