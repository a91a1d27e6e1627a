"""Spectral families for training: their files, the published preprocessing and split.

* :func:`read_family`: a family of spectra with their parameters, either the layout of the
  SEMSUN Geant4 data set (``<RN>/GRS_NaITl_<RN>_STEEL<a>__<b>mm.dat``, thickness ``a.b`` mm)
  or a generic manifest layout (see :func:`read_family`).
* :func:`preprocess`: the preprocessing of the published SEMSUN experiments (drop 18 channels,
  keep 2048, sum pairs into 2 keV bins, floor at 1e-6 of the maximum, keep 800 bins, unit sum).
* :func:`published_split`: the anchor / training / test split of the 96 thicknesses.

The energy convention is that of :mod:`frugal.gamma.io`: after the published preprocessing
bin ``k`` of the 1 keV Geant4 channels covers ``[18 + 2k, 20 + 2k)`` keV, centre ``19 + 2k``.
Files are read with the limits of :mod:`frugal.gamma.textfiles`.
"""

from __future__ import annotations

import csv
import json
import os
import re
from array import array
from pathlib import Path

import numpy as np

from frugal._validation import check_array, check_int
from frugal.data.families import Family, Split
from frugal.gamma import textfiles
from frugal.gamma.textfiles import (
    FIELD_SEPARATORS,
    checked_counts,
    existing_path,
    text_lines,
    too_many_channels,
)

__all__ = ["GEANT4_PATTERN", "geant4_thickness", "preprocess", "published_split", "read_family"]

#: File name of a spectrum of the SEMSUN Geant4 data set: ``GRS_<detector>_<RN>_<MATERIAL><a>__<b>mm.dat``.
GEANT4_PATTERN = re.compile(
    r"^GRS_(?P<detector>[A-Za-z0-9]+)_(?P<nuclide>[A-Za-z]+[0-9]+m?)_"
    r"(?P<material>[A-Za-z]+?)(?P<a>[0-9]+)__(?P<b>[0-9]+)mm\.dat$"
)


def geant4_thickness(name: str) -> float:
    """Thickness (mm) encoded in a Geant4 file name: ``STEEL0__001mm`` -> 0.001, ``STEEL5__2mm`` -> 5.2."""
    m = GEANT4_PATTERN.match(os.path.basename(name))
    if not m:
        raise ValueError(f"{name!r} is not named GRS_<detector>_<RN>_<MATERIAL><a>__<b>mm.dat")
    return float(f"{m.group('a')}.{m.group('b')}")


def _read_counts_column(path: Path) -> np.ndarray:
    values = array("d")
    for lineno, line in text_lines(path):
        s = line.strip()
        if not s:
            continue
        try:
            values.append(float(s))
        except ValueError:
            raise ValueError(f"{path}: line {lineno} is not a count: {s!r}") from None
        if len(values) > textfiles.MAX_CHANNELS:
            raise too_many_channels(path, f"line {lineno}")
    return checked_counts(np.frombuffer(values, dtype=np.float64), str(path))


def _geant4_files(directory: Path, nuclide: str | None) -> list[Path]:
    candidates = [directory / nuclide] if nuclide is not None else []
    candidates.append(directory)
    for d in candidates:
        if d.is_dir():
            files = [f for f in d.iterdir() if GEANT4_PATTERN.match(f.name)]
            if nuclide is not None:
                files = [f for f in files if GEANT4_PATTERN.match(f.name).group("nuclide").lower() == nuclide.lower()]
            if files:
                return files
    return []


def _read_geant4(files: list[Path]) -> Family:
    nuclides = {GEANT4_PATTERN.match(f.name).group("nuclide") for f in files}
    if len(nuclides) > 1:
        raise ValueError(f"files of several nuclides ({', '.join(sorted(nuclides))}) found; pass nuclide=")
    files = sorted(files, key=lambda f: geant4_thickness(f.name))
    thick = np.array([geant4_thickness(f.name) for f in files])
    dup = np.nonzero(np.diff(thick) == 0)[0]
    if dup.size:
        i = dup[0]
        raise ValueError(f"two files give the thickness {thick[i]} mm: {files[i].name}, {files[i + 1].name}")
    rows = [_read_counts_column(f) for f in files]
    lengths = {r.size for r in rows}
    if len(lengths) > 1:
        bad, r = next((f, r) for f, r in zip(files, rows) if r.size != rows[0].size)
        raise ValueError(f"{bad}: {r.size} channels, but {files[0].name} has {rows[0].size}")
    spectra = np.stack(rows)
    energies = np.arange(spectra.shape[1], dtype=np.float64) + 0.5  # 1 keV channels, centres
    return Family(spectra, thick[:, None], ("thickness_mm",), energies)


