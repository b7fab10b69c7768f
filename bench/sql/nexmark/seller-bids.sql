-- Seller bids: every bid with the latest auction its bidder had opened as a seller when the bid
-- was placed (an event-time temporal join: FOR SYSTEM_TIME AS OF the bid's time picks the version
-- of `auction_by_seller` valid then), the bids of bidders who had opened none padded with nulls.
CREATE TABLE seller_bids (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    bid_time TIMESTAMP(3),
    own_auction BIGINT,
    own_category BIGINT,
    own_auction_time TIMESTAMP(3)
) WITH (${SINK});

INSERT INTO seller_bids
SELECT B.auction, B.bidder, B.price, B.date_time, A.id, A.category, A.date_time
FROM bid AS B
LEFT JOIN auction_by_seller FOR SYSTEM_TIME AS OF B.date_time AS A
ON B.bidder = A.seller;
