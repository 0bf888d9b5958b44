"""Bad configuration fails at start with one clear line naming the setting."""
from __future__ import annotations

import subprocess
import sys

import pytest

from shopify_app.config import PROJECT_ROOT, Config, ConfigError


@pytest.mark.parametrize("env,setting", [
    ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
    ({"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL"),
    ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
    ({"PORT": "eighty"}, "PORT"),
    ({"SHOPIFY_API_VERSION": "2026-11"}, "SHOPIFY_API_VERSION"),
    ({"APP_ENV": "production"}, "SHOPIFY_API_KEY"),
    ({"APP_ENV": "production", "SHOPIFY_API_KEY": "k", "SHOPIFY_API_SECRET": "s", "SECRET_KEY": "x"},
     "TOKEN_ENCRYPTION_KEY"),
])
def test_bad_setting_names_itself(env, setting):
    with pytest.raises(ConfigError, match=setting):
        Config.from_env(env)


def test_defaults_are_embedded():
    cfg = Config.from_env({})
    assert cfg.sqlalchemy_url.startswith("sqlite:///") and cfg.sqlalchemy_url.endswith("segments.sqlite3")
    assert cfg.redis_url == "" and cfg.api_version == "2026-10" and cfg.port == 8000


def test_flask_cli_prints_one_line_not_a_traceback():
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://user@host:notaport/db", "HOME": "/tmp"}
    proc = subprocess.run([sys.executable, "-m", "flask", "--app", "shopify_app", "db", "current"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [lines[-1]] and "DATABASE_URL" in lines[-1], proc.stderr


def test_import_has_no_side_effects(tmp_path):
    code = "import shopify_app, workers; import os; print(sorted(os.listdir('.')))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_ROOT),
                               "DATABASE_URL": "garbage"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_analytics_import_does_not_load_web_stack():
    code = ("import sys, shopify_app.analytics.predictive; "
            "print(sorted(m for m in ('flask', 'redis', 'sqlalchemy', 'rq') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_local_app_url_follows_port():
    assert Config.from_env({"PORT": "8765"}).app_url == "http://127.0.0.1:8765"
    assert Config.from_env({"PORT": "8765", "APP_URL": "https://x.example"}).app_url == "https://x.example"


def test_local_admin_stand_in_settings():
    cfg = Config.from_env({"SHOPIFY_ADMIN_BASE": "http://127.0.0.1:9000/shops/{shop}",
                           "APP_BRIDGE_SRC": "http://127.0.0.1:9000/devstore/app-bridge.js"})
    assert cfg.admin_frame_origin == "http://127.0.0.1:9000"
    assert cfg.app_bridge_src.endswith("/devstore/app-bridge.js")
    plain = Config.from_env({})
    assert plain.admin_frame_origin is None and plain.app_bridge_src.startswith("https://cdn.shopify.com/")


@pytest.mark.parametrize("env,setting", [
    ({"SHOPIFY_ADMIN_BASE": "http://127.0.0.1:9000/shops/{shop}"}, "SHOPIFY_ADMIN_BASE"),
    ({"APP_BRIDGE_SRC": "http://127.0.0.1:9000/devstore/app-bridge.js"}, "APP_BRIDGE_SRC"),
])
def test_production_refuses_stand_in_settings(env, setting):
    prod = {"APP_ENV": "production", "SHOPIFY_API_KEY": "k", "SHOPIFY_API_SECRET": "s", "SECRET_KEY": "x",
            "TOKEN_ENCRYPTION_KEY": "A" * 43 + "=", "DATABASE_URL": "postgresql://u@h/db", "REDIS_URL": "redis://h",
            "APP_URL": "https://app.example.com"}
    Config.from_env(prod)                                         # valid as it is
    with pytest.raises(ConfigError, match=setting):
        Config.from_env({**prod, **env})


def test_numeric_and_choice_knobs_default_parse_and_name_themselves():
    from shopify_app.config import env_choice, env_number

    assert env_number("X_N", 64, environ={}) == 64 and env_number("X_N", 64, environ={"X_N": " "}) == 64
    assert env_number("X_N", 64, environ={"X_N": " 7 "}) == 7
    assert env_number("X_F", 0.25, float, minimum=0.0, environ={"X_F": "0.5"}) == 0.5
    for bad, message in (("abc", "X_N must be an integer, got 'abc'"), ("0", "X_N must be from 1 to 8, got '0'"),
                         ("9", "X_N must be from 1 to 8, got '9'"), ("1.5", "X_N must be an integer")):
        with pytest.raises(ConfigError, match=message):
            env_number("X_N", 2, minimum=1, maximum=8, environ={"X_N": bad})
    assert env_choice("X_C", "auto", ("auto", "1", "0"), environ={"X_C": " AUTO "}) == "auto"
    with pytest.raises(ConfigError, match="X_C must be one of auto, 1, 0, got 'yes'"):
        env_choice("X_C", "auto", ("auto", "1", "0"), environ={"X_C": "yes"})


def test_worker_with_a_bad_tuning_setting_stops_with_one_line():
    """The workers' tuning settings (ORDER_BATCH_*, COMPACT_*, RULES_*, BACKGROUND_NICE, ORDER_PIPELINE) are read
    when the worker command loads the job modules: a bad one stops it before it takes any job."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "REDIS_URL": "redis://127.0.0.1:9/0",
           "ORDER_BATCH_DELIVERIES": "lots"}
    proc = subprocess.run([sys.executable, "-m", "flask", "--app", "shopify_app", "worker", "--burst"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["configuration error: ORDER_BATCH_DELIVERIES must be an integer, got 'lots'"], proc.stderr
