"""FITS input/output of X-ray hyperspectral cubes and of sky maps.

Conventions
-----------
* A cube is a 3-D image in NumPy order ``(E, H, W)``: FITS axis 3 (``NAXIS3``) is energy,
  axes 1 and 2 are the sky (usually RA---TAN / DEC--TAN).
* Channel energies (keV) come from a binary-table extension ``ENERGIES`` with a column
  ``ENERGY`` when there is one (exact, allows a non-uniform grid; an OGIP ``EBOUNDS``
  table with ``E_MIN`` / ``E_MAX`` gives the channel midpoints), otherwise from the linear
  spectral WCS of axis 3: ``E_i = CRVAL3 + CDELT3 (i + 1 - CRPIX3)`` (or ``CD3_3``,
  ``PC3_3 * CDELT3``), in the unit ``CUNIT3`` (eV, keV, MeV or J). Without ``CUNIT3`` the
  unit is taken as eV when the largest energy exceeds 200 and keV otherwise.
* :func:`write_cube` writes both (the WCS for viewers, the table as the exact record).
* Maps (amplitudes, physical parameters) go one image extension per map, ``EXTNAME`` = the
  map's name, each carrying the celestial (2-D) part of the input header's WCS.

Files are written with ``CHECKSUM`` / ``DATASUM`` keywords in every HDU, and reading
verifies them where a file has them (astropy only warns on a mismatch; here a mismatch is
an error naming the file and the HDU, since a flipped bit in a cube is otherwise a silent
wrong count). ``checksum=False`` reads a file whose keywords are known to be stale.

Files are written atomically: to a temporary file in the target's directory, then
``os.replace``, so a reader never sees a half-written file and a crash leaves the old one.

astropy is imported inside the functions, so ``frugal`` imports without it
(``pip install frugal-unmix[fits]``).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from frugal._validation import check_array

__all__ = ["FitsCube", "read_cube", "write_cube", "write_maps", "read_maps"]

#: Energy units understood in CUNIT3 / TUNITn, as keV per unit.
_KEV_PER_UNIT = {"ev": 1e-3, "kev": 1.0, "mev": 1e3, "j": 1.0 / 1.602176634e-16}

#: Header keywords describing the data layout or the WCS: rebuilt on writing, never copied.
_STRUCTURAL = re.compile(
    r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|BSCALE|BZERO|XTENSION|TFIELDS|EXTNAME|"
    r"CHECKSUM|DATASUM|WCSAXES|CTYPE\d|CRVAL\d|CDELT\d|CRPIX\d|CUNIT\d|CROTA\d|CD\d_\d|PC\d_\d|"
    r"PV\d_\d+|PS\d_\d+|LONPOLE|LATPOLE|RADESYS|EQUINOX|EPOCH|MJDREF\w*|WCSNAME\w?|RESTFRQ|"
    r"RESTFREQ|RESTWAV|SPECSYS|SSYSOBS|VELOSYS|ZSOURCE|DATEREF|COMMENT|MAPNAME)$"
)

_SPECTRAL_CTYPE = re.compile(r"^(ENER|FREQ|WAVE|WAVN|VRAD|VOPT|ZOPT|VELO|BETA|PHA|PI|CHAN)")
_CELESTIAL_CTYPE = re.compile(r"^(RA|DEC|GLON|GLAT|ELON|ELAT|SLON|SLAT|HPLN|HPLT)")


class FitsCube(NamedTuple):
    """A cube read from FITS: counts ``(E, H, W)``, channel energies ``(E,)`` in keV and the
    header of the image HDU (an ``astropy.io.fits.Header``)."""

    counts: np.ndarray
    energies: np.ndarray
    header: object


def _fits():
    try:
        from astropy.io import fits
    except ImportError as err:
        raise ImportError(
            "reading and writing FITS needs astropy; install it with `pip install frugal-unmix[fits]`"
        ) from err
    return fits


def _celestial_header(header):
    """The celestial (2-D sky) part of ``header``'s WCS as a new header, or ``None``."""
    if header is None:
        return None
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        # header fix-ups (e.g. MJDREF, DATE-OBS) are harmless here and would be noisy
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header)
    if not wcs.has_celestial:
        return None
    cel = wcs.celestial
    out = cel.to_header()
    for key in ("WCSAXES", "MJDREF", "MJDREFI", "MJDREFF"):
        out.remove(key, ignore_missing=True, remove_all=True)
    shape = cel.pixel_shape  # (NAXIS1, NAXIS2) of the sky axes when the header had them
    return out, (None if shape is None or 0 in shape else tuple(shape))


