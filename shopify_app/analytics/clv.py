"""Customer-lifetime-value models: BG/NBD (purchase counts, P(alive)) and Gamma-Gamma (spend per order).

Pure numpy/scipy/pandas. The time unit is whatever the caller uses for recency/T (days in the app, weeks for the
CDNOW check); every "t" argument is in that same unit.

Per-customer summary (as in Fader, Hardie & Lee 2005):
  frequency x  = number of REPEAT transactions = distinct transaction days - 1 (the app falls back to
                 orders_count - 1 when distinct order days are not known),
  recency  t_x = time from first to last transaction,
  T            = time from first transaction to the as-of date,
  monetary     = mean value of the repeat transactions (the app uses the mean per transaction day, see predictive).

BG/NBD (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way", Marketing Science 24(2)):
  LL_i = ln G(r+x) - ln G(r) + r ln(alpha)
         + logsumexp( lnB(a, b+x) - lnB(a,b) - (r+x) ln(alpha+T),
                      [x>0] lnB(a+1, b+x-1) - lnB(a,b) - (r+x) ln(alpha+t_x) )
  P(alive | x,t_x,T) = 1 / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))
  E[Y(t) | x,t_x,T]  = (a+b+x-1)/(a-1) [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)] / (1 + ...)
                       with z = t/(alpha+T+t)  (eq. 10 of the paper).
  We evaluate the 2F1 through Euler's transformation, which for these arguments gives
      ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; c; z) = (1-z)^(a-1) 2F1(a+b-1-r, a-1; c; z),
  whose numerator parameters do not grow with x: scipy's hyp2f1 is accurate there even for heavy buyers
  (x in the hundreds), where the direct form overflows.
Gamma-Gamma (Fader, Hardie & Lee 2005 "RFM and CLV", JMR 42(4); Fader & Hardie 2013 note 025), on repeat buyers:
  LL_i = ln G(px+q) - ln G(px) - ln G(q) + q ln gamma + (px-1) ln m + px ln x - (px+q) ln(gamma + x m)
  E[M | x, m] = p (gamma + x m) / (p x + q - 1)       (needs q > 1; population mean p gamma / (q-1)).
12-month CLV (discrete monthly sum, discounted at the END of each month):
  CLV = sum_{k=1..12} (E[Y(k D)|.] - E[Y((k-1) D)|.]) * E[M|.] / (1 + d)^k,
  D = length of a month in the model's time unit (30.4375 days), d = monthly discount rate (default 0.01).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, expit, gammaln, hyp2f1

DAYS_PER_MONTH = 365.25 / 12.0

# Log-parameter box for the optimiser: exp(+-9) = 1.2e-4 .. 8103. A parameter that ends on this box means the
# likelihood keeps improving towards 0 or infinity, i.e. a degenerate fit (reported, never silently used).
LOG_BOUND = 9.0
AT_BOUND_TOL = 0.05
# Mean per-transaction dropout probability a/(a+b) below this = "customers never drop out" (typical for
# wholesale data): P(alive) is then ~1 for everyone and useless for churn.
MIN_DROPOUT = 1e-3
SUBSAMPLE_ROWS = 20_000   # multi-start on at most this many distinct rows


def _arr(v) -> np.ndarray:
    return np.asarray(v, dtype=float)


# ---------------------------------------------------------------------------------------------- BG/NBD
def bgnbd_log_likelihood(params, frequency, recency, T) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood (vector). params = (r, alpha, a, b)."""
    r, alpha, a, b = (float(p) for p in params)
    x, tx, T = _arr(frequency), _arr(recency), _arr(T)
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    term1 = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
    # second term only exists for repeat buyers (dropout can only happen after a repeat purchase);
    # np.maximum keeps betaln's argument valid for x = 0, the mask removes the term.
    term2 = betaln(a + 1, b + np.maximum(x, 1) - 1) - betaln(a, b) - (r + x) * np.log(alpha + tx)
    term2 = np.where(x > 0, term2, -np.inf)
    return common + np.logaddexp(term1, term2)     # log-sum-exp of the two terms; exp(-inf) = 0 is exact


@dataclass
class FitIssue:
    code: str
    message: str


