"""Reading and writing gamma-ray spectra and spectral families.

* :func:`read_spectrum` / :func:`write_spe`: one spectrum from plain text (one count per line,
  or two columns ``energy, counts``), CSV, NumPy ``.npy``, IAEA / ORTEC Maestro ASCII
  ``.spe`` (``$DATA:`` block, ``$MEAS_TIM:``, ``$ENER_FIT:`` / ``$MCA_CAL:`` calibration) and
  ANSI N42.42 XML (``.n42``/``.xml``), returned as a :class:`Spectrum` with its energy axis.
* :func:`read_family`: a family of spectra with their parameters, either the layout of the
  SEMSUN Geant4 data set (``<RN>/GRS_NaITl_<RN>_STEEL<a>__<b>mm.dat``, thickness ``a.b`` mm)
  or a generic manifest layout (see :func:`read_family`).
* :func:`preprocess`: the preprocessing of the published SEMSUN experiments (drop 18 channels,
  keep 2048, sum pairs into 2 keV bins, floor at 1e-6 of the maximum, keep 800 bins, unit sum).
* :func:`published_split`: the anchor / training / test split of the 96 thicknesses.

Energy convention: a channel of width ``w`` starting at ``E`` holds deposits in
``[E, E + w)`` and its energy is the centre ``E + w/2``; for the 1 keV channels of the Geant4
files channel ``k`` (0-based line number) covers ``[k, k+1)`` keV, so after the published
preprocessing bin ``k`` covers ``[18 + 2k, 20 + 2k)`` keV, centre ``19 + 2k`` -- the same
axis as :func:`frugal.gamma.simulate.bin_centres` of the default bins.

Every reader raises ``ValueError`` naming the file (and line) for a missing file, a
malformed line, a negative or non-finite count, mismatched lengths, a negative or
non-finite live or real time, or an energy calibration that is not finite and strictly
increasing over the channels. Text readers stream their file with bounded memory: they
refuse a file larger than :data:`MAX_TEXT_BYTES`, a line longer than
:data:`MAX_LINE_CHARS` or more than :data:`MAX_CHANNELS` channels (no spectrum is that
large; a file that is is something else, and reading it whole could exhaust memory).
"""

from __future__ import annotations

import csv
import json
from array import array
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

import numpy as np

from frugal._validation import check_array, check_float, check_int
from frugal.data.families import Family, Split

__all__ = [
    "Spectrum",
    "preprocess",
    "published_split",
    "read_background",
    "read_family",
    "read_spectrum",
    "write_spe",
]


class Spectrum(NamedTuple):
    """One measured or simulated spectrum.

    counts: ``(n,)`` float64 counts per channel (non-negative).
    energies: ``(n,)`` channel energies in keV (channel numbers if the file has no calibration;
        then ``meta["calibrated"]`` is False).
    live_time: live time in seconds, or None if unknown.
    meta: everything else read from the file (real time, date, identifiers, calibration
        coefficients, the source path).
    """

    counts: np.ndarray
    energies: np.ndarray
    live_time: float | None
    meta: dict


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


#: Most channels a spectrum file may hold. Detectors have up to 2^16 channels and rebinned
#: list-mode data a few million; more means the file is not a spectrum.
MAX_CHANNELS = 1 << 22

#: Largest text spectrum file, in bytes: MAX_CHANNELS lines of "energy, counts" fit with room
#: to spare, and a larger file is refused before any of it is read.
MAX_TEXT_BYTES = 256 << 20

#: Longest line of a text spectrum file, in characters (65536 counts on one line fit): a
#: line is read at most this far, so a file without line breaks is never read whole.
MAX_LINE_CHARS = 1 << 20


def _path(path, what="file") -> Path:
    p = Path(os.fspath(path))
    if not p.exists():
        raise ValueError(f"{what} {str(p)!r} does not exist")
    return p


