"""``frugal xray train``, ``frugal xray unmix`` and ``frugal demo xray``: their parsers and
handlers.

``register(subparsers)`` adds the ``xray`` command (with ``train`` and ``unmix``) to the
sub-parsers of the ``frugal`` parser; ``add_demo_parser(demo_subparsers)`` adds ``xray`` to
those of ``frugal demo``. Every handler takes the parsed namespace, returns an exit status
and raises ``ValueError`` (naming the argument or file) on bad input, which the ``frugal``
entry point turns into a one-line error and exit status 2.

``xray train`` stores with the IAE checkpoint (``info["xray"]``) the component's name, the
channel energies and the latent -> physical-parameter map learnt on the labelled spectra,
so that ``xray unmix`` checks the cube's energy grid and writes kT / z / photon-index maps.
The built-in families and their training are :mod:`frugal.xray.builtin`; the fit summaries
and map errors :mod:`frugal.xray.report`; the figures :mod:`frugal.xray.plots`.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

__all__ = [
    "add_demo_parser",
    "demo_xray",
    "register",
    "train_command",
    "unmix_command",
]


# ---------------------------------------------------------------------------------------
# Parsers


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``xray train`` and ``xray unmix`` to ``subparsers`` (from ``add_subparsers``)."""
    from frugal.xray.builtin import BUILTIN

    xray = subparsers.add_parser(
        "xray", help="X-ray cubes: learn component spectra (IAE), unmix cubes (SUSHI)",
        description="X-ray hyperspectral cubes: learn how a component's spectrum deforms with its "
                    "physical parameters (IAE) and unmix cubes into amplitude and parameter maps with "
                    "SUSHI (Lascar, Bobin & Acero, A&A 686, A259, 2024).",
    )
    sub = xray.add_subparsers(dest="xray_command", required=True, metavar="{train,unmix}")

    tr = sub.add_parser(
        "train", help="train an IAE (and its parameter map) on labelled spectra",
        description="Train an IAE on a labelled family of spectra: a .npz file (arrays 'spectra' "
                    "(N, E), 'params' (N, p), optional 'param_names' and 'energies'), a .npy of "
                    "spectra with a CSV manifest of their parameters, or a built-in family. The "
                    "checkpoint also holds the map from latent weights to the parameters.",
    )
    tr.add_argument("spectra", nargs="?", default=None, metavar="FILE", help=".npz or .npy labelled spectra")
    tr.add_argument("--builtin", choices=tuple(BUILTIN), default=None,
                    help="a built-in family of the toy simulator instead of a file")
    tr.add_argument("--manifest", default=None, metavar="CSV",
                    help="parameters of a .npy's spectra: a header of names, one row per spectrum")
    tr.add_argument("--energies", default=None, metavar="NPY", help="channel energies (keV) of a .npy's spectra")
    tr.add_argument("--name", default=None, help="component name (default: the family's or the file's stem)")
    tr.add_argument("--n-spectra", type=int, default=None, help="size of a built-in family")
    tr.add_argument("--channels", type=int, default=375, help="channels of a built-in family (default %(default)s)")
    tr.add_argument("--anchors", default=None, metavar="I,J,...",
                    help="indices of the anchor spectra (default: those nearest the corners of the parameter box)")
    tr.add_argument("--log-params", default=None, metavar="NAME,...",
                    help="parameters spaced and regressed in log (default: kT if present)")
    tr.add_argument("--degree", type=int, default=3, help="degree of the parameter map (default %(default)s)")
    tr.add_argument("--width", type=int, default=None, help="layer width of the dense IAE")
    tr.add_argument("--depth", type=int, default=None, help="layers of the dense IAE")
    tr.add_argument("--latent-dim", type=int, default=None, help="code size of the dense IAE")
    tr.add_argument("--epochs", type=int, default=500, help="training epochs (default %(default)s)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("-o", "--out", default=None, help="checkpoint path (default <name>.frugal)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=train_command)

    un = sub.add_parser(
        "unmix", help="amplitude and parameter maps of a FITS cube",
        description="Unmix a FITS cube (E, H, W) with one IAE per component: SUSHI (spatially "
                    "regularised) or the per-pixel fit. Writes the maps as FITS (the cube's sky WCS "
                    "copied), a PNG panel and a JSON summary.",
    )
    un.add_argument("cube", metavar="FITS", help="counts cube, energy on FITS axis 3 (numpy axis 0)")
    un.add_argument("-m", "--model", action="append", required=True, metavar="CKPT",
                    help="IAE checkpoint of one component (repeat: one per component)")
    un.add_argument("--method", choices=("sushi", "pixels"), default="sushi")
    un.add_argument("--mask", default=None, metavar="FILE",
                    help="FITS image or .npy, non-zero where the data are used (default: everywhere)")
    un.add_argument("--background", default=None, metavar="FILE",
                    help="expected background counts: a FITS cube like the data, or a .npy (E,) or (E, H, W)")
    un.add_argument("--loss", choices=("poisson", "gaussian"), default="poisson")
    un.add_argument("--k-mad", type=float, default=1.0, help="threshold in MAD units (default %(default)s)")
    un.add_argument("--n-scales", type=int, default=2, help="starlet detail scales (default %(default)s)")
    un.add_argument("--max-iter", type=int, default=100)
    un.add_argument("--tol", type=float, default=1e-5)
    un.add_argument("-o", "--out", default="frugal-xray-unmix", help="output folder (default %(default)s)")
    un.add_argument("--no-plot", action="store_true", help="do not draw the PNG panel")
    un.set_defaults(func=unmix_command)
    return xray


