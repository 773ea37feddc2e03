"""The value range of each layer: how a file's stored values became reflectance (the reader's
decision, a layer's 'auto'), the user's choice ('stated', 'max' or a divisor), the badge a panel
shows, and :class:`LayerRanges`, the scene's record of them per layer uid."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from app.core.cube import Cube
from app.core.errors import HsiError
from app.core.io.value_range import DARK_LIMIT, LOUD, MEAN_RATIO_LIMIT, RangeUndecided, put_on_gt_scale
from app.core.state.layers import Layer


def _on_gt_scale(pred: Cube, gt: Cube) -> Cube:
    """A reconstruction read from a file, with its values on its GT's scale (as compare reads it);
    unchanged when no rule fits (its own rule stays, and the analysis says what it compares)."""
    try:
        return put_on_gt_scale(pred, gt)
    except RangeUndecided:
        return pred


# ---------------------------------------------------------------------------------- value range of a layer
RANGE_CHOICES: tuple[str, ...] = ("auto", "stated", "max")   # or a positive number: divide by it
RANGE_CHOICE_TITLES: dict[str, str] = {
    "auto": "Auto (the file, then the GT's scale)",
    "stated": "As the file states",
    "max": "Divide by the maximum",
}
# sampled statistics of a cube for the badge's warnings: this many bands, about this many pixels each
RANGE_SAMPLE_BANDS = 16
RANGE_SAMPLE_PIXELS = 1 << 16


def parse_range_choice(value) -> str | float:
    """A layer's value range: 'auto', 'stated', 'max' or a positive finite divisor."""
    if isinstance(value, str) and value.strip().lower() in RANGE_CHOICES:
        return value.strip().lower()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"a value range is auto, stated, max or a positive number, not {value!r}") from None
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"the divisor must be a positive finite number, got {value!r}")
    return number


@dataclass(frozen=True)
class _ReadRange:
    """How the reader turned a file's stored values into reflectance (the layer's 'auto')."""

    scale: float
    offset: float
    rule: str
    text: str
    warnings: tuple[str, ...]
    band_gain: np.ndarray | None = None
    band_offset: np.ndarray | None = None

    @classmethod
    def of(cls, cube: Cube) -> "_ReadRange | None":
        if cube.source_path is None:
            return None  # computed in the app: reflectance, nothing was decided
        meta = cube.metadata or {}
        return cls(float(cube.scale), float(cube.offset), str(meta.get("value_rule") or "unit"), cube.normalisation,
                   tuple(meta.get("warnings", ())), getattr(cube, "band_gain", None), getattr(cube, "band_offset", None))

    def apply(self, cube: Cube) -> Cube:
        """``cube`` (same stored values) read with this decision again."""
        meta = {k: v for k, v in (cube.metadata or {}).items() if k != "range_override"}
        meta.update(value_rule=self.rule, warnings=list(self.warnings))
        options = dict(meta.get("open_options") or {})
        if options.pop("normalise", None) is not None:
            meta["open_options"] = options
        return cube.replace(scale=self.scale, offset=self.offset, normalisation=self.text, metadata=meta,
                            **_band_gains(cube, self.band_gain, self.band_offset))


def _band_gains(cube: Cube, gain, offset) -> dict:
    """replace() keywords setting a cube's per-band calibration (cubes without one: none)."""
    return {"band_gain": gain, "band_offset": offset} if hasattr(cube, "band_gain") else {}


def _factor_text(multiplier: float) -> str:
    """'÷5000' for a multiplier of 1/5000, '×0.37' otherwise."""
    if multiplier == 1.0:
        return "×1"
    if multiplier > 0:
        d = 1.0 / multiplier
        if d >= 2 and abs(d - round(d)) <= 1e-6 * d:
            return f"÷{round(d)}"
        if d >= 2:
            return f"÷{d:.4g}"
    return f"×{multiplier:.3g}"


