"""Command line: `python main.py [command] ...`.

Without a command the viewer opens on the bundled sample. Headless commands never import Qt.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

ROLES = ("gt", "lr", "guide", "recon")


_WAVELENGTHS_HELP = ("band centres from a side file (.txt/.csv): one value per band, or two columns (band index, "
                     "wavelength), header lines allowed; nm, or micrometres when the file says so or the values "
                     "are below 30 (converted); they replace the file's own")


def _add_read_options(p: argparse.ArgumentParser, *, nonfinite: bool = True, each: str = "") -> None:
    g = p.add_argument_group("reading files" + (f" ({each})" if each else ""))
    g.add_argument("--var", help="variable/dataset holding the cube (.mat, .npz, .h5)")
    g.add_argument("--layout", help="stored axis order, e.g. HWB or BHW (MATLAB order for .mat); BP/PB for 2-D")
    g.add_argument("--hw", nargs=2, type=int, metavar=("H", "W"), help="height and width of a 2-D bands x pixels matrix")
    g.add_argument("--normalise", default="auto",
                   help="how stored values become reflectance: auto (stated rule), none, max, or a number to divide by")
    if nonfinite:
        g.add_argument("--nonfinite", choices=("error", "zero", "mask"), default="error",
                       help="NaN/Inf values: refuse the file (default), read them as 0, or read them as 0 and mark "
                            "their pixels as no-data (mask: left out of the metrics)")
    g.add_argument("--wavelengths", metavar="FILE", help=_WAVELENGTHS_HELP)


_EXCLUDE_HELP = ("bands left out of the metrics, by centre wavelength in nm: ranges and single values, e.g. "
                 "1340-1460,1790-1960 (water vapour); the file's bad-band list (ENVI bbl) is always left out")


def _value_range_option(text: str):
    """--pred-range / --gt-range: a named range or a positive number (argparse says which is wrong)."""
    from app.core.io.value_range import parse_user_range

    try:
        return parse_user_range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _scheduler_option(text: str) -> str:
    """--scheduler: tcp://HOST:PORT or local:N (argparse names the option on anything else)."""
    from app.core.io.cluster import parse_scheduler

    try:
        return parse_scheduler(text).text
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_SCHEDULER_HELP = ("run on a dask.distributed cluster: tcp://HOST:PORT connects to a running `dask scheduler` "
                   "(with its `dask worker`s), local:N starts N worker processes on this machine for this run. "
                   "Workers read the files by path: they must see them at the same absolute paths (a shared "
                   "filesystem); the rows are the same as without --scheduler")


def _read_kwargs(args) -> dict:
    return dict(var=args.var, layout=args.layout, hw=tuple(args.hw) if args.hw else None,
                normalise=_normalise_option(args.normalise), nonfinite=getattr(args, "nonfinite", "error"),
                wavelengths=getattr(args, "wavelengths", None))


def _normalise_option(text: str) -> str | float:
    """--normalise as the readers take it; a divisor must be a positive finite number (inf would
    turn every value into 0, nan into nan, 0 or a negative into nonsense)."""
    import math

    from app.core.errors import HsiError

    word = str(text).strip().lower()
    if word in ("auto", "none", "max"):
        return word
    try:
        value = float(word)
    except ValueError:
        raise HsiError(f"--normalise {text!r}: expected auto, none, max or a positive number to divide by") from None
    if not (math.isfinite(value) and value > 0):
        raise HsiError(f"--normalise {text!r}: the divisor must be a positive finite number")
    return value


