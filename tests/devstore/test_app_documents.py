"""Every GraphQL document the app ships must validate against the official 2026-10 schema, deprecation-free."""
from pathlib import Path

import pytest

from shopify_app.devstore import validate_document

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted((ROOT / "shopify_app" / "shopify" / "documents").glob("*.graphql")) + \
    sorted((ROOT / "workers").rglob("*.graphql"))


def test_there_are_documents_or_a_reason():
    if not DOCUMENTS:
        pytest.skip("no .graphql documents in shopify_app/shopify/documents/ or workers/ yet")


@pytest.mark.parametrize("path", DOCUMENTS, ids=[str(p.relative_to(ROOT)) for p in DOCUMENTS])
def test_document_is_valid_and_uses_nothing_deprecated(path):
    problems = validate_document(path.read_text(encoding="utf-8"))
    assert problems == [], "\n".join(
        f"{path.name}:{(p.get('locations') or [{}])[0].get('line', '?')}: [{p['extensions']['code']}] {p['message']}"
        for p in problems)
