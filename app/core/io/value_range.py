"""How stored values become reflectance in [0, 1]: one decision, used by every reader and by compare.

Order of evidence (design/protocols.md, "Metric conventions"):

1. what the file states: ENVI ``reflectance scale factor`` / ``data gain values`` / ``data offset
   values``, a ``maxValue`` / ``max_value`` scalar stored beside the cube, HDF5/NetCDF
   ``scale_factor`` / ``add_offset``, the project's own sidecar;
2. a known dataset convention: CAVE 16-bit PNG bands / 65535, 8-bit bands / 255; sensor
   products known to store reflectance x 10000 (EnMAP L2A, AVIRIS(-NG) reflectance, PRISMA L2
   without its scale attributes: :func:`product_convention`), recognised from the file's own
   metadata, never from its path;
3. otherwise, for integer data or floats far outside [0, 1] (above ``FLOAT_UNIT_LIMIT``): the
   literature's rule for real scenes, divide by the maximum of the cube (a GT's own maximum), and
   say so. Floats up to that limit are reflectance already (reconstructions overshoot a little).
   int16/uint16 data whose maximum lies in ``SCALED_REFLECTANCE_MAX`` look like a reflectance
   product stored x 10000: the rule stays, with a loud warning (``LOUD``) that says how to override.

A prediction goes onto its GT's scale (:func:`decide_prediction`): it may be stored as float in
[0, 1] (overshoot allowed), in the GT's own units (the GT's divisor applies), or as 0-255 / 0-65535
data; the candidate whose mean is nearest the GT's mean wins (never the maximum alone, which a few
overshooting pixels decide). Every decision carries its rule in words, and warnings when the
result looks wrong: a maximum far below 1 (``DARK_LIMIT``), or a mean ``MEAN_RATIO_LIMIT`` times
away from the GT's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

FLOAT_UNIT_LIMIT = 4.0      # floats up to this maximum are taken as reflectance (overshoot allowed)
FIT_TOLERANCE = 1.5         # a standard range (0-255, 0-65535, a stated scale) fits up to 50 % overshoot
DARK_LIMIT = 0.2            # warn when the maximum after the rule is below this
MEAN_RATIO_LIMIT = 2.0      # warn when a prediction's mean is this many times away from its GT's
STANDARD_DIVISORS = {"8bit": 255.0, "16bit": 65535.0}
REFLECTANCE_PRODUCT_DIVISOR = 10000.0   # EnMAP L2A, AVIRIS(-NG) L2, PRISMA L2 without a stated scale
SCALED_REFLECTANCE_MAX = (2000.0, 10000.0)  # int16/uint16 maxima that look like reflectance x 10000
LOUD = "ASSUMPTION"  # warnings starting with this word are also logged when the file is opened
RULES = ("user", "stated", "convention", "unit", "max", "gt-scale", "8bit", "16bit")


class RangeUndecided(ValueError):
    """No rule fits the values: the caller names the file and the option that decides."""


@dataclass(frozen=True)
class ValueRange:
    """reflectance = stored * ``multiplier`` + ``offset``; ``rule`` is a key of RULES, ``text`` the rule
    in words (shown in tables, ``info`` and the viewer), ``warnings`` what looks wrong."""

    multiplier: float
    offset: float = 0.0
    rule: str = "unit"
    text: str = "floating-point values taken as reflectance"
    warnings: tuple[str, ...] = field(default=())

    @property
    def divisor(self) -> float:
        return 1.0 / self.multiplier if self.multiplier else math.inf

    def with_warnings(self, more) -> "ValueRange":
        return ValueRange(self.multiplier, self.offset, self.rule, self.text, tuple(self.warnings) + tuple(more))


def parse_user_range(value) -> str | float:
    """A user's choice ('auto', 'none', 'max', 'unit', '8bit', '16bit' or a positive number) checked."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        text = str(value).strip().lower()
        if text in ("auto", "none", "max", "unit", "8bit", "16bit"):
            return text
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"a value range is auto, none, max, unit, 8bit, 16bit or a positive number, "
                             f"not {value!r}") from None
    if not (number > 0 and math.isfinite(number)):  # inf would turn every value into 0, nan into nan
        raise ValueError(f"the divisor must be a positive finite number, got {value!r}")
    return number


def _dtype_words(dtype) -> str:
    return np.dtype(dtype).newbyteorder("=").name


def _user_range(user, dtype, max_of: Callable[[], float], flag: str) -> ValueRange | None:
    what = _dtype_words(dtype)
    if isinstance(user, float):
        return ValueRange(1.0 / user, 0.0, "user", f"{what} values divided by {user:g} (forced by {flag} {user:g})")
    if user == "none":
        return ValueRange(1.0, 0.0, "user", f"{what} values used as they are (forced by {flag} none)")
    if user == "unit":
        return ValueRange(1.0, 0.0, "unit", f"{what} values taken as [0, 1] (forced by {flag} unit)")
    if user in STANDARD_DIVISORS:
        d = STANDARD_DIVISORS[user]
        return ValueRange(1.0 / d, 0.0, user, f"{what} values taken as 0-{d:g} (forced by {flag} {user})")
    if user == "max":
        vmax = float(max_of())
        if not (vmax > 0 and math.isfinite(vmax)):
            return ValueRange(1.0, 0.0, "user", f"{what} values used as they are (their maximum {vmax:g} is not "
                                                 f"positive; forced by {flag} max)")
        return ValueRange(1.0 / vmax, 0.0, "max", f"{what} values divided by their maximum {vmax:g} (forced by {flag} max)")
    return None


