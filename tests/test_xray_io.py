"""FITS round trips of cubes and maps, WCS bookkeeping, and the errors a user meets."""

import os

import numpy as np
import pytest

fits = pytest.importorskip("astropy.io.fits")
from astropy.wcs import WCS  # noqa: E402

from frugal.xray import io as xio  # noqa: E402

H, W, E = 12, 16, 30


def sky_header(*, energy_axis=True, unit="keV"):
    """A Cas A-like header: RA---TAN / DEC--TAN sky (1 arcsec pixels) and an energy axis."""
    h = fits.Header()
    h["NAXIS"] = 3 if energy_axis else 2
    h["NAXIS1"], h["NAXIS2"] = W, H
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 350.85, 58.815
    h["CRPIX1"], h["CRPIX2"] = 8.5, 6.5
    h["CDELT1"], h["CDELT2"] = -1 / 3600, 1 / 3600
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["RADESYS"] = "ICRS"
    h["OBJECT"] = "Cas A"
    h["EXPOSURE"] = 1.0e5
    if energy_axis:
        scale = 1000.0 if unit == "eV" else 1.0
        h["NAXIS3"] = E
        h["CTYPE3"], h["CUNIT3"] = "ENER", unit
        h["CRVAL3"], h["CDELT3"], h["CRPIX3"] = 3.0 * scale, 0.2 * scale, 1.0
    return h


def cube_data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(3.0, size=(E, H, W)).astype(np.int32)


def world(header, x, y):
    return WCS(header).celestial.pixel_to_world_values(x, y)


def test_cube_round_trip_keeps_data_energies_and_wcs(tmp_path):
    counts = cube_data()
    energies = 3.0 + 0.2 * np.arange(E)
    header = sky_header()
    path = tmp_path / "cube.fits"
    xio.write_cube(path, counts, energies, header=header)
    back = xio.read_cube(path)
    np.testing.assert_array_equal(back.counts, counts)
    np.testing.assert_allclose(back.energies, energies, rtol=1e-12)
    assert back.header["OBJECT"] == "Cas A" and back.header["EXPOSURE"] == 1.0e5
    xs, ys = np.array([0.0, 7.5, 15.0]), np.array([0.0, 5.5, 11.0])
    np.testing.assert_allclose(world(back.header, xs, ys), world(header, xs, ys), rtol=1e-12)
    # the spectral WCS alone (ENERGIES table removed) also gives the energies; astropy drops
    # EXTEND from the copied header, so the checksums must be redone
    with fits.open(path) as hdul:
        fits.HDUList([hdul[0].copy()]).writeto(tmp_path / "wcs_only.fits", checksum=True)
    np.testing.assert_allclose(xio.read_cube(tmp_path / "wcs_only.fits").energies, energies, rtol=1e-12)


def test_energies_from_header_in_ev(tmp_path):
    counts = cube_data().astype(np.float32)
    fits.PrimaryHDU(counts, header=sky_header(unit="eV")).writeto(tmp_path / "ev.fits")
    np.testing.assert_allclose(xio.read_cube(tmp_path / "ev.fits").energies, 3.0 + 0.2 * np.arange(E))


def test_energies_from_table_extension(tmp_path):
    counts = cube_data()
    energies_ev = np.geomspace(3000.0, 8000.0, E)  # non-uniform grid, in eV
    h = sky_header()
    for key in ("CTYPE3", "CUNIT3", "CRVAL3", "CDELT3", "CRPIX3"):
        del h[key]
    col = fits.Column(name="ENERGY", format="D", unit="eV", array=energies_ev)
    fits.HDUList([fits.PrimaryHDU(counts, header=h), fits.BinTableHDU.from_columns([col], name="ENERGIES")]).writeto(
        tmp_path / "table.fits"
    )
    back = xio.read_cube(tmp_path / "table.fits")
    np.testing.assert_allclose(back.energies, energies_ev / 1000.0)
    # written back with a non-uniform grid: the table is the record
    xio.write_cube(tmp_path / "again.fits", back.counts, back.energies, header=back.header)
    np.testing.assert_allclose(xio.read_cube(tmp_path / "again.fits").energies, energies_ev / 1000.0)


def test_simulated_cube_round_trip(tmp_path):
    from frugal.xray.simulate import simulate_cube

    sim = simulate_cube((20, 24), n_channels=50, exposure="low")
    xio.write_cube(tmp_path / "sim.fits", sim.counts, sim.energies)
    back = xio.read_cube(tmp_path / "sim.fits")
    np.testing.assert_array_equal(back.counts, sim.counts)
    np.testing.assert_allclose(back.energies, sim.energies, rtol=1e-12)


