"""BG/NBD and Gamma-Gamma: likelihood by hand, the published CDNOW fits, predictions, degenerate fits."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import hyp2f1

from shopify_app.analytics.clv import (BetaGeoModel, EmpiricalRepeatModel, GammaGammaModel, NBDRecencyModel,
                                       bgnbd_log_likelihood,
                                       customer_lifetime_value, gamma_gamma_log_likelihood,
                                       summary_from_transactions)

DATA = Path(__file__).resolve().parents[1] / "data" / "cdnow"
PUBLISHED_BG = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}


@pytest.fixture(scope="module")
def cdnow_summary():
    tx = pd.read_csv(DATA / "CDNOW_sample.txt", sep=r"\s+", header=None,
                     names=["master_id", "id", "date", "cds", "usd"], dtype={"date": str})
    tx["date"] = pd.to_datetime(tx["date"], format="%Y%m%d")
    return summary_from_transactions(tx, "id", "date", "usd", "1997-09-30", unit_days=7)


@pytest.fixture(scope="module")
def cdnow_bg(cdnow_summary):
    s = cdnow_summary
    return BetaGeoModel().fit(s["frequency"], s["recency"], s["T"])


# ------------------------------------------------------------------------------------------ likelihood by hand
def test_loglik_one_time_buyer_by_hand():
    # x = 0: L = (alpha / (alpha + T))^r  ->  0.5 * ln(2/9)
    ll = bgnbd_log_likelihood((0.5, 2.0, 0.8, 3.0), [0], [0], [7.0])
    assert ll[0] == pytest.approx(0.5 * math.log(2 / 9), rel=1e-12)
    assert ll[0] == pytest.approx(-0.752039, abs=1e-6)


def test_loglik_repeat_buyer_by_hand():
    # x = 1: L = r a^r/(a+T)^(r+1) * b/(a+b) + r a^r/(a+t_x)^(r+1) * a/(a+b), written with plain math.
    r, al, a, b, tx, T = 0.5, 2.0, 0.8, 3.0, 5.0, 10.0
    L = (r * al ** r / (al + T) ** (r + 1) * b / (a + b) + r * al ** r / (al + tx) ** (r + 1) * a / (a + b))
    ll = bgnbd_log_likelihood((r, al, a, b), [1], [tx], [T])
    assert ll[0] == pytest.approx(math.log(L), rel=1e-12)
    assert ll[0] == pytest.approx(-3.84118, abs=1e-4)
    # x = 3 against the general formula with math.gamma / beta (no log-space tricks)
    x = 3
    B = lambda u, v: math.gamma(u) * math.gamma(v) / math.gamma(u + v)
    G = math.gamma(r + x) * al ** r / math.gamma(r)
    L3 = (B(a, b + x) / B(a, b) * G / (al + T) ** (r + x) + B(a + 1, b + x - 1) / B(a, b) * G / (al + tx) ** (r + x))
    assert bgnbd_log_likelihood((r, al, a, b), [x], [tx], [T])[0] == pytest.approx(math.log(L3), rel=1e-12)


def test_loglik_stable_for_heavy_buyers():
    ll = bgnbd_log_likelihood((0.3, 40.0, 0.5, 5.0), [500, 2000], [360.0, 365.0], [365.0, 365.0])
    assert np.all(np.isfinite(ll))


def test_gamma_gamma_loglik_by_hand():
    # x = 1: the mean is one Gamma(p, nu) draw, nu ~ Gamma(q, gamma): f(m) = G(p+q)/(G(p)G(q)) g^q m^(p-1)/(g+m)^(p+q)
    p, q, g, m = 2.0, 3.0, 10.0, 4.0
    f = math.gamma(p + q) / (math.gamma(p) * math.gamma(q)) * g ** q * m ** (p - 1) / (g + m) ** (p + q)
    assert gamma_gamma_log_likelihood((p, q, g), [1], [m])[0] == pytest.approx(math.log(f), rel=1e-12)


# ------------------------------------------------------------------------------------------ CDNOW
def test_cdnow_summary_matches_reference(cdnow_summary):
    ref = pd.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv").set_index("ID")
    s = cdnow_summary.loc[ref.index]
    assert len(s) == 2357
    assert (s["frequency"].values == ref["x"].values).all()
    assert np.abs(s["recency"].values - ref["t_x"].values).max() < 0.01     # reference rounded to 2 decimals
    assert np.abs(s["T"].values - ref["T"].values).max() < 0.01
    assert np.abs(s["monetary_value"].values - ref["zbar"].values).max() < 0.01


def test_cdnow_bgnbd_matches_published(cdnow_bg):
    assert cdnow_bg.converged_ and not cdnow_bg.degenerate_
    for k, v in PUBLISHED_BG.items():
        assert cdnow_bg.params_[k] == pytest.approx(v, rel=0.01), k
    assert cdnow_bg.log_likelihood_ == pytest.approx(-9582.4, abs=0.5)


def test_cdnow_gamma_gamma_matches_published(cdnow_summary):
    s = cdnow_summary
    gg = GammaGammaModel().fit(s["frequency"], s["monetary_value"])
    assert gg.n_repeat_ == 946 and not gg.degenerate_
    for k, v in PUBLISHED_GG.items():
        assert gg.params_[k] == pytest.approx(v, rel=0.01), k
    # E[M | x, m] is a weighted mean of the population mean and the observed mean
    pop = gg.population_mean_spend()
    e = gg.conditional_expected_average_profit([0, 1, 50], [0.0, 100.0, 100.0])
    assert e[0] == pytest.approx(pop)
    assert pop < e[1] < e[2] < 100.0


def test_population_expectation_matches_direct_formula_and_simulation(cdnow_bg):
    r, al, a, b = (cdnow_bg.params_[k] for k in ("r", "alpha", "a", "b"))
    t = np.array([10.0, 39.0, 78.0])
    direct = (a + b - 1) / (a - 1) * (1 - (al / (al + t)) ** r * hyp2f1(r, b, a + b - 1, t / (al + t)))
    assert np.allclose(cdnow_bg.expected_purchases_population(t), direct, rtol=1e-9)
    # new customer (x=0, T=0) conditional expectation == population expectation
    assert np.allclose(cdnow_bg.conditional_expected_purchases(t, [0] * 3, [0] * 3, [0] * 3), direct, rtol=1e-9)
    # Monte Carlo of the BG/NBD story: purchases at rate lambda, after each one drop out with prob p.
    rng = np.random.default_rng(7)
    n, horizon = 200_000, 39.0
    lam, p = rng.gamma(r, 1 / al, n), rng.beta(a, b, n)
    clock, alive, count = np.zeros(n), np.ones(n, bool), np.zeros(n)
    for _ in range(400):
        clock = clock + rng.exponential(1 / np.maximum(lam, 1e-12))
        buy = alive & (clock <= horizon)
        count += buy
        alive = buy & (rng.random(n) >= p)
        if not alive.any():
            break
    assert count.mean() == pytest.approx(cdnow_bg.expected_purchases_population(horizon), rel=0.03)


def test_conditional_expectation_direct_vs_euler_and_heavy_buyers(cdnow_bg):
    r, al, a, b = (cdnow_bg.params_[k] for k in ("r", "alpha", "a", "b"))
    x, tx, T, t = np.array([1.0, 3.0, 7.0]), np.array([10.0, 30.0, 35.0]), np.array([38.0, 38.0, 38.0]), 39.0
    hyp = hyp2f1(r + x, b + x, a + b + x - 1, t / (al + T + t))
    num = (a + b + x - 1) / (a - 1) * (1 - ((al + T) / (al + T + t)) ** (r + x) * hyp)
    den = 1 + a / (b + x - 1) * ((al + T) / (al + tx)) ** (r + x)
    assert np.allclose(cdnow_bg.conditional_expected_purchases(t, x, tx, T), num / den, rtol=1e-8)
    big = cdnow_bg.conditional_expected_purchases(39.0, [400.0], [38.0], [38.5])
    assert np.isfinite(big).all() and 100 < big[0] < 1000      # ~ 400 purchases / 38.5 weeks * 39 weeks
    # P(alive): 1 for one-time buyers (model assumption), falls with silence since the last purchase
    pa = cdnow_bg.conditional_probability_alive([0, 5, 5], [0, 37, 5], [38, 38, 38])
    assert pa[0] == 1.0 and pa[1] > 0.8 and pa[2] < 0.2


def test_a_near_one_is_finite():
    m = BetaGeoModel.from_params({"r": 0.5, "alpha": 10.0, "a": 1.0 + 1e-7, "b": 2.0})
    m2 = BetaGeoModel.from_params({"r": 0.5, "alpha": 10.0, "a": 1.01, "b": 2.0})
    v, v2 = m.conditional_expected_purchases(30.0, [2], [20], [40]), m2.conditional_expected_purchases(30.0, [2], [20], [40])
    assert np.isfinite(v).all() and v[0] == pytest.approx(v2[0], rel=0.02)


def test_clv_discrete_monthly_sum(cdnow_bg):
    # CLV with a constant spend equals spend * sum_k (E[Y(k D)] - E[Y((k-1) D)]) / (1+d)^k, computed here by hand.
    D, d, spend = 52 / 12, 0.01, 20.0
    f, tx, T = np.array([2.0]), np.array([30.0]), np.array([38.0])
    cum = [0.0] + [cdnow_bg.conditional_expected_purchases(k * D, f, tx, T)[0] for k in range(1, 13)]
    hand = sum((cum[k] - cum[k - 1]) * spend / (1 + d) ** k for k in range(1, 13))
    got = customer_lifetime_value(cdnow_bg, f, tx, T, spend, monthly_discount_rate=d, period_length=D)
    assert got[0] == pytest.approx(hand, rel=1e-12)
    undiscounted = customer_lifetime_value(cdnow_bg, f, tx, T, spend, monthly_discount_rate=0.0, period_length=D)
    assert undiscounted[0] == pytest.approx(cum[12] * spend) and undiscounted[0] > got[0]


# ------------------------------------------------------------------------------------------ degenerate fits
def test_no_dropout_data_is_flagged_degenerate():
    # Pure Poisson buyers who never leave: the likelihood runs to a/(a+b) -> 0.
    rng = np.random.default_rng(0)
    n = 1500
    lam, T = rng.gamma(2.0, 1 / 20.0, n), rng.uniform(100, 400, n)
    k = rng.poisson(lam * T)
    tx = np.array([np.sort(rng.uniform(0, T[i], k[i]))[-1] if k[i] else 0.0 for i in range(n)])
    m = BetaGeoModel().fit(k, tx, T)
    codes = {i.code for i in m.issues_}
    assert m.degenerate_ and "no_dropout" in codes
    assert any("stop buying" in i.message for i in m.issues_)


def test_gamma_gamma_q_below_one_is_flagged():
    rng = np.random.default_rng(1)
    n = 2000
    nu, x = rng.gamma(0.7, 1 / 10.0, n), rng.integers(1, 6, n)
    m = np.array([rng.gamma(2.0, 1 / nu[i], x[i]).mean() for i in range(n)])
    gg = GammaGammaModel().fit(x, m)
    assert gg.params_["q"] <= 1 and gg.degenerate_
    assert [i.code for i in gg.issues_] == ["q_le_1"]
    assert np.isnan(gg.population_mean_spend())


def test_well_specified_simulation_is_not_degenerate():
    rng = np.random.default_rng(3)
    n = 3000
    lam, p, T = rng.gamma(0.8, 1 / 30.0, n), rng.beta(1.0, 4.0, n), rng.uniform(100, 500, n)
    x, tx = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i]:
                break
            x[i] += 1
            tx[i] = t
            if rng.random() < p[i]:
                break
    m = BetaGeoModel().fit(x, tx, T)
    assert not m.degenerate_, m.issues_
    assert m.params_["r"] == pytest.approx(0.8, rel=0.25) and m.params_["a"] / (m.params_["a"] + m.params_["b"]) == \
        pytest.approx(0.2, abs=0.06)


def test_empirical_fallback_is_sane():
    m = EmpiricalRepeatModel().fit([0, 2, 5], [0, 40, 100], [200, 60, 110])
    pa = m.conditional_probability_alive([0, 2, 5], [0, 40, 100], [200, 60, 110])
    assert np.all((pa >= 0) & (pa <= 1)) and pa[2] > pa[0]
    e = m.conditional_expected_purchases(90.0, [0, 2, 5], [0, 40, 100], [200, 60, 110])
    assert np.all(e >= 0) and e[2] > e[0]


def test_nbd_fallback_is_the_no_dropout_limit_of_bgnbd():
    # a/(a+b) -> 0: BG/NBD's conditional expectation tends to the NBD one, (r + x)/(alpha + T) * t
    bg = BetaGeoModel.from_params({"r": 0.7, "alpha": 60.0, "a": 1e-6, "b": 1e3})
    nbd = NBDRecencyModel(bg, EmpiricalRepeatModel().fit([0, 3, 10], [0, 100, 300], [50, 200, 310]))
    x, tx, T = np.array([0.0, 3.0, 10.0]), np.array([0.0, 100.0, 300.0]), np.array([50.0, 200.0, 310.0])
    want = (0.7 + x) / (60.0 + T) * 90.0
    # the rate while active is the NBD limit of BG/NBD (whose P(alive) -> 1 here) ...
    assert np.allclose(nbd.purchase_rate_if_alive(x, tx, T) * 90.0, want)
    assert np.allclose(bg.conditional_expected_purchases(90.0, x, tx, T), want, rtol=1e-3)
    # ... and the fallback's expectation is conditioned on its own (recency-based) P(alive)
    pa = nbd.conditional_probability_alive(x, tx, T)
    assert np.all(pa < 0.99)
    assert np.allclose(nbd.conditional_expected_purchases(90.0, x, tx, T), pa * want)


# ------------------------------------------------------------------------------------------ coherence
def _nbd_recency(fit_x=(10, 10, 0), fit_tx=(100, 100, 0), fit_T=(400, 110, 50)):
    bg = BetaGeoModel.from_params({"r": 0.7, "alpha": 60.0, "a": 1e-4, "b": 8103.0})   # Online-Retail-like
    return NBDRecencyModel(bg, EmpiricalRepeatModel().fit(list(fit_x), list(fit_tx), list(fit_T)))


def test_nbd_fallback_long_silent_frequent_buyer_by_hand():
    """The product bug: P(alive) ~ 0 from recency next to a big CLV from the purchase rate. By hand:
    shop gap G = median(t_x/x) = 10 days. Both customers bought on 11 days (x = 10) over their first 100 days,
    so gap_i = (100 + 10)/11 = 10 days. A has then been silent for 300 days, B for 10 days (T = 400 vs 110).
      P(alive) A = 1/(1 + 300/10) = 1/31,           B = 1/(1 + 10/10) = 1/2
      rate     A = (0.7 + 10)/(60 + 400) = 10.7/460, B = 10.7/170           (per day, while active)
      E[90 d]  A = 90 * 10.7 / (31 * 460) = 963/14260 = 0.06753,  B = 963/340 = 2.83235
      CLV 12 m at spend 100, d = 1 %/month: P * rate * 30.4375 * 100 * sum_{k=1..12} 1.01^-k
               (sum = (1 - 1.01^-12)/0.01 = 11.25508): A = 25.705, B = 1078.11."""
    m = _nbd_recency()
    x, tx, T = np.array([10.0, 10.0]), np.array([100.0, 100.0]), np.array([400.0, 110.0])
    pa = m.conditional_probability_alive(x, tx, T)
    assert pa == pytest.approx([1 / 31, 1 / 2])
    e90 = m.conditional_expected_purchases(90.0, x, tx, T)
    assert e90 == pytest.approx([963 / 14260, 963 / 340])
    clv = customer_lifetime_value(m, x, tx, T, np.array([100.0, 100.0]), months=12, monthly_discount_rate=0.01)
    annuity = (1 - 1.01 ** -12) / 0.01
    assert annuity == pytest.approx(11.25508, abs=1e-5)
    want = np.array([1 / 31 * 10.7 / 460, 1 / 2 * 10.7 / 170]) * (365.25 / 12) * 100 * annuity
    assert clv == pytest.approx(want) and clv == pytest.approx([25.705, 1078.11], abs=1e-2)
    # before the fix A's CLV was rate-only, 31 times higher: "P(alive) 3 %, but worth 797 next year"
    rate_only = 10.7 / 460 * (365.25 / 12) * 100 * annuity
    assert rate_only == pytest.approx(796.86, abs=0.01) and clv[0] * 31 == pytest.approx(rate_only)


def _random_histories(seed, n=400, T_max=500.0):
    rng = np.random.default_rng(seed)
    T = rng.uniform(1, T_max, n)
    x = rng.integers(0, 40, n).astype(float)
    tx = np.where(x > 0, T * rng.uniform(0.01, 1, n), 0.0)
    return x, tx, T


def _all_models(cdnow_bg):
    """(model, time unit scale) for the three purchase models: CDNOW BG/NBD (weeks), both fallbacks (days)."""
    x, tx, T = _random_histories(1)
    emp = EmpiricalRepeatModel().fit(x, tx, T)
    return [(cdnow_bg, 1 / 7.0), (emp, 1.0), (_nbd_recency(x, tx, T), 1.0)]


def test_expected_purchases_never_exceed_p_alive_times_rate_times_horizon(cdnow_bg):
    for model, unit in _all_models(cdnow_bg):
        x, tx, T = _random_histories(2)
        tx, T = tx * unit, T * unit
        pa = model.conditional_probability_alive(x, tx, T)
        rate = model.purchase_rate_if_alive(x, tx, T)
        assert np.all((pa >= 0) & (pa <= 1)) and np.all(rate > 0)
        for t in (30.0 * unit, 90.0 * unit, 365.0 * unit):
            e = model.conditional_expected_purchases(t, x, tx, T)
            assert np.all(e >= 0)
            assert np.all(e <= rate * t * (1 + 1e-9)), type(model).__name__
            assert np.all(e <= pa * rate * t * (1 + 1e-9)), type(model).__name__


def test_expected_purchases_and_clv_monotone_in_p_alive_for_equal_histories(cdnow_bg):
    """Same number of purchases and same customer age, only the date of the last purchase differs: the more
    likely alive, the more expected purchases and the higher the CLV -- in every model."""
    for model, unit in _all_models(cdnow_bg):
        for xi in (1.0, 4.0, 25.0):
            T = np.full(60, 300.0 * unit)
            tx = np.linspace(1.0, 300.0, 60) * unit
            x = np.full(60, xi)
            pa = model.conditional_probability_alive(x, tx, T)
            e = model.conditional_expected_purchases(90.0 * unit, x, tx, T)
            clv = customer_lifetime_value(model, x, tx, T, 50.0, period_length=365.25 / 12 * unit)
            order = np.argsort(pa, kind="stable")
            assert np.all(np.diff(pa[order]) >= 0)
            assert np.all(np.diff(e[order]) >= -1e-12), type(model).__name__
            assert np.all(np.diff(clv[order]) >= -1e-9), type(model).__name__
            assert pa[0] < pa[-1] and e[0] < e[-1]


def test_bgnbd_expectation_is_p_alive_times_expectation_if_alive(cdnow_bg):
    """BG/NBD eq. 10 already includes P(alive): E[Y(t)] = P(alive) * E[Y(t) | alive]. Check E[Y(t) | alive]
    (eq. 10 / P(alive)) by simulation: given alive, lambda ~ Gamma(r+x, alpha+T), p ~ Beta(a, b+x); in (T, T+t]
    the customer buys N ~ Poisson(lambda t) times unless he drops out after the G-th purchase, G ~ Geometric(p):
    Y = min(N, G). It depends on x and T only, not on t_x."""
    r, alpha, a, b = (cdnow_bg.params_[k] for k in ("r", "alpha", "a", "b"))
    rng = np.random.default_rng(5)
    n = 400_000
    for x, T, t in ((2.0, 30.0, 39.0), (7.0, 38.0, 52.0), (0.0, 20.0, 39.0)):
        lam = rng.gamma(r + x, 1.0 / (alpha + T), n)
        p = rng.beta(a, b + x, n)
        y = np.minimum(rng.poisson(lam * t), rng.geometric(p))
        sim, se = y.mean(), y.std() / math.sqrt(n)
        for tx in ((0.0,) if x == 0 else (1.0, T / 2, T)):
            pa = cdnow_bg.conditional_probability_alive(x, tx, T)
            e = cdnow_bg.conditional_expected_purchases(t, x, tx, T)
            assert e / pa == pytest.approx(sim, abs=4 * se), (x, tx, T)
            assert e <= pa * cdnow_bg.purchase_rate_if_alive(x, tx, T) * t


def test_prediction_invariants_on_random_histories(cdnow_bg):
    rng = np.random.default_rng(9)
    n = 500
    T = rng.uniform(0, 80, n)
    x = rng.integers(0, 30, n).astype(float)
    tx = np.where(x > 0, T * rng.uniform(0.01, 1, n), 0.0)
    pa = cdnow_bg.conditional_probability_alive(x, tx, T)
    assert np.all((pa >= 0) & (pa <= 1))
    e = np.array([cdnow_bg.conditional_expected_purchases(t, x, tx, T) for t in (1.0, 10.0, 52.0)])
    assert np.all(np.isfinite(e)) and np.all(np.diff(e, axis=0) >= -1e-12) and np.all(e >= 0)
    # more recent last purchase (same x, T) -> more likely alive and more expected purchases
    pa_old = cdnow_bg.conditional_probability_alive(x, tx * 0.5, T)
    assert np.all(pa_old[x > 0] <= pa[x > 0] + 1e-12)