def _text_lines(path: Path):
    """``(lineno, line)`` of a text file, streamed; refuses files and lines over the limits."""
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise ValueError(
            f"{path}: {size / 2**20:.0f} MiB is too large for a spectrum text file (limit "
            f"{MAX_TEXT_BYTES >> 20} MiB, at most {MAX_CHANNELS} channels); is it a spectrum?"
        )
    with open(path, encoding="utf-8", errors="replace") as fh:
        lineno = 0
        while True:
            line = fh.readline(MAX_LINE_CHARS + 1)
            if not line:
                return
            lineno += 1
            if len(line) > MAX_LINE_CHARS:
                raise ValueError(
                    f"{path}: line {lineno} is longer than {MAX_LINE_CHARS} characters; "
                    "not a spectrum text file"
                )
            yield lineno, line


def _too_many_channels(where, n) -> ValueError:
    return ValueError(f"{where}: more than {MAX_CHANNELS} channels ({n}); not a spectrum")


def _check_counts(counts, where: str) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"{where}: expected a non-empty list of counts, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        bad = int(np.argmax(~np.isfinite(c)))
        raise ValueError(f"{where}: count {bad} is not finite ({c[bad]})")
    if np.any(c < 0):
        bad = int(np.argmax(c < 0))
        raise ValueError(f"{where}: count {bad} is negative ({c[bad]:g})")
    return c


def _check_seconds(value: float, field: str, where: str) -> float:
    """A live or real time read from a file: finite and non-negative."""
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{where}: {field} must be a finite, non-negative number of seconds, got {value!r}")
    return float(value)


def _check_energies(energies: np.ndarray, field: str, where: str, first_channel: int = 0) -> np.ndarray:
    """Channel energies from ``field`` (a calibration or a column): finite, strictly increasing."""
    finite = np.isfinite(energies)
    if not np.all(finite):
        k = int(np.argmin(finite))
        raise ValueError(
            f"{where}: {field} gives a non-finite energy ({energies[k]}) at channel {first_channel + k}"
        )
    rising = np.diff(energies) > 0
    if not np.all(rising):
        k = int(np.argmin(rising))
        raise ValueError(
            f"{where}: {field} must give strictly increasing energies, but channel "
            f"{first_channel + k + 1} ({energies[k + 1]:.6g}) is not above channel "
            f"{first_channel + k} ({energies[k]:.6g})"
        )
    return energies


def _channel_energies(n: int, kev_per_channel, first_channel: int = 0):
    ch = np.arange(first_channel, first_channel + n, dtype=np.float64)
    if kev_per_channel is None:
        return ch, False
    return (ch + 0.5) * float(kev_per_channel), True


def _polynomial_energies(coeffs, n: int, first_channel: int, field: str, where: str):
    """Energies of channels ``first_channel..`` from a polynomial calibration, checked."""
    c = np.asarray(coeffs, dtype=np.float64)
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{where}: {field} coefficients must be finite, got {tuple(coeffs)}")
    ch = np.arange(first_channel, first_channel + n, dtype=np.float64)
    energies = np.polynomial.polynomial.polyval(ch, c)
    return _check_energies(energies, f"{field} calibration {tuple(float(v) for v in c)}", where, first_channel)


_SPLIT = re.compile(r"[,;\s]+")


def _read_table(path: Path, *, delimiter=None) -> np.ndarray:
    """Numeric table of a text file: one or two columns, optional header line, '#' comments.

    Streams the file into a compact buffer (8 bytes a value) and stops at
    :data:`MAX_CHANNELS` rows.
    """
    values = array("d")
    ncols = None
    for lineno, line in _text_lines(path):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = [f for f in (text.split(delimiter) if delimiter else _SPLIT.split(text)) if f != ""]
        if not fields:
            continue
        try:
            row = [float(f) for f in fields]
        except ValueError:
            if ncols is None:  # a header line
                continue
            raise ValueError(f"{path}: line {lineno} is not numeric: {line.strip()!r}") from None
        if ncols is None:
            ncols = len(row)
        elif len(row) != ncols:
            raise ValueError(f"{path}: line {lineno} has {len(row)} columns, expected {ncols}")
        if len(values) >= ncols * MAX_CHANNELS:
            raise _too_many_channels(path, f"line {lineno}")
        values.extend(row)
    if ncols is None:
        raise ValueError(f"{path}: no numeric data")
    return np.frombuffer(values, dtype=np.float64).reshape(-1, ncols)


