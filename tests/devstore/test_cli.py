"""The CLI the demo run command uses: seeds, serves, answers GraphQL with the printed token."""
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from shopify_app.devstore.seed import BUNDLED_SAMPLE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serves_a_seeded_shop(tmp_path):
    port = _free_port()
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "shopify_app.devstore", "--port", str(port), "--seed", "online_retail",
         "--seed-path", str(BUNDLED_SAMPLE), "--limit-orders", "200", "--shop", "demo.myshopify.com",
         "--app-key", "cli-key", "--app-secret", "cli-secret-0123456789abcdef0123456789", "--install",
         "--app-url", "http://127.0.0.1:1"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        token, out = None, []
        end = time.time() + 30
        while time.time() < end:
            line = proc.stdout.readline()
            out.append(line)
            m = re.search(r"offline token: (shpat_\w+)", line)
            if m:
                token = m.group(1)
            if "SHOPIFY_ADMIN_BASE=" in line:
                break
        assert token, "".join(out)
        base = f"http://127.0.0.1:{port}/shops/demo.myshopify.com"
        for _ in range(50):
            try:
                r = requests.post(f"{base}/admin/api/2026-10/graphql.json", timeout=5,
                                  json={"query": "{ shop { currencyCode } ordersCount { count } }"},
                                  headers={"X-Shopify-Access-Token": token})
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        body = r.json()
        assert body["data"]["shop"]["currencyCode"] == "GBP"
        assert body["data"]["ordersCount"]["count"] >= 200
    finally:
        proc.terminate()
        proc.wait(10)
