"""Admin GraphQL client: cost-based throttling, bounded retries, typed errors, pagination and bulk operations.

Why not ShopifyAPI's `shopify.GraphQL()` helper: it posts the query and hands back the raw body -- it does not read
`extensions.cost.throttleStatus`, never waits for the leaky bucket to refill, does not retry THROTTLED / 429 / 5xx /
dropped connections and does not tell an invalid token apart from a bad query. Every sync job needs all of that, so
this module talks HTTP itself with `requests`.

    client = AdminClient.for_shop(config, "demo.myshopify.com", token)
    shop = client.execute("shop_info")["shop"]                      # documents/shop_info.graphql (cached)
    for order in client.paginate("orders_page", "orders", {"first": 100, "query": "updated_at:>=2026-01-01"}):
        ...
    op_id = client.run_bulk_query(load_document("bulk_orders_query"), group_objects=True)
    op = client.wait_for_bulk_operation(op_id)
    for obj in client.download_jsonl(op["url"]): ...
    client.run_bulk_mutation("tags_add", [{"id": gid, "tags": ["vip"]}, ...])

Errors (all ShopifyError):
    ShopifyAuthError       HTTP 401/403: token revoked / app uninstalled. Never retried; callers mark the shop
                           needs_reauth.
    ShopifyTransientError  THROTTLED, 429, 5xx, connection errors and timeouts still failing after max_retries.
                           Safe to retry the whole job later.
    ShopifyGraphQLError    top-level GraphQL `errors` (validation, ACCESS_DENIED, MAX_COST_EXCEEDED, ...): `.messages`,
                           `.codes`. Retrying will not help.
    ShopifyUserError       non-empty `userErrors` in a mutation payload (see raise_for_user_errors): `.path`,
                           `.user_errors`, each rendered as "field.path: message".
    ShopifyHTTPError       any other unexpected HTTP status (404 unknown shop, 402 frozen shop, ...).
    ShopifyBulkOperationError  a bulk operation ended FAILED / CANCELED / EXPIRED, or timed out while waiting.

Rate limiting: the bucket is per (app, shop) on Shopify's side; this client keeps a leaky-bucket *estimate* from the
last `throttleStatus` it saw (available + restoreRate * elapsed) and, before sending, sleeps until the estimate
covers the expected cost of the request (the requestedQueryCost last seen for the same document, or the caller's
`cost=` hint). Several processes hitting the same shop do not share that estimate, which is why THROTTLED answers
are still handled (wait until enough points should be back, then retry).

Retries re-send the same POST. Queries are safe; the mutations this app sends (tagsAdd / tagsRemove, webhook
subscription create, bulk run) are idempotent or fail harmlessly (duplicate webhook address, OPERATION_IN_PROGRESS)
when a dropped connection hid a success.
"""
from __future__ import annotations

import functools
import io
import json
import logging
import random
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import requests

log = logging.getLogger("shopify_app.shopify.graphql")

DOCUMENTS_DIR = Path(__file__).resolve().parent / "documents"
_DOCUMENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

TERMINAL_BULK_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELED", "EXPIRED"})
BULK_BUSY_CODES = frozenset({"OPERATION_IN_PROGRESS", "LIMIT_REACHED"})   # another bulk query runs: not ours to fix
DOWNLOAD_CHUNK = 1 << 20                  # bytes per read of a bulk result file (requests reads 512 by default)
DEFAULT_TIMEOUT = (10.0, 60.0)            # (connect, read) seconds
BACKOFF_BASE = 0.5                        # seconds; doubled per attempt, jittered
BACKOFF_CAP = 30.0
MAX_THROTTLE_WAIT = 60.0                  # never sleep longer than this for one throttle wait


# --------------------------------------------------------------------------------------------------- errors


class ShopifyError(Exception):
    """Base class of everything this client raises."""