def range_badge_text(cube: Cube) -> str:
    """The value-range rule of ``cube`` in a few characters ('stated ÷5000', '÷4091 max', 'GT scale
    ÷5000', 'PNG ÷65535', 'unit', '÷2500 set' for a choice made in the viewer)."""
    meta = cube.metadata or {}
    rule = meta.get("value_rule")
    f = _factor_text(float(cube.scale))
    if getattr(cube, "band_gain", None) is not None:
        f = "per band" if cube.scale == 1.0 else f"per band {f}"
    if cube.offset:
        f += f" {cube.offset:+.3g}"
    override = meta.get("range_override")
    if override == "max":
        return f"{f} max (set)"
    if override is not None and override != "stated":
        return f"{f} set"
    if rule is None or (f == "×1" and (rule == "unit" or cube.source_path is None)):
        return "unit"
    if rule == "stated":
        return f"stated {f}"
    if rule == "convention":
        return f"PNG {f}" if meta.get("format") == "png-folder" else f"{f} convention"
    if rule == "gt-scale":
        return f"GT scale {f}"
    if rule in ("8bit", "16bit"):
        return f"{f} {rule[:-3]}-bit"
    return f"{f} {rule}"


@dataclass(frozen=True)
class RangeBadge:
    """What a layer's value-range badge shows: ``text`` (short), ``tooltip`` (the rule in words,
    what was chosen, what looks wrong), ``warnings`` (non-empty: the badge is shown loud),
    ``choice`` (the layer's range choice), ``can_choose`` (False for cubes computed in the app)."""

    text: str
    tooltip: str
    warnings: tuple[str, ...]
    choice: str | float
    can_choose: bool

    @property
    def loud(self) -> bool:
        return bool(self.warnings)



