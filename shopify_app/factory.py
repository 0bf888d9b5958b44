"""The Flask app factory."""
from __future__ import annotations

import logging
import sys

from flask import Flask, g

from shopify_app.config import PROJECT_ROOT, Config, ConfigError


def create_app(config: Config | None = None, **overrides) -> Flask:
    """Build the web app. With no `config`, settings come from the environment (see README, Configuration).

    A bad setting read from the environment stops the process with one line naming it (exit status 2)."""
    if config is None:
        try:
            config = Config.from_env(**overrides)
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    elif overrides:
        config = config.replace(**overrides)

    app = Flask(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "shopify_app" / "static"),
        instance_path=config.instance_path,
    )
    app.config.update(SECRET_KEY=config.secret_key, APP_CONFIG=config, JSON_SORT_KEYS=False)
    logging.basicConfig(level=config.log_level)

    from shopify_app.web import admin, api, auth, health, webhooks

    for module in (health, auth, webhooks, api, admin):
        app.register_blueprint(module.bp)

    from shopify_app.web.security import install_security_headers

    install_security_headers(app)

    @app.context_processor
    def _app_bridge():
        # The App Bridge script every page loads: Shopify's CDN, or the local stand-in's in the demo.
        return {"app_bridge_src": config.app_bridge_src}

    @app.teardown_appcontext
    def _close_db(_exc):
        for key in ("db", "db_writer"):
            session = g.pop(key, None)
            if session is not None:
                session.close()

    from shopify_app.cli import register_cli

    register_cli(app)
    return app
