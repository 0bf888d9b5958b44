"""Small helpers for tests (importable: `from tests.helpers import ...`)."""
from tests.conftest import TEST_API_KEY, TEST_API_SECRET, config_env, wait_for  # noqa: F401
