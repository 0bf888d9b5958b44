"""Segments & Bundles: a Shopify embedded app for RFM/predictive segments and bundle suggestions.

`flask --app shopify_app ...` finds `create_app` here (Flask's app-factory convention). Importing this package
has no side effects: no config is read and no connection is opened until `create_app()` runs.
"""
from shopify_app.factory import create_app

__all__ = ["create_app"]
