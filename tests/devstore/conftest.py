"""Fixtures for the devstore's own tests: a store with one app and one shop, and the same served over HTTP."""
from __future__ import annotations

import pytest
from devstore_testlib import API_KEY, API_SECRET, APP_URL, SHOP, Admin

from shopify_app.devstore import App, DevStore
from shopify_app.devstore.webhooks import DeliveryMode


@pytest.fixture
def store():
    s = DevStore(apps=[App(API_KEY, API_SECRET, APP_URL)],
                 webhook_mode=DeliveryMode(sync=True, retry_schedule=(0, 0, 0)))
    s.create_shop(SHOP, currency="GBP", iana_timezone="Europe/London")
    return s


@pytest.fixture
def token(store):
    return store.install_app(SHOP, API_KEY)


@pytest.fixture
def admin(server, token):
    return Admin(server, SHOP, token)