def _check_summary(frequency, recency, T):
    x, tx, T = _arr(frequency), _arr(recency), _arr(T)
    if not (x.shape == tx.shape == T.shape):
        raise ValueError("frequency, recency and T must have the same length")
    if np.any(x < 0) or np.any(tx < 0) or np.any(T < tx - 1e-9):
        raise ValueError("need frequency >= 0, 0 <= recency <= T")
    if np.any((x > 0) & (tx <= 0)):
        raise ValueError("repeat purchases need recency > 0 (count same-day orders as one transaction)")
    return x, tx, T


class BetaGeoModel:
    """BG/NBD fitted by maximum likelihood in log-parameter space (L-BFGS-B from several starts, Nelder-Mead
    polish). After fit: params_ (dict r, alpha, a, b), log_likelihood_, converged_, issues_ (list of FitIssue),
    degenerate_ (bool)."""

    param_names = ("r", "alpha", "a", "b")

    def __init__(self, n_starts: int = 4, tol: float = 1e-10):
        self.n_starts = n_starts
        self.tol = tol

    # -- fitting
    def fit(self, frequency, recency, T):
        x, tx, T = _check_summary(frequency, recency, T)
        if x.size == 0:
            raise ValueError("no customers")
        # Identical (x, t_x, T) rows share their likelihood: fit on unique rows with counts (big speed-up for
        # day-resolution data).
        rows, counts = np.unique(np.column_stack([x, tx, T]), axis=0, return_counts=True)
        ux, utx, uT = rows[:, 0], rows[:, 1], rows[:, 2]
        w = counts.astype(float)
        n = w.sum()

        def make_nll(ux, utx, uT, w):
            n_ = w.sum()

            def nll(logp):
                ll = bgnbd_log_likelihood(np.exp(logp), ux, utx, uT)
                v = -(w * ll).sum() / n_
                return v if np.isfinite(v) else 1e100
            return nll

        nll = make_nll(ux, utx, uT, w)
        # Big shops: pick the best start on a deterministic subsample (every k-th distinct row, weights kept),
        # then optimise on all rows from there only. Same optimum, a fraction of the time.
        m = len(ux)
        step = int(np.ceil(m / SUBSAMPLE_ROWS))
        start_nll = nll if step == 1 else make_nll(ux[::step], utx[::step], uT[::step], w[::step])

        # Starts: alpha scaled so that r/alpha matches the average purchase rate (unit-agnostic).
        rate = max(x.mean(), 0.05) / max(T.mean(), 1e-6)
        starts = [(1.0, 1.0 / rate, 1.0, 1.0), (0.5, 0.5 / rate, 0.5, 2.0),
                  (0.2, 0.2 / rate, 1.5, 5.0), (2.0, 2.0 / rate, 0.3, 0.5)][: max(1, self.n_starts)]
        bounds = [(-LOG_BOUND, LOG_BOUND)] * 4
        opts = {"maxiter": 2000, "ftol": self.tol, "gtol": 1e-8}
        best = None
        for s0 in starts:
            x0 = np.clip(np.log(s0), -LOG_BOUND + 0.5, LOG_BOUND - 0.5)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = minimize(start_nll, x0, method="L-BFGS-B", bounds=bounds, options=opts)
            if best is None or res.fun < best.fun:
                best = res
        if step > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                best = minimize(nll, best.x, method="L-BFGS-B", bounds=bounds, options=opts)
        # Polish with Nelder-Mead (derivative-free, robust when L-BFGS-B stops on a line-search failure).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nm = minimize(lambda lp: nll(np.clip(lp, -LOG_BOUND, LOG_BOUND)), best.x, method="Nelder-Mead",
                          options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 4000 if step == 1 else 800})
        final = nm if nm.fun <= best.fun else best
        logp = np.clip(final.x, -LOG_BOUND, LOG_BOUND)
        self._logp = logp
        self.params_ = dict(zip(self.param_names, (float(v) for v in np.exp(logp))))
        self.log_likelihood_ = float(-nll(logp) * n)
        # converged: an optimiser reported success and the two runs agree on the optimum.
        self.converged_ = bool((best.success or nm.success) and abs(nm.fun - best.fun) * n < 1e-2
                               and np.isfinite(self.log_likelihood_))
        self.n_customers_ = int(n)
        self.n_repeat_ = int((x > 0).sum())
        self.issues_ = self._diagnose(logp)
        if len(self.issues_) > 1:
            # A boundary/no-dropout optimum is flat, so the optimisers disagree: that is a symptom, not news.
            self.issues_ = [i for i in self.issues_ if i.code != "not_converged"]
        self.degenerate_ = any(i.code != "not_converged" for i in self.issues_) or not self.converged_
        return self

    def _diagnose(self, logp) -> list[FitIssue]:
        issues = []
        p = self.params_
        if not self.converged_:
            issues.append(FitIssue("not_converged", "The purchase model did not converge to a stable optimum."))
        at = [n for n, v in zip(self.param_names, logp) if abs(abs(v) - LOG_BOUND) < AT_BOUND_TOL]
        self.params_at_bounds_ = at
        if at:
            issues.append(FitIssue("at_bounds", "Purchase-model parameter(s) %s ran to the edge of the allowed "
                                   "range: the data cannot pin them down." % ", ".join(at)))
        dropout = p["a"] / (p["a"] + p["b"])
        if dropout < MIN_DROPOUT:
            issues.append(FitIssue(
                "no_dropout", "Customers in this shop almost never seem to stop buying (estimated chance of "
                "dropping out after an order %.3f%%), so the model cannot tell active from lapsed customers."
                % (100 * dropout)))
        return issues

    @classmethod
    def from_params(cls, params: dict):
        m = cls()
        m.params_ = {k: float(params[k]) for k in cls.param_names}
        m.converged_, m.issues_, m.degenerate_ = True, [], False
        return m

    def _p(self):
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]

    # -- predictions
    def conditional_probability_alive(self, frequency, recency, T) -> np.ndarray:
        """P(alive at T | x, t_x, T). Equals 1 for x = 0 by the BG/NBD assumption (dropout only happens right
        after a repeat purchase) -- callers must not read it as evidence that one-time buyers are active."""
        r, alpha, a, b = self._p()
        x, tx, T = _arr(frequency), _arr(recency), _arr(T)
        log_odds = (np.log(a) - np.log(b + np.maximum(x, 1) - 1)
                    + (r + x) * (np.log(alpha + T) - np.log(alpha + tx)))
        return np.where(x > 0, expit(-log_odds), 1.0)

    def _one_minus_term(self, t, x, T):
        """(a-1)^-1 * (1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)), Euler-transformed."""
        r, alpha, a, b = self._p()

        def f(a_):
            z = t / (alpha + T + t)
            term = np.exp((a_ - 1) * np.log1p(-z)) * hyp2f1(a_ + b - 1 - r, a_ - 1, a_ + b + x - 1, z)
            return (1 - term) / (a_ - 1)

        if abs(a - 1) < 1e-4:   # removable singularity at a = 1: average both sides
            return 0.5 * (f(1 - 1e-4) + f(1 + 1e-4))
        return f(a)

    def conditional_expected_purchases(self, t, frequency, recency, T) -> np.ndarray:
        """E[# purchases in (T, T+t] | x, t_x, T] (eq. 10)."""
        r, alpha, a, b = self._p()
        x, tx, T = _arr(frequency), _arr(recency), _arr(T)
        t = np.broadcast_to(_arr(t), x.shape) if x.ndim else _arr(t)
        t = np.asarray(t, dtype=float)
        out = (a + b + x - 1) * self._one_minus_term(t, x, T)
        out = out * self.conditional_probability_alive(x, tx, T)
        return np.where(t > 0, np.maximum(out, 0.0), 0.0)

    def purchase_rate_if_alive(self, frequency, recency, T) -> np.ndarray:
        """E[lambda | alive, x, T] = (r + x)/(alpha + T): the purchase rate of a customer known to be alive (the
        Gamma-Poisson posterior mean). Upper bound of the expected purchase rate: E[Y(t)] <= this * t, because
        E[Y(t)] = P(alive) * E[Y(t) | alive] and an alive customer can still drop out during (T, T+t]."""
        r, alpha, a, b = self._p()
        return (r + _arr(frequency)) / (alpha + _arr(T))

    def expected_purchases_population(self, t) -> np.ndarray:
        """E[X(t)] for a randomly chosen new customer (eq. 9)."""
        r, alpha, a, b = self._p()
        t = _arr(t)
        z = np.zeros_like(t)
        return (a + b - 1) * self._one_minus_term(t, z, z)

    def median_time_to_next_purchase(self, frequency, recency, T) -> np.ndarray:
        """Median wait until the next purchase, GIVEN the customer is alive. In BG/NBD an alive customer buys
        again for sure (dropout only happens right after a purchase) and lambda | history ~ Gamma(r+x, alpha+T),
        so the wait is Lomax: P(W > w) = ((alpha+T)/(alpha+T+w))^(r+x); median = (alpha+T)(2^(1/(r+x)) - 1).
        (The mean (alpha+T)/(r+x-1) is infinite for r+x <= 1, hence the median.)"""
        r, alpha, a, b = self._p()
        x, T = _arr(frequency), _arr(T)
        return (alpha + T) * np.expm1(np.log(2.0) / (r + x))

    def to_dict(self) -> dict:
        return {"model": "bgnbd", "params": dict(self.params_),
                "log_likelihood": getattr(self, "log_likelihood_", None),
                "converged": bool(self.converged_), "issues": [i.__dict__ for i in self.issues_]}


