"""``frugal gamma train``, ``frugal gamma unmix`` and ``frugal demo gamma``: their parsers and
handlers.

``register(subparsers)`` adds the ``gamma`` command (with ``train`` and ``unmix``) to the
sub-parsers of the ``frugal`` parser; ``add_demo_parser(demo_subparsers)`` adds ``gamma``
to those of ``frugal demo``. Every handler takes the parsed namespace, returns an exit
status and raises ``ValueError`` (naming the argument or file) on bad input, which the
``frugal`` entry point turns into a one-line error and exit status 2.

The preprocessing a model was trained with (channels dropped, channels summed per bin,
bins kept, energy axis) is stored in its checkpoint (``info["gamma"]``), so ``gamma unmix``
applies exactly the same binning to raw measured spectra. The built-in problem of the demo
is :mod:`frugal.gamma.builtin`; its tables and the thickness read from the weights are
:mod:`frugal.gamma.report`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = [
    "SPECTRUM_EXTENSIONS",
    "add_demo_parser",
    "demo_gamma",
    "register",
    "train_command",
    "unmix_command",
]

#: Extensions ``gamma unmix`` reads; ``.npy`` may also hold a ``(B, n)`` batch of spectra.
SPECTRUM_EXTENSIONS = (".spe", ".txt", ".dat", ".csv", ".tsv", ".npy", ".n42", ".xml")


# ---------------------------------------------------------------------------------------
# Parsers


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``gamma train`` and ``gamma unmix`` to ``subparsers`` (from ``add_subparsers``)."""
    gamma = subparsers.add_parser(
        "gamma", help="gamma-ray spectrometry: learn signatures (IAE), unmix spectra (SEMSUN)",
        description="Gamma-ray spectrometry: learn shielding-dependent signatures with an IAE and "
                    "unmix measured spectra with SEMSUN (Phan et al., NIM A 1060 (2024) 169028).",
    )
    sub = gamma.add_subparsers(dest="gamma_command", required=True, metavar="{train,unmix}")

    tr = sub.add_parser(
        "train", help="train an IAE on a family of simulated signatures",
        description="Read one family of spectra per radionuclide (Geant4 layout "
                    "<dir>/<RN>/GRS_*_<RN>_STEEL<a>__<b>mm.dat, or a generic layout with a manifest), "
                    "apply the published preprocessing and train an IAE (one per family, or one joint "
                    "model over all families with --joint).",
    )
    tr.add_argument("families", nargs="+", metavar="DIR",
                    help="family directories (a Geant4 data set root with --nuclide, or one folder per family)")
    tr.add_argument("--nuclide", action="append", default=None, metavar="RN",
                    help="radionuclide sub-folder / file prefix to read in each DIR (repeat for several)")
    tr.add_argument("--joint", action="store_true",
                    help="train one joint model over all families (they must share their parameters)")
    tr.add_argument("-o", "--out", default=None,
                    help="checkpoint path for one model (default <name>.frugal), or a folder for several")
    tr.add_argument("--bins", default="800", metavar="N[,N...]",
                    help="bins kept after rebinning, one value or one per family (default %(default)s)")
    tr.add_argument("--offset", type=int, default=18, help="leading channels dropped (default %(default)s)")
    tr.add_argument("--rebin", type=int, default=2, help="channels summed per bin (default %(default)s)")
    tr.add_argument("--floor", type=float, default=1e-6,
                    help="floor of each spectrum relative to its maximum (default %(default)s)")
    tr.add_argument("--arch", choices=("dense", "conv"), default="dense")
    tr.add_argument("--latent-dim", type=int, default=None, help="code size of the dense IAE")
    tr.add_argument("--width", type=int, default=None, help="layer width of the dense IAE")
    tr.add_argument("--depth", type=int, default=None, help="layers of the dense IAE")
    tr.add_argument("--epochs", type=int, default=1500, help="training epochs (default %(default)s)")
    tr.add_argument("--loss", choices=("log", "squared"), default="log",
                    help="reconstruction loss (default %(default)s: log-MSE, as in SEMSUN)")
    tr.add_argument("--test-fraction", type=float, default=0.25,
                    help="share of the non-anchor spectra held out to report the NMSE (default %(default)s)")
    tr.add_argument("--published-split", action="store_true",
                    help="the split of the SEMSUN paper (96 spectra: anchors 0 and 95, 25 test)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=train_command)

    un = sub.add_parser(
        "unmix", help="counts +- sigma per source in measured spectra",
        description="Unmix spectra with SEMSUN: counts of each source (background first) with their "
                    "Fisher standard errors, the barycentric weights and, when the model knows it, "
                    "the shielding parameter. Writes a CSV, a JSON and a figure of the first fit.",
    )
    un.add_argument("spectra", nargs="+", metavar="FILE",
                    help="spectrum files (.spe, .txt, .dat, .csv, .n42, .npy; a .npy may hold (B, n) spectra)")
    un.add_argument("-m", "--model", action="append", required=True, metavar="CKPT",
                    help="IAE checkpoint: one joint model or one per radionuclide (repeat)")
    un.add_argument("-b", "--background", default=None, metavar="FILE",
                    help="measured background spectrum (its shape is fixed, its counts fitted)")
    un.add_argument("--names", default=None, help="comma-separated source names (default: from the models)")
    un.add_argument("--solver", choices=("newton", "bcd"), default="newton")
    un.add_argument("--start", choices=("middle", "first", "last"), default="middle",
                    help="starting weights: middle of the training range, or the first / last anchor")
    un.add_argument("--max-iter", type=int, default=100)
    un.add_argument("--offset", type=int, default=None, help="override the model's dropped channels")
    un.add_argument("--rebin", type=int, default=None, help="override the model's channels per bin")
    un.add_argument("-o", "--out", default="frugal-gamma-unmix", help="output folder (default %(default)s)")
    un.add_argument("--no-plot", action="store_true", help="do not draw the figure")
    un.set_defaults(func=unmix_command)
    return gamma


def add_demo_parser(demo_subparsers) -> argparse.ArgumentParser:
    """Add ``gamma`` to the sub-parsers of ``frugal demo``."""
    d = demo_subparsers.add_parser(
        "gamma", help="simulate, learn and unmix gamma-ray spectra end to end (built-in simulator)",
        description="Simulate Co-60, Cs-137 and Ba-133 signatures behind steel, train a joint IAE, "
                    "simulate Poisson mixtures at a shielding the model never saw, unmix them with "
                    "SEMSUN and the baselines, print the counting-error table and draw the fit.",
    )
    d.add_argument("--out", default="frugal-demo-gamma", help="output folder (default %(default)s)")
    d.add_argument("--thickness", type=float, default=7.3,
                   help="true steel thickness of the mixtures, mm (default %(default)s)")
    d.add_argument("--counts", type=float, default=20000, help="expected total counts (default %(default)s)")
    d.add_argument("--draws", type=int, default=200, help="Poisson draws (default %(default)s)")
    d.add_argument("--epochs", type=int, default=600, help="IAE training epochs (default %(default)s)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=demo_gamma)
    return d


# ---------------------------------------------------------------------------------------
# Shared helpers


def _pm(value: float, sigma: float) -> str:
    """``value +- sigma`` with sigma to two significant digits and value to the same decimal."""
    if not np.isfinite(sigma) or sigma <= 0:
        return f"{value:.6g} +- {sigma:.2g}"
    decimals = max(0, 1 - int(np.floor(np.log10(sigma))))
    return f"{value:.{decimals}f} +- {sigma:.{decimals}f}"


def _positive(value, name: str) -> int:
    if value is None or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _parse_bins(text: str, n_families: int) -> list[int]:
    try:
        bins = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--bins must be integers separated by commas, got {text!r}") from None
    if not bins or any(b < 1 for b in bins):
        raise ValueError(f"--bins must be positive integers, got {text!r}")
    if len(bins) == 1:
        bins = bins * n_families
    if len(bins) != n_families:
        raise ValueError(f"--bins has {len(bins)} values for {n_families} families (give one, or one per family)")
    return bins


def _window(n_raw: int, offset: int, rebin: int) -> int:
    """Channels kept after the offset: the published 2048, or as many whole bins as there are."""
    return min(2048, rebin * ((n_raw - offset) // rebin))


def _binning(spectra, energies, *, offset: int, rebin: int, bins: int, floor, normalise: bool, what: str):
    """Drop ``offset`` channels, sum ``rebin`` per bin, keep ``bins`` (optionally floor and normalise)."""
    from frugal.gamma.io import preprocess

    n_raw = np.shape(spectra)[-1]
    window = _window(n_raw, offset, rebin)
    if window < rebin * bins:
        raise ValueError(
            f"{what}: {n_raw} channels give only {max(window, 0) // rebin} bins after dropping {offset} "
            f"and summing {rebin} per bin, but {bins} are needed (check --bins / --offset / --rebin)"
        )
    return preprocess(spectra, energies=energies, offset_channels=offset, n_channels=window, rebin=rebin,
                      floor=floor, keep=bins, normalise=normalise)


# ---------------------------------------------------------------------------------------
# gamma train


def _read_families(dirs, nuclides):
    from frugal.gamma.io import read_family

    out = []
    for d in dirs:
        if not Path(d).is_dir():
            raise ValueError(f"family directory {d!r} does not exist or is not a directory")
        for nuc in nuclides or [None]:
            fam = read_family(d, nuc)
            name = nuc if nuc is not None else Path(d).resolve().name
            out.append((name, fam))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"two families share a name ({', '.join(names)}); use distinct folders or --nuclide")
    return out


def _split(params, n: int, *, published: bool, test_fraction: float, seed: int):
    from frugal.data import Family, split
    from frugal.gamma.io import published_split

    if published:
        if n != 96:
            raise ValueError(f"--published-split needs the 96 thicknesses of the SEMSUN data set, got {n} spectra")
        return published_split()
    if not 0 <= test_fraction < 1:
        raise ValueError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    if n < 3:
        raise ValueError(f"a family needs at least 3 spectra (2 anchors and 1 to train on), got {n}")
    return split(Family(None, params, (), None), test_fraction=test_fraction, seed=seed)


def train_command(args) -> int:
    """``frugal gamma train``: families -> preprocessing -> IAE checkpoint(s)."""
    import dataclasses

    import frugal.iae as iae
    from frugal.gamma.report import latent_curve

    epochs = _positive(args.epochs, "--epochs")
    offset = int(args.offset)
    if offset < 0:
        raise ValueError(f"--offset must be >= 0, got {offset}")
    rebin = _positive(args.rebin, "--rebin")
    if args.floor is not None and args.floor < 0:
        raise ValueError(f"--floor must be >= 0, got {args.floor}")
    architecture = {k: _positive(getattr(args, k), "--" + k.replace("_", "-"))
                    for k in ("latent_dim", "width", "depth") if getattr(args, k) is not None}
    families = _read_families(args.families, args.nuclide)
    if args.joint and len(families) < 2:
        raise ValueError("--joint needs at least two families (several DIRs or --nuclide values)")
    bins = _parse_bins(args.bins, len(families))
    prepared = []
    for (name, fam), nb in zip(families, bins):
        x, e = _binning(fam.spectra, fam.energies, offset=offset, rebin=rebin, bins=nb, floor=args.floor,
                        normalise=True, what=f"family {name!r}")
        prepared.append((name, x.astype(np.float32), e, fam))

    groups = [prepared] if args.joint else [[p] for p in prepared]
    if args.joint:
        ref = prepared[0][3]
        for name, x, _, fam in prepared[1:]:
            if x.shape != prepared[0][1].shape:
                raise ValueError(f"--joint: family {name!r} has shape {x.shape}, {prepared[0][0]!r} has "
                                 f"{prepared[0][1].shape} (same spectra count and --bins needed)")
            if fam.params.shape != ref.params.shape or not np.allclose(fam.params, ref.params, rtol=1e-6):
                raise ValueError(f"--joint: family {name!r} does not have the parameters of {prepared[0][0]!r}; "
                                 "a joint model needs one spectrum per parameter value in every family")
    several = len(groups) > 1
    out = Path(args.out) if args.out else None
    if several:
        folder = out or Path(".")
        folder.mkdir(parents=True, exist_ok=True)
    for group in groups:
        names = [g[0] for g in group]
        fam = group[0][3]
        x = np.stack([g[1] for g in group], axis=1) if args.joint else group[0][1]
        s = _split(fam.params, x.shape[0], published=args.published_split, test_fraction=args.test_fraction,
                   seed=args.seed)
        label = "+".join(names)
        print(f"{label}: {x.shape[0]} spectra x {x.shape[-1]} bins; 2 anchors, {len(s.train)} training, "
              f"{len(s.test)} test")
        t0 = time.perf_counter()
        model = iae.train(x[s.train], x[s.anchors], arch=args.arch, epochs=epochs, loss=args.loss,
                          seed=args.seed, progress=not args.quiet, **architecture)
        elapsed = time.perf_counter() - t0
        nmse = iae.nmse_db(model.reconstruct(x[s.test]), x[s.test]) if len(s.test) else np.zeros((0,))
        nmse = nmse.reshape(len(s.test), -1)
        scores = {n: [float(v) for v in np.percentile(nmse[:, i], [50, 25, 75])] if len(s.test) else None
                  for i, n in enumerate(names)}
        train_x = np.concatenate([x[s.anchors], x[s.train]])
        train_p = np.concatenate([fam.params[s.anchors], fam.params[s.train]])
        meta = {
            "names": names,
            "offset_channels": offset,
            "rebin": rebin,
            "bins": int(x.shape[-1]),
            "floor": args.floor,
            "energies": np.asarray(group[0][2], dtype=np.float64).tolist(),
            "param_names": list(fam.param_names),
            "anchor_params": np.asarray(fam.params[s.anchors], dtype=np.float64).tolist(),
            "latent_curve": latent_curve(model, train_x, train_p),
            "test_nmse_db": scores,
            "sources": [str(Path(d).resolve()) for d in args.families],
        }
        model = dataclasses.replace(model, info={**model.info, "gamma": meta})
        path = (folder / f"{label}.frugal") if several else (out or Path(f"{label}.frugal"))
        if path.parent != Path("."):
            path.parent.mkdir(parents=True, exist_ok=True)
        iae.save(model, path)
        for n in names:
            sc = scores[n]
            print(f"  {n}: test NMSE " + (f"median {sc[0]:.1f} dB [q25 {sc[1]:.1f}, q75 {sc[2]:.1f}]" if sc
                                          else "n/a (no test spectra)"))
        print(f"  trained {epochs} epochs in {elapsed:.1f} s -> {path}")
    return 0


# ---------------------------------------------------------------------------------------
# gamma unmix


def _read_inputs(files):
    """Raw spectra ``(B, n)``, their energies ``(n,)`` and ``(file, index)`` labels."""
    from frugal.gamma.io import read_spectrum

    rows, labels, energies = [], [], None
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise ValueError(f"spectrum file {f!r} does not exist")
        if p.suffix.lower() not in SPECTRUM_EXTENSIONS:
            raise ValueError(f"spectrum file {f!r}: unknown extension {p.suffix!r} "
                             f"(expected one of {', '.join(SPECTRUM_EXTENSIONS)})")
        batch = None
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
            if arr.ndim == 2 and arr.shape[1] != 2:
                batch = np.asarray(arr, dtype=np.float64)
                if not np.all(np.isfinite(batch)) or np.any(batch < 0):
                    raise ValueError(f"spectrum file {f!r}: counts must be finite and non-negative")
        if batch is None:
            spec = read_spectrum(p)
            batch = spec.counts[None]
            if spec.meta.get("calibrated") and energies is None:
                energies = spec.energies
        for i, row in enumerate(batch):
            if rows and row.size != rows[0].size:
                raise ValueError(f"spectrum file {f!r} has {row.size} channels, {labels[0][0]!r} has {rows[0].size}")
            rows.append(row)
            labels.append((str(f), i))
    return np.stack(rows), energies, labels


def _model_names(models, paths, override):
    names = []
    for mdl, p in zip(models, paths):
        meta = mdl.info.get("gamma") or {}
        stored = meta.get("names")
        if stored and len(stored) == mdl.config.n_inputs:
            names += list(stored)
        elif mdl.config.n_inputs == 1:
            names.append(Path(p).stem)
        else:
            names += [f"{Path(p).stem}{j}" for j in range(mdl.config.n_inputs)]
    if override:
        given = [n.strip() for n in override.split(",")]
        if len(given) != len(names):
            raise ValueError(f"--names has {len(given)} names but the models describe {len(names)} sources")
        names = given
    if len(set(names)) != len(names):
        raise ValueError(f"source names are not unique ({', '.join(names)}); give --names")
    return names


def _binning_of(models, args):
    """The common (offset, rebin) of the models' preprocessing, the bins of the mixture, energies."""
    metas = [mdl.info.get("gamma") or {} for mdl in models]
    have = [("offset_channels" in m) for m in metas]
    if any(have) and not all(have):
        raise ValueError("mix of models with and without stored preprocessing: give --offset and --rebin")
    m = max(mdl.config.n_channels for mdl in models)
    if not any(have):
        offset = 0 if args.offset is None else args.offset
        rebin = 1 if args.rebin is None else args.rebin
        return offset, rebin, m, None
    settings = {(md["offset_channels"], md["rebin"]) for md in metas}
    if len(settings) > 1 and (args.offset is None or args.rebin is None):
        raise ValueError(f"the models were trained with different binnings {sorted(settings)}; "
                         "give --offset and --rebin")
    offset, rebin = next(iter(settings))
    offset = offset if args.offset is None else args.offset
    rebin = rebin if args.rebin is None else args.rebin
    widest = max(metas, key=lambda md: md["bins"])
    energies = np.asarray(widest["energies"]) if len(widest.get("energies", [])) == m else None
    return offset, rebin, m, energies


def unmix_command(args) -> int:
    """``frugal gamma unmix``: spectra + models (+ background) -> CSV, JSON, figure."""
    import frugal.iae as iae
    from frugal.gamma.io import read_spectrum
    from frugal.gamma.report import param_from_latent
    from frugal.gamma.semsun import unmix
    from frugal.solvers.status import status_counts, status_names

    max_iter = _positive(args.max_iter, "--max-iter")
    for name in ("offset", "rebin"):
        v = getattr(args, name)
        if v is not None and (v < (1 if name == "rebin" else 0)):
            raise ValueError(f"--{name} must be >= {1 if name == 'rebin' else 0}, got {v}")
    models, paths = [], []
    for p in args.model:
        if not Path(p).is_file():
            raise ValueError(f"--model {p!r} does not exist")
        models.append(iae.load(p))
        paths.append(p)
    if len(models) > 1 and any(mdl.config.joint for mdl in models):
        raise ValueError("--model: give either one joint model or several individual ones, not a mix")
    names = _model_names(models, paths, args.names)
    offset, rebin, m, energies = _binning_of(models, args)

    raw, raw_energies, labels = _read_inputs(args.spectra)
    if offset == 0 and rebin == 1:
        if raw.shape[1] < m:
            raise ValueError(f"the spectra have {raw.shape[1]} channels, the models need {m}")
        y = raw[:, :m]
    else:
        y, _ = _binning(raw, None, offset=offset, rebin=rebin, bins=m, floor=None, normalise=False,
                        what=f"spectra ({labels[0][0]!r})")
    if raw_energies is not None and energies is not None:
        e_in = raw_energies[offset: offset + rebin * m].reshape(m, rebin).mean(1)
        half_bin = 0.5 * np.median(np.diff(energies))
        if np.max(np.abs(e_in - energies)) > half_bin:
            print(f"frugal: warning: the energy calibration of {labels[0][0]!r} differs from the model's bins "
                  f"by up to {np.max(np.abs(e_in - energies)):.1f} keV; spectra are binned by channel number",
                  file=sys.stderr)
    if energies is None:
        energies = np.arange(m, dtype=np.float64)
        energy_label = False
    else:
        energy_label = True

    background = None
    if args.background is not None:
        if not Path(args.background).is_file():
            raise ValueError(f"--background {args.background!r} does not exist")
        b = read_spectrum(args.background).counts
        if offset == 0 and rebin == 1:
            if b.size < m:
                raise ValueError(f"--background has {b.size} channels, the models need {m}")
            background = b[:m]
        else:
            background, _ = _binning(b, None, offset=offset, rebin=rebin, bins=m, floor=None, normalise=False,
                                     what=f"--background {args.background!r}")
        if background.sum() <= 0:
            raise ValueError(f"--background {args.background!r} has no counts in the model's bins")

    latent0 = None
    if args.start != "middle":
        latent0 = [np.eye(mdl.n_anchors, dtype=np.float32)[0 if args.start == "first" else mdl.n_anchors - 1]
                   for mdl in models]
    t0 = time.perf_counter()
    res = unmix(np.round(y) if np.allclose(y, np.round(y)) else y, models, background=background, names=names,
                latent0=latent0, solver=args.solver, max_iter=max_iter)
    elapsed = time.perf_counter() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = list(res.names)
    curves = []
    for mdl, lam, lam_err in zip(models, res.latent, res.latent_stderr):
        meta = mdl.info.get("gamma") or {}
        curve = meta.get("latent_curve")
        pname = (meta.get("param_names") or ["parameter"])[0]
        if curve:
            value, err = param_from_latent(curve, lam[:, 1], lam_err[:, 1])
            label = "+".join(meta.get("names") or [Path(paths[len(curves)]).stem])
            curves.append((f"{label}_{pname}", value, err))
        else:
            curves.append(None)
    header = ["file", "spectrum", "total_counts"]
    for s in sources:
        header += [s, f"{s}_sigma"]
    for c in curves:
        if c:
            header += [c[0], f"{c[0]}_sigma"]
    header += ["deviance", "bins", "gof_pvalue", "status"]
    records = []
    with open(out / "unmix.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i, (f, idx) in enumerate(labels):
            row = [f, idx, f"{y[i].sum():.6g}"]
            for k in range(len(sources)):
                row += [f"{res.counts[i, k]:.6g}", f"{res.stderr[i, k]:.4g}"]
            params = {}
            for c in curves:
                if c:
                    row += [f"{c[1][i]:.5g}", f"{c[2][i]:.3g}"]
                    params[c[0]] = {"value": float(c[1][i]), "sigma": float(c[2][i])}
            row += [f"{res.loss[i]:.6g}", m, f"{res.gof_pvalue[i]:.3g}", status_names(res.status[i])]
            w.writerow(row)
            records.append({
                "file": f, "spectrum": idx, "total_counts": float(y[i].sum()),
                "counts": {s: float(res.counts[i, k]) for k, s in enumerate(sources)},
                "sigma": {s: float(res.stderr[i, k]) for k, s in enumerate(sources)},
                "latent": [lam[i].tolist() for lam in res.latent],
                "latent_sigma": [le[i].tolist() for le in res.latent_stderr],
                "parameters": params,
                "deviance": float(res.loss[i]), "gof_pvalue": float(res.gof_pvalue[i]),
                "iterations": int(res.n_iter[i]), "status": status_names(res.status[i]),
                "converged": bool(res.converged[i]),
            })
    report = {
        "method": "SEMSUN (Phan et al., NIM A 1060 (2024) 169028)",
        "solver": args.solver,
        "models": [str(p) for p in paths],
        "background": args.background,
        "sources": sources,
        "binning": {"offset_channels": offset, "rebin": rebin, "bins": m},
        "sigma": "standard errors from the Poisson Fisher information, including the shape uncertainty",
        "deviance_note": f"about {m} (the number of bins) for a good fit",
        "gof_note": "p-value of the deviance under the fitted model (exact per-channel Poisson moments, "
                    "moment-matched gamma law: valid at low counts); below 1e-3 the model does not describe "
                    "the spectrum",
        "status_note": "converged: the remaining Newton step is below gtol standard errors; max_iter, stalled, "
                       "non_finite otherwise",
        "wall_time_s": elapsed,
        "spectra": records,
    }
    (out / "unmix.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    written = [out / "unmix.csv", out / "unmix.json"]
    if not args.no_plot:
        from frugal.gamma.plots import plot_fit

        f0, i0 = labels[0]
        plot_fit(y[0], res.signatures[0], res.counts[0], energies=energies if energy_label else None,
                 names=sources, title=f"{Path(f0).name}" + (f" [{i0}]" if len(labels) > len(args.spectra) else "")
                 + f": deviance {res.loss[0]:.0f} over {m} bins", path=out / "fit.png")
        written.append(out / "fit.png")
    n_show = min(len(labels), 5)
    width = max(14, max(len(s) for s in sources) + 2)
    print(f"{len(labels)} spectra unmixed in {elapsed:.2f} s ({args.solver}); counts +- 1 sigma:")
    print(f"{'spectrum':24s}" + "".join(f"{s:>{2 * width}s}" for s in sources)
          + f"{'deviance':>12s}{'p(gof)':>10s}  status")
    for i in range(n_show):
        f, idx = labels[i]
        tag = Path(f).name + (f"[{idx}]" if len(labels) > len(args.spectra) else "")
        print(f"{tag[:24]:24s}" + "".join(f"{_pm(res.counts[i, k], res.stderr[i, k]):>{2 * width}s}"
                                          for k in range(len(sources)))
              + f"{res.loss[i]:12.1f}{res.gof_pvalue[i]:10.3g}  {status_names(res.status[i])}")
    if len(labels) > n_show:
        print(f"... ({len(labels) - n_show} more in {out / 'unmix.csv'})")
    if not np.all(res.converged):
        counts = ", ".join(f"{n}: {c}" for n, c in status_counts(res.status[~res.converged]).items())
        print(f"frugal: warning: {int(np.sum(~res.converged))} fit(s) did not pass the optimality test ({counts})",
              file=sys.stderr)
    poor = res.gof_pvalue < 1e-3
    if np.any(poor):
        print(f"frugal: warning: {int(poor.sum())} fit(s) with goodness-of-fit p < 1e-3: the model does not "
              "describe those spectra", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


# ---------------------------------------------------------------------------------------
# frugal demo gamma


def demo_gamma(args) -> int:
    """``frugal demo gamma``: the SEMSUN pipeline on the built-in simulator, end to end."""
    import frugal.iae as iae
    from frugal.gamma import baselines, semsun
    from frugal.gamma.builtin import builtin_problem
    from frugal.gamma.plots import plot_fit
    from frugal.gamma.report import counting_error_table, latent_curve, param_from_latent

    draws = _positive(args.draws, "--draws")
    epochs = _positive(args.epochs, "--epochs")
    if not 0 < args.thickness <= 30:
        raise ValueError(f"--thickness must be in (0, 30] mm (the simulated range), got {args.thickness}")
    if not args.counts > 0:
        raise ValueError(f"--counts must be positive, got {args.counts}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    problem = builtin_problem(epochs=epochs, seed=args.seed, progress=not args.quiet)
    model, nuclides, joint, s = problem.model, problem.nuclides, problem.joint, problem.split
    thickness, bkg, energies, t_train = problem.thickness, problem.background, problem.energies, problem.train_time_s
    test_nmse = iae.nmse_db(model.reconstruct(joint[s.test]), joint[s.test])
    print(f"joint IAE trained in {t_train:.1f} s; test NMSE (dB, median) "
          + ", ".join(f"{n} {v:.1f}" for n, v in zip(nuclides, np.median(test_nmse, 0))))
    train_x = np.concatenate([joint[s.anchors], joint[s.train]])
    train_t = np.concatenate([thickness[s.anchors], thickness[s.train]])
    curve = latent_curve(model, train_x, train_t[:, None])

    y, a_true, true_sig = problem.mixtures(args.thickness, args.counts, draws, args.seed + 1)

    t0 = time.perf_counter()
    results = {
        "SEMSUN-j": semsun.unmix(y, model, background=bkg, names=nuclides,
                                 latent0=[np.array([1.0, 0.0], np.float32)]),
        "Oracle": baselines.oracle(y, dict(zip(nuclides, true_sig)), background=bkg),
        "fixed": baselines.fixed(y, dict(zip(nuclides, joint[0])), background=bkg),
        "NMF": baselines.nmf(y, dict(zip(nuclides, joint[0])), background=bkg),
    }
    t_unmix = time.perf_counter() - t0
    names = ["Bkg"] + nuclides
    print(f"\n{draws} Poisson draws, {args.counts:g} expected counts, true steel thickness "
          f"{args.thickness:g} mm; SEMSUN-j started at 0.001 mm, fixed signatures at 0.001 mm")
    print("relative counting error (%), median [q25, q75]:")
    print(counting_error_table(results, a_true, names))
    summary = {
        "thickness_mm": args.thickness, "counts": args.counts, "draws": draws,
        "true_counts": dict(zip(names, a_true.tolist())),
        "test_nmse_db_median": dict(zip(nuclides, np.median(test_nmse, 0).tolist())),
        "train_time_s": t_train, "unmix_time_s_all_methods": t_unmix, "methods": {},
    }
    for method, res in results.items():
        rel = 100.0 * (res.counts - a_true) / a_true
        summary["methods"][method] = {
            "rel_err_pct_median": dict(zip(names, np.median(rel, 0).tolist())),
            "rel_err_pct_iqr": dict(zip(names, np.subtract(*np.percentile(rel, [75, 25], 0)).tolist())),
            "coverage_1sigma": float(np.mean(np.abs(res.counts - a_true) <= res.stderr)),
        }
    if curve:
        t_hat, _ = param_from_latent(curve, results["SEMSUN-j"].latent[0][:, 1], 0.0)
        q25, q50, q75 = np.percentile(t_hat, [25, 50, 75])
        print(f"\nthickness read from the SEMSUN-j weights: median {q50:.2f} mm [q25 {q25:.2f}, q75 {q75:.2f}] "
              f"(true {args.thickness:g} mm)")
        summary["thickness_estimate_mm"] = [float(q50), float(q25), float(q75)]

    res = results["SEMSUN-j"]
    plot_fit(y[0], res.signatures[0], res.counts[0], energies=energies, names=names,
             title=f"SEMSUN-j fit of one draw ({args.counts:g} counts, {args.thickness:g} mm steel)",
             path=out / "gamma_fit.png")
    iae.save(model, out / "joint.frugal")
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"\ntotal {time.perf_counter() - t_start:.1f} s; wrote {out / 'gamma_fit.png'}, {out / 'joint.frugal'}, "
          f"{out / 'summary.json'}")
    return 0
