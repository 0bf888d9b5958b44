"""workers.bulk_rows.insert_rows (DB-API executemany of tuples on SQLite, COPY on PostgreSQL) stores exactly
what SQLAlchemy's own insert of the same values stores."""
import datetime as dt

from sqlalchemy import insert, select

from shopify_app.models import Order, OrderLine, Shop
from workers.bulk_rows import LINE_COLUMNS, ORDER_COLUMNS, insert_rows


def _orders(shop_id):
    t = dt.datetime(2011, 3, 4, 5, 6, 7, 890123)
    return [
        (shop_id, 1, "#1001", 42, t, t + dt.timedelta(seconds=1), None, None, False, "paid", "GBP", 12.5, 0.0,
         0.0, 12.5, True, {"items": [7, 8], "revenue": 12.5, "product_types": {"Mugs\ttab": 2}}, t),
        (shop_id, 2, None, None, dt.datetime(2011, 3, 4), dt.datetime(2011, 3, 5), dt.datetime(2011, 3, 5), t,
         True, None, "USD", 0.1 + 0.2, 1.25, 3.0, -2.75, False, None, t),
    ]


def _lines(shop_id):
    return [(shop_id, 1, 10, 7, 70, "Mugs\\back\nslash", 3, 1, 2.55, 0.35),
            (shop_id, 1, 11, None, None, None, 1, 0, 0.1 + 0.2, 0.0),
            (shop_id, 2, 12, 8, 80, "Kitchen \"quoted\" ünïcode", 0, 0, 1e-7, 12345678.91)]


def _read(session, model, shop_id):
    cols = [c for c in model.__table__.c if c.name != "shop_id"]
    return sorted(tuple(r) for r in session.execute(select(*cols).where(model.shop_id == shop_id)))


def test_insert_rows_matches_sqlalchemy_insert(session):
    a, b = Shop(domain="rows-a.myshopify.com"), Shop(domain="rows-b.myshopify.com")
    session.add_all([a, b])
    session.flush()
    insert_rows(session, Order.__table__, ORDER_COLUMNS, _orders(a.id))
    insert_rows(session, OrderLine.__table__, LINE_COLUMNS, _lines(a.id))
    session.execute(insert(Order.__table__), [dict(zip(ORDER_COLUMNS, r)) for r in _orders(b.id)])
    session.execute(insert(OrderLine.__table__), [dict(zip(LINE_COLUMNS, r)) for r in _lines(b.id)])
    session.commit()
    assert _read(session, Order, a.id) == _read(session, Order, b.id)
    assert _read(session, OrderLine, a.id) == _read(session, OrderLine, b.id)
    stored = session.get(Order, (a.id, 1))
    assert stored.contribution["product_types"] == {"Mugs\ttab": 2}
    assert stored.processed_at == dt.datetime(2011, 3, 4, 5, 6, 7, 890123) and stored.cancelled_at is None
    assert len(_read(session, OrderLine, a.id)) == 3
    session.commit()