class LayerRanges:
    """Per layer uid: the reader's decision (only for layers read from a file), the user's choice
    (absent: 'auto') and sampled statistics for the badge's warnings (kept with the cube they
    were taken from). It emits nothing: the scene rescales the layers and tells the views."""

    def __init__(self):
        self._read: dict[int, _ReadRange] = {}
        self._choices: dict[int, str | float] = {}
        self._kept: dict[int, tuple[Cube, float, float]] = {}

    @staticmethod
    def decision(cube: Cube) -> _ReadRange | None:
        """How the reader read ``cube`` (None for a cube computed in the app); taken before a GT's
        scale is put on a new layer."""
        return _ReadRange.of(cube)

    def record(self, uid: int, read: _ReadRange | None) -> None:
        """Keep the reader's decision (:meth:`decision`) for a new layer."""
        if read is not None:
            self._read[uid] = read

    def forget(self, uid: int) -> None:
        for kept in (self._read, self._choices, self._kept):
            kept.pop(uid, None)

    def clear(self) -> None:
        for kept in (self._read, self._choices, self._kept):
            kept.clear()

    def choice(self, uid: int) -> str | float:
        return self._choices.get(uid, "auto")

    def set_choice(self, uid: int, choice: str | float) -> None:
        if choice == "auto":
            self._choices.pop(uid, None)
        else:
            self._choices[uid] = choice

    def can_choose(self, uid: int) -> bool:
        """False for layers computed in the app (reflectance, no stored range)."""
        return uid in self._read

    def stated_available(self, uid: int) -> bool:
        read = self._read.get(uid)
        return read is not None and read.rule in ("stated", "convention")

    def ranged_cube(self, layer: Layer, choice: str | float, gt: Layer | None) -> Cube:
        """``layer``'s cube read with ``choice`` (``gt``: the scene's first GT, whose scale a
        reconstruction on 'auto' takes)."""
        read = self._read[layer.uid]
        base = read.apply(layer.cube)
        where = f"{layer.cube.source_path}: " if layer.cube.source_path else f"{layer.label}: "
        if choice == "auto":
            if layer.role == "recon" and gt is not None and gt is not layer:
                return _on_gt_scale(base, gt.cube)
            return base
        if choice == "stated":
            if read.rule not in ("stated", "convention"):
                raise HsiError(f"{where}the file states no value range (it was read as: {read.text}); "
                               "choose the maximum or a number")
            return base.replace(metadata={**base.metadata, "range_override": "stated"})
        from app.core.io._common import exact_max

        what = np.dtype(layer.cube.raw.dtype).name
        if choice == "max":
            divisor = float(exact_max(layer.cube.raw, layer.cube.ignore_value))
            if not (divisor > 0 and math.isfinite(divisor)):
                raise HsiError(f"{where}the stored maximum is {divisor:g}: nothing to divide by; choose a number")
            text = f"{what} values divided by their maximum {divisor:g} (chosen in the viewer)"
            option: str | float = "max"
        else:
            divisor = float(choice)
            text = f"{what} values divided by {divisor:g} (chosen in the viewer)"
            option = divisor
        meta = {**base.metadata, "value_rule": "user", "range_override": choice,
                "open_options": {**dict(base.metadata.get("open_options") or {}), "normalise": option}}
        # the user's divisor replaces the file's per-band gains, as --normalise NUMBER does
        return base.replace(scale=1.0 / divisor, offset=0.0, normalisation=text, metadata=meta,
                            **_band_gains(base, None, None))

    @staticmethod
    def sample(cube: Cube) -> tuple[float, float]:
        """(max, mean) of the finite values of a sample of ``cube`` (RANGE_SAMPLE_BANDS bands at a
        stride giving about RANGE_SAMPLE_PIXELS pixels; the same pixels for cubes of one shape)."""
        h, w, b = cube.shape
        step = max(1, int(math.ceil(math.sqrt(h * w / RANGE_SAMPLE_PIXELS))))
        bands = np.unique(np.linspace(0, b - 1, min(b, RANGE_SAMPLE_BANDS)).round().astype(int))
        values = np.stack([np.asarray(cube.band(int(k), step), dtype=np.float64) for k in bands])
        finite = values[np.isfinite(values)]
        if not finite.size:
            return math.nan, math.nan
        return float(finite.max()), float(finite.mean())

    def stats(self, layer: Layer) -> tuple[float, float]:
        kept = self._kept.get(layer.uid)
        if kept is None or kept[0] is not layer.cube:
            kept = (layer.cube, *self.sample(layer.cube))
            self._kept[layer.uid] = kept
        return kept[1], kept[2]

    def badge(self, layer: Layer, gt: Layer | None) -> RangeBadge:
        """``layer``'s value-range badge: its rule in short and in words, and loud warnings when
        the values stay far below 1 (a sampled maximum under DARK_LIMIT) or a reconstruction's
        mean is more than MEAN_RATIO_LIMIT times away from ``gt``'s (on the same sampled pixels),
        plus the reader's own loud assumptions."""
        uid = layer.uid
        cube = layer.cube
        meta = cube.metadata or {}
        read = self._read.get(uid)
        # the reader's loud assumptions hold while its rule does (not once on the GT's scale or overridden)
        own_rule = read is None or (meta.get("value_rule") == read.rule and "range_override" not in meta)
        warnings = [w for w in meta.get("warnings", ()) if own_rule and str(w).startswith(LOUD)]
        vmax, mean = self.stats(layer)
        if math.isfinite(vmax) and 0 < vmax < DARK_LIMIT:
            warnings.append(f"after this rule the values reach only {vmax:.3g}: far below 1, check the range")
        if layer.role == "recon" and gt is not None and gt.cube.shape == cube.shape:
            gt_mean = self.stats(gt)[1]
            if gt_mean > 0 and mean > 0 and not 1.0 / MEAN_RATIO_LIMIT <= mean / gt_mean <= MEAN_RATIO_LIMIT:
                warnings.append(f"after this rule the mean is {mean / gt_mean:.3g} x the GT's: check the value range")
        choice = self.choice(uid)
        can_choose = self.can_choose(uid)
        lines = [f"Value range: {cube.normalisation}"]
        if not can_choose:
            lines.append("computed in the viewer: reflectance, nothing to choose")
        else:
            lines.append(f"choice: {choice if isinstance(choice, str) else f'divide by {choice:g}'} "
                         "(click to change: auto / as the file states / maximum / a number)")
        lines += [f"⚠ {w}" for w in warnings]
        return RangeBadge(range_badge_text(cube), "\n".join(lines), tuple(warnings), choice, can_choose)