def _metadata(header, fits):
    """Cards of ``header`` that describe the observation (OBJECT, TELESCOP, EXPOSURE...),
    without layout or WCS keywords."""
    out = fits.Header()
    if header is None:
        return out
    for card in header.cards:
        if card.keyword and not _STRUCTURAL.match(card.keyword):
            out.append(card, end=True)
    return out


#: The warnings astropy gives (``fits.open(..., checksum=True)``) for a CHECKSUM / DATASUM
#: that does not match the HDU.
_CHECKSUM_FAILED = re.compile(r"^(Checksum|Datasum) verification failed for HDU")


@contextlib.contextmanager
def _open_verified(path, where: str, checksum: bool):
    """``fits.open`` of ``path`` with every HDU's CHECKSUM / DATASUM verified (when present
    and ``checksum``): a mismatch raises ``ValueError`` naming the file."""
    fits = _fits()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hdul = fits.open(path, memmap=False, checksum=checksum)
        try:
            hdul.readall()  # checks every HDU now, not lazily when one is first used
        except BaseException:
            hdul.close()
            raise
    failed = []
    for w in caught:
        text = str(w.message).strip()
        if _CHECKSUM_FAILED.match(text):
            failed.append(text.rstrip("."))
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if failed:
        hdul.close()
        raise ValueError(
            f"{where} is corrupt: {'; '.join(failed)} (the stored CHECKSUM/DATASUM does not match the "
            "file's contents). If the file was edited by a tool that leaves the old keywords (astropy "
            "writing without checksum=True does), pass checksum=False to read it anyway"
        )
    try:
        yield hdul
    finally:
        hdul.close()


def _write_atomic(hdul, path, overwrite: bool):
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".fits", dir=directory)
    os.close(fd)
    try:
        hdul.writeto(tmp, overwrite=True, checksum=True)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _unit_scale(unit, where: str, values) -> float:
    if unit is None or str(unit).strip() == "":
        # a header without units: eV when the values only make sense as eV
        return 1e-3 if np.nanmax(values) > 200.0 else 1.0
    key = str(unit).strip().lower()
    if key not in _KEV_PER_UNIT:
        raise ValueError(f"{where} has unsupported energy unit {unit!r}; expected eV, keV, MeV or J")
    return _KEV_PER_UNIT[key]


def _energies_from_table(table_hdu, where: str) -> np.ndarray:
    names = {name.upper(): name for name in table_hdu.columns.names}
    cols = table_hdu.columns
    if "ENERGY" in names:
        col = names["ENERGY"]
        raw = np.asarray(table_hdu.data[col], dtype=np.float64)
        return raw * _unit_scale(cols[col].unit, f"{where} column {col}", raw)
    if "E_MIN" in names and "E_MAX" in names:
        lo = np.asarray(table_hdu.data[names["E_MIN"]], dtype=np.float64)
        hi = np.asarray(table_hdu.data[names["E_MAX"]], dtype=np.float64)
        scale = _unit_scale(cols[names["E_MIN"]].unit, f"{where} column E_MIN", hi)
        return 0.5 * (lo + hi) * scale
    raise ValueError(f"{where} has no ENERGY column (nor E_MIN / E_MAX); columns: {cols.names}")


def _energies_from_wcs(header, n: int, path) -> np.ndarray:
    for axis in (1, 2):
        if _SPECTRAL_CTYPE.match(str(header.get(f"CTYPE{axis}", "")).upper()):
            raise ValueError(
                f"cube must be (E, H, W): {path} has a spectral axis CTYPE{axis}="
                f"{header[f'CTYPE{axis}']!r}, expected energy on FITS axis 3 (NumPy axis 0)"
            )
    ctype3 = str(header.get("CTYPE3", "")).upper()
    if _CELESTIAL_CTYPE.match(ctype3):
        raise ValueError(f"cube must be (E, H, W): {path} has a sky axis CTYPE3={header['CTYPE3']!r}")
    if "CRVAL3" not in header or not ("CDELT3" in header or "CD3_3" in header):
        raise ValueError(
            f"{path} has no energy axis: neither an ENERGIES table nor a spectral WCS "
            "(CRVAL3 and CDELT3 or CD3_3) on axis 3; pass energy_ext or add the keywords"
        )
    step = float(header["CD3_3"]) if "CD3_3" in header else float(header["CDELT3"]) * float(header.get("PC3_3", 1.0))
    values = float(header["CRVAL3"]) + step * (np.arange(n) + 1.0 - float(header.get("CRPIX3", 1.0)))
    return values * _unit_scale(header.get("CUNIT3"), f"{path} CUNIT3", values)