def build_parser() -> argparse.ArgumentParser:
    from app import __version__

    # "hsi-viewer" when installed, "main.py" from a checkout: --help names what the user typed
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] and not sys.argv[0].startswith("-") else "hsi-viewer"
    parser = argparse.ArgumentParser(prog=prog, description="Hyperspectral super-resolution viewer and tools")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command")

    view = sub.add_parser("view", help="open the viewer (default: the bundled sample)")
    view.add_argument("files", nargs="*", help="cube files or folders (role: recon unless flagged)")
    for role in ROLES:
        if role == "recon":  # several methods at once, the panels in the order given
            view.add_argument("--recon", nargs="+", action="extend", default=[], metavar="PATH",
                              help="open every PATH as a reconstruction, in this order (the flag may repeat)")
        else:
            view.add_argument(f"--{role}", action="append", default=[], metavar="PATH", help=f"open PATH as {role}")
    view.add_argument("--var", help="variable/dataset holding the cube in every file (.mat, .npz, .h5), e.g. HSim")
    for role in ROLES:
        view.add_argument(f"--{role}-var", metavar="NAME",
                          help=f"variable holding the {role} cube (instead of --var), e.g. --guide-var MSim to "
                               f"take the guide from the same .mat")
    view.add_argument("--layout", help="stored axis order of the files, e.g. HWB or BHW (MATLAB order for .mat)")
    view.add_argument("--wavelengths", metavar="FILE",
                      help=_WAVELENGTHS_HELP + "; for the hyperspectral files (GT, LR, reconstructions), not the "
                                               "guide (File > Attach wavelengths… does it for one layer)")
    view.add_argument("--no-sample", action="store_true", help="start empty when no file is given")
    view.add_argument("--screenshot", metavar="PNG", help="render the window, save it as PNG and quit")

    info = sub.add_parser("info", help="describe a cube file: shape, wavelengths, value rule, warnings")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--exclude-bands", metavar="NM", help=_EXCLUDE_HELP + "; info says which bands that leaves out")
    _add_read_options(info)

    conv = sub.add_parser("convert", help="convert a cube to another format (by the output extension)")
    conv.add_argument("src")
    conv.add_argument("dst", help=".hdr/.img (ENVI), .mat, .npy, .npz, .tif, .h5, or a folder (PNG bands)")
    conv.add_argument("--mat-version", choices=("auto", "5", "7.3"), default="auto")
    conv.add_argument("--interleave", choices=("bsq", "bil", "bip"), default="bsq")
    _add_read_options(conv)

    sim = sub.add_parser("simulate", help="simulate the LR-HSI and guide of a GT cube with a named protocol")
    sim.add_argument("--gt", required=True, help="ground-truth cube (any supported format)")
    sim.add_argument("--protocol", required=True, help="bicubic-x{2,3,4,8}, gauss-x{4,8,16,32}, mulsr-x{4,8,16}")
    sim.add_argument("--srf", help="SRF for the guide: built-in name or CSV (default: Nikon D700 for 400-700 nm)")
    sim.add_argument("--noise-sigma", type=float, help="Gaussian noise sigma on the LR-HSI (reflectance units)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--format", default=".npy", help="output extension: .npy (default), .mat, .hdr, .tif, .h5, .npz")
    sim.add_argument("--out", required=True, help="output folder")
    _add_read_options(sim)

    sr = sub.add_parser("sr", help="super-resolve an LR-HSI with a registered model")
    sr.add_argument("--model", required=True, help="model name (see `main.py models`)")
    sr.add_argument("--lr", required=True, help="LR hyperspectral cube")
    sr.add_argument("--guide", help="HR RGB/MSI guide (fusion models)")
    sr.add_argument("--srf", help="SRF of the guide: built-in name or CSV (default: from the cube's wavelengths)")
    sr.add_argument("--protocol", help="protocol whose PSF the model assumes (default gauss-x<scale>)")
    sr.add_argument("--scale", type=int, required=True)
    sr.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, mps")
    sr.add_argument("--steps", "--iters", dest="steps", type=int,
                    help="iterations (per-image optimisation, e.g. umsft) or sampling steps (stochastic models)")
    sr.add_argument("--blind", action="store_true",
                    help="estimate the PSF and SRF from the image pair (models that offer it, e.g. umsft)")
    sr.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="model build option (see `main.py models`), e.g. base=none for umsft; repeatable")
    sr.add_argument("--seed", type=int, default=0)
    sr.add_argument("--out", required=True, help="output cube (format by extension)")
    _add_read_options(sr)

    ev = sub.add_parser("eval", help="simulate inputs from GT cubes, run models, compute the metrics")
    ev.add_argument("--gt", nargs="+", required=True,
                    help="GT cubes, CAVE scene folders, or a dataset folder of them (cube files of any supported "
                         "format: .mat, .h5, .npy, .tif, ENVI .hdr, ...; --var and --layout apply to each)")
    ev.add_argument("--protocol", required=True)
    ev.add_argument("--models", default="all", help="comma-separated model names, or all")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--steps", type=int)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--blind", action="store_true",
                    help="models that offer it (umsft) estimate the PSF and SRF from the image pair")
    ev.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="model build option, given to the models that have it (e.g. base=none); repeatable")
    ev.add_argument("--exclude-bands", metavar="NM", help=_EXCLUDE_HELP)
    ev.add_argument("--nonfinite", choices=("error", "zero", "mask"), default="error",
                    help="NaN/Inf in a GT: refuse it (default), read them as 0, or mask (read as 0, their pixels "
                         "left out of the metrics)")
    ev.add_argument("--json", help="write the results as JSON here")
    ev.add_argument("--scheduler", type=_scheduler_option, metavar="ADDRESS",
                    help=_SCHEDULER_HELP + "; one task per image and model")
    _add_read_options(ev, nonfinite=False, each="applied to every GT file")

    cmp = sub.add_parser("compare", help="metrics of existing predictions against GT cubes (files or folders)",
                         description="Compare predictions with ground-truth cubes. PATH is a cube file or a folder "
                                     "(cube files and/or CAVE scene folders); in folder mode predictions are matched "
                                     "to GT items by name (case-insensitive, suffixes such as _pred, _sr, _out, "
                                     "_result tolerated). Exit code 1 when an entry failed or a GT item has no "
                                     "prediction, 2 when nothing could be compared.")
    cmp.add_argument("--gt", required=True, metavar="PATH", help="GT cube file, scene folder, or folder of them")
    cmp.add_argument("--pred", action="append", required=True, metavar="PATH",
                     help="predictions of one method: a cube file or a folder (repeat for several methods)")
    cmp.add_argument("--name", action="append", default=[], metavar="NAME",
                     help="method name for the --pred of the same position (default: the folder's name)")
    cmp.add_argument("--scale", type=int, help="HR/LR scale factor: needed for ERGAS (and for --crop to a multiple)")
    cmp.add_argument("--var", help="variable/dataset holding the predicted cube (.mat, .npz, .h5); default: automatic")
    cmp.add_argument("--layout", help="force the predictions' stored axis order (e.g. HWB, BHW); default: "
                                      "detected against the GT's shape")
    cmp.add_argument("--pred-range", type=_value_range_option, default="auto", metavar="RANGE",
                     help="value range of the predictions: auto (detected, stated per row), unit ([0, 1]), "
                          "8bit (0-255), 16bit (0-65535), max (divide by the maximum), none, or a number to "
                          "divide by")
    cmp.add_argument("--gt-var", help="variable/dataset holding the GT cube")
    cmp.add_argument("--gt-layout", help="force the GT files' stored axis order")
    cmp.add_argument("--gt-range", type=_value_range_option, default="auto", metavar="RANGE",
                     help="value range of the GT (auto: the file's rule, or detected; as --pred-range)")
    cmp.add_argument("--nonfinite", choices=("error", "zero", "mask"), default="error",
                     help="NaN/Inf values: the file is an error entry (default), they read as 0, or mask (read as "
                          "0, their pixels left out of the metrics and counted)")
    cmp.add_argument("--exclude-bands", metavar="NM", help=_EXCLUDE_HELP)
    cmp.add_argument("--wavelengths", metavar="FILE",
                     help=_WAVELENGTHS_HELP + "; applied to every GT file; the predictions are compared band by "
                                              "band with their GT, and one without wavelengths takes the GT's")
    cmp.add_argument("--crop", action="store_true",
                     help="compare a prediction smaller than the GT (a border, or a multiple of the scale) "
                          "with the matching part of the GT")
    cmp.add_argument("--per-band", action="store_true", help="add per-band PSNR/SSIM/RMSE curves to the JSON")
    cmp.add_argument("--json", metavar="OUT", help="write the results as JSON (the schema of eval)")
    cmp.add_argument("--csv", metavar="OUT", help="write the table as CSV")
    cmp.add_argument("--md", metavar="OUT", help="write the table as Markdown")
    cmp.add_argument("--device", default="auto", help="where the metrics run: auto (CUDA if available), cpu, cuda")
    cmp.add_argument("--workers", type=int, help="threads reading files ahead of the metrics (default 2)")
    cmp.add_argument("--scheduler", type=_scheduler_option, metavar="ADDRESS",
                     help=_SCHEDULER_HELP + "; one task per GT item with its predictions (--workers unused)")

    browse = sub.add_parser("browse", help="open the results browser (a compare/eval JSON) with the viewer")
    browse.add_argument("json", nargs="?", help="results file written by compare --json or eval --json")

    sub.add_parser("models", help="list the registered models and what they need")

    tr = sub.add_parser("train", help="train a registered model on a dataset folder (CAVE scene folders, cube files)",
                        description="Train a model with a named degradation protocol on the train scenes of a split "
                                    "file (resources/splits/), validating on its val scenes; checkpoints go to "
                                    "runs/<out name>/ in the current folder, weights to --out. Same options and "
                                    "--seed, same weights.")
    tr.add_argument("--model", required=True, help="registered model name, e.g. cst")
    tr.add_argument("--data", required=True,
                    help="dataset folder: CAVE-style scene folders (PNG bands) and/or cube files of any supported "
                         "format (.mat, .h5, .npy, .tif, ENVI .hdr, ...; a file's scene name is its stem)")
    tr.add_argument("--protocol", required=True, help="degradation protocol, e.g. bicubic-x4")
    tr.add_argument("--split", default="auto",
                    help="split file: a name in resources/splits (cave) or a JSON path naming scenes (folder names, "
                         "file stems); 'none' holds out the last --val scenes; 'auto' (default): cave when --data "
                         "holds its scenes, else none")
    tr.add_argument("--val", type=int, default=4,
                    help="without a split file: scenes (the last by name) held out for validation (default 4)")
    tr.add_argument("--iters", type=int, default=10000, help="training iterations (default 10000)")
    tr.add_argument("--batch", type=int, default=8, help="patches per batch (default 8)")
    tr.add_argument("--patch", type=int, default=64, help="HR patch size in px, a multiple of the scale (default 64)")
    tr.add_argument("--lr-rate", type=float, default=2e-4, help="Adam learning rate (default 2e-4)")
    tr.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine",
                    help="learning-rate schedule (cosine to 2%% of the rate; step halves at 50%% and 75%%)")
    tr.add_argument("--config", help="model configuration (CST: small or paper)")
    tr.add_argument("--device", default="auto", help="auto, cpu or cuda")
    tr.add_argument("--val-every", type=int, default=200, help="validate every N iterations (default 200)")
    tr.add_argument("--val-crop", type=int, default=128, help="HR centre crop for validation, 0 = full scenes")
    tr.add_argument("--ckpt-every", type=int, default=200, help="checkpoint every N iterations (default 200)")
    tr.add_argument("--time-limit", type=float, metavar="MIN",
                    help="checkpoint and stop after this many minutes of this invocation (the schedule follows "
                         "--iters only; --resume continues)")
    tr.add_argument("--stop-after", type=int, metavar="N",
                    help="checkpoint and stop after N iterations of this invocation (--resume continues)")
    tr.add_argument("--early-stop", type=int, metavar="N",
                    help="stop when N validations in a row did not beat the best one by 0.01 dB (default: never)")
    tr.add_argument("--keep", choices=("last", "best"), default="last",
                    help="weights written to --out at the end: the last step's (default) or the best validation's "
                         "(every new best is also kept in <run dir>/best.safetensors)")
    tr.add_argument("--seed", type=int, default=3000)
    tr.add_argument("--illuminants", type=int, default=0, metavar="N",
                    help="also train on N copies of every training scene under random smooth illuminants (spectral "
                         "multipliers drawn from --seed; the inputs are simulated from each copy); default 0")
    tr.add_argument("--illuminant-refresh", type=int, default=0, metavar="R",
                    help="every R iterations give one copy slot of every training scene a new illuminant (slots in "
                         "turn), so the run sees more illuminants than it holds in memory; default 0 (the copies stay)")
    tr.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                    help="keep an exponential moving average of the weights (e.g. 0.999); validation, --keep best "
                         "and --out use the average; default 0 (off)")
    tr.add_argument("--threads", type=int,
                    help="CPU threads (default 1: on a shared 2-core machine 2 were 3-8x slower; more on one of your own)")
    tr.add_argument("--run-dir", help="checkpoint folder (default runs/<out name> in the current folder, or in the "
                                      "user data folder when the current one is read-only or inside the install)")
    tr.add_argument("--resume", action="store_true",
                    help="continue from the checkpoint, or from the --out weights when there is none (then with "
                         "a fresh optimizer, schedule and --time-limit budget)")
    tr.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    _add_read_options(tr, nonfinite=False, each="applied to every scene file")

    bench = sub.add_parser("bench", help="measure speed and memory; prints ratios measured in one run")
    bench.add_argument("--only", action="append", choices=("io", "load", "redraw", "spectra", "metrics", "compare", "viewer", "models"),
                       help="run only these benchmarks (repeatable)")
    bench.add_argument("--quick", action="store_true", help="smaller inputs (0.25 GB ENVI cube, 256x256 models)")
    bench.add_argument("--json", help="also write the figures as JSON here")
    bench.add_argument("--device", default="auto", help="device for the model benchmarks")
    bench.add_argument("--envi-gb", type=float, help="size of the generated ENVI cube in GB (default 2, quick 0.25)")
    bench.add_argument("--tmp", help="folder for the generated files (default: system temp)")
    return parser