def _load_matrix(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        with open(path, encoding="utf-8", errors="replace") as fh:
            rows = []
            for lineno, line in enumerate(fh, start=1):
                s = line.split("#", 1)[0].strip()
                if not s:
                    continue
                try:
                    rows.append([float(v) for v in FIELD_SEPARATORS.split(s) if v != ""])
                except ValueError:
                    if not rows:
                        continue  # header
                    raise ValueError(f"{path}: line {lineno} is not numeric") from None
                if len(rows[-1]) != len(rows[0]):
                    raise ValueError(f"{path}: line {lineno} has {len(rows[-1])} values, expected {len(rows[0])}")
        if not rows:
            raise ValueError(f"{path}: no numeric data")
        arr = np.array(rows)
    return np.asarray(arr, dtype=np.float64)


def _find(directory: Path, stem: str) -> Path | None:
    for ext in (".npy", ".csv", ".txt"):
        p = directory / f"{stem}{ext}"
        if p.exists():
            return p
    return None


def _read_manifest(directory: Path):
    """(param_names, params (N, p), files or None, spectra file or None, energies or None)."""
    js, cs = directory / "manifest.json", directory / "manifest.csv"
    if js.exists():
        try:
            man = json.loads(js.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{js}: not valid JSON ({err})") from None
        if not isinstance(man, dict) or "params" not in man or not isinstance(man["params"], dict):
            raise ValueError(f"{js}: expected an object with a 'params' object of name -> list of values")
        names = tuple(man["params"])
        try:
            cols = [np.asarray(man["params"][k], dtype=np.float64) for k in names]
        except (TypeError, ValueError):
            raise ValueError(f"{js}: every parameter must be a list of numbers") from None
        if len({c.size for c in cols}) > 1:
            raise ValueError(f"{js}: the parameter lists have different lengths {[c.size for c in cols]}")
        params = np.stack(cols, axis=1) if cols else np.zeros((0, 0))
        files = man.get("files")
        spectra = man.get("spectra")
        energies = man.get("energies")
        if isinstance(energies, str):
            energies = _load_matrix(directory / energies).reshape(-1)
        elif energies is not None:
            energies = np.asarray(energies, dtype=np.float64)
        return names, params, files, (directory / spectra) if spectra else None, energies
    if cs.exists():
        with open(cs, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise ValueError(f"{cs}: empty manifest") from None
            rows = [(i + 2, r) for i, r in enumerate(reader) if any(v.strip() for v in r)]
        file_col = header.index("file") if "file" in header else None
        names = tuple(h for i, h in enumerate(header) if i != file_col)
        params, files = [], [] if file_col is not None else None
        for lineno, r in rows:
            if len(r) != len(header):
                raise ValueError(f"{cs}: line {lineno} has {len(r)} fields, expected {len(header)}")
            try:
                params.append([float(v) for i, v in enumerate(r) if i != file_col])
            except ValueError:
                raise ValueError(f"{cs}: line {lineno}: parameters must be numbers: {r}") from None
            if file_col is not None:
                files.append(r[file_col].strip())
        params = np.array(params, dtype=np.float64).reshape(len(rows), len(names))
        return names, params, files, _find(directory, "spectra"), None
    raise ValueError(
        f"{directory}: neither Geant4 GRS_*.dat files nor a manifest.json / manifest.csv found"
    )


def _read_generic(directory: Path) -> Family:
    # frugal.gamma.io imports this module (its readers include the families'): read_spectrum
    # is taken when needed
    from frugal.gamma.io import read_spectrum

    names, params, files, spectra_path, energies = _read_manifest(directory)
    if files is not None:
        specs = [read_spectrum(directory / f) for f in files]
        n = {s.counts.size for s in specs}
        if len(n) > 1:
            raise ValueError(f"{directory}: the spectrum files have different lengths {sorted(n)}")
        spectra = np.stack([s.counts for s in specs])
        if energies is None:
            energies = specs[0].energies
    else:
        if spectra_path is None or not spectra_path.exists():
            raise ValueError(f"{directory}: no spectra file (spectra.npy / spectra.csv) next to the manifest")
        spectra = _load_matrix(spectra_path)
        if spectra.ndim != 2:
            raise ValueError(f"{spectra_path}: expected a (N, n) array of spectra, got shape {spectra.shape}")
        for i, row in enumerate(spectra):
            checked_counts(row, f"{spectra_path} (spectrum {i})")
    if energies is None:
        e = _find(directory, "energies")
        energies = _load_matrix(e).reshape(-1) if e is not None else np.arange(spectra.shape[1], dtype=np.float64)
    if spectra.shape[0] != params.shape[0]:
        raise ValueError(
            f"{directory}: {spectra.shape[0]} spectra but {params.shape[0]} rows of parameters in the manifest"
        )
    if energies.size != spectra.shape[1]:
        raise ValueError(f"{directory}: {energies.size} energies for spectra of {spectra.shape[1]} channels")
    return Family(spectra, params, names, np.asarray(energies, dtype=np.float64))


def read_family(directory, nuclide: str | None = None) -> Family:
    """Read a family of spectra and their parameters as a :class:`frugal.data.Family`.

    **Geant4 layout** (the SEMSUN data set): ``directory/<RN>/GRS_NaITl_<RN>_STEEL<a>__<b>mm.dat``
    (or the files directly in ``directory``), one integer count per line, 1 keV per channel;
    the thickness is ``a.b`` mm (``STEEL0__001mm`` = 0.001 mm, ``STEEL5__2mm`` = 5.2 mm).
    Returns the raw counts ``(T, n_channels)`` sorted by thickness, ``params`` ``(T, 1)``
    in mm, ``param_names = ("thickness_mm",)`` and the channel centres ``k + 0.5`` keV.

    **Generic layout**: ``directory`` (or ``directory/<nuclide>``) holds a manifest and either

    * ``spectra.npy`` / ``spectra.csv``, an ``(N, n)`` array, with ``manifest.csv`` (a header
      of parameter names, one row of numbers per spectrum) or ``manifest.json``
      (``{"spectra": "spectra.npy", "params": {"name": [values, ...]}, "energies": ...}``);
    * or one file per spectrum, named in a ``file`` column of ``manifest.csv`` or a
      ``"files"`` list of ``manifest.json``, each readable by :func:`read_spectrum`.

    Energies come from ``"energies"`` of the JSON manifest (a list or a file name), else
    ``energies.npy`` / ``energies.csv``, else the calibration of the first spectrum file,
    else the channel numbers. Spectra are returned as they are (float64 counts); see
    :func:`preprocess`.
    """
    d = existing_path(directory, "directory")
    if not d.is_dir():
        raise ValueError(f"directory {str(d)!r} is not a directory")
    files = _geant4_files(d, nuclide)
    if files:
        return _read_geant4(files)
    if nuclide is not None and (d / nuclide).is_dir():
        d = d / nuclide
    elif nuclide is not None and not ((d / "manifest.json").exists() or (d / "manifest.csv").exists()):
        known = sorted(p.name for p in d.iterdir() if p.is_dir())
        raise ValueError(f"no data for nuclide {nuclide!r} in {d}; sub-directories: {', '.join(known) or 'none'}")
    return _read_generic(d)


# --------------------------------------------------------------------------------------
# preprocessing and the published split
# --------------------------------------------------------------------------------------


def preprocess(
    spectra,
    *,
    energies=None,
    offset_channels: int = 18,
    n_channels: int = 2048,
    rebin: int = 2,
    floor: float | None = 1e-6,
    keep: int | None = 800,
    normalise: bool = True,
):
    """The preprocessing of the published SEMSUN experiments, carrying the energy axis.

    1. drop the first ``offset_channels`` channels and keep the next ``n_channels``;
    2. sum groups of ``rebin`` adjacent channels (1 keV -> 2 keV bins: bin ``k`` holds
       channels ``18 + 2k`` and ``19 + 2k``);
    3. floor each spectrum at ``floor`` times its maximum (no zero bins; ``None`` to skip);
    4. keep the first ``keep`` bins (``None`` for all);
    5. normalise each spectrum to unit sum (``normalise``), so that mixing weights are
       expected counts.

    ``spectra`` is ``(n,)`` or ``(..., n)`` counts with ``energies`` ``(n,)`` (channel
    energies; default channel centres ``k + 0.5`` keV) -- returns ``(spectra, energies)``,
    each bin's energy the mean of its channels' -- or a :class:`frugal.data.Family`, whose
    energies are used and which is returned as a Family (float64 spectra).
    """
    family = spectra if isinstance(spectra, Family) else None
    if family is not None:
        energies = family.energies if energies is None else energies
        spectra = family.spectra
    x = check_array(spectra, "spectra", nonnegative=True, dtype=np.float64)
    n = x.shape[-1]
    offset_channels = check_int(offset_channels, "offset_channels", minimum=0)
    n_channels = check_int(n_channels, "n_channels", minimum=1)
    rebin = check_int(rebin, "rebin", minimum=1)
    if n_channels % rebin:
        raise ValueError(f"n_channels ({n_channels}) must be a multiple of rebin ({rebin})")
    if offset_channels + n_channels > n:
        raise ValueError(
            f"spectra have {n} channels, fewer than offset_channels + n_channels = {offset_channels + n_channels}"
        )
    if energies is None:
        e = np.arange(n, dtype=np.float64) + 0.5
    else:
        e = check_array(energies, "energies", ndim=1, dtype=np.float64)
        if e.size != n:
            raise ValueError(f"energies has {e.size} values but spectra have {n} channels")
    sl = slice(offset_channels, offset_channels + n_channels)
    nb = n_channels // rebin
    out = x[..., sl].reshape(x.shape[:-1] + (nb, rebin)).sum(axis=-1)
    e_out = e[sl].reshape(nb, rebin).mean(axis=-1)
    if floor is not None:
        if floor < 0:
            raise ValueError(f"floor must be >= 0, got {floor}")
        out = np.maximum(out, floor * out.max(axis=-1, keepdims=True))
    if keep is not None:
        keep = check_int(keep, "keep", minimum=1)
        if keep > nb:
            raise ValueError(f"keep ({keep}) exceeds the {nb} bins after rebinning")
        out, e_out = out[..., :keep], e_out[:keep]
    if normalise:
        total = out.sum(axis=-1, keepdims=True)
        if np.any(total <= 0):
            raise ValueError("a spectrum has no counts in the kept bins; cannot normalise")
        out = out / total
    if family is not None:
        return Family(out, family.params, family.param_names, e_out)
    return out, e_out


def published_split(
    n_spectra: int = 96,
    seed: int = 100,
    *,
    n_thin: int = 24,
    n_train_thin: int = 18,
    n_train_thick: int = 51,
) -> Split:
    """Anchor / training / test indices of the published SEMSUN experiments.

    Thickness indices (sorted by thickness) ``0`` and ``n_spectra - 1`` are the anchors.
    With the legacy NumPy generator seeded by ``numpy.random.seed(seed)`` (a
    ``RandomState(seed)``), ``n_train_thin`` of the thin indices ``1..n_thin`` and then
    ``n_train_thick`` of the thick ones ``n_thin+1..n_spectra-2`` are drawn without
    replacement as ``thin[rs.permutation(n_thin)[:n_train_thin]]`` and likewise for the
    thick ones. ``RandomState.choice(a, k, replace=False)`` draws exactly
    ``a[permutation(len(a))[:k]]``, so this equals the two ``np.random.choice`` calls a
    reference implementation would make (thin first). The reference code could not be
    consulted: treat the exact membership as this documented, deterministic rule.

    Returns :class:`frugal.data.Split` with disjoint ``anchors`` (2), ``train`` (69 with the
    defaults) and ``test`` (25) covering ``0..n_spectra-1``; the published *training set*
    of the IAE is ``anchors`` + ``train`` (71 spectra).
    """
    n_spectra = check_int(n_spectra, "n_spectra", minimum=4)
    n_thin = check_int(n_thin, "n_thin", minimum=1)
    n_thick = n_spectra - 2 - n_thin
    if n_thick < 1:
        raise ValueError(f"n_thin ({n_thin}) leaves no thick spectra among n_spectra={n_spectra}")
    n_train_thin = check_int(n_train_thin, "n_train_thin", minimum=0)
    n_train_thick = check_int(n_train_thick, "n_train_thick", minimum=0)
    if n_train_thin > n_thin:
        raise ValueError(f"n_train_thin ({n_train_thin}) exceeds n_thin ({n_thin})")
    if n_train_thick > n_thick:
        raise ValueError(f"n_train_thick ({n_train_thick}) exceeds the {n_thick} thick spectra")
    rs = np.random.RandomState(seed)
    thin = np.arange(1, n_thin + 1)
    thick = np.arange(n_thin + 1, n_spectra - 1)
    train_thin = thin[rs.permutation(n_thin)[:n_train_thin]]
    train_thick = thick[rs.permutation(n_thick)[:n_train_thick]]  # drawn after the thin ones
    train = np.concatenate([train_thin, train_thick])
    anchors = np.array([0, n_spectra - 1])
    test = np.setdiff1d(np.arange(n_spectra), np.concatenate([anchors, train]))
    return Split(anchors, np.sort(train), test)