# ---------------------------------------------------------------------------------------------- Gamma-Gamma
def gamma_gamma_log_likelihood(params, frequency, monetary_value) -> np.ndarray:
    p, q, g = (float(v) for v in params)
    x, m = _arr(frequency), _arr(monetary_value)
    px = p * x
    return (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(g)
            + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(g + x * m))


class GammaGammaModel:
    """Gamma-Gamma spend model on repeat buyers (frequency > 0, monetary > 0; others are ignored in the fit).
    params_ = dict(p, q, gamma)."""

    param_names = ("p", "q", "gamma")

    def fit(self, frequency, monetary_value):
        x, m = _arr(frequency), _arr(monetary_value)
        keep = (x > 0) & (m > 0) & np.isfinite(m)
        x, m = x[keep], m[keep]
        if x.size == 0:
            raise ValueError("Gamma-Gamma needs at least one repeat buyer with positive spend")
        n = x.size

        def nll(lp):
            v = -gamma_gamma_log_likelihood(np.exp(lp), x, m).sum() / n
            return v if np.isfinite(v) else 1e100

        scale = float(np.mean(m))
        best = None
        for s in [(1.0, 1.0, scale), (5.0, 3.0, scale), (0.5, 2.0, 0.1 * scale), (2.0, 10.0, 5 * scale)]:
            x0 = np.clip(np.log(s), -LOG_BOUND + 0.5, LOG_BOUND - 0.5)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = minimize(nll, x0, method="L-BFGS-B", bounds=[(-LOG_BOUND, LOG_BOUND)] * 2
                               + [(-LOG_BOUND, max(LOG_BOUND, math.log(scale) + 6))],
                               options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8})
            if best is None or res.fun < best.fun:
                best = res
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nm = minimize(nll, best.x, method="Nelder-Mead",
                          options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 4000})
        final = nm if nm.fun <= best.fun else best
        self.params_ = dict(zip(self.param_names, (float(v) for v in np.exp(final.x))))
        self.log_likelihood_ = float(-final.fun * n)
        self.converged_ = bool((best.success or nm.success) and abs(nm.fun - best.fun) * n < 1e-2)
        self.n_repeat_ = int(n)
        # Gamma-Gamma assumes spend per order is independent of frequency; a strong correlation is worth saying.
        self.freq_monetary_corr_ = float(np.corrcoef(x, m)[0, 1]) if n > 2 and np.std(m) > 0 else 0.0
        issues = []
        if not self.converged_:
            issues.append(FitIssue("not_converged", "The spend model did not converge."))
        lp = np.log([self.params_[k] for k in self.param_names])
        if np.any(np.abs(np.abs(lp[:2]) - LOG_BOUND) < AT_BOUND_TOL):
            issues.append(FitIssue("at_bounds", "Spend-model parameters ran to the edge of the allowed range."))
        if self.params_["q"] <= 1.0:
            issues.append(FitIssue("q_le_1", "Order values vary so much between customers (q = %.2f <= 1) that "
                                   "the model's average spend is undefined." % self.params_["q"]))
        self.issues_ = issues
        self.degenerate_ = bool(issues)
        return self

    @classmethod
    def from_params(cls, params: dict):
        m = cls()
        m.params_ = {k: float(params[k]) for k in cls.param_names}
        m.converged_, m.issues_, m.degenerate_ = True, [], False
        return m

    def population_mean_spend(self) -> float:
        p, q, g = (self.params_[k] for k in self.param_names)
        return p * g / (q - 1) if q > 1 else float("nan")

    def conditional_expected_average_profit(self, frequency, monetary_value) -> np.ndarray:
        """E[M | x, m] = p(gamma + x m)/(p x + q - 1): a weighted mix of the population mean p gamma/(q-1)
        and the customer's observed mean m. For x = 0 (or missing m) it is the population mean."""
        p, q, g = (self.params_[k] for k in self.param_names)
        x, m = _arr(frequency), _arr(monetary_value)
        m = np.where(np.isfinite(m) & (x > 0), m, 0.0)
        x = np.where(m > 0, x, 0.0)
        return p * (g + x * m) / (p * x + q - 1)

    def to_dict(self) -> dict:
        return {"model": "gamma_gamma", "params": dict(self.params_),
                "log_likelihood": getattr(self, "log_likelihood_", None), "converged": bool(self.converged_),
                "issues": [i.__dict__ for i in self.issues_]}


