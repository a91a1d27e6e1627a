"""Spectrum and family I/O, the published preprocessing and split."""

import json

import numpy as np
import pytest

import frugal.gamma as gamma
from frugal.data import Family
from frugal.gamma import io, textfiles


def slow_preprocess(counts, offset=18, n_channels=2048, rebin=2, floor=1e-6, keep=800):
    """Independent loop implementation of the published preprocessing of one spectrum."""
    bins = []
    for k in range(n_channels // rebin):
        total = 0.0
        for j in range(rebin):
            total += counts[offset + rebin * k + j]
        bins.append(total)
    top = max(bins)
    bins = [max(b, floor * top) for b in bins][:keep]
    s = sum(bins)
    return [b / s for b in bins]


# ------------------------------------------------------------------ preprocessing


def test_preprocess_matches_an_explicit_loop():
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.uniform(0, 50, size=(3, 2999))).astype(float)
    counts[1, 500:] = 0  # exercises the floor
    out, energies = io.preprocess(counts)
    assert out.shape == (3, 800)
    for i in range(3):
        np.testing.assert_allclose(out[i], slow_preprocess(counts[i]), rtol=1e-12)
    # bin k covers [18 + 2k, 20 + 2k) keV: the simulator's default axis
    np.testing.assert_allclose(energies, 19 + 2 * np.arange(800))
    np.testing.assert_allclose(energies, gamma.bin_centres(gamma.bin_edges()))
    # other settings and a 1-D spectrum
    out1, e1 = io.preprocess(
        counts[0], offset_channels=5, n_channels=30, rebin=3, floor=None, keep=None, normalise=False
    )
    np.testing.assert_allclose(out1, counts[0, 5:35].reshape(10, 3).sum(axis=1))
    np.testing.assert_allclose(e1, np.arange(5, 35).reshape(10, 3).mean(axis=1) + 0.5)


def test_preprocess_family_carries_params_and_energies():
    fam = Family(np.ones((2, 2100)), np.array([[1.0], [2.0]]), ("thickness_mm",), np.arange(2100) + 0.5)
    out = io.preprocess(fam, keep=400)
    assert isinstance(out, Family)
    assert out.spectra.shape == (2, 400) and out.energies[0] == 19.0
    np.testing.assert_array_equal(out.params, fam.params)
    np.testing.assert_allclose(out.spectra.sum(axis=1), 1.0)


def test_preprocess_bad_inputs():
    with pytest.raises(ValueError, match="fewer than offset_channels"):
        io.preprocess(np.ones(1000))
    with pytest.raises(ValueError, match="multiple of rebin"):
        io.preprocess(np.ones(3000), n_channels=2047)
    with pytest.raises(ValueError, match="non-negative"):
        io.preprocess(-np.ones(3000))
    with pytest.raises(ValueError, match="non-finite"):
        io.preprocess(np.full(3000, np.nan))
    with pytest.raises(ValueError, match="energies"):
        io.preprocess(np.ones(3000), energies=np.arange(10.0))
    with pytest.raises(ValueError, match="keep"):
        io.preprocess(np.ones(3000), keep=2000)


# ------------------------------------------------------------------ single spectra


def test_spe_round_trip(tmp_path):
    counts = np.array([0, 3, 17, 250, 4096, 12, 0, 1], dtype=float)
    ch = np.arange(counts.size)
    energies = 1.5 + 0.74 * ch + 2e-5 * ch**2
    spec = io.Spectrum(counts, energies, 300.0, {"real_time": 310.5, "spec_id": "test source"})
    path = tmp_path / "a.spe"
    io.write_spe(path, spec)
    back = io.read_spectrum(path)
    np.testing.assert_array_equal(back.counts, counts)
    np.testing.assert_allclose(back.energies, energies, rtol=1e-10)
    assert back.live_time == 300.0 and back.meta["real_time"] == 310.5
    assert back.meta["spec_id"] == "test source" and back.meta["calibrated"]
    # writing again gives the same file
    io.write_spe(tmp_path / "b.spe", back)
    assert (tmp_path / "a.spe").read_text() == (tmp_path / "b.spe").read_text()


MAESTRO = """$SPEC_ID:
No sample description was entered.
$SPEC_REM:
DET# 1
$DATE_MEA:
03/14/2024 10:00:00
$MEAS_TIM:
600 602
$DATA:
0 5
       1       2
       3
       4       5       6
$ROI:
0
$ENER_FIT:
-0.5 0.25
$ENDRECORD:
"""


