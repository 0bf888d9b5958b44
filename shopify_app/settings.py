"""Per-shop analytics settings (stored as JSON in `Shop.settings`), with defaults and validation.

One place for every knob the merchant can turn on the Settings page and every job reads, so the UI, the jobs and
the docs agree. Pure: no Flask, Redis or SQLAlchemy. Unknown keys in the stored JSON are ignored; a stored value
that no longer validates falls back to its default (settings written by an older version never break a job).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

SEGMENT_SCHEMES = ("default", "rfm11")


class SettingsError(ValueError):
    """A submitted value is invalid; `field` names the setting (the form shows the message next to it)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ShopSettings:
    # Segments
    segment_scheme: str = "default"        # default (8 action segments) | rfm11 (the widely used 11-segment map)
    min_segment_size: int = 50             # segments with fewer customers are flagged "too small to act on"
    rfm_refit_change_share: float = 0.10   # refit the RFM quintiles when the customer count moved by this share
    # Association rules
    rules_window_months: int = 12          # rolling window of order months the rules use; 0 = all time
    min_support: float = 0.005             # share of baskets containing the pair
    min_count: int = 5                     # and at least this many baskets
    min_confidence: float = 0.0            # rules below are not shown as suggestions
    sequential_days: int = 14              # "bought B within N days after A"
    max_basket_items: int = 0              # 0 = exact (no cap); see README, "Very large orders"
    # Activation (tag sync, next wave)
    tag_prefix: str = "sb"                 # customer tags are written as "<prefix>:<segment>"

    @classmethod
    def from_stored(cls, stored: dict | None) -> "ShopSettings":
        """Stored JSON -> settings; invalid or unknown stored values fall back to the defaults."""
        out = cls()
        for f in fields(cls):
            if stored and f.name in stored:
                try:
                    out = out.updated({f.name: stored[f.name]})
                except SettingsError:
                    pass
        return out

    def updated(self, values: dict) -> "ShopSettings":
        """A copy with `values` (strings from a form are accepted) validated; raises SettingsError."""
        changes = {}
        types = {f.name: f.type for f in fields(self)}
        for name, raw in values.items():
            if name not in types:
                raise SettingsError(name, "unknown setting")
            changes[name] = _coerce(name, raw, getattr(self, name))
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def _coerce(name: str, raw, default):
    try:
        if isinstance(default, bool):
            value = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "on", "yes")
        elif isinstance(default, int):
            value = int(str(raw).strip()) if not isinstance(raw, int) else raw
        elif isinstance(default, float):
            value = float(str(raw).strip()) if not isinstance(raw, (int, float)) else float(raw)
        else:
            value = str(raw).strip()
    except (TypeError, ValueError):
        raise SettingsError(name, f"{raw!r} is not a valid {type(default).__name__}") from None
    _check(name, value)
    return value


def _check(name: str, v) -> None:
    bounds = {
        "min_segment_size": (1, 1_000_000), "rules_window_months": (0, 120), "min_count": (1, 1_000_000),
        "sequential_days": (1, 365), "max_basket_items": (0, 10_000),
    }
    if name == "segment_scheme" and v not in SEGMENT_SCHEMES:
        raise SettingsError(name, f"must be one of {', '.join(SEGMENT_SCHEMES)}")
    if name in bounds:
        lo, hi = bounds[name]
        if not lo <= v <= hi:
            raise SettingsError(name, f"must be between {lo} and {hi}")
    if name in ("min_support", "min_confidence", "rfm_refit_change_share") and not 0.0 <= v <= 1.0:
        raise SettingsError(name, "must be between 0 and 1")
    if name == "min_support" and v <= 0.0:
        raise SettingsError(name, "must be greater than 0")
    if name == "tag_prefix" and not (1 <= len(v) <= 20 and v.replace("-", "").replace("_", "").isalnum()):
        raise SettingsError(name, "1-20 letters, digits, - or _")


def shop_settings(shop) -> ShopSettings:
    """Settings of a Shop row (anything with a `.settings` dict)."""
    return ShopSettings.from_stored(getattr(shop, "settings", None))