def read_cube(path, *, energy_ext=None, hdu=None, checksum: bool = True) -> FitsCube:
    """Read a counts cube ``(E, H, W)`` and its channel energies (keV) from a FITS file.

    Parameters
    ----------
    path : str or path-like
    energy_ext : str or int, optional
        Binary-table extension with the energies (column ``ENERGY``, or ``E_MIN``/``E_MAX``).
        By default the ``ENERGIES`` (then ``EBOUNDS``) extension if present, else the
        header's spectral WCS on axis 3.
    hdu : str or int, optional
        Image HDU holding the cube; by default the first HDU with 3-D data.
    checksum : bool
        Verify the ``CHECKSUM`` / ``DATASUM`` keywords of every HDU that has them.

    Raises
    ------
    ValueError
        A CHECKSUM or DATASUM that does not match (a corrupt file), no 3-D image, negative or non-finite counts, no energy information, energies that
        do not increase, or a layout that is not ``(E, H, W)``.
    """
    fits = _fits()
    where = os.fspath(path)
    with _open_verified(path, where, checksum) as hdul:
        if hdu is None:
            images = [h for h in hdul if h.is_image and h.data is not None]
            if not images:
                raise ValueError(f"{where} holds no image data (expected a 3-D cube (E, H, W))")
            cube_hdu = next((h for h in images if h.data.ndim == 3), images[0])
        else:
            cube_hdu = hdul[hdu]
        data = cube_hdu.data
        if data is None or data.ndim != 3:
            shape = None if data is None else data.shape
            raise ValueError(f"counts in {where} must be a 3-D cube (E, H, W), got shape {shape}")
        counts = np.array(data, dtype=np.float64)
        header = cube_hdu.header.copy()
        if energy_ext is None:
            energy_ext = next((name for name in ("ENERGIES", "EBOUNDS") if name in hdul), None)
        if energy_ext is not None:
            table = hdul[energy_ext]
            if not isinstance(table, (fits.BinTableHDU, fits.TableHDU)):
                raise ValueError(f"energy_ext={energy_ext!r} of {where} is not a table extension")
            energies = _energies_from_table(table, f"{where}[{energy_ext}]")
        else:
            energies = _energies_from_wcs(header, counts.shape[0], where)

    if energies.shape[0] != counts.shape[0]:
        other = [i for i in (1, 2) if counts.shape[i] == energies.shape[0]]
        if other:
            raise ValueError(
                f"cube must be (E, H, W): {where} has {energies.shape[0]} energies, matching axis "
                f"{other[0]} of the data shape {counts.shape} instead of axis 0"
            )
        raise ValueError(
            f"{where} has {energies.shape[0]} energies but the cube has {counts.shape[0]} channels "
            f"along axis 0 (shape {counts.shape})"
        )
    if not np.all(np.isfinite(counts)):
        raise ValueError(f"counts in {where} contain non-finite values (NaN or inf)")
    if np.any(counts < 0):
        raise ValueError(f"counts in {where} must be non-negative, found minimum {counts.min():.4g}")
    if not np.all(np.isfinite(energies)) or np.any(energies <= 0) or np.any(np.diff(energies) <= 0):
        raise ValueError(f"energies of {where} must be positive and strictly increasing along axis 0")
    return FitsCube(counts, energies, header)


def write_cube(path, counts, energies, *, header=None, overwrite: bool = True) -> None:
    """Write a counts cube ``(E, H, W)`` with its energies (keV) to a FITS file.

    The primary HDU holds the cube, with the celestial WCS and the observation keywords of
    ``header`` (a 2-D or 3-D ``astropy.io.fits.Header``, optional) and a linear spectral WCS
    on axis 3 (``CTYPE3 = 'ENER'``, ``CUNIT3 = 'keV'``) when the grid is uniform; an
    ``ENERGIES`` table extension records the energies exactly. Integer counts stay integers.
    """
    fits = _fits()
    counts = check_array(counts, "counts", ndim=3, nonnegative=True, dtype=None)
    if not (np.issubdtype(counts.dtype, np.integer) or np.issubdtype(counts.dtype, np.floating)):
        raise TypeError(f"counts must hold integers or floats, got dtype {counts.dtype}")
    energies = check_array(energies, "energies", ndim=1, dtype=np.float64)
    if energies.shape[0] != counts.shape[0]:
        raise ValueError(
            f"energies has {energies.shape[0]} entries but counts has {counts.shape[0]} channels "
            f"along axis 0; counts must be (E, H, W), got shape {counts.shape}"
        )
    if np.any(energies <= 0) or np.any(np.diff(energies) <= 0):
        raise ValueError("energies must be positive and strictly increasing (keV)")

    out = _metadata(header, fits)
    celestial = _celestial_header(header)
    if celestial is not None:
        cel, sky_shape = celestial
        if sky_shape is not None and sky_shape != (counts.shape[2], counts.shape[1]):
            raise ValueError(
                f"header describes a {sky_shape[1]} x {sky_shape[0]} sky but counts has "
                f"H x W = {counts.shape[1]} x {counts.shape[2]}"
            )
        out.update(cel)
    steps = np.diff(energies)
    if energies.size == 1 or np.allclose(steps, steps.mean(), rtol=1e-6, atol=0):
        step = float(steps.mean()) if energies.size > 1 else 1.0
        out["CTYPE3"] = ("ENER", "photon energy")
        out["CUNIT3"] = "keV"
        out["CRPIX3"] = 1.0
        out["CRVAL3"] = float(energies[0])
        out["CDELT3"] = step
    primary = fits.PrimaryHDU(data=counts, header=out)
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="ENERGY", format="D", unit="keV", array=energies)], name="ENERGIES"
    )
    _write_atomic(fits.HDUList([primary, table]), path, overwrite)