def test_maps_written_with_celestial_wcs(tmp_path):
    header = sky_header()  # 3-D: the maps keep only its sky part
    rng = np.random.default_rng(1)
    maps = {"kT": rng.uniform(1, 4, (H, W)), "z": rng.normal(0, 0.003, (H, W))}
    maps["kT"][0, 0] = np.nan  # masked pixels survive
    path = tmp_path / "maps.fits"
    xio.write_maps(path, maps, header=header, units={"kT": "keV"})
    with fits.open(path) as hdul:
        assert [h.name for h in hdul[1:]] == ["KT", "Z"]
        for h in hdul[1:]:
            assert h.header["NAXIS"] == 2 and "CTYPE3" not in h.header
            assert h.header["CTYPE1"] == "RA---TAN" and h.header["CTYPE2"] == "DEC--TAN"
            xs, ys = np.array([0.0, 15.0]), np.array([0.0, 11.0])
            np.testing.assert_allclose(world(h.header, xs, ys), world(header, xs, ys), rtol=1e-12)
        assert hdul["KT"].header["BUNIT"] == "keV"
    back = xio.read_maps(path)
    assert list(back) == ["kT", "z"]
    np.testing.assert_array_equal(back["kT"], maps["kT"])
    np.testing.assert_array_equal(back["z"], maps["z"])

    # array form with names; no header -> no WCS
    xio.write_maps(tmp_path / "amp.fits", np.stack([maps["z"], maps["z"] * 2]), names=["thermal", "synchrotron"])
    back = xio.read_maps(tmp_path / "amp.fits")
    np.testing.assert_array_equal(back["synchrotron"], maps["z"] * 2)


def test_writes_are_atomic_and_replace(tmp_path):
    path = tmp_path / "cube.fits"
    xio.write_cube(path, cube_data(0), 3.0 + 0.2 * np.arange(E))
    xio.write_cube(path, cube_data(1), 3.0 + 0.2 * np.arange(E))
    np.testing.assert_array_equal(xio.read_cube(path).counts, cube_data(1))
    assert sorted(os.listdir(tmp_path)) == ["cube.fits"]  # no temporary left behind
    with pytest.raises(FileExistsError):
        xio.write_cube(path, cube_data(2), 3.0 + 0.2 * np.arange(E), overwrite=False)
    # a failed write leaves the old file intact and no temporary file
    with pytest.raises(ValueError):
        xio.write_maps(path, np.zeros((2, H, W)), names=["a", "A"])
    np.testing.assert_array_equal(xio.read_cube(path).counts, cube_data(1))
    assert sorted(os.listdir(tmp_path)) == ["cube.fits"]


def test_write_errors_name_the_argument(tmp_path):
    energies = 3.0 + 0.2 * np.arange(E)
    with pytest.raises(ValueError, match="counts must have 3"):
        xio.write_cube(tmp_path / "x.fits", np.zeros((E, H)), energies)
    with pytest.raises(ValueError, match="counts must be non-negative"):
        xio.write_cube(tmp_path / "x.fits", -np.ones((E, H, W)), energies)
    with pytest.raises(ValueError, match=r"energies has 30 entries.*\(E, H, W\)"):
        xio.write_cube(tmp_path / "x.fits", np.zeros((H, W, E)), energies)
    with pytest.raises(ValueError, match="energies must be positive and strictly increasing"):
        xio.write_cube(tmp_path / "x.fits", np.zeros((E, H, W)), energies[::-1])
    with pytest.raises(ValueError, match="maps must have 2 or 3"):
        xio.write_maps(tmp_path / "m.fits", np.zeros((1, 2, H, W)), names=["a"])
    with pytest.raises(ValueError, match="names"):
        xio.write_maps(tmp_path / "m.fits", np.zeros((2, H, W)), names=["a"])
    with pytest.raises(ValueError, match="names"):
        xio.write_maps(tmp_path / "m.fits", np.zeros((2, H, W)))
    with pytest.raises(ValueError, match="sky"):
        xio.write_maps(tmp_path / "m.fits", np.zeros((1, W, H)), names=["a"], header=sky_header())
    assert not any(p.name.endswith(".fits") for p in tmp_path.iterdir())


