"""Settings page: validation with errors next to the field, saving to Shop.settings, recompute enqueue."""
from __future__ import annotations

from rq import Queue
from sqlalchemy import select

from shopify_app.db import session_scope
from shopify_app.models import Shop
from shopify_app.queues import queue_name, redis_connection
from tests.web.conftest import SHOP_A, make_shop, page, token
from tests.web.htmltools import parse

VALID = {"segment_scheme": "rfm11", "min_segment_size": "25", "rules_window_months": "6", "min_support": "0.01",
         "min_count": "3", "min_confidence": "0.2", "sequential_days": "30"}


def stored(db_url) -> dict:
    with session_scope(db_url) as s:
        return dict(s.scalar(select(Shop.settings).where(Shop.domain == SHOP_A)) or {})


def post(client, data, path="/settings"):
    return client.post(f"{path}?shop={SHOP_A}&host=aG9zdA&embedded=1", data={**data, "id_token": token()})


def test_settings_form_shows_current_values(client, db_url):
    with session_scope(db_url) as s:
        make_shop(s, SHOP_A, settings={"min_segment_size": 77, "tag_prefix": "vip"})
    root = parse(client.get(page("/settings")).get_data(as_text=True))
    form = root.testid("settings-form")
    assert form.find("input", id="f-min_segment_size").attrs["value"] == "77"
    assert form.find("input", id="f-min_support").attrs["value"] == "0.005"              # default
    assert form.find("select", id="f-segment_scheme").find("option", selected=True).attrs["value"] == "default"
    for name in VALID:                                                                    # every field labelled
        assert any(lbl.attrs.get("for") == f"f-{name}" for lbl in form.find_all("label"))


def test_invalid_input_shows_errors_next_to_fields_and_saves_nothing(client, db_url):
    with session_scope(db_url) as s:
        make_shop(s, SHOP_A, settings={"min_segment_size": 77})
    resp = post(client, {**VALID, "min_support": "0", "min_count": "many", "segment_scheme": "zodiac"})
    assert resp.status_code == 400
    root = parse(resp.get_data(as_text=True))
    assert "3 fields" in root.testid("settings-errors").text
    assert "greater than 0" in root.testid("error-min_support").text
    assert "not a valid int" in root.testid("error-min_count").text
    assert "must be one of default, rfm11" in root.testid("error-segment_scheme").text
    field = root.find("input", id="f-min_support")
    assert field.attrs["aria-invalid"] == "true" and "e-min_support" in field.attrs["aria-describedby"]
    assert field.attrs["value"] == "0"                                # the submitted value is kept
    assert root.find("input", id="f-min_segment_size").attrs["value"] == "25"
    assert root.find(data_testid="error-min_segment_size") is None
    assert stored(db_url) == {"min_segment_size": 77}


def test_valid_input_is_saved(client, db_url):
    with session_scope(db_url) as s:
        make_shop(s, SHOP_A, settings={"tag_prefix": "vip"})
    resp = post(client, VALID)
    assert resp.status_code == 200
    root = parse(resp.get_data(as_text=True))
    assert "Settings saved" in root.testid("settings-saved").text
    assert root.find("select", id="f-segment_scheme").find("option", selected=True).attrs["value"] == "rfm11"
    assert stored(db_url) == {"tag_prefix": "vip", "segment_scheme": "rfm11", "min_segment_size": 25,
                              "rules_window_months": 6, "min_support": 0.01, "min_count": 3,
                              "min_confidence": 0.2, "sequential_days": 30}
    # the pages now read the new scheme and minimum size
    summary = client.get("/api/summary", headers={"Authorization": f"Bearer {token()}"}).json
    assert (summary["scheme"], summary["min_segment_size"]) == ("rfm11", 25)


def test_recompute_enqueues_the_rebuild_job(client, db_url, config):
    with session_scope(db_url) as s:
        shop_id = make_shop(s, SHOP_A).id
    resp = post(client, {}, path="/settings/recompute")
    assert resp.status_code == 200
    assert "Recompute started" in parse(resp.get_data(as_text=True)).testid("recompute-success").text
    q = Queue(queue_name(config.queue_prefix, "default"), connection=redis_connection(config.redis_url))
    assert [(j.func_name, j.args) for j in q.get_jobs()] == [("workers.rebuild_jobs.recompute_shop", (shop_id,))]


def test_recompute_with_redis_down_is_a_clear_error(app, client, db_url, config):
    with session_scope(db_url) as s:
        make_shop(s, SHOP_A)
    app.config["APP_CONFIG"] = config.replace(redis_url="redis://127.0.0.1:1/0")
    resp = post(client, {}, path="/settings/recompute")
    assert resp.status_code == 503
    assert "cannot be reached" in parse(resp.get_data(as_text=True)).testid("recompute-error").text


def test_recompute_needs_a_token(client, db_url, config):
    with session_scope(db_url) as s:
        make_shop(s, SHOP_A)
    assert client.post(f"/settings/recompute?shop={SHOP_A}").status_code == 401
    q = Queue(queue_name(config.queue_prefix, "default"), connection=redis_connection(config.redis_url))
    assert q.get_jobs() == []