def write_maps(path, maps, *, names=None, header=None, units=None, overwrite: bool = True) -> None:
    """Write sky maps to FITS, one image extension per map (``EXTNAME`` = its name).

    Parameters
    ----------
    maps : (N, H, W) array or dict name -> (H, W) array
        NaN is allowed (e.g. outside a mask).
    names : sequence of N str
        Required with an array; by default the dict's keys.
    header : astropy.io.fits.Header, optional
        Header of the cube the maps come from: the celestial part of its WCS (a 3-D header
        loses its energy axis) and its observation keywords are copied to every map.
    units : str, sequence of N str or dict name -> str, optional
        ``BUNIT`` of each map (e.g. ``"keV"`` for kT, ``"counts"`` for amplitudes).
    """
    fits = _fits()
    if isinstance(maps, Mapping):
        if names is None:
            names = list(maps)
        missing = [k for k in names if k not in maps]
        if missing:
            raise ValueError(f"names {missing} are not keys of maps")
        maps = [maps[k] for k in names]
    arr = check_array(maps, "maps", ndim=(2, 3), finite=False, dtype=None)
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"maps must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    if names is None:
        raise ValueError("names must be given with an array of maps (one name per map)")
    if isinstance(names, str) or not isinstance(names, Sequence):
        names = [names] if isinstance(names, str) else list(names)
    names = [str(n) for n in names]
    if len(names) != arr.shape[0]:
        raise ValueError(f"names must have one entry per map ({arr.shape[0]}), got {len(names)}")
    if len(set(n.upper() for n in names)) != len(names) or any(not n.strip() for n in names):
        raise ValueError(f"names must be non-empty and unique (FITS EXTNAME ignores case), got {names}")
    if units is None or isinstance(units, str):
        units = [units] * len(names)
    elif isinstance(units, Mapping):
        units = [units.get(n) for n in names]
    elif len(units) != len(names):
        raise ValueError(f"units must have one entry per map ({len(names)}), got {len(units)}")

    meta = _metadata(header, fits)
    celestial = _celestial_header(header)
    if celestial is not None:
        cel, sky_shape = celestial
        if sky_shape is not None and sky_shape != (arr.shape[2], arr.shape[1]):
            raise ValueError(
                f"header describes a {sky_shape[1]} x {sky_shape[0]} sky but maps are "
                f"H x W = {arr.shape[1]} x {arr.shape[2]}"
            )
    hdus = [fits.PrimaryHDU(header=meta.copy())]
    for name, image, unit in zip(names, arr, units):
        h = meta.copy()
        if celestial is not None:
            h.update(celestial[0])
        h["MAPNAME"] = (name, "map name, case preserved")
        if unit is not None:
            h["BUNIT"] = str(unit)
        hdus.append(fits.ImageHDU(data=np.ascontiguousarray(image), header=h, name=name))
    _write_atomic(fits.HDUList(hdus), path, overwrite)


def read_maps(path, *, checksum: bool = True) -> dict:
    """The maps written by :func:`write_maps`: a dict ``name -> (H, W) array`` in file
    order, keyed by the names as given to :func:`write_maps` (``MAPNAME``; FITS upper-cases
    ``EXTNAME``), or by ``EXTNAME`` for files from elsewhere. The ``CHECKSUM`` /
    ``DATASUM`` keywords are verified as by :func:`read_cube`."""
    out = {}
    with _open_verified(path, os.fspath(path), checksum) as hdul:
        for h in hdul[1:]:
            if h.is_image and h.data is not None:
                out[str(h.header.get("MAPNAME", h.name))] = np.array(h.data)
    return out