def cmd_info(args) -> int:
    import numpy as np

    from app.core.cube import parse_nm_ranges
    from app.core.io import open_cube
    from app.core.io.georef import georef_of

    cube = open_cube(args.path, **_read_kwargs(args))
    wl = cube.wavelengths_nm
    summary = {
        "name": cube.name, "path": str(cube.source_path), "format": cube.metadata.get("format"),
        "shape_hwb": list(cube.shape), "memory_mapped": cube.is_lazy, "normalisation": cube.normalisation,
        "wavelengths_nm": None if wl is None else [round(float(w), 3) for w in wl],
        "fwhm_nm": None if cube.fwhm_nm is None else [round(float(w), 3) for w in cube.fwhm_nm],
        "bad_bands": None if cube.bad_bands is None else [int(i) for i in cube.bad_bands.nonzero()[0]],
        "excluded_bands": [int(i) for i in np.flatnonzero(cube.excluded_bands(parse_nm_ranges(args.exclude_bands)))],
        "nodata_value": None if cube.ignore_value is None else float(cube.ignore_value),
        "nodata_nonfinite": cube.nonfinite_nodata,
        "nodata_pixels": cube.nodata_count(),
        "warnings": cube.metadata.get("warnings", []),
        "variable": cube.metadata.get("variable"), "layout": cube.metadata.get("layout"),
        "georef": cube.metadata.get("georef"),
    }
    if args.json:
        from app.core.io.provenance import stamp

        print(json.dumps(stamp(summary, "info", arguments={"path": str(args.path)}), indent=2))
        return 0
    print(cube.describe())
    print(f"  format: {summary['format']}" + (f", variable {summary['variable']}" if summary["variable"] else "")
          + (f", layout {summary['layout']}" if summary["layout"] else ""))
    if wl is not None:
        step = f", mean step {float((wl[-1] - wl[0]) / max(1, len(wl) - 1)):.2f} nm" if len(wl) > 1 else ""
        print(f"  wavelengths: {wl[0]:.2f} .. {wl[-1]:.2f} nm ({len(wl)} bands{step})")
    else:
        print("  wavelengths: unknown (bands are numbered)")
    geo = georef_of(cube.metadata)
    print(f"  georeference: {geo.describe()}" if geo is not None else "  georeference: none")
    if summary["bad_bands"]:
        print(f"  bad bands: {len(summary['bad_bands'])} flagged")
    if summary["excluded_bands"]:
        from app.core.science.metrics import describe_bands

        print(f"  bands left out of the metrics: {len(summary['excluded_bands'])} of {cube.bands}: "
              + describe_bands(np.asarray(summary["excluded_bands"]), cube.wavelengths_nm))
    if cube.has_nodata_rule:
        rule = " or ".join(([f"value {cube.ignore_value:g}"] if cube.ignore_value is not None else [])
                           + (["NaN/Inf"] if cube.nonfinite_nodata else []))
        print(f"  no-data: {rule} in any band; {summary['nodata_pixels']} of {cube.height * cube.width} pixels "
              f"(left out of the metrics)")
    for w in summary["warnings"]:
        print(f"  note: {w}")
    return 0