def _table_spectrum(table: np.ndarray, where: str, kev_per_channel) -> tuple[np.ndarray, np.ndarray, bool]:
    if table.ndim == 1 or table.shape[1] == 1:
        counts = _check_counts(table.reshape(-1), where)
        energies, calibrated = _channel_energies(counts.size, kev_per_channel)
        return counts, energies, calibrated
    if table.shape[1] == 2:
        energies = _check_energies(np.array(table[:, 0], dtype=np.float64), "the energy column (column 1)", where)
        return _check_counts(table[:, 1], where), energies, True
    raise ValueError(f"{where}: expected one column (counts) or two (energy, counts), got {table.shape[1]}")


# --------------------------------------------------------------------------------------
# .spe (IAEA / Maestro ASCII)
# --------------------------------------------------------------------------------------


#: Sections of a .spe file that are read besides ``$DATA:`` (others are skipped unread).
_SPE_KEPT = ("MEAS_TIM", "MCA_CAL", "ENER_FIT", "SPEC_ID", "SPEC_REM", "DATE_MEA")

#: Most lines kept of one of those sections (each is a few lines in a real file).
_SPE_SECTION_LINES = 1000


def _read_spe(path: Path, kev_per_channel) -> Spectrum:
    # One pass over the lines: the counts go straight into an array of the size $DATA:
    # announces (at most MAX_CHANNELS), only the few metadata sections above are kept.
    sections: dict[str, list[tuple[int, str]]] = {}
    key = None
    counts = None
    first = last = n = filled = 0
    data_seen = False
    for lineno, line in _text_lines(path):
        s = line.strip()
        if s.startswith("$"):
            key = s[1:].rstrip(":").strip().upper()
            if key == "DATA":
                if data_seen:
                    raise ValueError(f"{path}: line {lineno}: a second $DATA: section")
                data_seen = True
            elif key in _SPE_KEPT:
                sections.setdefault(key, [])
            continue
        if not s or key is None:
            continue
        if key == "DATA":
            if counts is None:
                try:
                    first, last = (int(v) for v in s.split()[:2])
                except ValueError:
                    raise ValueError(f"{path}: line {lineno}: $DATA: needs 'first last' channel numbers") from None
                n = last - first + 1
                if n < 1:
                    raise ValueError(f"{path}: line {lineno}: $DATA: channel range {first}..{last} is empty")
                if n > MAX_CHANNELS:
                    raise _too_many_channels(f"{path}: line {lineno}: $DATA: {first}..{last}", n)
                counts = np.empty(n, dtype=np.float64)
                continue
            for f in s.split():
                try:
                    value = float(f)
                except ValueError:
                    raise ValueError(f"{path}: line {lineno}: count {f!r} is not a number") from None
                if filled == n:
                    raise ValueError(
                        f"{path}: $DATA: announces {n} channels ({first}..{last}) but holds more counts "
                        f"(line {lineno})"
                    )
                counts[filled] = value
                filled += 1
        elif key in _SPE_KEPT:
            kept = sections[key]
            if len(kept) >= _SPE_SECTION_LINES:
                raise ValueError(
                    f"{path}: line {lineno}: ${key}: has more than {_SPE_SECTION_LINES} lines; "
                    "not an IAEA/Maestro .spe file?"
                )
            kept.append((lineno, s))
    if counts is None:
        raise ValueError(f"{path}: no $DATA: section (not an IAEA/Maestro .spe file?)")
    if filled != n:
        raise ValueError(f"{path}: $DATA: announces {n} channels ({first}..{last}) but holds {filled} counts")
    counts = _check_counts(counts, str(path))
    meta: dict = {"source": str(path), "format": "spe", "first_channel": first}
    live = None
    if sections.get("MEAS_TIM"):
        lineno, text = sections["MEAS_TIM"][0]
        parts = text.split()
        try:
            live = float(parts[0])
            real = float(parts[1]) if len(parts) > 1 else None
        except ValueError:
            raise ValueError(f"{path}: line {lineno}: $MEAS_TIM: must be 'live real' seconds") from None
        live = _check_seconds(live, "the live time ($MEAS_TIM:)", f"{path}: line {lineno}")
        if real is not None:
            meta["real_time"] = _check_seconds(real, "the real time ($MEAS_TIM:)", f"{path}: line {lineno}")
    for k in ("SPEC_ID", "SPEC_REM", "DATE_MEA"):
        if sections.get(k):
            meta[k.lower()] = "\n".join(s for _, s in sections[k])
    coeffs = field = None
    if sections.get("MCA_CAL") and len(sections["MCA_CAL"]) >= 2:
        lineno, s = sections["MCA_CAL"][1]
        fields = s.split()
        try:
            m = int(sections["MCA_CAL"][0][1].split()[0])
            coeffs = [float(v) for v in fields[:m]]
        except (ValueError, IndexError):
            raise ValueError(f"{path}: line {lineno}: malformed $MCA_CAL: coefficients") from None
        if m < 1 or len(coeffs) < m:
            raise ValueError(f"{path}: line {lineno}: $MCA_CAL: announces {m} coefficients, gives {len(coeffs)}")
        if len(fields) > m:
            meta["energy_unit"] = fields[m]
        field = f"line {lineno}: $MCA_CAL:"
    elif sections.get("ENER_FIT"):
        lineno, s = sections["ENER_FIT"][0]
        try:
            coeffs = [float(v) for v in s.split()]
        except ValueError:
            raise ValueError(f"{path}: line {lineno}: malformed $ENER_FIT: coefficients") from None
        field = f"line {lineno}: $ENER_FIT:"
    if coeffs is not None and any(c != 0 for c in coeffs[1:]):  # all zero: "not calibrated"
        meta["calibration"] = tuple(coeffs)
        energies = _polynomial_energies(coeffs, n, first, field, str(path))
        calibrated = True
    else:
        if coeffs is not None and not np.isfinite(coeffs[0]):
            raise ValueError(f"{path}: {field} coefficients must be finite, got {tuple(coeffs)}")
        energies, calibrated = _channel_energies(n, kev_per_channel, first)
    meta["calibrated"] = calibrated
    return Spectrum(counts, energies, live, meta)