def decide(dtype, *, max_of: Callable[[], float], stated: ValueRange | None = None,
           convention: ValueRange | None = None, user="auto", flag: str = "--normalise",
           sample_max: float | None = None) -> ValueRange:
    """The range of a cube on its own (a GT, or any cube opened for viewing).

    Args:
        dtype: the stored dtype.
        max_of: returns the exact maximum of the stored values (called only when a rule needs it:
            it may read the whole file).
        stated: the rule the file states (step 1), or None.
        convention: a dataset convention that applies (step 2), or None.
        user: 'auto' or a user's choice (see :func:`parse_user_range`).
        flag: the option that overrides, named in the texts.
        sample_max: the maximum of a sample of the values, enough to tell floats in [0, 1] from
            floats far outside (avoids a pass over a big file of reflectance floats).
    """
    user = parse_user_range(user)
    forced = _user_range(user, dtype, max_of, flag)
    if forced is not None:
        return _dark_warning(forced, max_of if forced.rule != "max" else None)
    if stated is not None:
        return stated
    if convention is not None:
        return convention
    kind = np.dtype(dtype).kind
    what = _dtype_words(dtype)
    if kind == "b":
        return ValueRange(1.0, 0.0, "unit", "boolean values taken as 0/1")
    if kind == "f":
        probe = sample_max if sample_max is not None else float(max_of())
        if not math.isfinite(probe) or probe <= FLOAT_UNIT_LIMIT:
            return ValueRange(1.0, 0.0, "unit", f"{what} values taken as reflectance")
    vmax = float(max_of())
    if not (vmax > 0 and math.isfinite(vmax)):
        return ValueRange(1.0, 0.0, "unit", f"{what} values used as they are (maximum {vmax:g}; nothing to scale)")
    chosen = ValueRange(1.0 / vmax, 0.0, "max",
                        f"{what} values divided by their maximum {vmax:g} (the file states no scale: the literature's "
                        f"rule for real scenes; {flag} NUMBER overrides)")
    return chosen.with_warnings(scaled_reflectance_warning(dtype, vmax, flag))


def scaled_reflectance_warning(dtype, vmax: float, flag: str = "--normalise") -> list[str]:
    """The loud one-line warning for int16/uint16 data without a stated scale whose maximum lies in
    ``SCALED_REFLECTANCE_MAX`` (below 10000: at 10000 both rules agree): such files are usually a
    reflectance product stored x 10000 (EnMAP, AVIRIS, PRISMA exports) whose metadata was lost,
    and dividing by the maximum would brighten them by 10000 / maximum."""
    low, high = SCALED_REFLECTANCE_MAX
    if np.dtype(dtype).newbyteorder("=") not in (np.dtype(np.int16), np.dtype(np.uint16)) or not low <= vmax < high:
        return []
    d = REFLECTANCE_PRODUCT_DIVISOR
    return [f"{LOUD}: {_dtype_words(dtype)} without a stated scale, maximum {vmax:g} (between {low:g} and {d:g}): "
            f"this looks like reflectance x {d:g}, but it is divided by its maximum as the literature does "
            f"(values {d / vmax:.3g}x higher than /{d:g}); if it is reflectance x {d:g}, open it with {flag} {d:g}"]


def product_convention(product: str, divisor: float = REFLECTANCE_PRODUCT_DIVISOR, evidence: str = "") -> ValueRange:
    """The rule of a sensor product known to store reflectance x ``divisor`` (step 2: a convention)."""
    return ValueRange(1.0 / divisor, 0.0, "convention",
                      f"stored values divided by {divisor:g} ({product} stores reflectance x {divisor:g}"
                      + (f"; recognised from {evidence}" if evidence else "") + ")")


def _dark_warning(chosen: ValueRange, max_of: Callable[[], float] | None) -> ValueRange:
    if max_of is None:
        return chosen
    vmax = float(max_of()) * chosen.multiplier + chosen.offset
    if math.isfinite(vmax) and 0 < vmax < DARK_LIMIT:
        return chosen.with_warnings([f"after this rule the values reach only {vmax:.3g}: far below 1, check the "
                                     f"range"])
    return chosen


