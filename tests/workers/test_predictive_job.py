"""Predictive refit job: DB in, predictions + models out, per tenant; idempotent; never blocks webhooks."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from rq.job import Job
from sqlalchemy import func, insert, select

from shopify_app.models import CustomerPrediction, CustomerStats, Shop, ShopModel
from shopify_app.queues import WEBHOOKS, enqueue, redis_connection
from tests.conftest import wait_for
from workers import context
from workers import predictive_jobs as pj

AS_OF = "2026-06-30T00:00:00"
AS_OF_DT = dt.datetime(2026, 6, 30)
TYPES = ["shirts", "shoes", "hats", "bags", "socks"]


def synthetic_stats(shop_id: int, n: int, seed: int = 7, start_id: int = 1000) -> list[dict]:
    """Deterministic BG/NBD-like customers: gamma purchase rates, beta dropout after each order."""
    rng = np.random.RandomState(seed)
    lam = rng.gamma(0.9, 1 / 30.0, n)            # orders per day
    p = rng.beta(1.0, 4.0, n)                    # dropout chance after each order
    out = []
    for i in range(n):
        first = float(rng.uniform(20, 600))      # days before as_of
        times = [0.0]
        while rng.rand() > p[i]:
            nxt = times[-1] + rng.exponential(1 / lam[i])
            if nxt > first:
                break
            times.append(nxt)
        orders = len(times)
        aov = float(rng.gamma(5, 12))
        net = round(aov * orders, 2)
        pre = round(net * 1.15, 2)
        main = TYPES[i % len(TYPES)]
        out.append(dict(
            shop_id=shop_id, customer_id=start_id + i,
            first_order_at=AS_OF_DT - dt.timedelta(days=first),
            last_order_at=AS_OF_DT - dt.timedelta(days=first - times[-1]),
            orders_count=orders, gross_revenue=net, refunded=0.0, net_revenue=net,
            discounted_orders=int(rng.binomial(orders, 0.3)), discount_total=round(pre - net, 2),
            pre_discount_total=pre, refunded_orders=int(rng.rand() < 0.05), items_count=2 * orders,
            product_type_counts={main: 2 * orders, TYPES[(i * 3 + 1) % len(TYPES)]: int(rng.poisson(1))}))
    return out


def seed_shop(session, shop_id: int, n: int, seed: int = 7, status: str = "active") -> list[dict]:
    session.add(Shop(id=shop_id, domain=f"shop{shop_id}.myshopify.com", status=status))
    session.flush()
    rows = synthetic_stats(shop_id, n, seed=seed)
    if rows:
        session.execute(insert(CustomerStats), rows)
    session.commit()
    return rows


@pytest.fixture
def job_config(config):
    context.set_config(config)
    yield config
    context.set_config(None)


def predictions(session, shop_id: int) -> dict[int, CustomerPrediction]:
    session.expire_all()
    out = {p.customer_id: p for p in session.scalars(
        select(CustomerPrediction).where(CustomerPrediction.shop_id == shop_id))}
    session.commit()   # end the read transaction: on SQLite it holds the write lock the job needs
    return out


def shop_models(session, shop_id: int) -> dict[str, ShopModel]:
    session.expire_all()
    out = {m.kind: m for m in session.scalars(select(ShopModel).where(ShopModel.shop_id == shop_id))}
    session.commit()
    return out


def test_refit_writes_predictions_and_models_idempotently_per_tenant(session, job_config):
    seed_shop(session, 1, 150, seed=7)
    other = seed_shop(session, 2, 60, seed=11)       # same customer ids as shop 1: must never mix
    # shop 2 already has (stale) predictions and a model of its own: the shop 1 refit must not touch them
    session.add(CustomerPrediction(shop_id=2, customer_id=other[0]["customer_id"], p_alive=0.123,
                                   model_version="other-v9", fitted_at=dt.datetime(2026, 1, 1)))
    session.add(ShopModel(shop_id=2, kind="kmeans", version=7, status="ok", params={"marker": True}))
    # a customer of shop 1 with a prediction but no stats any more (redacted): its row must go
    session.add(CustomerPrediction(shop_id=1, customer_id=999_999, p_alive=0.5, model_version="old"))
    session.commit()

    first = pj.refit_predictions(1, AS_OF)
    assert first["customers"] == 150 and first["customers_total"] == 150
    assert first["status"] in {"ok", "fallback"} and first["message"]
    assert first["deleted"] == 1

    preds = predictions(session, 1)
    assert set(preds) == {1000 + i for i in range(150)}
    for p in preds.values():
        assert p.model_version == first["model_version"] and p.model_version.startswith("predictive-v1/")
        assert p.fitted_at is not None and 0.0 <= p.p_alive <= 1.0
        assert p.churn_band in {"low", "medium", "high"}
        assert p.value_risk_quadrant in {"protect", "win_back", "grow", "low_priority"}
        assert p.cluster_id is not None and p.cluster_name
    assert len({p.cluster_id for p in preds.values()}) >= 2      # 150 varied customers: real clusters

    models = shop_models(session, 1)
    assert set(models) == {"bgnbd", "gamma_gamma", "kmeans"}
    assert all(m.version == 1 and m.customers_at_fit == 150 for m in models.values())
    assert models["bgnbd"].status == "ok" and models["bgnbd"].params["params"]["r"] > 0
    assert models["gamma_gamma"].status in {"ok", "fallback"}
    km = models["kmeans"]
    assert km.status == "ok" and km.params["centroids"] and km.params["features"]   # full model for assign()

    # second run on the same data: same rows, same numbers, versions + 1, warm-started clusters keep their ids
    second = pj.refit_predictions(1, AS_OF)
    preds2 = predictions(session, 1)
    assert second["customers"] == 150 and second["deleted"] == 0 and set(preds2) == set(preds)
    models2 = shop_models(session, 1)
    assert all(m.version == 2 for m in models2.values())
    assert second["model_version"] != first["model_version"]
    for cid, p in preds2.items():
        assert p.model_version == second["model_version"]
        assert p.p_alive == pytest.approx(preds[cid].p_alive)
        assert p.clv_12m == pytest.approx(preds[cid].clv_12m)
        assert p.cluster_id == preds[cid].cluster_id
    assert session.scalar(select(func.count()).select_from(CustomerPrediction)
                          .where(CustomerPrediction.shop_id == 1)) == 150
    session.commit()

    # tenant isolation: shop 2 untouched
    preds_other = predictions(session, 2)
    assert set(preds_other) == {other[0]["customer_id"]}
    assert preds_other[other[0]["customer_id"]].p_alive == 0.123
    assert preds_other[other[0]["customer_id"]].model_version == "other-v9"
    m2 = shop_models(session, 2)
    assert set(m2) == {"kmeans"} and m2["kmeans"].version == 7 and m2["kmeans"].params == {"marker": True}

    # a customer leaves shop 1: its prediction goes on the next refit, the others stay
    session.execute(CustomerStats.__table__.delete().where(CustomerStats.shop_id == 1,
                                                           CustomerStats.customer_id == 1000))
    session.commit()
    third = pj.refit_predictions(1, AS_OF)
    assert third["customers"] == 149 and third["deleted"] == 1
    assert 1000 not in predictions(session, 1) and len(predictions(session, 2)) == 1


def test_tiny_shop_falls_back_with_readable_message(session, job_config):
    seed_shop(session, 3, 5, seed=3)
    out = pj.refit_predictions(3, AS_OF)
    assert out["status"] == "fallback" and out["customers"] == 5
    assert "Not enough history" in out["message"]
    models = shop_models(session, 3)
    assert set(models) == {"bgnbd", "gamma_gamma", "kmeans"}
    assert all(m.status == "fallback" for m in models.values())
    assert "Not enough history" in models["bgnbd"].message and "5 customers" in models["bgnbd"].message
    assert "repeat buyers" in models["gamma_gamma"].message
    assert "everyone is in one group" in models["kmeans"].message
    preds = predictions(session, 3)
    assert len(preds) == 5 and all(p.p_alive is not None and p.cluster_name == "All customers"
                                   for p in preds.values())


def test_uninstalled_and_unknown_shops_are_skipped(session, job_config):
    seed_shop(session, 4, 30, seed=4, status="uninstalled")
    assert pj.refit_predictions(4, AS_OF)["status"] == "skipped"
    assert pj.refit_predictions(12345, AS_OF)["status"] == "skipped"
    assert predictions(session, 4) == {} and shop_models(session, 4) == {}


def test_assign_cluster_now_uses_stored_model(session, job_config):
    rows = seed_shop(session, 5, 150, seed=5)
    pj.refit_predictions(5, AS_OF)
    before = predictions(session, 5)
    km_version = shop_models(session, 5)["kmeans"].version

    # existing customer: same stats -> assigned to the cluster the fit gave them (no refit)
    cid = rows[10]["customer_id"]
    got = pj.assign_cluster_now(session, 5, cid, as_of=AS_OF_DT)
    session.commit()
    assert got["cluster_id"] == before[cid].cluster_id and got["cluster_name"] == before[cid].cluster_name

    # a brand-new customer between refits gets a cluster right away
    new = dict(rows[20], customer_id=77_777)
    session.execute(insert(CustomerStats), [new])
    got = pj.assign_cluster_now(session, 5, 77_777, as_of=AS_OF_DT)
    session.commit()
    assert got is not None
    p = predictions(session, 5)[77_777]
    assert p.cluster_id == got["cluster_id"] and p.cluster_name == got["cluster_name"] and p.p_alive is None
    assert shop_models(session, 5)["kmeans"].version == km_version       # no refit happened
    assert pj.assign_cluster_now(session, 6, cid) is None                 # no model for that shop


def test_refit_all_shops_enqueues_active_shops_once(session, job_config):
    seed_shop(session, 7, 0)
    seed_shop(session, 8, 0, status="uninstalled")
    seed_shop(session, 9, 0)
    out = pj.refit_all_shops()
    assert out["shop_ids"] == [7, 9]
    conn = redis_connection(job_config.redis_url)
    job = Job.fetch("refit-predictions-7", connection=conn)
    assert job.func_name == "workers.predictive_jobs.refit_predictions" and job.args == (7,)
    assert job.get_status() == "queued"
    # running it again while the jobs are still queued does not queue duplicates
    pj.refit_all_shops()
    from shopify_app.queues import MODELS, get_queue
    assert sorted(get_queue(job_config, MODELS).job_ids) == ["refit-predictions-7", "refit-predictions-9"]


def test_fitting_does_not_block_webhook_processing(session, config, worker_process):
    n = 20_000
    seed_shop(session, 10, n, seed=10)
    conn = redis_connection(config.redis_url)
    worker_process("models")
    worker_process("webhooks")

    refit = pj.enqueue_refit(config, 10)
    wait_for(lambda: Job.fetch(refit.id, connection=conn).get_status() == "started", timeout=20,
             message="the refit to start")
    ping = enqueue(config, WEBHOOKS, "workers.maintenance.ping", "webhook")

    def ping_done():
        return Job.fetch(ping.id, connection=conn).get_status() == "finished"

    wait_for(ping_done, timeout=15, message="the webhooks job to finish")
    # the webhook job went through while the refit was still fitting
    assert Job.fetch(refit.id, connection=conn).get_status() == "started"
    assert Job.fetch(ping.id, connection=conn).return_value()["token"] == "webhook"

    wait_for(lambda: Job.fetch(refit.id, connection=conn).get_status() in ("finished", "failed"), timeout=40,
             interval=0.2, message="the refit to finish")
    done = Job.fetch(refit.id, connection=conn)
    assert done.get_status() == "finished", done.latest_result().exc_string if done.latest_result() else None
    pinged = Job.fetch(ping.id, connection=conn)
    assert done.started_at < pinged.ended_at < done.ended_at           # by the jobs' own clocks too
    assert done.return_value()["customers"] == n
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(CustomerPrediction)
                          .where(CustomerPrediction.shop_id == 10)) == n
