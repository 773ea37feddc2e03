"""Which cubes each side of a comparison stands for, and which prediction goes with which GT item.

A side is a cube file, a CAVE scene folder (PNG bands) or a folder of both (the dataset-folder
scan of :mod:`app.core.io.datasets`, which also lists what holds no cube). Predictions are matched
to GT items by name: the stem, case-insensitive, then without common suffixes (``_pred``, ``_sr``,
``_x4``, the method's own name, ...), then without CAVE's ``_ms``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from app.core.errors import MissingFileError
from app.core.io.datasets import has_png_bands, scan_folder, scene_name

__all__ = ["Item", "Side", "list_items", "match_items", "CUBE_EXTENSIONS", "ENVI_DATA_EXTENSIONS", "MATCH_SUFFIXES"]

CUBE_EXTENSIONS = {".mat", ".npy", ".npz", ".h5", ".hdf5", ".he5", ".nc", ".hdf", ".tif", ".tiff", ".hdr"}
ENVI_DATA_EXTENSIONS = {".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ".bin"}
MATCH_SUFFIXES = ("pred", "preds", "prediction", "predicted", "sr", "out", "output", "outputs", "result", "results",
                  "res", "recon", "rec", "reconstruction", "reconstructed", "fused", "fusion", "est", "estimate",
                  "estimated", "hr", "final")
_SCALE_TOKEN = r"x\d+|\d+x"


@dataclass(frozen=True)
class Item:
    """One cube on one side: its display name (file stem or folder name, unique on its side), where it
    is, and the name used for matching (the stem; defaults to ``name``)."""

    name: str
    path: Path
    stem: str | None = None

    @property
    def match_name(self) -> str:
        return self.stem if self.stem is not None else self.name


@dataclass
class Side:
    path: Path
    items: list[Item]
    single: bool          # the path itself is one cube (a file or a scene folder)
    ignored: list[Path] = field(default_factory=list)


def list_items(path: str | Path) -> Side:
    """The cubes a path stands for. A file or a scene folder is one item; in a folder every cube file
    and scene folder is an item, and other files are listed in ``ignored`` (sidecars and ENVI data
    files beside their header are not)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(path, "no such file or folder")
    if path.is_file():
        return Side(path, [Item(scene_name(path), path)], True)
    if has_png_bands(path):
        return Side(path, [Item(path.name or path.resolve().name, path)], True)
    found, ignored = scan_folder(path, CUBE_EXTENSIONS, ENVI_DATA_EXTENSIONS)
    # a scene folder is named by the folder listed (CAVE's nesting: the outer one), a file by its stem
    items = [Item(entry.name if entry.is_dir() else entry.stem, cube) for entry, cube in found]
    seen: dict[str, int] = {}
    for it in items:
        seen[it.name.lower()] = seen.get(it.name.lower(), 0) + 1
    # two cubes with one stem (x.npy and x.mat): shown by their file names, matched by the stem
    items = [Item(it.path.name, it.path, it.name) if seen[it.name.lower()] > 1 and it.path.is_file() else it
             for it in items]
    return Side(path, items, False, ignored)


def _strip_re(method: str | None) -> re.Pattern:
    tokens = [re.escape(t) for t in MATCH_SUFFIXES] + [_SCALE_TOKEN]
    if method:
        tokens.insert(0, re.escape(method.lower()))
    return re.compile(r"^(.+?)(?:[_\-. ]+(?:" + "|".join(tokens) + r"))+$")


def _keys(name: str, method: str | None) -> tuple[str, str, str]:
    """Matching keys from strict to loose: lowercase stem; common suffixes (and the method's name as a
    suffix or prefix) removed; then CAVE's ``_ms`` removed too."""
    k0 = name.lower().strip()
    k1 = k0
    if method:
        m = method.lower()
        for sep in "_-. ":
            if k1.startswith(m + sep) and len(k1) > len(m) + 1:
                k1 = k1[len(m) + 1:]
                break
    hit = _strip_re(method).match(k1)
    if hit:
        k1 = hit.group(1)
    k2 = re.sub(r"[_\-. ]+ms$", "", k1) or k1
    return k0, k1, k2


def match_items(gt_items: list[Item], pred_items: list[Item], method: str | None = None
                ) -> tuple[dict[int, Item], list[tuple[Item, str]]]:
    """Pair predictions with GT items by name.

    Returns ({GT index: prediction}, [(unmatched prediction, reason)]). Matching goes from the strict
    key to the loose ones; a key shared by several items on either side pairs nothing (ambiguous)."""
    gt_keys = [_keys(g.match_name, None) for g in gt_items]
    pred_keys = [_keys(p.match_name, method) for p in pred_items]
    free_gt = set(range(len(gt_items)))
    free_pred = set(range(len(pred_items)))
    pairs: dict[int, Item] = {}
    ambiguous: dict[int, str] = {}
    for level in range(3):
        gmap: dict[str, list[int]] = {}
        for i in sorted(free_gt):
            gmap.setdefault(gt_keys[i][level], []).append(i)
        pmap: dict[str, list[int]] = {}
        for j in sorted(free_pred):
            pmap.setdefault(pred_keys[j][level], []).append(j)
        for key, js in pmap.items():
            gs = gmap.get(key)
            if not gs:
                continue
            if len(js) == 1 and len(gs) == 1:
                pairs[gs[0]] = pred_items[js[0]]
                free_gt.discard(gs[0])
                free_pred.discard(js[0])
            else:
                for j in js:
                    ambiguous[j] = (f"ambiguous name: {', '.join(pred_items[x].path.name for x in js)} and GT "
                                    f"{', '.join(gt_items[x].name for x in gs)} all match '{key}'")
                    free_pred.discard(j)
                for i in gs:
                    free_gt.discard(i)  # stays unpaired: listed as missing for this method
    unmatched = []
    paired_by_key = {}
    for i, p in pairs.items():
        for level in range(3):
            paired_by_key.setdefault(gt_keys[i][level], (gt_items[i].name, p.path.name))
    for j, p in enumerate(pred_items):
        if any(p is q for q in pairs.values()):
            continue
        if j in ambiguous:
            unmatched.append((p, ambiguous[j]))
            continue
        taken = next((paired_by_key[k] for k in pred_keys[j] if k in paired_by_key), None)
        if taken:
            unmatched.append((p, f"its GT item '{taken[0]}' is already paired with {taken[1]}"))
        else:
            unmatched.append((p, "matches no GT item by name"))
    return pairs, unmatched
