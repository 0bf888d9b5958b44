"""CLI: run the devstore as a server.

    python -m shopify_app.devstore --port 9000 --seed online_retail --shop demo.myshopify.com \
        --app-key K --app-secret S --app-url http://127.0.0.1:8000 [--webhook /webhooks/orders=orders/create ...]

The app then uses SHOPIFY_ADMIN_BASE=http://127.0.0.1:9000/shops/{shop}.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import threading

from .store import App, DevStore
from .webhooks import DeliveryMode


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m shopify_app.devstore", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--shop", action="append", default=None, help="dev shop domain (repeatable)")
    ap.add_argument("--seed", choices=["none", "online_retail", "synthetic"], default="none")
    ap.add_argument("--seed-path", default=None, help="CSV(.gz); default: ../shared/data full file or bundled sample")
    ap.add_argument("--limit-orders", type=int, default=None)
    ap.add_argument("--end-at", choices=["now", "original"], default="now",
                    help="online_retail: shift the data so its last invoice is today (default) or keep its dates")
    ap.add_argument("--replay-days", type=float, default=None, help="replay the last N days as live webhooks")
    ap.add_argument("--replay-rate", type=float, default=5.0, help="orders per second while replaying")
    ap.add_argument("--app-key", required=True)
    ap.add_argument("--app-secret", required=True)
    ap.add_argument("--app-url", default="http://127.0.0.1:8000")
    ap.add_argument("--scopes", default="read_orders,read_all_orders,read_customers,write_customers,read_products,"
                                        "write_discounts", help="scopes granted by token exchange")
    ap.add_argument("--order-age-limit-days", type=int, default=60,
                    help="hide orders older than this from apps without read_all_orders, like Shopify (0 = off)")
    ap.add_argument("--install", action="store_true", help="pre-install the app and print an offline token")
    ap.add_argument("--webhook", action="append", default=[], metavar="URI=TOPIC",
                    help="subscription like shopify.app.toml, e.g. /webhooks/orders=orders/create")
    ap.add_argument("--app-toml", default=None, help="subscribe the webhooks declared in this shopify.app.toml")
    ap.add_argument("--bucket-size", type=float, default=None)
    ap.add_argument("--restore-rate", type=float, default=None)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    store = DevStore(apps=[App(args.app_key, args.app_secret, args.app_url, args.scopes)],
                     bucket_size=args.bucket_size, restore_rate=args.restore_rate,
                     public_base_url=f"http://{args.host}:{args.port}", webhook_mode=DeliveryMode(sync=False))
    store.order_age_limit_days = args.order_age_limit_days or None
    shops = args.shop or ["demo.myshopify.com"]
    for shop in shops:
        store.create_shop(shop, currency="GBP" if args.seed == "online_retail" else "USD",
                          iana_timezone="Europe/London" if args.seed == "online_retail" else "UTC")
        for spec in args.webhook:
            uri, _, topic = spec.partition("=")
            store.subscribe_webhook(shop, topic, uri)
        if args.app_toml:
            store.subscribe_from_app_toml(shop, args.app_toml)
        if args.install:
            print(f"{shop} offline token: {store.install_app(shop, args.app_key)}", flush=True)

    def seed():
        from .seed import seed_online_retail
        for shop in shops:
            if args.seed == "online_retail":
                seed_online_retail(store, shop, args.seed_path, limit_orders=args.limit_orders,
                                   replay_last_days=args.replay_days, replay_rate=args.replay_rate,
                                   end_at=(dt.datetime.now(dt.timezone.utc) if args.end_at == "now" else None))
            elif args.seed == "synthetic":
                store.generate_orders(shop, args.limit_orders or 10_000)

    if args.replay_days:
        threading.Thread(target=seed, daemon=True, name="devstore-seed").start()   # serve while replaying
    else:
        seed()

    from werkzeug.serving import make_server
    from .server import create_devstore_app
    srv = make_server(args.host, args.port, create_devstore_app(store), threaded=True)
    print(f"devstore on http://{args.host}:{args.port}  SHOPIFY_ADMIN_BASE=http://{args.host}:{args.port}/shops/{{shop}}",
          flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