def cmd_convert(args) -> int:
    from app.core.io import open_cube, save_cube

    cube = open_cube(args.src, **_read_kwargs(args))
    out = save_cube(cube, args.dst, mat_version=args.mat_version, interleave=args.interleave)
    print(f"wrote {out} ({cube.height}x{cube.width}x{cube.bands}, float32 reflectance)")
    return 0


# What the GUI extra installs: a headless install lacks them, and `view`/`browse` then say how to get them
GUI_MODULES = ("PyQt6", "pyqtgraph", "superqt", "matplotlib")


def _gui_app():
    """``app.qt.app``, or a one-line error naming the install command when the GUI extra is missing."""
    from app.core.errors import HsiError

    try:
        import app.qt.app as qt_app
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or "").split(".")[0]
        if missing not in GUI_MODULES:
            raise
        raise HsiError(f"the viewer needs the GUI extra ({missing} is not installed): "
                       f"pip install 'hsi-sr-viewer[gui]'") from None
    return qt_app


def view_files(args) -> list[tuple]:
    """(role, path) of every file the view command names, with a third item, the ``open_cube``
    options, when there are any: ``--<role>-var`` (else ``--var``) and ``--layout`` for each,
    ``--wavelengths`` for the hyperspectral roles (not the guide)."""
    files = [("recon", f) for f in args.files]
    for role in ROLES:
        files += [(role, f) for f in getattr(args, role)]
    out = []
    for role, path in files:
        options = {}
        var = getattr(args, f"{role}_var", None) or args.var
        if var:
            options["var"] = var
        if args.layout:
            options["layout"] = args.layout
        if args.wavelengths and role != "guide":
            options["wavelengths"] = args.wavelengths
        out.append((role, path, options) if options else (role, path))
    return out