def test_read_errors(tmp_path):
    h = sky_header()
    fits.PrimaryHDU(np.zeros((H, W)), header=sky_header(energy_axis=False)).writeto(tmp_path / "2d.fits")
    with pytest.raises(ValueError, match=r"counts in .* must be a 3-D cube \(E, H, W\)"):
        xio.read_cube(tmp_path / "2d.fits")

    bad = cube_data().astype(np.float32)
    bad[3, 2, 1] = -1.0
    fits.PrimaryHDU(bad, header=h).writeto(tmp_path / "neg.fits")
    with pytest.raises(ValueError, match="counts in .* must be non-negative"):
        xio.read_cube(tmp_path / "neg.fits")

    # (H, W, E) in NumPy order: a 30-entry energy table matches the last axis, not the first
    transposed = np.moveaxis(cube_data(), 0, -1)
    col = fits.Column(name="ENERGY", format="D", unit="keV", array=3.0 + 0.2 * np.arange(E))
    fits.HDUList([fits.PrimaryHDU(transposed), fits.BinTableHDU.from_columns([col], name="ENERGIES")]).writeto(
        tmp_path / "hwe.fits"
    )
    with pytest.raises(ValueError, match=r"cube must be \(E, H, W\)"):
        xio.read_cube(tmp_path / "hwe.fits")

    # energy on FITS axis 1 according to the WCS
    h2 = fits.Header()
    h2["CTYPE1"], h2["CUNIT1"], h2["CRVAL1"], h2["CDELT1"] = "ENER", "keV", 3.0, 0.2
    h2["CTYPE2"], h2["CTYPE3"] = "RA---TAN", "DEC--TAN"
    fits.PrimaryHDU(transposed, header=h2).writeto(tmp_path / "axis1.fits")
    with pytest.raises(ValueError, match=r"cube must be \(E, H, W\)"):
        xio.read_cube(tmp_path / "axis1.fits")

    # no energy information at all
    fits.PrimaryHDU(cube_data(), header=sky_header(energy_axis=False)).writeto(tmp_path / "noe.fits")
    with pytest.raises(ValueError, match="no energy axis"):
        xio.read_cube(tmp_path / "noe.fits")

    h3 = sky_header()
    h3["CUNIT3"] = "Hz"
    fits.PrimaryHDU(cube_data(), header=h3).writeto(tmp_path / "hz.fits")
    with pytest.raises(ValueError, match="unsupported energy unit"):
        xio.read_cube(tmp_path / "hz.fits")


def _flip_byte(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_corrupt_files_fail_their_checksums(tmp_path):
    counts = cube_data()
    energies = 3.0 + 0.2 * np.arange(E)
    good = tmp_path / "good.fits"
    xio.write_cube(good, counts, energies, header=sky_header())
    with fits.open(good) as hdul:
        data_start = hdul.fileinfo(0)["datLoc"]
        table_start = hdul.fileinfo(1)["datLoc"]
        card = hdul.fileinfo(0)["hdrLoc"] + 80 * list(hdul[0].header.keys()).index("OBJECT")
    raw = good.read_bytes()

    # one bit of one count: the data no longer match DATASUM (and CHECKSUM)
    (tmp_path / "data.fits").write_bytes(raw)
    _flip_byte(tmp_path / "data.fits", data_start + 4 * 100 + 3)
    with pytest.raises(ValueError, match=r"data\.fits is corrupt: .*Datasum verification failed"):
        xio.read_cube(tmp_path / "data.fits")
    # read anyway on request: exactly that count differs by one
    back = xio.read_cube(tmp_path / "data.fits", checksum=False)
    assert np.count_nonzero(back.counts != counts) == 1 and np.abs(back.counts - counts).max() == 1

    # a header value (OBJECT = 'Cas A' -> 'Cas @'): only CHECKSUM covers the header
    assert raw[card:card + 80].startswith(b"OBJECT  = 'Cas A")
    (tmp_path / "header.fits").write_bytes(raw)
    _flip_byte(tmp_path / "header.fits", card + 15)
    with pytest.raises(ValueError, match=r"header\.fits is corrupt: Checksum verification failed"):
        xio.read_cube(tmp_path / "header.fits")

    # the energies table (HDU 1) is verified too
    (tmp_path / "table.fits").write_bytes(raw)
    _flip_byte(tmp_path / "table.fits", table_start + 7)
    with pytest.raises(ValueError, match=r"table\.fits is corrupt: .*'ENERGIES'"):
        xio.read_cube(tmp_path / "table.fits")

    # maps
    xio.write_maps(tmp_path / "maps.fits", np.ones((2, H, W)), names=["a", "b"])
    with fits.open(tmp_path / "maps.fits") as hdul:
        map_start = hdul.fileinfo(2)["datLoc"]
    np.testing.assert_array_equal(xio.read_maps(tmp_path / "maps.fits")["b"], np.ones((H, W)))
    _flip_byte(tmp_path / "maps.fits", map_start + 1)
    with pytest.raises(ValueError, match=r"maps\.fits is corrupt: .*'B'"):
        xio.read_maps(tmp_path / "maps.fits")

    # files without the keywords (most files from elsewhere) are read as before
    fits.PrimaryHDU(counts, header=sky_header()).writeto(tmp_path / "plain.fits")
    np.testing.assert_array_equal(xio.read_cube(tmp_path / "plain.fits").counts, counts)