def write_spe(path, spectrum: Spectrum, *, spec_id: str | None = None) -> None:
    """Write ``spectrum`` as an IAEA/Maestro ASCII ``.spe`` file.

    Counts must be non-negative integers (a ``.spe`` holds integer counts). The energy axis
    is written as the quadratic calibration ``$MCA_CAL:`` (and its linear part as
    ``$ENER_FIT:``), fitted exactly to ``spectrum.energies``; a ``ValueError`` is raised if
    the energies are not a polynomial of degree <= 2 in the channel number (to 1e-6 keV).
    """
    counts = _check_counts(spectrum.counts, "spectrum.counts")
    if np.any(counts != np.round(counts)):
        raise ValueError("spectrum.counts must be integers to be written to a .spe file")
    energies = check_array(spectrum.energies, "spectrum.energies", ndim=1, dtype=np.float64)
    if energies.shape != counts.shape:
        raise ValueError(f"spectrum.energies has {energies.size} values for {counts.size} counts")
    meta = dict(spectrum.meta or {})
    first = int(meta.get("first_channel", 0))
    ch = np.arange(first, first + counts.size, dtype=np.float64)
    deg = min(2, counts.size - 1)
    coeffs = np.polynomial.polynomial.polyfit(ch, energies, deg)
    misfit = np.max(np.abs(np.polynomial.polynomial.polyval(ch, coeffs) - energies))
    if misfit > 1e-6 * max(1.0, np.max(np.abs(energies))):
        raise ValueError("spectrum.energies is not a polynomial of degree <= 2 in the channel number")
    coeffs = np.concatenate([coeffs, np.zeros(3 - coeffs.size)])
    live = spectrum.live_time
    real = meta.get("real_time", live)
    out = [
        "$SPEC_ID:",
        str(spec_id if spec_id is not None else meta.get("spec_id", "frugal spectrum")),
        "$SPEC_REM:",
        str(meta.get("spec_rem", "written by frugal.gamma.io.write_spe")),
    ]
    if "date_mea" in meta:
        out += ["$DATE_MEA:", str(meta["date_mea"])]
    if live is not None:
        out += ["$MEAS_TIM:", f"{float(live):.6g} {float(real if real is not None else live):.6g}"]
    out += ["$DATA:", f"{first} {first + counts.size - 1}"]
    out += [f"{int(c):8d}" for c in counts]
    out += ["$ENER_FIT:", f"{coeffs[0]:.12g} {coeffs[1]:.12g}"]
    out += ["$MCA_CAL:", "3", f"{coeffs[0]:.12g} {coeffs[1]:.12g} {coeffs[2]:.12g} keV"]
    out += ["$ENDRECORD:"]
    with open(os.fspath(path), "w", encoding="ascii", newline="\n") as fh:
        fh.write("\n".join(out) + "\n")