def cmd_view(args) -> int:
    files = view_files(args)
    if args.wavelengths:  # a bad list is said at once, before the window opens
        from app.core.io.wavelengths import read_wavelength_file

        read_wavelength_file(args.wavelengths)
    run_viewer = _gui_app().run_viewer
    return run_viewer(files, open_sample=not args.no_sample, screenshot=args.screenshot)


def _progress_bar(desc: str):
    """A tqdm bar driven by engine Progress reports (fraction in [0, 1])."""
    from tqdm import tqdm

    bar = tqdm(total=1000, desc=desc, unit="‰", leave=False, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

    def update(progress):
        bar.n = int(round(progress.fraction * 1000))
        post = progress.message if progress.loss is None else f"{progress.message} loss {progress.loss:.4g}"
        bar.set_postfix_str(post[:60], refresh=False)
        bar.refresh()

    return bar, update


def cmd_simulate(args) -> int:
    from app.core.inference.batch import simulate_to_dir

    ext = args.format if args.format.startswith(".") else "." + args.format
    meta = simulate_to_dir(args.gt, args.protocol, args.out, srf=args.srf, noise_sigma=args.noise_sigma,
                           seed=args.seed, ext=ext, read_options=_read_kwargs(args))
    print(f"{meta['protocol']}: LR {meta['lr_shape']}, guide {meta.get('guide_shape')} -> {args.out}")
    for note in meta.get("notes", []):
        print(f"  note: {note}")
    return 0


def _model_options(args) -> dict | None:
    """--blind and --option KEY=VALUE as a dict of build options (numbers and true/false parsed)."""
    from app.core.errors import HsiError

    options = {"blind": True} if args.blind else {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HsiError(f"--option {item!r}: expected KEY=VALUE")
        low = value.strip().lower()
        if low in ("true", "false"):
            parsed = low == "true"
        else:
            try:
                parsed = int(value)
            except ValueError:
                try:
                    parsed = float(value)
                except ValueError:
                    parsed = value.strip()
        options[key.strip()] = parsed
    return options or None


class _StopOnInterrupt:
    """During an iterative run, the first Ctrl+C asks the model to stop and keep its best estimate
    so far (it is then written); a second one aborts as usual."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        import signal

        if self.requested:
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupted: stopping at the next iteration and writing the best estimate so far "
              "(Ctrl+C again to abort)", file=sys.stderr, flush=True)

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def cmd_sr(args) -> int:
    from app.core.inference.batch import super_resolve
    from models import registry

    options = _model_options(args)
    iterative = registry.get(args.model).iterative
    bar, update = _progress_bar(args.model)
    stopper = _StopOnInterrupt()
    try:
        with stopper if iterative else contextlib.nullcontext():
            info = super_resolve(args.model, args.lr, args.out, scale=args.scale, guide_path=args.guide,
                                 srf=args.srf, protocol=args.protocol, device=args.device, steps=args.steps,
                                 seed=args.seed, on_progress=update, read_options=_read_kwargs(args),
                                 options=options, should_stop=lambda: stopper.requested)
    finally:
        bar.close()
    for m in info["messages"]:
        print(f"  note: {m}")
    prov = info["provenance"]
    print(f"wrote {info['out']} ({prov['model']}, x{prov['scale']}, {prov['device']}, {prov['seconds']} s)")
    return 0


def cmd_eval(args) -> int:
    from tqdm import tqdm

    from app.core.inference.batch import evaluate, format_table, write_json

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    done = tqdm(desc="eval", unit="run", leave=False, dynamic_ncols=True)

    def on_item(item):
        done.update(1)
        if item.metrics:
            done.set_postfix_str(f"{item.image} {item.model} {item.metrics['psnr']:.2f} dB")

    try:
        doc = evaluate(args.gt, args.protocol, models if models != ["all"] else "all", device=args.device,
                       steps=args.steps, seed=args.seed, on_item=on_item, options=_model_options(args),
                       exclude_bands=args.exclude_bands, nonfinite=args.nonfinite, scheduler=args.scheduler,
                       read_options=_read_kwargs(args))
    finally:
        done.close()
    print(format_table(doc))
    if args.json:
        print(f"wrote {write_json(Path(args.json), doc)}")
    failed = [r for r in doc["results"] if r.get("error")]
    for r in failed:
        print(f"error: {r['model']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def cmd_compare(args) -> int:
    from tqdm import tqdm

    from app.core.inference.batch import write_json
    from app.core.evaluation.compare import compare, exit_status, format_table, write_csv, write_markdown

    bar = tqdm(desc="compare", unit="pair", leave=False, dynamic_ncols=True)

    def on_progress(done, total, row):
        if bar.total != total:
            bar.total = total
            bar.refresh()
        if done:
            bar.update(done - bar.n)
        if "psnr" in row:
            bar.set_postfix_str(f"{row['image']} {row['model']} {row['psnr']:.2f} dB"[:60])

    try:
        doc = compare(args.gt, args.pred, names=args.name, scale=args.scale, var=args.var, layout=args.layout,
                      pred_range=args.pred_range, gt_var=args.gt_var, gt_layout=args.gt_layout,
                      gt_range=args.gt_range, nonfinite=args.nonfinite, crop=args.crop, per_band=args.per_band,
                      exclude_bands=args.exclude_bands, gt_wavelengths=args.wavelengths,
                      device=args.device, workers=args.workers, on_progress=on_progress, scheduler=args.scheduler)
    finally:
        bar.close()
    print(format_table(doc))
    for out, writer in ((args.json, write_json), (args.csv, write_csv), (args.md, write_markdown)):
        if out:
            print(f"wrote {writer(Path(out), doc)}")
    for err in doc["errors"]:
        print(f"error: {err['error']}", file=sys.stderr)
    missing = [u for u in doc["unmatched"] if u["side"] == "gt"]
    if missing:
        print(f"error: {len(missing)} GT item(s) without a prediction: "
              + ", ".join(f"{u['image']} ({u['model']})" for u in missing[:8]) + (" ..." if len(missing) > 8 else ""),
              file=sys.stderr)
    return exit_status(doc)


def cmd_browse(args) -> int:
    return _gui_app().run_browser(args.json)


def cmd_models(args) -> int:
    from models.registry import INPUT_TITLES, all_specs

    for spec in all_specs():
        scales = ", ".join(f"x{s}" for s in spec.scales) or "any"
        needs = ", ".join(INPUT_TITLES[i] for i in spec.inputs)
        flags = [f for f, on in (("iterative", spec.iterative), ("stochastic", spec.stochastic)) if on]
        print(f"{spec.name:<10} {spec.title} [{spec.task}; scales {scales}; needs {needs}"
              + (f"; {', '.join(flags)}" if flags else "") + "]")
    return 0


def cmd_train(args) -> int:
    from app.core.inference.training import TrainOptions, train

    options = {"config": args.config} if args.config else {}
    opts = TrainOptions(model=args.model, data=args.data, protocol=args.protocol, out=args.out, val=args.val,
                        iters=args.iters, batch=args.batch, patch=args.patch, lr_rate=args.lr_rate,
                        schedule=args.schedule, device=args.device, resume=args.resume, val_every=args.val_every,
                        val_crop=args.val_crop, ckpt_every=args.ckpt_every, time_limit_min=args.time_limit,
                        stop_after=args.stop_after, split=args.split, seed=args.seed, run_dir=args.run_dir,
                        threads=args.threads, model_options=options, early_stop=args.early_stop, keep=args.keep,
                        read_options=_read_kwargs(args), illuminants=args.illuminants,
                        illuminant_refresh=args.illuminant_refresh, ema=args.ema)
    summary = train(opts, log=lambda msg: print(msg, flush=True))
    val = summary["val_psnr"]
    tail = f", validation {val:.3f} dB vs bicubic {summary['bicubic_val_psnr']:.3f} dB" if val is not None else ""
    print(f"trained {summary['model']} {summary['protocol']} to step {summary['step']} "
          f"({summary['elapsed_s'] / 60:.1f} min on {summary['device']}, {summary['stop_reason']}){tail}; "
          f"wrote {summary['weights']}")
    return 0


def cmd_bench(args) -> int:
    if not args.only or "viewer" in args.only:
        import app.qt  # noqa: F401 - the viewer's process settings (passive OpenMP waiting) before torch loads
    from app.bench.runner import run_benchmarks

    def viewer(quick: bool):  # Qt is imported only when the viewer section runs
        from app.bench.viewer import bench_viewer

        return bench_viewer(quick)

    return run_benchmarks(only=args.only, envi_gb=args.envi_gb, tmp=args.tmp, quick=args.quick,
                          json_out=args.json, device=args.device, viewer=viewer)


def _subject(args) -> str | None:
    """The input a command is about, for an out-of-memory message that names a file."""
    for name in ("path", "src", "lr", "gt"):
        value = getattr(args, name, None)
        if value:
            return " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return None


def _estimated_bytes(args) -> int | None:
    """float32 size of the command's input cube (what loading it costs), when it can be told cheaply."""
    import os

    for name in ("path", "src", "lr", "gt"):
        value = getattr(args, name, None)
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else None
        if not value:
            continue
        try:
            from app.core.io import open_cube

            return open_cube(value).nbytes_float32
        except BaseException:  # noqa: BLE001 - a second failure must not hide the first
            try:
                return os.path.getsize(value) if os.path.isfile(value) else None
            except OSError:
                return None
    return None


class _Signals:
    """SIGTERM (and SIGINT) raise an exception in the main thread, so that ``finally`` blocks and
    the atomic writers remove their temporary files; without a handler SIGTERM kills the process
    on the spot and leaves hidden ``.NAME.XXXX.part`` files behind."""

    def __enter__(self):
        import signal
        import threading

        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                current = signal.getsignal(sig)
                if sig == signal.SIGINT and current is not signal.default_int_handler:
                    continue  # somebody (a test runner, an embedding app) handles Ctrl+C already
                if sig == signal.SIGTERM and current not in (signal.SIG_DFL, None):
                    continue
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    @staticmethod
    def _handler(signum, frame):
        from app.core.io._common import interruption, note_signal

        if note_signal(signum):  # else held back until a library call that must not be cut ends
            raise interruption(signum)

    def __exit__(self, *exc):
        import signal

        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        return False


def main(argv: list[str] | None = None) -> int:
    from app.core.errors import HsiError, OutOfMemoryError, Terminated, memory_needed
    from app.core.io._common import check_interrupted, signals_seen

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"view", "info", "convert", "simulate", "sr", "eval", "compare", "browse", "models", "bench", "train"}
    if argv and argv[0] not in commands and not argv[0].startswith("-"):
        argv = ["view", *argv]  # `python main.py cube.hdr` opens the viewer on that file
    args = parser.parse_args(argv)
    from app.core.io.provenance import set_command_line

    set_command_line(argv)  # every JSON document this run writes records it
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if args.command is None:
        args = parser.parse_args(["view", *argv])
    handlers = {"view": cmd_view, "info": cmd_info, "convert": cmd_convert, "simulate": cmd_simulate,
                "sr": cmd_sr, "eval": cmd_eval, "compare": cmd_compare, "browse": cmd_browse, "models": cmd_models, "bench": cmd_bench,
                "train": cmd_train}
    since = signals_seen()
    try:
        with _Signals() if args.command != "view" else contextlib.nullcontext():
            status = handlers[args.command](args)
            check_interrupted(since)  # an interruption a library swallowed still ends the command
            return status
    except (HsiError, ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        if args.debug:
            raise
        subject = _subject(args)
        needed = memory_needed(exc) or _estimated_bytes(args)
        print(f"error: {OutOfMemoryError(subject, needed)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        if isinstance(exc, Terminated):
            print("terminated", file=sys.stderr)
            return 128 + exc.signum
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
