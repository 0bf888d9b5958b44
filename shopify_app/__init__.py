"""Segments & Bundles: a Shopify embedded app for RFM/predictive segments and bundle suggestions.

`flask --app shopify_app ...` finds `create_app` here (Flask's app-factory convention). Importing this package
has no side effects and loads no web code: `create_app` is resolved on first use, so workers and the pure
analytics (`shopify_app.analytics`) never import Flask.
"""
from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from shopify_app.factory import create_app

        return create_app
    raise AttributeError(f"module 'shopify_app' has no attribute {name!r}")