# ---------------------------------------------------------------------------------------------- fallback
class EmpiricalRepeatModel:
    """Simple model for shops too small (or too odd) for BG/NBD. Same prediction interface.

    gap_i   = (t_x + G) / (x + 1): the customer's mean gap between transactions, shrunk towards the shop's
              typical gap G (median t_x/x over repeat buyers; `default_gap` when there are none),
    P(alive)= pi_i / (1 + (T - t_x) / gap_i): decays with the silence since the last order, measured in the
              customer's own gaps; hyperbolic rather than exp(-s/gap) because the true gap is uncertain (a gamma
              mixture of exponentials has this heavy tail), and on Online Retail it ranks holdout buyers better
              (AUC 0.696 vs 0.684). pi_i = 1 for repeat buyers and the shop's repeat-buyer share for one-time
              buyers (they have not shown they come back),
    E[Y(t)] = P(alive) * t / gap_i.
    """

    def __init__(self, default_gap: float = 90.0):
        self.default_gap = default_gap

    def fit(self, frequency, recency, T):
        x, tx, T = _check_summary(frequency, recency, T)
        rep = x > 0
        self.gap_ = float(np.median(tx[rep] / x[rep])) if rep.any() else float(self.default_gap)
        self.gap_ = max(self.gap_, 1e-6)
        self.repeat_share_ = float(np.clip(rep.mean() if x.size else 0.0, 0.05, 1.0))
        self.params_ = {"gap": self.gap_, "repeat_share": self.repeat_share_}
        self.converged_, self.issues_, self.degenerate_ = True, [], False
        return self

    def _gap(self, x, tx):
        return (tx + self.gap_) / (x + 1)

    def conditional_probability_alive(self, frequency, recency, T):
        x, tx, T = _arr(frequency), _arr(recency), _arr(T)
        pi = np.where(x > 0, 1.0, self.repeat_share_)
        return pi / (1.0 + (T - tx) / self._gap(x, tx))

    def purchase_rate_if_alive(self, frequency, recency, T):
        return 1.0 / self._gap(_arr(frequency), _arr(recency))

    def conditional_expected_purchases(self, t, frequency, recency, T):
        x, tx, T = _arr(frequency), _arr(recency), _arr(T)
        return self.conditional_probability_alive(x, tx, T) * self.purchase_rate_if_alive(x, tx, T) * _arr(t)

    def median_time_to_next_purchase(self, frequency, recency, T):
        x, tx = _arr(frequency), _arr(recency)
        return np.log(2.0) * self._gap(x, tx)   # exponential waiting time with the customer's gap as mean

    def to_dict(self):
        return {"model": "empirical", "params": dict(self.params_)}