class ShopifyTransientError(ShopifyError):
    """Still failing (THROTTLED, 429, 5xx, connection error, timeout) after the bounded retries."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0):
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class ShopifyAuthError(ShopifyError):
    """HTTP 401/403: the access token is invalid or revoked (app uninstalled). Never retried."""

    def __init__(self, message: str, *, status: int):
        super().__init__(message)
        self.status = status


class ShopifyHTTPError(ShopifyError):
    """Any other unexpected HTTP status (not retried)."""

    def __init__(self, message: str, *, status: int, body: str = ""):
        super().__init__(message)
        self.status = status
        self.body = body


class ShopifyGraphQLError(ShopifyError):
    """Top-level GraphQL `errors` in a 200 answer: validation, access denied, max cost exceeded, ..."""

    def __init__(self, errors: Sequence[Mapping[str, Any]] | str, data: Any = None):
        if isinstance(errors, str):
            errors = [{"message": errors}]
        self.errors = list(errors)
        self.data = data
        self.messages = [str(e.get("message", "")) for e in self.errors]
        self.codes = [((e.get("extensions") or {}).get("code")) for e in self.errors]
        super().__init__("; ".join(f"[{c}] {m}" if c else m for m, c in zip(self.messages, self.codes)))


class ShopifyUserError(ShopifyError):
    """Non-empty `userErrors` in a mutation payload."""

    def __init__(self, path: str, user_errors: Sequence[Mapping[str, Any]]):
        self.path = path
        self.user_errors = list(user_errors)
        self.fields = [".".join(str(p) for p in (e.get("field") or [])) for e in self.user_errors]
        self.messages = [str(e.get("message", "")) for e in self.user_errors]
        self.codes = [e.get("code") for e in self.user_errors]
        parts = [f"{f}: {m}" if f else m for f, m in zip(self.fields, self.messages)]
        super().__init__(f"{path}: " + "; ".join(parts))


class ShopifyBulkOperationError(ShopifyError):
    def __init__(self, message: str, operation: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.operation = dict(operation or {})
        self.error_code = self.operation.get("errorCode")
        self.partial_data_url = self.operation.get("partialDataUrl")


# ------------------------------------------------------------------------------------------------ documents


@functools.lru_cache(maxsize=None)
def load_document(name: str) -> str:
    """Text of documents/NAME.graphql (cached for the life of the process)."""
    path = DOCUMENTS_DIR / f"{name}.graphql"
    if not path.is_file():
        raise FileNotFoundError(f"no GraphQL document named {name!r} in {DOCUMENTS_DIR}")
    return path.read_text(encoding="utf-8")


def resolve_document(name_or_source: str) -> str:
    """A bare identifier ("orders_page") names a file in documents/; anything else is GraphQL source."""
    text = name_or_source.strip()
    if _DOCUMENT_NAME.match(text):
        return load_document(text)
    return name_or_source


def _dig(obj: Any, path: str | Sequence[str]) -> Any:
    keys = path.split(".") if isinstance(path, str) else list(path)
    for k in keys:
        if not isinstance(obj, Mapping) or k not in obj:
            raise KeyError(f"{'.'.join(keys)!r} not found in response (missing {k!r})")
        obj = obj[k]
    return obj


def raise_for_user_errors(payload: Mapping[str, Any], path: str | Sequence[str] = ()) -> Any:
    """Return the mutation result at `path` inside `payload` (e.g. data, "tagsAdd"), raising ShopifyUserError when
    its `userErrors` is non-empty. With an empty path `payload` itself is the mutation result."""
    result = _dig(payload, path) if path else payload
    label = path if isinstance(path, str) else ".".join(path)
    if result is None:
        raise ShopifyUserError(label or "mutation", [{"field": None, "message": "mutation returned null"}])
    errs = result.get("userErrors") if isinstance(result, Mapping) else None
    if errs:
        raise ShopifyUserError(label or "mutation", errs)
    return result


# --------------------------------------------------------------------------------------------------- client


class AdminClient:
    """One shop's Admin GraphQL API. Not meant to be shared across threads (the throttle estimate is locked, but
    one client per job is the intended use)."""

    def __init__(self, shop_domain: str, access_token: str, api_version: str, admin_base: str = "",
                 session: requests.Session | None = None, max_retries: int = 6,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None, *,
                 clock: Callable[[], float] = time.monotonic, timeout: float | tuple[float, float] = DEFAULT_TIMEOUT):
        self.shop_domain = shop_domain
        self.api_version = api_version
        base = (admin_base or "https://{shop}").rstrip("/")
        self.base_url = base.format(shop=shop_domain) if "{shop}" in base else base
        self.endpoint = f"{self.base_url}/admin/api/{api_version}/graphql.json"
        self._token = access_token
        self.session = session or requests.Session()
        self.max_retries = max(0, int(max_retries))
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.clock = clock
        self.timeout = timeout
        self._lock = threading.Lock()
        # Leaky bucket estimate from the last throttleStatus: (available, maximum, restore_rate, seen_at).
        self._bucket: tuple[float, float, float, float] | None = None
        self._doc_cost: dict[tuple, float] = {}   # (source, numeric variables) -> last requestedQueryCost
        self.last_cost: dict | None = None        # extensions.cost of the last answer (observability / tests)
        self.attempts = 0                         # HTTP requests sent by the last execute()

    @classmethod
    def for_shop(cls, config, shop_domain: str, access_token: str, **kw) -> "AdminClient":
        """Client configured from shopify_app.config.Config (api_version, shopify_admin_base)."""
        return cls(shop_domain, access_token, config.api_version, getattr(config, "shopify_admin_base", "") or "",
                   **kw)

    def __repr__(self) -> str:   # never print the token
        return f"AdminClient({self.shop_domain!r}, api_version={self.api_version!r})"

    # ------------------------------------------------------------------ throttle estimate

    def estimated_available(self) -> float | None:
        with self._lock:
            if self._bucket is None:
                return None
            avail, maximum, rate, at = self._bucket
            return min(maximum, avail + rate * max(0.0, self.clock() - at))

    @staticmethod
    def _cost_key(source: str, variables: Mapping[str, Any]) -> tuple:
        # Page sizes (first/last/...) drive the cost; cursors and search strings do not.
        return (source, tuple(sorted((k, v) for k, v in variables.items()
                                     if isinstance(v, (int, float)) and not isinstance(v, bool))))

    def _record_cost(self, source: tuple, cost: Mapping[str, Any] | None) -> None:
        if not isinstance(cost, Mapping):
            return
        self.last_cost = dict(cost)
        requested = cost.get("requestedQueryCost")
        if isinstance(requested, (int, float)):
            self._doc_cost[source] = float(requested)
        ts = cost.get("throttleStatus")
        if isinstance(ts, Mapping):
            try:
                with self._lock:
                    self._bucket = (float(ts["currentlyAvailable"]), float(ts["maximumAvailable"]),
                                    float(ts["restoreRate"]), self.clock())
            except (KeyError, TypeError, ValueError):
                pass

    def _wait_for_points(self, needed: float) -> float:
        """Sleep until the bucket estimate covers `needed` points. Returns the seconds slept."""
        est = self.estimated_available()
        if est is None or est >= needed:
            return 0.0
        with self._lock:
            _, maximum, rate, _ = self._bucket
        if rate <= 0:
            return 0.0
        needed = min(needed, maximum)
        wait = min(MAX_THROTTLE_WAIT, (needed - est) / rate + self.rng.uniform(0.0, 0.05))
        log.info("shop %s: waiting %.2fs for %.0f query cost points (estimated available %.0f)",
                 self.shop_domain, wait, needed, est)
        self.sleep(wait)
        return wait

    def _backoff(self, attempt: int) -> float:
        """Jittered exponential backoff: uniform in [0.5, 1] x min(cap, base * 2^attempt)."""
        return min(BACKOFF_CAP, BACKOFF_BASE * (2 ** attempt)) * self.rng.uniform(0.5, 1.0)

    # ---------------------------------------------------------------------------- execute

    def execute(self, document_name_or_source: str, variables: Mapping[str, Any] | None = None, *,
                cost: float | None = None, operation_name: str | None = None) -> dict:
        """Run one query/mutation and return its `data`. `cost` is an optional hint of the requested cost."""
        source = resolve_document(document_name_or_source)
        body: dict[str, Any] = {"query": source, "variables": dict(variables or {})}
        if operation_name:
            body["operationName"] = operation_name
        headers = {"X-Shopify-Access-Token": self._token, "Content-Type": "application/json",
                   "Accept": "application/json"}
        cost_key = self._cost_key(source, body["variables"])
        expected = cost if cost is not None else self._doc_cost.get(cost_key)
        attempt = 0
        self.attempts = 0
        last_problem = ""
        last_status: int | None = None
        while True:
            if expected:
                self._wait_for_points(expected)
            self.attempts += 1
            wait: float | None = None
            try:
                resp = self.session.post(self.endpoint, json=body, headers=headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                last_problem, last_status = f"{type(e).__name__}: {e}", None
                wait = self._backoff(attempt)
            else:
                status = resp.status_code
                last_status = status
                if status in (401, 403):
                    raise ShopifyAuthError(f"shop {self.shop_domain}: HTTP {status} {_short(resp.text)}",
                                           status=status)
                if status == 429:
                    last_problem = f"HTTP 429 {_short(resp.text)}"
                    wait = _retry_after(resp.headers.get("Retry-After"))
                    wait = (wait if wait is not None else self._backoff(attempt)) + self.rng.uniform(0.0, 0.1)
                elif status >= 500:
                    last_problem = f"HTTP {status} {_short(resp.text)}"
                    wait = self._backoff(attempt)
                elif status != 200:
                    raise ShopifyHTTPError(f"shop {self.shop_domain}: HTTP {status} {_short(resp.text)}",
                                           status=status, body=resp.text)
                else:
                    try:
                        payload = resp.json()
                    except ValueError:
                        payload = None
                    if not isinstance(payload, dict):
                        last_problem = f"non-JSON answer {_short(resp.text)}"
                        wait = self._backoff(attempt)
                    else:
                        ext_cost = (payload.get("extensions") or {}).get("cost")
                        self._record_cost(cost_key, ext_cost)
                        errors = payload.get("errors")
                        if not errors:
                            return payload.get("data") or {}
                        if isinstance(errors, str):
                            raise ShopifyGraphQLError(errors)
                        codes = {((e or {}).get("extensions") or {}).get("code") for e in errors}
                        if codes == {"THROTTLED"}:
                            last_problem = "THROTTLED"
                            requested = (ext_cost or {}).get("requestedQueryCost") or expected or 0
                            expected = float(requested) if requested else expected
                            est = self.estimated_available()
                            rate = (self._bucket or (0, 0, 0, 0))[2]
                            if requested and est is not None and rate > 0:
                                wait = min(MAX_THROTTLE_WAIT,
                                           max(0.0, (float(requested) - est) / rate) + self.rng.uniform(0.02, 0.1))
                            else:
                                wait = self._backoff(attempt)
                        else:
                            raise ShopifyGraphQLError(errors, payload.get("data"))
            if attempt >= self.max_retries:
                raise ShopifyTransientError(
                    f"shop {self.shop_domain}: giving up after {self.attempts} attempts: {last_problem}",
                    status=last_status, attempts=self.attempts)
            attempt += 1
            log.warning("shop %s: %s; retry %d/%d in %.2fs", self.shop_domain, last_problem, attempt,
                        self.max_retries, wait)
            self.sleep(wait)
            if last_problem == "THROTTLED":
                # We just slept for the points; don't sleep again on the pre-send estimate.
                expected = None

    def mutate(self, document_name_or_source: str, variables: Mapping[str, Any] | None, path: str, **kw) -> Any:
        """execute() + raise_for_user_errors(data, path); returns the mutation payload."""
        return raise_for_user_errors(self.execute(document_name_or_source, variables, **kw), path)

    # ------------------------------------------------------------------------- pagination

    def paginate(self, document: str, connection_path: str | Sequence[str],
                 variables: Mapping[str, Any] | None = None, *, after_variable: str = "after") -> Iterator[dict]:
        """Yield every node of the connection at `connection_path` (e.g. "orders"), following
        pageInfo.hasNextPage / endCursor through the `$after` variable."""
        vars_ = dict(variables or {})
        while True:
            data = self.execute(document, vars_)
            conn = _dig(data, connection_path)
            if conn is None:
                return
            if "nodes" in conn:
                yield from conn["nodes"]
            else:
                for edge in conn.get("edges") or []:
                    yield edge["node"]
            info = conn.get("pageInfo") or {}
            if not info.get("hasNextPage") or not info.get("endCursor"):
                return
            vars_[after_variable] = info["endCursor"]

    # ------------------------------------------------------------------------------- bulk

    def run_bulk_query(self, query_string: str, *, group_objects: bool = False) -> str:
        """Start a bulk query (bulkOperationRunQuery); returns the BulkOperation gid.

        `group_objects`: since API 2026-01 Shopify writes a nested connection's lines anywhere in the file unless
        grouping is asked for (grouped: each child right after its parent). Grouping makes the export slower on
        Shopify's side; ask for it only when the reader streams parent by parent."""
        payload = self.mutate("bulk_operation_run_query",
                              {"query": resolve_document(query_string), "groupObjects": group_objects},
                              "bulkOperationRunQuery")
        return payload["bulkOperation"]["id"]

    def running_bulk_query(self, query_string: str) -> str | None:
        """The id of this app's created-or-running bulk query whose document is `query_string`, else None: how a
        job adopts the export it started before crashing (before storing the id). Listed with bulkOperations
        filtered by status (documents/running_bulk_operations.graphql), which replaces the deprecated
        currentBulkOperation; since API 2026-01 up to five run at once, so the oldest match is the one a crashed
        attempt started."""
        ops = (self.execute("running_bulk_operations").get("bulkOperations") or {}).get("nodes") or []
        text = resolve_document(query_string).strip()
        same = [op for op in ops if op.get("type") == "QUERY" and op.get("status") in ("CREATED", "RUNNING")
                and (op.get("query") or "").strip() == text]
        if not same:
            return None

        def age(op: dict) -> tuple:
            tail = op["id"].rsplit("/", 1)[-1]
            return op.get("createdAt") or "", int(tail) if tail.isdigit() else 0

        return min(same, key=age)["id"]

    def start_or_adopt_bulk_query(self, query_string: str, *, group_objects: bool = False) -> str:
        """Start the bulk query, unless this same export is already running: the caller crashed after starting it
        but before storing its id. Since API 2026-01 Shopify runs up to five bulk queries at once, so a second
        start would not be refused, it would export everything twice; hence the look before starting. Shopify
        refusing (BULK_BUSY_CODES: five running, or one at a time before 2026-01) gets a second look, for an
        export started in between; otherwise the ShopifyUserError propagates (the caller decides: fail, or wait)."""
        adopted = self.running_bulk_query(query_string)
        if adopted is None:
            try:
                return self.run_bulk_query(query_string, group_objects=group_objects)
            except ShopifyUserError as exc:
                adopted = self.running_bulk_query(query_string) if BULK_BUSY_CODES & set(exc.codes) else None
                if adopted is None:
                    raise
        log.info("adopting bulk operation %s already in progress", adopted)
        return adopted

    def poll_bulk_operation(self, operation_id: str) -> dict:
        """Current state of a bulk operation: id type status errorCode objectCount rootObjectCount url
        partialDataUrl ..."""
        op = self.execute("bulk_operation_status", {"id": operation_id}).get("bulkOperation")
        if op is None:
            raise ShopifyBulkOperationError(f"bulk operation {operation_id} not found")
        return op

    def wait_for_bulk_operation(self, operation_id: str, *, poll_interval: float = 2.0,
                                max_interval: float = 30.0, timeout: float = 6 * 3600.0,
                                sleep: Callable[[float], None] | None = None) -> dict:
        """Poll until the operation is terminal. Returns it when COMPLETED, else raises ShopifyBulkOperationError
        (with errorCode and partialDataUrl)."""
        sleep = sleep or self.sleep
        deadline = self.clock() + timeout
        interval = poll_interval
        while True:
            op = self.poll_bulk_operation(operation_id)
            status = op.get("status")
            if status == "COMPLETED":
                return op
            if status in TERMINAL_BULK_STATUSES:
                raise ShopifyBulkOperationError(
                    f"bulk operation {operation_id} {status} ({op.get('errorCode')})", op)
            if self.clock() >= deadline:
                raise ShopifyBulkOperationError(f"bulk operation {operation_id} still {status} after {timeout}s", op)
            sleep(interval)
            interval = min(max_interval, interval * 1.5)

    def download_jsonl(self, url: str | None, *, parse: bool = True) -> Iterator[Any]:
        """Stream a bulk result file line by line (dicts, or raw str with parse=False). A COMPLETED operation with
        no results has url None: yields nothing. The URL is pre-signed storage: no access token is sent."""
        if not url:
            return
        resp = None
        for attempt in range(self.max_retries + 1):
            try:
                resp = requests.get(url, stream=True, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                problem = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    break
                problem = f"HTTP {resp.status_code}"
                resp.close()
                if resp.status_code < 500 and resp.status_code != 429:
                    raise ShopifyHTTPError(f"bulk result download failed: {problem}", status=resp.status_code)
            resp = None
            if attempt >= self.max_retries:
                raise ShopifyTransientError(f"bulk result download failed after {attempt + 1} attempts: {problem}",
                                            attempts=attempt + 1)
            self.sleep(self._backoff(attempt))
        with resp:
            for raw in resp.iter_lines(chunk_size=DOWNLOAD_CHUNK, decode_unicode=False):
                if not raw:
                    continue
                line = raw.decode("utf-8")
                yield _parse_line(line) if parse else line

    def staged_upload(self, content: bytes, *, filename: str = "bulk_op_vars.jsonl",
                      mime_type: str = "text/jsonl", resource: str = "BULK_MUTATION_VARIABLES") -> str:
        """stagedUploadsCreate + multipart POST of `content` to the returned target (parameters first, file last).
        Returns the staged upload path (the `key` parameter) for bulkOperationRunMutation."""
        payload = self.mutate("staged_uploads_create", {"input": [{
            "resource": resource, "filename": filename, "mimeType": mime_type, "httpMethod": "POST"}]},
            "stagedUploadsCreate")
        target = payload["stagedTargets"][0]
        params = [(p["name"], p["value"]) for p in target["parameters"]]
        key = next((v for n, v in params if n == "key"), None)
        if not key:
            raise ShopifyError("staged upload target has no `key` parameter")
        for attempt in range(self.max_retries + 1):
            try:
                resp = requests.post(target["url"], data=params,
                                     files={"file": (filename, io.BytesIO(content), mime_type)},
                                     timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                problem = f"{type(e).__name__}: {e}"
            else:
                if 200 <= resp.status_code < 300:
                    return key
                problem = f"HTTP {resp.status_code} {_short(resp.text)}"
                if resp.status_code < 500 and resp.status_code != 429:
                    raise ShopifyHTTPError(f"staged upload failed: {problem}", status=resp.status_code,
                                           body=resp.text)
            if attempt >= self.max_retries:
                raise ShopifyTransientError(f"staged upload failed after {attempt + 1} attempts: {problem}",
                                            attempts=attempt + 1)
            self.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

    def run_bulk_mutation(self, mutation_document: str, lines: Iterable[Mapping[str, Any]]) -> str:
        """Bulk mutation: one line of variables per call of `mutation_document` (a documents/ name or source).
        stagedUploadsCreate -> upload JSONL -> bulkOperationRunMutation. Returns the BulkOperation gid."""
        jsonl = "".join(json.dumps(dict(line), separators=(",", ":")) + "\n" for line in lines).encode("utf-8")
        path = self.staged_upload(jsonl)
        payload = self.mutate("bulk_operation_run_mutation",
                              {"mutation": resolve_document(mutation_document), "stagedUploadPath": path},
                              "bulkOperationRunMutation")
        return payload["bulkOperation"]["id"]


_scan_once = json.JSONDecoder().scan_once


def _parse_line(line: str) -> Any:
    """json.loads of one JSONL line without its wrapper layers (a quarter of the parse time over a million lines);
    anything unusual (surrounding whitespace, invalid JSON) goes through json.loads: same result or same error."""
    try:
        obj, end = _scan_once(line, 0)
    except StopIteration:
        return json.loads(line)
    return obj if end == len(line) else json.loads(line)


def bulk_orders_query(search: str | None = None) -> str:
    """documents/bulk_orders_query.graphql, optionally filtered with an orders search string
    (e.g. "updated_at:>='2026-01-01T00:00:00Z'")."""
    source = load_document("bulk_orders_query")
    if not search:
        return source
    marker = "orders(sortKey: UPDATED_AT)"
    if marker not in source:
        raise ValueError("bulk_orders_query.graphql no longer contains " + marker)
    return source.replace(marker, f"orders(sortKey: UPDATED_AT, query: {json.dumps(search)})", 1)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None   # HTTP-date form: Shopify sends seconds; fall back to backoff


def _short(text: str, n: int = 200) -> str:
    text = (text or "").strip().replace("\n", " ")
    return text if len(text) <= n else text[:n] + "..."
