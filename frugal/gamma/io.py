"""Reading and writing gamma-ray spectra (the training families: :mod:`frugal.gamma.families`).

* :func:`read_spectrum` / :func:`write_spe`: one spectrum from plain text (one count per line,
  or two columns ``energy, counts``), CSV, NumPy ``.npy``, IAEA / ORTEC Maestro ASCII
  ``.spe`` (``$DATA:`` block, ``$MEAS_TIM:``, ``$ENER_FIT:`` / ``$MCA_CAL:`` calibration) and
  ANSI N42.42 XML (``.n42``/``.xml``), returned as a :class:`Spectrum` with its energy axis.
* :func:`read_family`, :func:`preprocess`, :func:`published_split`: the families, their
  preprocessing and split, from :mod:`frugal.gamma.families` (imported here too).

Energy convention: a channel of width ``w`` starting at ``E`` holds deposits in
``[E, E + w)`` and its energy is the centre ``E + w/2``; for the 1 keV channels of the Geant4
files channel ``k`` (0-based line number) covers ``[k, k+1)`` keV, so after the published
preprocessing bin ``k`` covers ``[18 + 2k, 20 + 2k)`` keV, centre ``19 + 2k`` -- the same
axis as :func:`frugal.gamma.simulate.bin_centres` of the default bins.

Every reader raises ``ValueError`` naming the file (and line) for a missing file, a
malformed line, a negative or non-finite count, mismatched lengths, a negative or
non-finite live or real time, or an energy calibration that is not finite and strictly
increasing over the channels. Text readers stream their file with bounded memory
(:mod:`frugal.gamma.textfiles`): they refuse a file larger than :data:`MAX_TEXT_BYTES`, a
line longer than :data:`MAX_LINE_CHARS` or more than :data:`MAX_CHANNELS` channels (no
spectrum is that large; a file that is is something else, and reading it whole could
exhaust memory).
"""

from __future__ import annotations

import os
import re
from array import array
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

import numpy as np

from frugal._validation import check_array, check_float
from frugal.gamma import textfiles
from frugal.gamma.families import GEANT4_PATTERN, geant4_thickness, preprocess, published_split, read_family
# The MAX_* limits are here to be read; the readers apply those of textfiles.
from frugal.gamma.textfiles import (
    FIELD_SEPARATORS,
    MAX_CHANNELS,
    MAX_LINE_CHARS,
    MAX_TEXT_BYTES,
    checked_counts,
    existing_path,
    text_lines,
    too_many_channels,
)

__all__ = [
    "GEANT4_PATTERN",
    "MAX_CHANNELS",
    "MAX_LINE_CHARS",
    "MAX_TEXT_BYTES",
    "Spectrum",
    "geant4_thickness",
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




def _read_table(path: Path, *, delimiter=None) -> np.ndarray:
    """Numeric table of a text file: one or two columns, optional header line, '#' comments.

    Streams the file into a compact buffer (8 bytes a value) and stops at
    :data:`MAX_CHANNELS` rows.
    """
    values = array("d")
    ncols = None
    for lineno, line in text_lines(path):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = [f for f in (text.split(delimiter) if delimiter else FIELD_SEPARATORS.split(text)) if f != ""]
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
        if len(values) >= ncols * textfiles.MAX_CHANNELS:
            raise too_many_channels(path, f"line {lineno}")
        values.extend(row)
    if ncols is None:
        raise ValueError(f"{path}: no numeric data")
    return np.frombuffer(values, dtype=np.float64).reshape(-1, ncols)


def _table_spectrum(table: np.ndarray, where: str, kev_per_channel) -> tuple[np.ndarray, np.ndarray, bool]:
    if table.ndim == 1 or table.shape[1] == 1:
        counts = checked_counts(table.reshape(-1), where)
        energies, calibrated = _channel_energies(counts.size, kev_per_channel)
        return counts, energies, calibrated
    if table.shape[1] == 2:
        energies = _check_energies(np.array(table[:, 0], dtype=np.float64), "the energy column (column 1)", where)
        return checked_counts(table[:, 1], where), energies, True
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
    for lineno, line in text_lines(path):
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
                if n > textfiles.MAX_CHANNELS:
                    raise too_many_channels(f"{path}: line {lineno}: $DATA: {first}..{last}", n)
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
    counts = checked_counts(counts, str(path))
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
    counts = checked_counts(spectrum.counts, "spectrum.counts")
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
    if values.size > textfiles.MAX_CHANNELS:
        raise too_many_channels(f"{path}: <ChannelData>", values.size)
    counts = checked_counts(values, str(path))
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
    p = existing_path(path)
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
            if table.shape[0] > textfiles.MAX_CHANNELS:
                raise too_many_channels(p, table.shape[0])
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