# --------------------------------------------------------------------------------------
# ANSI N42.42 XML
# --------------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _iso_duration_seconds(text: str) -> float:
    """Seconds of an ISO 8601 duration such as ``PT300.5S`` or ``PT1H2M3S``."""
    num = r"(\d+(?:\.\d*)?)"
    m = re.fullmatch(rf"\s*P(?:{num}D)?(?:T(?:{num}H)?(?:{num}M)?(?:{num}S)?)?\s*", text)
    if not m:
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def _read_n42(path: Path, kev_per_channel) -> Spectrum:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path}: not well-formed XML ({err})") from None
    elements = list(root.iter())
    spectra = [e for e in elements if _local(e.tag) == "Spectrum"]
    if not spectra:
        raise ValueError(f"{path}: no <Spectrum> element (not an N42 file?)")
    spec = spectra[0]
    data = [e for e in spec.iter() if _local(e.tag) == "ChannelData"]
    if not data or not (data[0].text or "").strip():
        raise ValueError(f"{path}: the first <Spectrum> has no <ChannelData>")
    if data[0].get("compressionCode", "None") not in ("None", ""):
        raise ValueError(f"{path}: compressed <ChannelData> ({data[0].get('compressionCode')}) is not supported")
    try:
        values = np.array(data[0].text.split(), dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}: <ChannelData> holds a non-numeric value") from None
    if values.size > MAX_CHANNELS:
        raise _too_many_channels(f"{path}: <ChannelData>", values.size)
    counts = _check_counts(values, str(path))
    meta: dict = {"source": str(path), "format": "n42"}

    def seconds(e):
        text = e.text.strip()
        try:
            value = _iso_duration_seconds(text) if text.startswith("P") else float(text)
        except ValueError:
            raise ValueError(f"{path}: <{_local(e.tag)}> {text!r} is not a duration") from None
        return _check_seconds(value, f"<{_local(e.tag)}>", str(path))

    live = None
    for e in elements:
        name = _local(e.tag)
        if name in ("LiveTimeDuration", "LiveTime") and e.text and live is None:
            live = seconds(e)
        elif name in ("RealTimeDuration", "RealTime") and e.text and "real_time" not in meta:
            meta["real_time"] = seconds(e)
        elif name == "StartDateTime" and e.text:
            meta.setdefault("date_mea", e.text.strip())
    coeffs = None
    for e in elements:
        if _local(e.tag) in ("CoefficientValues", "Coefficients") and e.text and e.text.strip():
            try:
                coeffs = [float(v) for v in e.text.split()]
            except ValueError:
                raise ValueError(f"{path}: <{_local(e.tag)}> holds a non-numeric coefficient") from None
            field = f"<{_local(e.tag)}>"
            break
    if coeffs is not None and any(c != 0 for c in coeffs[1:]):  # all zero: "not calibrated"
        meta["calibration"] = tuple(coeffs)
        energies = _polynomial_energies(coeffs, counts.size, 0, field, str(path))
        calibrated = True
    else:
        if coeffs is not None and not np.isfinite(coeffs[0]):
            raise ValueError(f"{path}: {field} coefficients must be finite, got {tuple(coeffs)}")
        energies, calibrated = _channel_energies(counts.size, kev_per_channel)
    meta["calibrated"] = calibrated
    return Spectrum(counts, energies, live, meta)


