"""One configuration object, read from the environment.

Every setting is documented in README.md ("Configuration"). Nothing here has side effects at import;
`Config.from_env()` is called by `create_app()`, the CLI and the workers.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INSTANCE = PROJECT_ROOT / "instance"

# Insecure development defaults: refused when APP_ENV=production.
DEV_API_KEY = "devstore-api-key-0123456789abcdef"
DEV_API_SECRET = "devstore-api-secret-not-for-production"
DEV_SECRET_KEY = "dev-secret-key-not-for-production"

SHOPIFY_API_VERSION = "2026-10"
APP_BRIDGE_CDN = "https://cdn.shopify.com/shopifycloud/app-bridge.js"
DEFAULT_SCOPES = "read_orders,read_all_orders,read_customers,write_customers,read_products,write_discounts"


class ConfigError(ValueError):
    """A setting is missing or malformed. The message names the setting and fits on one line."""


def env_number(name: str, default, kind: type = int, minimum=None, maximum=None, environ=None):
    """A numeric deployment knob read from the environment (the worker and intake tuning settings of README.md):
    `default` when unset or empty, else the value as `kind` (int or float) within [minimum, maximum]; anything
    else raises ConfigError naming the setting, which stops the process with that one line (create_app, the
    worker command)."""
    env = os.environ if environ is None else environ
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = (f"from {minimum} to {maximum}" if minimum is not None and maximum is not None
                  else f">= {minimum}" if minimum is not None else f"<= {maximum}")
        raise ConfigError(f"{name} must be {bounds}, got {raw!r}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...], environ=None) -> str:
    """A deployment knob with a fixed set of values (case-insensitive); ConfigError for anything else."""
    env = os.environ if environ is None else environ
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Config:
    env: str = "development"                # APP_ENV: development | production | test
    api_key: str = DEV_API_KEY              # SHOPIFY_API_KEY (client id)
    api_secret: str = DEV_API_SECRET        # SHOPIFY_API_SECRET (client secret)
    api_version: str = SHOPIFY_API_VERSION  # SHOPIFY_API_VERSION
    scopes: str = DEFAULT_SCOPES            # SHOPIFY_SCOPES
    app_url: str = "http://127.0.0.1:8000"  # APP_URL, public https URL of this app
    database_url: str = ""                  # DATABASE_URL; empty -> sqlite file in instance/
    redis_url: str = ""                     # REDIS_URL; empty -> embedded redis-server (run command)
    secret_key: str = DEV_SECRET_KEY        # SECRET_KEY (Flask sessions, state nonces)
    token_encryption_key: str = ""          # TOKEN_ENCRYPTION_KEY (Fernet key); empty -> derived from SECRET_KEY
    port: int = 8000                        # PORT
    instance_path: str = str(DEFAULT_INSTANCE)  # INSTANCE_PATH
    shopify_admin_base: str = ""            # SHOPIFY_ADMIN_BASE: override https://{shop} (local stand-in only)
    queue_prefix: str = "sb"                # RQ_QUEUE_PREFIX: queue name prefix (several apps on one Redis)
    log_level: str = "INFO"                 # LOG_LEVEL
    app_bridge_src: str = APP_BRIDGE_CDN    # APP_BRIDGE_SRC: App Bridge script (the CDN; the demo's stand-in locally)
    intake_pg_batches: int = 2              # INTAKE_PG_BATCHES: webhook batches a web process writes at once (PostgreSQL)
    extra: dict = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.instance_path) / 'segments.sqlite3'}"

    @property
    def fernet_key(self) -> bytes:
        """Key used to encrypt Shopify access tokens at rest."""
        if self.token_encryption_key:
            return self.token_encryption_key.encode()
        digest = hashlib.sha256(("token-encryption:" + self.secret_key).encode()).digest()
        return base64.urlsafe_b64encode(digest)

    @property
    def admin_frame_origin(self) -> str | None:
        """Origin of the local admin stand-in that frames the app (from SHOPIFY_ADMIN_BASE), else None: in
        production the frame ancestors are the shop's admin and admin.shopify.com only."""
        if not self.shopify_admin_base:
            return None
        p = urlparse(self.shopify_admin_base.replace("{shop}", "shop"))
        return f"{p.scheme}://{p.netloc}"

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> "Config":
        env = os.environ if environ is None else environ
        values: dict = {}
        mapping = {
            "APP_ENV": "env", "SHOPIFY_API_KEY": "api_key", "SHOPIFY_API_SECRET": "api_secret",
            "SHOPIFY_API_VERSION": "api_version", "SHOPIFY_SCOPES": "scopes", "APP_URL": "app_url",
            "DATABASE_URL": "database_url", "REDIS_URL": "redis_url", "SECRET_KEY": "secret_key",
            "TOKEN_ENCRYPTION_KEY": "token_encryption_key", "PORT": "port", "INSTANCE_PATH": "instance_path",
            "SHOPIFY_ADMIN_BASE": "shopify_admin_base", "RQ_QUEUE_PREFIX": "queue_prefix", "LOG_LEVEL": "log_level",
            "APP_BRIDGE_SRC": "app_bridge_src",
        }
        for var, attr in mapping.items():
            if env.get(var) not in (None, ""):
                values[attr] = env[var]
        values.update(overrides)
        if "intake_pg_batches" not in values:
            values["intake_pg_batches"] = env_number("INTAKE_PG_BATCHES", cls.intake_pg_batches, minimum=1, maximum=8,
                                                     environ=env)
        if "port" in values:
            try:
                values["port"] = int(values["port"])
            except (TypeError, ValueError):
                raise ConfigError(f"PORT must be an integer, got {values['port']!r}") from None
        if "app_url" not in values and "port" in values:   # local default follows PORT
            values["app_url"] = f"http://127.0.0.1:{values['port']}"
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.env not in ("development", "production", "test"):
            raise ConfigError(f"APP_ENV must be development, production or test, got {self.env!r}")
        if not (1 <= self.port <= 65535):
            raise ConfigError(f"PORT must be between 1 and 65535, got {self.port}")
        if not (isinstance(self.intake_pg_batches, int) and 1 <= self.intake_pg_batches <= 8):
            raise ConfigError(f"INTAKE_PG_BATCHES must be from 1 to 8, got {self.intake_pg_batches!r}")
        if self.database_url:
            _check_database_url(self.database_url)
        if self.redis_url:
            p = urlparse(self.redis_url)
            if p.scheme not in ("redis", "rediss", "unix"):
                raise ConfigError(f"REDIS_URL must start with redis://, rediss:// or unix://, got {self.redis_url!r}")
        if not re.fullmatch(r"\d{4}-(01|04|07|10)", self.api_version):
            raise ConfigError(f"SHOPIFY_API_VERSION must look like 2026-10, got {self.api_version!r}")
        p = urlparse(self.app_url)
        if p.scheme not in ("http", "https") or not p.netloc:
            raise ConfigError(f"APP_URL must be an absolute http(s) URL, got {self.app_url!r}")
        if self.token_encryption_key:
            try:
                if len(base64.urlsafe_b64decode(self.token_encryption_key)) != 32:
                    raise ValueError
            except ValueError:
                raise ConfigError("TOKEN_ENCRYPTION_KEY must be a Fernet key (32 url-safe base64 bytes)") from None
        if self.is_production:
            for var, val, dev in (("SHOPIFY_API_KEY", self.api_key, DEV_API_KEY),
                                  ("SHOPIFY_API_SECRET", self.api_secret, DEV_API_SECRET),
                                  ("SECRET_KEY", self.secret_key, DEV_SECRET_KEY)):
                if not val or val == dev:
                    raise ConfigError(f"{var} must be set in production (APP_ENV=production)")
            if not self.token_encryption_key:
                raise ConfigError("TOKEN_ENCRYPTION_KEY must be set in production (APP_ENV=production)")
            if not self.database_url:
                raise ConfigError("DATABASE_URL must be set in production (APP_ENV=production)")
            if not self.redis_url:
                raise ConfigError("REDIS_URL must be set in production (APP_ENV=production)")
            if p.scheme != "https":
                raise ConfigError("APP_URL must be https in production (APP_ENV=production)")
            if self.shopify_admin_base:
                raise ConfigError("SHOPIFY_ADMIN_BASE is for the local Shopify stand-in; unset it in production")
            if self.app_bridge_src != APP_BRIDGE_CDN:
                raise ConfigError(f"APP_BRIDGE_SRC must be Shopify's CDN ({APP_BRIDGE_CDN}) in production")


def _check_database_url(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
        u.port  # noqa: B018 - a non-numeric port only fails when parsed
    except (ArgumentError, ValueError):
        raise ConfigError(f"DATABASE_URL is malformed: {url!r} (expected e.g. postgresql+psycopg://user:pw@host/db)") from None
    if u.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"DATABASE_URL backend must be sqlite or postgresql, got {u.get_backend_name()!r}")