def decide_prediction(dtype, *, max_value: float, mean_value: float, gt: ValueRange, gt_mean: float | None,
                      stated: ValueRange | None = None, user="auto", flag: str = "--pred-range") -> ValueRange:
    """The range of a prediction compared with a GT read with ``gt`` (its reflectance mean ``gt_mean``).

    ``max_value`` / ``mean_value``: of the stored prediction values (finite ones). Candidates: float in
    [0, 1] (overshoot allowed), the GT's own units (the GT's multiplier and offset), 0-255 and
    0-65535 data, the file's stated rule; the one that brings the mean nearest the GT's wins.
    Raises RangeUndecided when none fits."""
    user = parse_user_range(user)
    forced = _user_range(user, dtype, lambda: max_value, flag)
    if forced is not None:
        return forced.with_warnings(_mean_warnings(forced, mean_value, gt_mean, flag))
    what = _dtype_words(dtype)
    candidates: list[ValueRange] = []
    if stated is not None and max_value * stated.multiplier + stated.offset <= FIT_TOLERANCE:
        candidates.append(ValueRange(stated.multiplier, stated.offset, "stated", f"{stated.text} (stated by the file)"))
    is_float = np.dtype(dtype).kind == "f"
    if is_float and max_value <= FLOAT_UNIT_LIMIT:
        candidates.append(ValueRange(1.0, 0.0, "unit", f"{what} values taken as [0, 1] (detected, maximum "
                                                       f"{max_value:.3g})"))
    same_as_standard = any(abs(gt.multiplier * d - 1.0) < 1e-9 for d in STANDARD_DIVISORS.values())
    if (gt.multiplier != 1.0 or gt.offset != 0.0) and not (same_as_standard and gt.offset == 0.0):
        if max_value * gt.multiplier + gt.offset <= FIT_TOLERANCE:
            candidates.append(ValueRange(gt.multiplier, gt.offset, "gt-scale",
                                         f"{what} values in the GT's units (the GT's rule: {gt.text})"))
    for name, d in STANDARD_DIVISORS.items():
        if max_value <= d * FIT_TOLERANCE and (max_value > 1.0 or not is_float):
            candidates.append(ValueRange(1.0 / d, 0.0, name, f"{what} values in 0-{d:g} (detected, maximum "
                                                             f"{max_value:g})"))
    if not candidates:
        raise RangeUndecided(f"values reach {max_value:g}: neither [0, 1], the GT's units, 0-255 nor 0-65535 data; "
                             f"choose the range ({flag} max divides by the maximum, {flag} NUMBER by a number)")
    if stated is not None and candidates[0].rule == "stated":
        chosen = candidates[0]
    elif gt_mean is not None and gt_mean > 0 and mean_value > 0 and len(candidates) > 1:
        chosen = min(candidates, key=lambda c: abs(math.log(max(mean_value * c.multiplier + c.offset, 1e-30) / gt_mean)))
        others = [c for c in candidates if c is not chosen]
        chosen = ValueRange(chosen.multiplier, chosen.offset, chosen.rule,
                            chosen.text + f"; chosen over {', '.join(c.rule for c in others)} by the mean ratio to the GT")
    else:
        chosen = candidates[0]
    return chosen.with_warnings(_mean_warnings(chosen, mean_value, gt_mean, flag))


def _mean_warnings(chosen: ValueRange, mean_value: float, gt_mean: float | None, flag: str) -> list[str]:
    if gt_mean is None or not gt_mean > 0 or not mean_value > 0:
        return []
    ratio = (mean_value * chosen.multiplier + chosen.offset) / gt_mean
    if 1.0 / MEAN_RATIO_LIMIT <= ratio <= MEAN_RATIO_LIMIT:
        return []
    return [f"after this rule the mean is {ratio:.3g} x the GT's: check the value range ({flag})"]


# ---------------------------------------------------------------------------------- cubes
def range_of(cube) -> ValueRange:
    """The rule a reader chose for ``cube`` (an :class:`app.core.cube.Cube`)."""
    rule = (cube.metadata or {}).get("value_rule") or "unit"
    return ValueRange(float(cube.scale), float(cube.offset), str(rule), cube.normalisation)


def put_on_gt_scale(pred, gt):
    """``pred`` (a Cube read from a file) read as a prediction of ``gt``: its stored values decided by
    :func:`decide_prediction` against the GT's rule and mean, as ``compare`` reads it. Returns
    ``pred`` itself when its file states its rule, the user forced one, it was computed in the app,
    or the decision keeps its rule."""
    if pred.source_path is None or (pred.metadata or {}).get("value_rule") in ("stated", "convention", "user", None):
        return pred
    stored = pred.replace(scale=1.0, offset=0.0)
    values = np.asarray(stored.data, dtype=np.float32)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return pred
    gt_values = gt.data
    chosen = decide_prediction(np.dtype(pred.raw.dtype), max_value=float(finite.max()),
                               mean_value=float(finite.mean(dtype=np.float64)), gt=range_of(gt),
                               gt_mean=float(np.mean(gt_values, dtype=np.float64)), flag="the layer's value range")
    if chosen.multiplier == pred.scale and chosen.offset == pred.offset:
        return pred
    metadata = {**(pred.metadata or {}), "value_rule": chosen.rule,
                "warnings": list((pred.metadata or {}).get("warnings", [])) + list(chosen.warnings)}
    return pred.replace(scale=chosen.multiplier, offset=chosen.offset, normalisation=chosen.text, metadata=metadata)