# --------------------------------------------------------------------------------------
# single spectra
# --------------------------------------------------------------------------------------


def read_spectrum(path, *, kev_per_channel: float | None = None, live_time: float | None = None) -> Spectrum:
    """Read one spectrum; the format follows the file extension.

    * ``.spe``: IAEA / ORTEC Maestro ASCII (``$DATA:`` block; ``$MEAS_TIM:`` live and real
      times; ``$MCA_CAL:`` polynomial or ``$ENER_FIT:`` linear energy calibration,
      ``E = a + b ch + c ch²`` at channel number ``ch``);
    * ``.n42`` / ``.xml``: ANSI N42.42 (first ``<Spectrum>``: ``<ChannelData>``,
      ``<LiveTimeDuration>``, energy calibration ``<CoefficientValues>``);
    * ``.npy``: a ``(n,)`` array of counts or ``(n, 2)`` of ``(energy, counts)``;
    * anything else (``.txt``, ``.dat``, ``.csv``, ``.tsv``): text with one count per line or
      two columns ``energy, counts`` (comma, semicolon, tab or space separated; one header
      line and ``#`` comments allowed).

    Without an energy calibration in the file, ``energies`` are the channel centres
    ``(k + 0.5) * kev_per_channel`` if ``kev_per_channel`` is given, else the channel
    numbers ``k`` (and ``meta["calibrated"]`` is False). ``live_time`` (s) fills in a live
    time the file does not give.
    """
    p = _path(path)
    if p.is_dir():
        raise ValueError(f"{p} is a directory, not a spectrum file")
    if kev_per_channel is not None:
        kev_per_channel = check_float(kev_per_channel, "kev_per_channel", minimum=0.0, strict=True)
    if live_time is not None:
        live_time = check_float(live_time, "live_time", minimum=0.0)
    ext = p.suffix.lower()
    if ext == ".spe":
        spec = _read_spe(p, kev_per_channel)
    elif ext in (".n42", ".xml"):
        spec = _read_n42(p, kev_per_channel)
    else:
        if ext == ".npy":
            try:
                # Mapped: the shape is checked before anything is read into memory.
                table = np.load(p, allow_pickle=False, mmap_mode="r")
            except ValueError as err:
                raise ValueError(f"{p}: not a numeric .npy array ({err})") from None
            if table.ndim not in (1, 2):
                raise ValueError(f"{p}: expected a (n,) or (n, 2) array, got shape {table.shape}")
            if table.shape[0] > MAX_CHANNELS:
                raise _too_many_channels(p, table.shape[0])
            table = np.array(table, dtype=np.float64)  # a copy: the result must not map the file
            fmt = "npy"
        else:
            table = _read_table(p)
            fmt = "text"
        counts, energies, calibrated = _table_spectrum(table, str(p), kev_per_channel)
        spec = Spectrum(counts, energies, None, {"source": str(p), "format": fmt, "calibrated": calibrated})
    if spec.live_time is None and live_time is not None:
        spec = spec._replace(live_time=float(live_time))
    return spec


def read_background(path, *, kev_per_channel: float = 1.0) -> Spectrum:
    """Read a measured background spectrum such as ``background_NaITl_3inch_measured_1keV.txt``
    (one count per line, 1 keV per channel: energies are the channel centres ``k + 0.5`` keV)."""
    return read_spectrum(path, kev_per_channel=kev_per_channel)


# --------------------------------------------------------------------------------------
# families
# --------------------------------------------------------------------------------------

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
    for lineno, line in _text_lines(path):
        s = line.strip()
        if not s:
            continue
        try:
            values.append(float(s))
        except ValueError:
            raise ValueError(f"{path}: line {lineno} is not a count: {s!r}") from None
        if len(values) > MAX_CHANNELS:
            raise _too_many_channels(path, f"line {lineno}")
    return _check_counts(np.frombuffer(values, dtype=np.float64), str(path))


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
                    rows.append([float(v) for v in _SPLIT.split(s) if v != ""])
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
            _check_counts(row, f"{spectra_path} (spectrum {i})")
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
    d = _path(directory, "directory")
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