class NBDRecencyModel:
    """Fallback when BG/NBD degenerates to "nobody drops out" (a/(a+b) -> 0) but r, alpha are well determined.

    That limit of BG/NBD is the NBD model: the purchase-count part is still informative, only P(alive) is not
    (it is ~1 for everyone). So P(alive) comes from the EmpiricalRepeatModel recency heuristic, and everything
    else is conditioned on it, like in BG/NBD (E[Y(t)] = P(alive) * E[Y(t) | alive]):
      rate given alive  = (r + x)/(alpha + T)       (Gamma-Poisson posterior mean; the exact p -> 0 limit of
                                                     BG/NBD eq. 10 divided by P(alive) = 1),
      E[Y(t) | x,t_x,T] = P(alive) * (r + x)/(alpha + T) * t.
    Without the P(alive) factor a long-silent frequent buyer showed P(alive) ~ 0 next to a large 12-month CLV
    ("likely churned, but worth 2,000 next year"); with it, every number shown (P(alive), expected purchases,
    CLV, churn band, value x risk quadrant) comes from the same two-part model. Median wait to the next purchase
    is given the customer is alive, as in BG/NBD."""

    def __init__(self, bg: "BetaGeoModel", recency_model: "EmpiricalRepeatModel"):
        self.r, self.alpha = bg.params_["r"], bg.params_["alpha"]
        self.recency_model = recency_model
        self.params_ = {"r": self.r, "alpha": self.alpha, **recency_model.params_}
        self.converged_, self.issues_, self.degenerate_ = True, [], False

    def conditional_probability_alive(self, frequency, recency, T):
        return self.recency_model.conditional_probability_alive(frequency, recency, T)

    def purchase_rate_if_alive(self, frequency, recency, T):
        x, T = _arr(frequency), _arr(T)
        return (self.r + x) / (self.alpha + T)

    def conditional_expected_purchases(self, t, frequency, recency, T):
        return (self.conditional_probability_alive(frequency, recency, T)
                * self.purchase_rate_if_alive(frequency, recency, T) * _arr(t))

    def median_time_to_next_purchase(self, frequency, recency, T):
        x, T = _arr(frequency), _arr(T)
        return (self.alpha + T) * np.expm1(np.log(2.0) / (self.r + x))

    def to_dict(self):
        return {"model": "nbd_recency", "params": dict(self.params_)}