def test_read_maestro_spe_with_linear_calibration(tmp_path):
    path = tmp_path / "m.Spe"
    path.write_text(MAESTRO)
    s = io.read_spectrum(path)
    np.testing.assert_array_equal(s.counts, [1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(s.energies, -0.5 + 0.25 * np.arange(6))
    assert s.live_time == 600 and s.meta["real_time"] == 602 and "03/14/2024" in s.meta["date_mea"]
    # $MCA_CAL: takes precedence (quadratic, with its unit)
    path.write_text(MAESTRO.replace("$ENDRECORD:", "$MCA_CAL:\n3\n1.0 0.5 0.01 keV\n$ENDRECORD:"))
    s = io.read_spectrum(path)
    ch = np.arange(6)
    np.testing.assert_allclose(s.energies, 1.0 + 0.5 * ch + 0.01 * ch**2)
    assert s.meta["energy_unit"] == "keV"


def test_spe_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.spe"
    path.write_text(MAESTRO.replace("0 5", "0 6"))
    with pytest.raises(ValueError, match="bad.spe.*7 channels.*6 counts"):
        io.read_spectrum(path)
    path.write_text(MAESTRO.replace("       3\n", "       x\n"))
    with pytest.raises(ValueError, match="bad.spe: line 12"):
        io.read_spectrum(path)
    path.write_text(MAESTRO.replace("       3\n", "      -3\n"))
    with pytest.raises(ValueError, match="negative"):
        io.read_spectrum(path)
    path.write_text("$SPEC_ID:\nnothing\n")
    with pytest.raises(ValueError, match=r"no \$DATA"):
        io.read_spectrum(path)
    with pytest.raises(ValueError, match="integers"):
        io.write_spe(tmp_path / "x.spe", io.Spectrum(np.array([1.5, 2.0]), np.array([1.0, 2.0]), None, {}))
    with pytest.raises(ValueError, match="energies"):
        io.write_spe(tmp_path / "x.spe", io.Spectrum(np.array([1.0, 2.0]), np.array([1.0]), None, {}))


def test_read_text_csv_npy(tmp_path):
    (tmp_path / "one.txt").write_text("5\n0\n7\n\n2\n")
    s = io.read_spectrum(tmp_path / "one.txt")
    np.testing.assert_array_equal(s.counts, [5, 0, 7, 2])
    np.testing.assert_array_equal(s.energies, [0, 1, 2, 3])
    assert not s.meta["calibrated"] and s.live_time is None
    s = io.read_spectrum(tmp_path / "one.txt", kev_per_channel=2.0, live_time=60)
    np.testing.assert_array_equal(s.energies, [1, 3, 5, 7])
    assert s.live_time == 60
    (tmp_path / "two.csv").write_text("energy_keV,counts\n10.0,4\n12.5,6\n15.0,1\n")
    s = io.read_spectrum(tmp_path / "two.csv")
    np.testing.assert_array_equal(s.counts, [4, 6, 1])
    np.testing.assert_array_equal(s.energies, [10.0, 12.5, 15.0])
    np.save(tmp_path / "c.npy", np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(io.read_spectrum(tmp_path / "c.npy").counts, [1, 2, 3])
    np.save(tmp_path / "d.npy", np.array([[1.0, 9.0], [2.0, 8.0]]))
    s = io.read_spectrum(tmp_path / "d.npy")
    np.testing.assert_array_equal(s.energies, [1, 2])
    np.testing.assert_array_equal(s.counts, [9, 8])


def test_text_errors_name_file_and_line(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        io.read_spectrum(tmp_path / "missing.txt")
    (tmp_path / "m.txt").write_text("1\n2\nthree\n")
    with pytest.raises(ValueError, match="m.txt: line 3"):
        io.read_spectrum(tmp_path / "m.txt")
    (tmp_path / "n.txt").write_text("1\n-2\n")
    with pytest.raises(ValueError, match="n.txt.*negative"):
        io.read_spectrum(tmp_path / "n.txt")
    (tmp_path / "c.csv").write_text("1,2\n3\n")
    with pytest.raises(ValueError, match="c.csv: line 2 has 1 columns, expected 2"):
        io.read_spectrum(tmp_path / "c.csv")
    (tmp_path / "e.csv").write_text("3,1\n2,1\n")
    with pytest.raises(ValueError, match="increasing"):
        io.read_spectrum(tmp_path / "e.csv")
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="not finite"):
        io.read_spectrum(tmp_path / "nan.npy")


N42 = """<?xml version="1.0"?>
<RadInstrumentData xmlns="http://physics.nist.gov/N42/2011/N42">
  <EnergyCalibration id="ec1"><CoefficientValues>0.5 3.0 0</CoefficientValues></EnergyCalibration>
  <RadMeasurement id="m1">
    <StartDateTime>2024-01-01T00:00:00Z</StartDateTime>
    <RealTimeDuration>PT2M5S</RealTimeDuration>
    <Spectrum id="s1" energyCalibrationReference="ec1">
      <LiveTimeDuration>PT120.5S</LiveTimeDuration>
      <ChannelData compressionCode="None">0 4 9 2</ChannelData>
    </Spectrum>
  </RadMeasurement>
</RadInstrumentData>
"""


def test_read_n42(tmp_path):
    (tmp_path / "a.n42").write_text(N42)
    s = io.read_spectrum(tmp_path / "a.n42")
    np.testing.assert_array_equal(s.counts, [0, 4, 9, 2])
    np.testing.assert_allclose(s.energies, 0.5 + 3.0 * np.arange(4))
    assert s.live_time == 120.5 and s.meta["real_time"] == 125.0


# ------------------------------------------------------------------ families


def _write_geant4(directory, nuclide, names, n=30, seed=0):
    d = directory / nuclide
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in names:
        counts = "\n".join(str(v) for v in rng.integers(0, 100, n)) + "\n"
        (d / f"GRS_NaITl_{nuclide}_STEEL{name}mm.dat").write_text(counts)
    return d


def test_geant4_thickness_names():
    assert io.geant4_thickness("GRS_NaITl_Cs137_STEEL0__001mm.dat") == 0.001
    assert io.geant4_thickness("GRS_NaITl_Cs137_STEEL5__2mm.dat") == 5.2
    assert io.geant4_thickness("GRS_NaITl_Co60_STEEL30__0mm.dat") == 30.0
    with pytest.raises(ValueError, match="not named"):
        io.geant4_thickness("spectrum_5mm.dat")


def test_read_family_geant4_layout(tmp_path):
    names = ["30__0", "0__001", "5__2", "10__3", "0__01"]
    d = _write_geant4(tmp_path, "Cs137", names)
    _write_geant4(tmp_path, "Co60", ["1__0", "2__0"], seed=1)
    fam = io.read_family(tmp_path, "Cs137")
    np.testing.assert_array_equal(fam.params[:, 0], [0.001, 0.01, 5.2, 10.3, 30.0])
    assert fam.param_names == ("thickness_mm",) and fam.spectra.shape == (5, 30)
    np.testing.assert_array_equal(fam.energies, np.arange(30) + 0.5)
    first = np.loadtxt(d / "GRS_NaITl_Cs137_STEEL0__001mm.dat")
    np.testing.assert_array_equal(fam.spectra[0], first)
    assert io.read_family(d).spectra.shape == (5, 30)  # the nuclide folder itself
    with pytest.raises(ValueError, match="no data for nuclide 'Am241'.*Co60, Cs137"):
        io.read_family(tmp_path, "Am241")
    (d / "GRS_NaITl_Cs137_STEEL7__0mm.dat").write_text("1\n2\n")
    with pytest.raises(ValueError, match="2 channels"):
        io.read_family(tmp_path, "Cs137")
    (d / "GRS_NaITl_Cs137_STEEL7__0mm.dat").write_text("1\nx\n")
    with pytest.raises(ValueError, match="STEEL7__0mm.dat: line 2"):
        io.read_family(tmp_path, "Cs137")


def test_read_family_generic_layouts(tmp_path):
    rng = np.random.default_rng(0)
    spectra = rng.integers(0, 50, (4, 12)).astype(float)
    a = tmp_path / "csv"
    a.mkdir()
    np.save(a / "spectra.npy", spectra)
    (a / "manifest.csv").write_text("kT,z\n1.0,0.1\n2.0,0.2\n3.0,0.3\n4.0,0.4\n")
    np.savetxt(a / "energies.csv", np.linspace(3, 8.5, 12))
    fam = io.read_family(a)
    np.testing.assert_array_equal(fam.spectra, spectra)
    assert fam.param_names == ("kT", "z") and fam.params.shape == (4, 2)
    np.testing.assert_allclose(fam.energies, np.linspace(3, 8.5, 12))
    # one .spe file per spectrum, named in a JSON manifest
    b = tmp_path / "json"
    b.mkdir()
    files = []
    for i, row in enumerate(spectra):
        io.write_spe(b / f"s{i}.spe", io.Spectrum(row, 10 + 2.0 * np.arange(12), 1.0, {}))
        files.append(f"s{i}.spe")
    (b / "manifest.json").write_text(json.dumps({"files": files, "params": {"thickness_mm": [0, 1, 2, 3]}}))
    fam = io.read_family(b)
    np.testing.assert_array_equal(fam.spectra, spectra)
    np.testing.assert_allclose(fam.energies, 10 + 2.0 * np.arange(12))
    # mismatched lengths
    (a / "manifest.csv").write_text("kT\n1\n2\n3\n")
    with pytest.raises(ValueError, match="4 spectra but 3 rows"):
        io.read_family(a)
    (a / "manifest.csv").write_text("kT,z\n1,2\n3\n")
    with pytest.raises(ValueError, match="line 3 has 1 fields"):
        io.read_family(a)
    with pytest.raises(ValueError, match="does not exist"):
        io.read_family(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="manifest"):
        io.read_family(tmp_path / "csv" / ".." / "json" / "..")


# ------------------------------------------------------------------ published split


def test_published_split_sizes_and_reference_rule():
    s = io.published_split()
    assert (len(s.anchors), len(s.train), len(s.test)) == (2, 69, 25)
    np.testing.assert_array_equal(s.anchors, [0, 95])
    allidx = np.concatenate([s.anchors, s.train, s.test])
    np.testing.assert_array_equal(np.sort(allidx), np.arange(96))  # disjoint and covering
    assert np.sum((s.train >= 1) & (s.train <= 24)) == 18 and np.sum(s.train >= 25) == 51
    # the rule written with the legacy global generator, as a reference script would
    state = np.random.get_state()
    try:
        np.random.seed(100)
        thin = np.random.choice(np.arange(1, 25), 18, replace=False)
        thick = np.random.choice(np.arange(25, 95), 51, replace=False)
    finally:
        np.random.set_state(state)
    np.testing.assert_array_equal(s.train, np.sort(np.concatenate([thin, thick])))
    np.testing.assert_array_equal(io.published_split().test, s.test)  # deterministic
    assert not np.array_equal(io.published_split(seed=1).test, s.test)
    with pytest.raises(ValueError, match="n_train_thin"):
        io.published_split(n_train_thin=30)


# ------------------------------------------------------------------ the real data set


def test_read_the_geant4_data_set(geant4_dir):
    for nuc in ("Co60", "Ba133", "Co57", "Cs137"):
        fam = io.read_family(geant4_dir, nuc)
        assert fam.spectra.shape == (96, 2999)
        t = fam.params[:, 0]
        assert t[0] == 0.001 and t[-1] == 30.0 and np.all(np.diff(t) > 0)
        assert np.all(fam.spectra == np.round(fam.spectra)) and fam.spectra.sum(axis=1).min() > 1e4
    assert 5.2 == fam.params[32, 0]  # the thickness of the published experiment
    pre = io.preprocess(fam)
    assert pre.spectra.shape == (96, 800)
    np.testing.assert_allclose(pre.spectra.sum(axis=1), 1.0)
    bkg = io.read_background(geant4_dir / "background_NaITl_3inch_measured_1keV.txt")
    assert bkg.counts.shape == (2200,) and 2.6e6 < bkg.counts.sum() < 2.8e6
    np.testing.assert_array_equal(bkg.energies[:2], [0.5, 1.5])


# ------------------------------------------------------------------ bad files, bounded memory


def test_live_and_real_times_must_be_finite_and_non_negative(tmp_path):
    path = tmp_path / "t.spe"
    for times, field in (("nan 602", "live time"), ("-600 602", "live time"), ("inf 602", "live time"),
                         ("600 -1", "real time"), ("600 nan", "real time")):
        path.write_text(MAESTRO.replace("600 602", times))
        with pytest.raises(ValueError, match=rf"t\.spe: line 8: the {field} \(\$MEAS_TIM:\) must be a finite"):
            io.read_spectrum(path)
    path.write_text(MAESTRO.replace("600 602", "0 0"))  # zero is a time (e.g. an empty run)
    assert io.read_spectrum(path).live_time == 0.0
    n42 = tmp_path / "t.n42"
    n42.write_text(N42.replace("PT120.5S", "-120.5"))
    with pytest.raises(ValueError, match=r"t\.n42: <LiveTimeDuration> must be a finite, non-negative"):
        io.read_spectrum(n42)
    n42.write_text(N42.replace("PT2M5S", "NaN"))
    with pytest.raises(ValueError, match=r"t\.n42: <RealTimeDuration> must be a finite"):
        io.read_spectrum(n42)
    n42.write_text(N42.replace("PT120.5S", "PT-5S"))
    with pytest.raises(ValueError, match=r"t\.n42: <LiveTimeDuration> 'PT-5S' is not a duration"):
        io.read_spectrum(n42)
    (tmp_path / "one.txt").write_text("5\n0\n7\n")
    with pytest.raises(ValueError, match="live_time must be >= 0"):
        io.read_spectrum(tmp_path / "one.txt", live_time=-1.0)
    with pytest.raises(ValueError, match="live_time must be finite"):
        io.read_spectrum(tmp_path / "one.txt", live_time=float("nan"))
    with pytest.raises(ValueError, match="kev_per_channel must be > 0"):
        io.read_spectrum(tmp_path / "one.txt", kev_per_channel=0.0)


def test_energy_calibrations_must_be_finite_and_increasing(tmp_path):
    path = tmp_path / "cal.spe"
    for fit in ("nan 0.25", "-0.5 inf"):
        path.write_text(MAESTRO.replace("-0.5 0.25", fit))
        with pytest.raises(ValueError, match=r"cal\.spe: line 17: \$ENER_FIT: coefficients must be finite"):
            io.read_spectrum(path)
    path.write_text(MAESTRO.replace("-0.5 0.25", "10 -0.25"))  # decreasing
    with pytest.raises(ValueError, match=r"cal\.spe: line 17: \$ENER_FIT: calibration .* strictly increasing.*"
                                         r"channel 1 \(9\.75\) is not above channel 0 \(10\)"):
        io.read_spectrum(path)
    # a quadratic that turns over inside the channel range: E = ch - 0.2 ch^2 peaks at 2.5
    path.write_text(MAESTRO.replace("$ENDRECORD:", "$MCA_CAL:\n3\n0 1 -0.2 keV\n$ENDRECORD:"))
    with pytest.raises(ValueError, match=r"\$MCA_CAL: calibration .* channel 3 \(1\.2\) is not above channel 2"):
        io.read_spectrum(path)
    # ... which is fine where it still rises over the channels the file has (0..5)
    path.write_text(MAESTRO.replace("$ENDRECORD:", "$MCA_CAL:\n3\n0 1 -0.05 keV\n$ENDRECORD:"))
    np.testing.assert_allclose(io.read_spectrum(path).energies, np.arange(6) - 0.05 * np.arange(6) ** 2)
    path.write_text(MAESTRO.replace("$ENDRECORD:", "$MCA_CAL:\n3\n1 0.5\n$ENDRECORD:"))
    with pytest.raises(ValueError, match=r"\$MCA_CAL: announces 3 coefficients, gives 2"):
        io.read_spectrum(path)
    n42 = tmp_path / "cal.n42"
    n42.write_text(N42.replace("0.5 3.0 0", "0.5 -3.0 0"))
    with pytest.raises(ValueError, match=r"cal\.n42: <CoefficientValues> calibration .* strictly increasing"):
        io.read_spectrum(n42)
    n42.write_text(N42.replace("0.5 3.0 0", "0.5 nan 0"))
    with pytest.raises(ValueError, match=r"cal\.n42: <CoefficientValues> coefficients must be finite"):
        io.read_spectrum(n42)
    # the energy column of a two-column text file
    for rows, bad in (("10,4\nnan,6\n15,1\n", "non-finite energy \\(nan\\) at channel 1"),
                      ("10,4\ninf,6\n15,1\n", "non-finite energy \\(inf\\) at channel 1"),
                      ("10,4\n12,6\n12,1\n", "channel 2 \\(12\\) is not above channel 1 \\(12\\)")):
        (tmp_path / "e.csv").write_text(rows)
        with pytest.raises(ValueError, match=rf"e\.csv: the energy column \(column 1\) .*{bad}"):
            io.read_spectrum(tmp_path / "e.csv")
    np.save(tmp_path / "e.npy", np.array([[1.0, 9.0], [np.nan, 8.0]]))
    with pytest.raises(ValueError, match=r"e\.npy: the energy column .*non-finite"):
        io.read_spectrum(tmp_path / "e.npy")


def test_oversized_files_are_refused_before_reading(tmp_path):
    # A sparse file just over the limit: refused from its size, at once.
    for name in ("huge.txt", "huge.spe"):
        with open(tmp_path / name, "wb") as fh:
            fh.truncate(io.MAX_TEXT_BYTES + 1)
        with pytest.raises(ValueError, match=rf"{name}: 256 MiB is too large for a spectrum text file"):
            io.read_spectrum(tmp_path / name)
    # No line breaks: read at most MAX_LINE_CHARS characters.
    (tmp_path / "oneline.txt").write_text("1 " * (io.MAX_LINE_CHARS // 2 + 1))
    with pytest.raises(ValueError, match=r"oneline\.txt: line 1 is longer than 1048576 characters"):
        io.read_spectrum(tmp_path / "oneline.txt")
    # $DATA: announcing more channels than any spectrum has: refused before reading the counts.
    (tmp_path / "range.spe").write_text(MAESTRO.replace("0 5", "0 99999999"))
    with pytest.raises(ValueError, match=r"range\.spe: line 10: \$DATA: 0\.\.99999999: more than 4194304 channels"):
        io.read_spectrum(tmp_path / "range.spe")


def test_channel_limit_of_text_readers(tmp_path, monkeypatch):
    monkeypatch.setattr(textfiles, "MAX_CHANNELS", 4)  # the limit every reader applies
    (tmp_path / "five.txt").write_text("1\n2\n3\n4\n5\n")
    with pytest.raises(ValueError, match=r"five\.txt: more than 4 channels \(line 5\)"):
        io.read_spectrum(tmp_path / "five.txt")
    (tmp_path / "four.csv").write_text("e,c\n1,1\n2,2\n3,3\n4,4\n")
    assert io.read_spectrum(tmp_path / "four.csv").counts.size == 4
    np.save(tmp_path / "five.npy", np.ones(5))
    with pytest.raises(ValueError, match=r"five\.npy: more than 4 channels"):
        io.read_spectrum(tmp_path / "five.npy")
    d = tmp_path / "g" / "Cs137"
    d.mkdir(parents=True)
    (d / "GRS_NaITl_Cs137_STEEL1__0mm.dat").write_text("1\n2\n3\n4\n5\n")
    with pytest.raises(ValueError, match=r"STEEL1__0mm\.dat: more than 4 channels"):
        io.read_family(tmp_path / "g", "Cs137")


def test_text_readers_memory_is_a_few_bytes_per_channel(tmp_path):
    import tracemalloc

    rng = np.random.default_rng(0)
    n = 40_000
    counts = rng.poisson(50.0, n)
    energies = 1.0 + 0.5 * np.arange(n)
    (tmp_path / "a.txt").write_text("\n".join(map(str, counts)) + "\n")
    (tmp_path / "b.csv").write_text("".join(f"{e:.1f},{c}\n" for e, c in zip(energies, counts)))
    lines = ["$MEAS_TIM:", "10 11", "$DATA:", f"0 {n - 1}"] + [f"{c:8d}" for c in counts]
    (tmp_path / "c.spe").write_text("\n".join(lines + ["$ENER_FIT:", "1 0.5", "$ENDRECORD:"]) + "\n")
    for name in ("a.txt", "b.csv", "c.spe"):
        tracemalloc.start()
        try:
            s = io.read_spectrum(tmp_path / name)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        np.testing.assert_array_equal(s.counts, counts)
        # The result is 16 bytes a channel (counts, energies); lists of Python floats took
        # 160-280. Allow 4x the result for the parse buffers and temporaries.
        assert peak < 64 * n, f"{name}: {peak / n:.0f} bytes per channel"
