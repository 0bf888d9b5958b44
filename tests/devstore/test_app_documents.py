"""Every GraphQL document the app ships must validate against the official 2026-10 schema, deprecation-free.

Collects shopify_app/shopify/documents/*.graphql and any .graphql under workers/ (other engineers add them).
"""
from pathlib import Path

import pytest

from shopify_app.devstore import validate_document

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted((ROOT / "shopify_app" / "shopify" / "documents").glob("*.graphql")) + \
    sorted((ROOT / "workers").rglob("*.graphql"))
PARAMS = [pytest.param(p, id=str(p.relative_to(ROOT))) for p in DOCUMENTS] or [
    pytest.param(None, id="no-documents", marks=pytest.mark.skip(
        reason="no .graphql documents in shopify_app/shopify/documents/ or workers/ yet"))]


@pytest.mark.parametrize("path", PARAMS)
def test_document_is_valid_and_uses_nothing_deprecated(path):
    problems = validate_document(path.read_text(encoding="utf-8"))
    assert problems == [], "\n".join(
        f"{path.name}:{(p.get('locations') or [{}])[0].get('line', '?')}: [{p['extensions']['code']}] {p['message']}"
        for p in problems)