def add_demo_parser(demo_subparsers) -> argparse.ArgumentParser:
    """Add ``xray`` to the sub-parsers of ``frugal demo``."""
    d = demo_subparsers.add_parser(
        "xray", help="simulate, learn and unmix a supernova-remnant cube end to end (toy model)",
        description="Simulate a thermal + synchrotron remnant cube, train a small IAE per component "
                    "on the labelled toy families, unmix the cube with the per-pixel fit and with "
                    "SUSHI, print the errors of the amplitude and parameter maps and draw them "
                    "(the paper's 94 x 94 x 375 toy model: about a minute on two CPU cores; --size "
                    "makes it smaller).",
    )
    d.add_argument("--out", default="frugal-demo-xray", help="output folder (default %(default)s)")
    d.add_argument("--size", type=int, default=94, help="cube side in pixels (default %(default)s)")
    d.add_argument("--exposure", default="low",
                   help="'high', 'low' or mean counts per remnant pixel (default %(default)s)")
    d.add_argument("--epochs", type=int, default=500, help="IAE training epochs (default %(default)s)")
    d.add_argument("--k-mad", type=float, default=1.0, help="SUSHI threshold (default %(default)s)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=demo_xray)
    return d


# ---------------------------------------------------------------------------------------
# Training


def _load_family(args):
    from frugal.data import Family
    from frugal.xray.builtin import builtin_family

    if (args.builtin is None) == (args.spectra is None):
        raise ValueError("give either a spectra FILE or --builtin thermal|synchrotron")
    if args.builtin is not None:
        return builtin_family(args.builtin, args.n_spectra, args.channels, args.seed), args.builtin
    path = Path(args.spectra)
    if not path.exists():
        raise FileNotFoundError(f"spectra file {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("spectra", "params") if k not in z]
            if missing:
                raise ValueError(f"{path} lacks the array(s) {missing} (needs 'spectra' (N, E) and 'params' (N, p))")
            spectra, params = np.asarray(z["spectra"], float), np.asarray(z["params"], float)
            names = [str(n) for n in z["param_names"]] if "param_names" in z else None
            energies = np.asarray(z["energies"], float) if "energies" in z else None
    elif path.suffix == ".npy":
        spectra = np.load(path, allow_pickle=False).astype(float)
        if args.manifest is None:
            raise ValueError(f"{path} holds spectra only: give their parameters with --manifest CSV")
        with open(args.manifest, newline="") as fh:
            rows = list(csv.reader(fh))
        if len(rows) < 2:
            raise ValueError(f"manifest {args.manifest} needs a header of parameter names and one row per spectrum")
        names = [c.strip() for c in rows[0]]
        try:
            params = np.array([[float(v) for v in r] for r in rows[1:] if r], float)
        except ValueError as err:
            raise ValueError(f"manifest {args.manifest}: {err}") from err
        energies = np.load(args.energies) if args.energies else None
    else:
        raise ValueError(f"spectra file {path} must be .npz or .npy")
    if spectra.ndim != 2:
        raise ValueError(f"spectra in {path} must be (N, E), got shape {spectra.shape}")
    params = params.reshape(len(params), -1)
    if len(params) != len(spectra):
        raise ValueError(f"{len(params)} parameter rows for {len(spectra)} spectra in {path}")
    names = names or [f"param{i}" for i in range(params.shape[1])]
    if len(names) != params.shape[1]:
        raise ValueError(f"{len(names)} parameter names for {params.shape[1]} parameter columns")
    if energies is None:
        energies = np.arange(spectra.shape[1], dtype=float)
    if len(energies) != spectra.shape[1]:
        raise ValueError(f"{len(energies)} energies for spectra of {spectra.shape[1]} channels")
    spectra = spectra / np.maximum(spectra.sum(1, keepdims=True), 1e-300)
    return Family(spectra, params, tuple(names), np.asarray(energies, float)), path.stem


def train_command(args) -> int:
    """``frugal xray train``: labelled spectra -> IAE checkpoint (with its parameter map)."""
    import frugal.iae as iae
    from frugal.xray.builtin import BUILTIN, train_family

    family, default_name = _load_family(args)
    name = args.name or default_name
    sizes = BUILTIN.get(args.builtin or "", BUILTIN["thermal"])
    anchors = None if args.anchors is None else [int(v) for v in args.anchors.split(",")]
    log = None if args.log_params is None else [v.strip() for v in args.log_params.split(",") if v.strip()]
    t0 = time.perf_counter()
    model, pmap = train_family(
        family, name, epochs=args.epochs, width=args.width or sizes["width"], depth=args.depth or sizes["depth"],
        latent_dim=args.latent_dim or sizes["latent_dim"], anchors=anchors, log=log, degree=args.degree,
        seed=args.seed, progress=not args.quiet,
    )
    elapsed = time.perf_counter() - t0
    nmse = iae.nmse_db(model.reconstruct(family.spectra), family.spectra)
    out = Path(args.out or f"{name}.frugal")
    out.parent.mkdir(parents=True, exist_ok=True)
    iae.save(model, out)
    print(f"{name}: {len(family.spectra)} spectra x {family.spectra.shape[1]} channels, "
          f"{model.n_anchors} anchors, trained in {elapsed:.1f} s")
    print(f"reconstruction NMSE (training set): median {np.median(nmse):.1f} dB")
    for n in pmap.names:
        print(f"parameter map {n}: RMS residual {pmap.residual[n]:.3g} (leave-one-out {pmap.loo_residual[n]:.3g})")
    print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------------------------
# Unmixing


def _component_info(models, paths, energies):
    """Names and parameter maps from the checkpoints; checks the energy grids."""
    from frugal.xray.params import ParameterMap

    names, pmaps = [], []
    for i, (mdl, path) in enumerate(zip(models, paths)):
        meta = mdl.info.get("xray", {}) if isinstance(mdl.info, dict) else {}
        if mdl.config.n_channels != len(energies):
            raise ValueError(f"model {path} has {mdl.config.n_channels} channels but the cube has {len(energies)}")
        if "energies" in meta and not np.allclose(meta["energies"], energies, rtol=1e-4, atol=1e-6):
            raise ValueError(f"model {path} was trained on another energy grid than the cube's "
                             f"({meta['energies'][0]:.4g}-{meta['energies'][-1]:.4g} keV vs "
                             f"{energies[0]:.4g}-{energies[-1]:.4g} keV)")
        names.append(str(meta.get("name", Path(path).stem)))
        pmaps.append(ParameterMap.from_dict(meta["param_map"]) if "param_map" in meta else None)
    if len(set(names)) != len(names):
        names = [f"{n}{i}" for i, n in enumerate(names)]
    return names, pmaps


def _read_image(path, what: str):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        for hdu in hdul:
            if hdu.is_image and hdu.data is not None:
                return np.array(hdu.data)
    raise ValueError(f"{what} file {path} holds no image")


def unmix_command(args) -> int:
    """``frugal xray unmix``: FITS cube + checkpoints -> FITS maps, PNG panel, JSON summary."""
    import frugal.iae as iae
    from frugal.xray import fit_pixels, read_cube, sushi, write_maps
    from frugal.xray.plots import plot_map_panel
    from frugal.xray.report import fit_line, fit_summary

    cube = read_cube(args.cube)
    models = [iae.load(p) for p in args.model]
    names, pmaps = _component_info(models, args.model, cube.energies)
    mask = None if args.mask is None else _read_image(args.mask, "mask") != 0
    background = None if args.background is None else _read_image(args.background, "background")
    common = dict(background=background, loss=args.loss, max_iter=args.max_iter, tol=args.tol, mask=mask,
                  param_maps=pmaps, names=names)
    t0 = time.perf_counter()
    if args.method == "sushi":
        res = sushi(cube.counts, models, k_mad=args.k_mad, n_scales=args.n_scales, **common)
    else:
        res = fit_pixels(cube.counts, models, **common)
    elapsed = time.perf_counter() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    maps = {f"{n}_amplitude": a for n, a in zip(names, res.amplitude)}
    maps.update(res.params)
    for n, lam in zip(names, res.latent):
        maps.update({f"{n}_weight{j}": w for j, w in enumerate(lam)})
    units = {k: ("counts" if k.endswith("_amplitude") else "keV" if k.endswith("kT") else None) for k in maps}
    write_maps(out / "maps.fits", maps, header=cube.header, units=units)
    fit = fit_summary(res)
    summary = {"method": args.method, "components": names, "n_iter": int(res.n_iter),
               "n_iter_init": int(res.n_iter_init), "converged": bool(res.converged), **fit,
               "objective": float(res.objective[-1]), "time_s": elapsed,
               "thresholds": [t.tolist() for t in res.thresholds],
               "parameter_maps": {n: pm.residual for n, pm in zip(names, pmaps) if pm is not None}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{args.method}: {len(names)} components, {int(res.n_iter_init)} + {int(res.n_iter)} sweeps in "
          f"{elapsed:.1f} s (converged: {bool(res.converged)})")
    print(fit_line(fit))
    wrote = [out / "maps.fits", out / "summary.json"]
    if not args.no_plot:
        shown = {k: v for k, v in maps.items() if "_weight" not in k}
        if mask is not None:
            shown = {k: np.where(mask, v, np.nan) for k, v in shown.items()}
        plot_map_panel(shown, out / "maps.png", f"{args.method}: {Path(args.cube).name}")
        wrote.append(out / "maps.png")
    print("wrote " + ", ".join(str(p) for p in wrote))
    return 0


# ---------------------------------------------------------------------------------------
# Demo


def demo_xray(args) -> int:
    """``frugal demo xray``: simulate a remnant, train the IAEs, per-pixel fit vs SUSHI."""
    from frugal.xray import fit_pixels, simulate_cube, sushi
    from frugal.xray.builtin import builtin_models
    from frugal.xray.plots import plot_demo_maps
    from frugal.xray.report import fit_summary, map_errors

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    exposure = args.exposure
    try:
        exposure = float(exposure)
    except ValueError:
        pass
    cube = simulate_cube((args.size, args.size), exposure=exposure, seed=args.seed)
    print(f"cube: {args.size} x {args.size} pixels x {len(cube.energies)} channels, exposure {args.exposure} "
          f"({cube.counts[:, cube.mask].sum(0).mean():.0f} counts per remnant pixel)")

    t0 = time.perf_counter()
    models, pmaps = builtin_models(epochs=args.epochs, seed=args.seed, progress=not args.quiet)
    t_train = time.perf_counter() - t0

    names = cube.component_names
    t0 = time.perf_counter()
    pixels = fit_pixels(cube.counts, models, param_maps=pmaps, names=names, mask=cube.mask)
    t_pix = time.perf_counter() - t0
    t0 = time.perf_counter()
    reg = sushi(cube.counts, models, param_maps=pmaps, names=names, mask=cube.mask, init=pixels, k_mad=args.k_mad)
    t_sushi = time.perf_counter() - t0

    errors = {"fit_pixels": map_errors(pixels, cube), "sushi": map_errors(reg, cube)}
    keys = list(errors["sushi"])
    print(f"\n{'':28s}{'per-pixel':>12s}{'SUSHI':>12s}")
    for k in keys:
        print(f"{k:28s}{errors['fit_pixels'][k]:12.4g}{errors['sushi'][k]:12.4g}")
    print(f"{'sweeps':28s}{int(pixels.n_iter):12d}{int(reg.n_iter):12d}")
    fits = {"fit_pixels": fit_summary(pixels), "sushi": fit_summary(reg)}
    print(f"{'status':28s}{fits['fit_pixels']['status']:>12s}{fits['sushi']['status']:>12s}")
    print(f"{'goodness of fit p-value':28s}{fits['fit_pixels']['gof_pvalue']:12.3g}{fits['sushi']['gof_pvalue']:12.3g}")
    print(f"{'time (s, incl. compilation)':28s}{t_pix:12.1f}{t_sushi:12.1f}")
    print(f"(IAE training and parameter maps: {t_train:.1f} s)")

    plot_demo_maps(cube, pixels, reg, out / "xray.png", f"toy remnant, exposure {args.exposure}")
    summary = {"size": args.size, "exposure": args.exposure, "errors": errors,
               "n_iter": {"fit_pixels": int(pixels.n_iter), "sushi": int(reg.n_iter)}, "fit": fits,
               "time_s": {"train": t_train, "fit_pixels": t_pix, "sushi": t_sushi}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'xray.png'}, {out / 'summary.json'}")
    return 0
