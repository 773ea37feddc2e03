"""Build the compact data pack for GPU training runs: the train and val scenes of the cave split
(resources/splits/cave.json), each cut to a centre crop (train scenes --crop, val scenes
--val-crop), in the CAVE layout that `main.py train
--data` reads (a folder of scene folders of 16-bit PNG bands). The report scenes are left out: no
choice is ever made on them. Centre crops keep validation unchanged: the trainer's `--val-crop 128` takes the same
128 px centre from the pack as from the 512 px scene.

    python training/gpu/pack.py --cave ../shared/data/cave --out .gpu_pack/cave [--crop 176]

The pack must travel with the checkout to the GPU machine (64 MiB in all, the checkout included):
it prints its size and refuses to exceed --max-mib."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cave", required=True, help="folder of CAVE scene folders (PNG bands)")
    ap.add_argument("--out", required=True, help="pack folder to write (replaced)")
    ap.add_argument("--crop", type=int, default=176, help="centre crop of the train scenes in px (default 176)")
    ap.add_argument("--val-crop", type=int, default=128,
                    help="centre crop of the val scenes (default 128, the trainer's validation crop)")
    ap.add_argument("--max-mib", type=float, default=24.0,
                    help="refuse a pack larger than this (default 24: with the ~18 MiB checkout and the 20 MiB of "
                         "CST's paper-size fp16 weights, what travels stays under 64 MiB)")
    args = ap.parse_args(argv)
    split = json.loads((ROOT / "resources" / "splits" / "cave.json").read_text())
    src, out = Path(args.cave), Path(args.out)
    missing = [s for s in split["train"] + split["val"] if not (src / s).is_dir()]
    if missing:
        print(f"error: {src}: no scene folder {', '.join(missing)}", file=sys.stderr)
        return 2
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    total = 0
    for scene in split["train"] + split["val"]:
        crop = args.crop if scene in split["train"] else args.val_crop
        bands = sorted(p for p in (src / scene).rglob("*.png"))
        (tmp / scene).mkdir(parents=True)
        for band in bands:
            img = np.asarray(Image.open(band))
            if img.ndim == 3:                      # a few CAVE bands are stored as RGBA: keep the first channel
                img = img[..., 0]
            h, w = img.shape
            c = min(crop, h, w)
            r0, c0 = (h - c) // 2, (w - c) // 2
            dst = tmp / scene / band.name
            Image.fromarray(np.ascontiguousarray(img[r0:r0 + c, c0:c0 + c])).save(dst, optimize=True)
            total += dst.stat().st_size
    mib = total / 2**20
    if mib > args.max_mib:
        shutil.rmtree(tmp)
        print(f"error: the pack would be {mib:.1f} MiB, over --max-mib {args.max_mib}: use a smaller --crop",
              file=sys.stderr)
        return 2
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    n = len(split["train"]) + len(split["val"])
    print(f"wrote {out}: {n} scenes ({len(split['train'])} train, {len(split['val'])} val), "
          f"centre crops of {args.crop} px (train) and {args.val_crop} px (val), {mib:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
