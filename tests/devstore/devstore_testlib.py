"""Shared helpers for the devstore tests (a uniquely named module: tests/ has no __init__.py)."""
from __future__ import annotations

import requests

API_KEY = "test-api-key"
API_SECRET = "test-api-secret-0123456789abcdef-xyz"
SHOP = "demo.myshopify.com"
APP_URL = "http://app.test"
class Admin:
    """Minimal Admin API client, the way an app talks to Shopify."""

    def __init__(self, base: str, shop: str, token: str):
        self.url = f"{base}/shops/{shop}/admin/api/2026-10/graphql.json"
        self.token = token
        self.http = requests.Session()

    def post(self, query: str, variables: dict | None = None, **kw):
        return self.http.post(self.url, json={"query": query, "variables": variables or {}},
                              headers={"X-Shopify-Access-Token": self.token}, timeout=30, **kw)

    def __call__(self, query: str, variables: dict | None = None) -> dict:
        r = self.post(query, variables)
        assert r.status_code == 200, r.text
        return r.json()