def shrunk_average_spend(frequency, monetary_value, prior_weight: float = 1.0):
    """Fallback for Gamma-Gamma: (x m + k mbar)/(x + k), the customer's mean shrunk to the shop mean."""
    x, m = _arr(frequency), _arr(monetary_value)
    ok = np.isfinite(m) & (m > 0)
    mbar = float(np.mean(m[ok])) if ok.any() else 0.0
    mm = np.where(ok, m, mbar)
    xx = np.where(ok, x, 0.0)
    return (xx * mm + prior_weight * mbar) / (xx + prior_weight)


# ---------------------------------------------------------------------------------------------- CLV
def customer_lifetime_value(purchase_model, frequency, recency, T, expected_spend, months: int = 12,
                            monthly_discount_rate: float = 0.01, period_length: float = DAYS_PER_MONTH):
    """CLV = sum_{k=1..months} (E[Y(k D)] - E[Y((k-1) D)]) * spend / (1+d)^k, D = period_length in the purchase
    model's time unit (30.4375 for days, 4.348 for weeks)."""
    x, tx, T = _arr(frequency), _arr(recency), _arr(T)
    spend = _arr(expected_spend)
    total = np.zeros(np.broadcast(x, spend).shape)
    prev = np.zeros_like(total)
    for k in range(1, months + 1):
        cum = purchase_model.conditional_expected_purchases(k * period_length, x, tx, T)
        total = total + (cum - prev) * spend / (1.0 + monthly_discount_rate) ** k
        prev = cum
    return total


# ---------------------------------------------------------------------------------------------- summaries
def summary_from_transactions(transactions: pd.DataFrame, customer_col: str, date_col: str, value_col: str,
                              observation_end, unit_days: float = 1.0) -> pd.DataFrame:
    """Per-customer (frequency, recency, T, monetary_value) from a transaction log, calibration through
    `observation_end` (inclusive). Transactions on the same calendar day are one transaction (the papers'
    convention); monetary_value = mean daily spend over the REPEAT days (0 for one-time buyers)."""
    df = transactions[[customer_col, date_col, value_col]].copy()
    df[date_col] = pd.to_datetime(df[date_col]).dt.normalize()
    end = pd.Timestamp(observation_end).normalize()
    df = df[df[date_col] <= end]
    daily = df.groupby([customer_col, date_col], sort=True)[value_col].sum().reset_index()
    first = daily.groupby(customer_col)[date_col].transform("min")
    daily["is_first"] = daily[date_col] == first
    g = daily.groupby(customer_col)
    out = pd.DataFrame({
        "frequency": g.size() - 1,
        "recency": (g[date_col].max() - g[date_col].min()).dt.days / unit_days,
        "T": (end - g[date_col].min()).dt.days / unit_days,
    })
    rep = daily[~daily["is_first"]].groupby(customer_col)[value_col].mean()
    out["monetary_value"] = rep.reindex(out.index).fillna(0.0)
    return out
