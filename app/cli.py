"""Command line: `python main.py [command] ...`.

Without a command the viewer opens on the bundled sample. Headless commands never import Qt.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROLES = ("gt", "lr", "guide", "recon")


def _add_read_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reading files")
    g.add_argument("--var", help="variable/dataset holding the cube (.mat, .npz, .h5)")
    g.add_argument("--layout", help="stored axis order, e.g. HWB or BHW (MATLAB order for .mat); BP/PB for 2-D")
    g.add_argument("--hw", nargs=2, type=int, metavar=("H", "W"), help="height and width of a 2-D bands x pixels matrix")
    g.add_argument("--normalise", default="auto",
                   help="how stored values become reflectance: auto (stated rule), none, max, or a number to divide by")
    g.add_argument("--nonfinite", choices=("error", "zero"), default="error",
                   help="NaN/Inf values: refuse the file (default) or read them as 0")


def _read_kwargs(args) -> dict:
    normalise = args.normalise
    try:
        normalise = float(normalise)
    except ValueError:
        pass
    return dict(var=args.var, layout=args.layout, hw=tuple(args.hw) if args.hw else None,
                normalise=normalise, nonfinite=args.nonfinite)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="Hyperspectral super-resolution viewer and tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command")

    view = sub.add_parser("view", help="open the viewer (default: the bundled sample)")
    view.add_argument("files", nargs="*", help="cube files or folders (role: recon unless flagged)")
    for role in ROLES:
        view.add_argument(f"--{role}", action="append", default=[], metavar="PATH", help=f"open PATH as {role}")
    view.add_argument("--no-sample", action="store_true", help="start empty when no file is given")
    view.add_argument("--screenshot", metavar="PNG", help="render the window, save it as PNG and quit")

    info = sub.add_parser("info", help="describe a cube file: shape, wavelengths, value rule, warnings")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    _add_read_options(info)

    conv = sub.add_parser("convert", help="convert a cube to another format (by the output extension)")
    conv.add_argument("src")
    conv.add_argument("dst", help=".hdr/.img (ENVI), .mat, .npy, .npz, .tif, .h5, or a folder (PNG bands)")
    conv.add_argument("--mat-version", choices=("auto", "5", "7.3"), default="auto")
    conv.add_argument("--interleave", choices=("bsq", "bil", "bip"), default="bsq")
    _add_read_options(conv)

    bench = sub.add_parser("bench", help="measure speed and memory; prints ratios measured in one run")
    bench.add_argument("--only", action="append", choices=("io", "metrics"), help="run only these benchmarks")
    bench.add_argument("--envi-gb", type=float, default=2.0, help="size of the generated ENVI cube (GB)")
    bench.add_argument("--tmp", help="folder for the generated files (default: system temp)")
    return parser


def cmd_info(args) -> int:
    from app.core.io import open_cube

    cube = open_cube(args.path, **_read_kwargs(args))
    wl = cube.wavelengths_nm
    summary = {
        "name": cube.name, "path": str(cube.source_path), "format": cube.metadata.get("format"),
        "shape_hwb": list(cube.shape), "memory_mapped": cube.is_lazy, "normalisation": cube.normalisation,
        "wavelengths_nm": None if wl is None else [round(float(w), 3) for w in wl],
        "fwhm_nm": None if cube.fwhm_nm is None else [round(float(w), 3) for w in cube.fwhm_nm],
        "bad_bands": None if cube.bad_bands is None else [int(i) for i in cube.bad_bands.nonzero()[0]],
        "warnings": cube.metadata.get("warnings", []),
        "variable": cube.metadata.get("variable"), "layout": cube.metadata.get("layout"),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(cube.describe())
    print(f"  format: {summary['format']}" + (f", variable {summary['variable']}" if summary["variable"] else "")
          + (f", layout {summary['layout']}" if summary["layout"] else ""))
    if wl is not None:
        step = f", mean step {float((wl[-1] - wl[0]) / max(1, len(wl) - 1)):.2f} nm" if len(wl) > 1 else ""
        print(f"  wavelengths: {wl[0]:.2f} .. {wl[-1]:.2f} nm ({len(wl)} bands{step})")
    else:
        print("  wavelengths: unknown (bands are numbered)")
    if summary["bad_bands"]:
        print(f"  bad bands: {len(summary['bad_bands'])} flagged")
    for w in summary["warnings"]:
        print(f"  note: {w}")
    return 0


def cmd_convert(args) -> int:
    from app.core.io import open_cube, save_cube

    cube = open_cube(args.src, **_read_kwargs(args))
    out = save_cube(cube, args.dst, mat_version=args.mat_version, interleave=args.interleave)
    print(f"wrote {out} ({cube.height}x{cube.width}x{cube.bands}, float32 reflectance)")
    return 0


def cmd_view(args) -> int:
    from app.qt.app import run_viewer

    files = [("recon", f) for f in args.files]
    for role in ROLES:
        files += [(role, f) for f in getattr(args, role)]
    return run_viewer(files, open_sample=not args.no_sample, screenshot=args.screenshot)


def cmd_bench(args) -> int:
    from app.core.bench import run_benchmarks

    return run_benchmarks(only=args.only, envi_gb=args.envi_gb, tmp=args.tmp)


def main(argv: list[str] | None = None) -> int:
    from app.core.errors import HsiError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"view", "info", "convert", "bench"}
    if argv and argv[0] not in commands and not argv[0].startswith("-"):
        argv = ["view", *argv]  # `python main.py cube.hdr` opens the viewer on that file
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if args.command is None:
        args = parser.parse_args(["view", *argv])
    handlers = {"view": cmd_view, "info": cmd_info, "convert": cmd_convert, "bench": cmd_bench}
    try:
        return handlers[args.command](args)
    except HsiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
