"""Tests of the X-ray toy model: each physical ingredient is measured back from the spectra
it produces (line centroids, continuum slopes, line widths) and compared with the closed
form, and the Poisson cube with its expectation."""

import numpy as np
import pytest

from frugal.xray import simulate as xs

FE25, FE26 = 6.700, 6.966


def lines_only(kT, z=0.0, **kw):
    """Line part of a thermal spectrum (unnormalised: same scale with and without lines)."""
    with_lines = xs.thermal_spectrum(kT, z, normalize=False, **kw)
    return with_lines - xs.thermal_spectrum(kT, z, normalize=False, lines=False, **kw)


def measured_fwhm(e, profile):
    """FWHM of a single-peaked profile by linear interpolation of the half-maximum crossings."""
    half = profile.max() / 2
    above = np.flatnonzero(profile >= half)
    i, j = above[0], above[-1]
    left = np.interp(half, [profile[i - 1], profile[i]], [e[i - 1], e[i]])
    right = np.interp(half, [profile[j + 1], profile[j]], [e[j + 1], e[j]])
    return right - left


@pytest.fixture(scope="module")
def cube():
    return xs.simulate_cube(seed=3)


# --------------------------------------------------------------------------- spectra


def test_energy_grid():
    e = xs.energies()
    assert e.shape == (375,)
    width = 5.5 / 375
    np.testing.assert_allclose(e[[0, -1]], [3.0 + width / 2, 8.5 - width / 2])
    np.testing.assert_allclose(xs.channel_edges(e)[[0, -1]], [3.0, 8.5])


def test_spectra_are_normalised_and_vectorised():
    kT = np.array([[0.7, 1.5, 3.0], [4.0, 2.0, 1.0]])
    z = np.array([0.0, 0.005, -0.008])
    th = xs.thermal_spectrum(kT, z)
    assert th.shape == (2, 3, 375)
    np.testing.assert_allclose(th.sum(-1), 1.0, rtol=1e-12)
    assert np.all(th > 0)
    # vectorised == one at a time
    np.testing.assert_allclose(th[1, 2], xs.thermal_spectrum(1.0, -0.008), rtol=1e-12)
    sy = xs.synchrotron_spectrum(np.array([1.5, 2.5, 3.5]), nh=np.array([0.5, 1.0, 2.0]))
    assert sy.shape == (3, 375)
    np.testing.assert_allclose(sy.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(sy[1], xs.synchrotron_spectrum(2.5, nh=1.0), rtol=1e-12)


@pytest.mark.parametrize("instrument", [False, True])
@pytest.mark.parametrize("z", [-0.01, 0.0, 0.004, 0.01])
def test_fe_xxv_centroid_follows_redshift(z, instrument):
    e = xs.energies(1500)
    line = lines_only(3.0, z, energies=e, instrument=instrument, velocity_dispersion=800.0)
    expected = FE25 / (1 + z)
    window = np.abs(e - expected) < 0.13  # Fe XXVI, 270 eV above, stays outside
    centroid = np.sum(e[window] * line[window]) / np.sum(line[window])
    assert abs(centroid - expected) < 0.002  # 2 eV, vs a 67 eV shift for z = 0.01


@pytest.mark.parametrize("kT", [0.8, 1.5, 3.0, 5.0])
def test_continuum_slope_gives_temperature(kT):
    # exact photon spectrum: log s = a - 0.4 log E - (1 + z) E / kT, free Gaunt exponent
    e = xs.energies()
    design = np.stack([np.ones_like(e), np.log(e), e], axis=1)
    for z in (0.0, 0.01):
        s = xs.thermal_spectrum(kT, z, nh=0.0, lines=False, instrument=False)
        coef = np.linalg.lstsq(design, np.log(s), rcond=None)[0]
        np.testing.assert_allclose(coef[1:], [-0.4, -(1 + z) / kT], rtol=1e-8)

    # folded, absorbed, with lines: line-free band, instrument and absorption divided out
    for z in (0.0, 0.008):
        s = xs.thermal_spectrum(kT, z, nh=1.0)
        band = (e > 4.5) & (e < 6.2)
        photons = s / (xs.effective_area(e) * xs.transmission(e, 1.0))
        y = np.log(photons[band]) + 0.4 * np.log(e[band])
        slope = np.polyfit(e[band], y, 1)[0]
        np.testing.assert_allclose(slope, -(1 + z) / kT, rtol=0.003)  # z = 0.008 is 0.8 %


@pytest.mark.parametrize("gamma", [1.5, 2.2, 3.5])
def test_power_law_index_recovered(gamma):
    e = xs.energies()
    s = xs.synchrotron_spectrum(gamma, nh=0.0, instrument=False)
    np.testing.assert_allclose(-np.polyfit(np.log(e), np.log(s), 1)[0], gamma, rtol=1e-10)
    # folded and absorbed: divide the instrument and absorption out, avoid the band edges
    s = xs.synchrotron_spectrum(gamma, nh=1.5)
    band = (e > 3.5) & (e < 8.0)
    photons = s / (xs.effective_area(e) * xs.transmission(e, 1.5))
    slope = np.polyfit(np.log(e[band]), np.log(photons[band]), 1)[0]
    np.testing.assert_allclose(-slope, gamma, rtol=0.01)


def test_absorption_hardens_spectrum():
    e = xs.energies()
    soft = xs.synchrotron_spectrum(2.5, nh=0.1)
    hard = xs.synchrotron_spectrum(2.5, nh=5.0)
    # ratio follows exp(-N_H sigma(E)) with sigma = 2.4e-22 E^(-8/3) cm^2
    ratio = hard / soft
    model = np.exp(-4.9e22 * 2.4e-22 * e ** (-8 / 3))
    inner = (e > 3.5) & (e < 8.0)
    r = ratio[inner] / model[inner]
    np.testing.assert_allclose(r / r.mean(), 1.0, rtol=2e-3)


def test_fe_line_ratio_increases_with_temperature():
    e = xs.energies(1500)
    temps = np.array([1.0, 2.0, 3.0, 5.0, 8.0, 15.0])
    lines = lines_only(temps, energies=e, instrument=False, velocity_dispersion=500.0)
    f25 = lines[:, np.abs(e - FE25) < 0.1].sum(axis=1)
    f26 = lines[:, np.abs(e - FE26) < 0.1].sum(axis=1)
    ratio = f26 / f25
    assert np.all(np.diff(ratio) > 0)
    # beyond the Boltzmann factor of the two excitation energies, the ion balance shifts
    # from He-like to H-like iron: that part of the ratio must rise too, by orders of magnitude
    balance = ratio / (np.exp(-(FE26 - FE25) / temps) * (FE26 / FE25) ** -0.4)
    assert np.all(np.diff(balance) > 0) and balance[-1] > 100 * balance[0]
    # and equals the documented law: W(kT) c(E_line, kT), with transmission at each line
    w = xs.line_equivalent_widths(temps)
    i25 = [ln.name for ln in xs.LINES].index("Fe XXV")
    i26 = [ln.name for ln in xs.LINES].index("Fe XXVI")
    law = (w[:, i26] * xs.bremsstrahlung(FE26, temps) * xs.transmission(FE26, 1.0)) / (
        w[:, i25] * xs.bremsstrahlung(FE25, temps) * xs.transmission(FE25, 1.0)
    )
    np.testing.assert_allclose(ratio, law, rtol=1e-3)


@pytest.mark.parametrize("energy", [3.5, 6.0, 8.0])
def test_response_fwhm_matches_formula(energy):
    e = xs.energies(2200)
    profile = xs.response_matrix(e, np.array([energy]))[:, 0]
    expected = 0.150 * np.sqrt(energy / 6.0)  # 150 eV at 6 keV, sqrt(E) scaling
    np.testing.assert_allclose(measured_fwhm(e, profile), expected, rtol=0.01)
    np.testing.assert_allclose(profile.sum(), 1.0, rtol=1e-6)  # no loss inside the band
    np.testing.assert_allclose(np.sum(e * profile), energy, atol=1e-6)


def test_folded_line_width_and_flux():
    e = xs.energies(2200)
    line = lines_only(2.5, 0.0, energies=e)
    window = np.abs(e - FE25) < 0.2
    np.testing.assert_allclose(measured_fwhm(e[window], line[window]), 0.150 * np.sqrt(FE25 / 6), rtol=0.02)
    # flux = effective area x transmission x W c(E_line) (Fe XXV lies 3.5 sigma from Fe XXVI)
    unfolded = lines_only(2.5, 0.0, energies=e, instrument=False)
    ratio = line[window].sum() / unfolded[window].sum()
    np.testing.assert_allclose(ratio, xs.effective_area(FE25), rtol=0.01)


def test_folding_preserves_smooth_continuum():
    e = xs.energies()
    folded = xs.thermal_spectrum(2.0, 0.0, lines=False, normalize=False)
    photons = xs.thermal_spectrum(2.0, 0.0, lines=False, instrument=False, normalize=False)
    inner = (e > 3.4) & (e < 8.1)
    np.testing.assert_allclose(folded[inner], (xs.effective_area(e) * photons)[inner], rtol=0.01)


def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="kT"):
        xs.thermal_spectrum(-1.0, 0.0)
    with pytest.raises(ValueError, match="z"):
        xs.thermal_spectrum(1.0, -1.5)
    with pytest.raises(ValueError, match="nh"):
        xs.synchrotron_spectrum(2.0, nh=-1.0)
    with pytest.raises(ValueError, match="exposure"):
        xs.simulate_cube((16, 16), exposure="medium")
    with pytest.raises(ValueError, match="kT_range"):
        xs.thermal_family(8, kT_range=(3.0, 1.0))


# --------------------------------------------------------------------------- families


def test_thermal_family_design_and_anchors():
    fam = xs.thermal_family(20, seed=1)
    assert fam.spectra.shape == (20, 375) and fam.params.shape == (20, 2)
    assert fam.param_names == ("kT", "z")
    np.testing.assert_allclose(fam.spectra.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(fam.energies, xs.energies())
    kT, z = fam.params.T
    assert kT.min() == pytest.approx(0.5) and kT.max() == pytest.approx(5.0)
    assert z.min() == pytest.approx(-0.01) and z.max() == pytest.approx(0.01)
    # Latin hypercube: one sample per stratum of log kT among the non-corner rows
    strata = np.floor(np.log(kT[4:] / 0.5) / np.log(10.0) * 16).astype(int)
    assert sorted(strata) == list(range(16))
    # labels match the spectra
    np.testing.assert_allclose(fam.spectra[7], xs.thermal_spectrum(kT[7], z[7]), rtol=1e-12)
    anchors = xs.anchor_indices(fam.params, log_axes=(0,))
    corners = {(a, b) for a in (0.5, 5.0) for b in (-0.01, 0.01)}
    assert {tuple(np.round(fam.params[i], 6)) for i in anchors} == corners
    again = xs.thermal_family(20, seed=1)
    np.testing.assert_array_equal(again.params, fam.params)
    assert not np.array_equal(xs.thermal_family(20, seed=2).params, fam.params)


def test_synchrotron_family():
    fam = xs.synchrotron_family(9, index_range=(2.0, 3.0))
    assert fam.spectra.shape == (9, 375) and fam.params.shape == (9, 1)
    assert fam.param_names == ("photon_index",)
    np.testing.assert_allclose(fam.params[xs.anchor_indices(fam.params), 0], [2.0, 3.0])
    np.testing.assert_allclose(fam.spectra[4], xs.synchrotron_spectrum(fam.params[4, 0]), rtol=1e-12)


# --------------------------------------------------------------------------- cube


def test_cube_shapes_and_bookkeeping():
    c = xs.simulate_cube((24, 40), n_channels=60, exposure=500.0, background=30.0, seed=1)
    assert c.counts.shape == c.expected.shape == c.background.shape == (60, 24, 40)
    assert c.components.shape == (2, 60, 24, 40)
    assert c.amplitude.shape == (2, 24, 40) and c.mask.shape == (24, 40)
    assert c.component_names == ("thermal", "synchrotron")
    assert set(c.params) == {"kT", "z", "photon_index"}
    assert all(m.shape == (24, 40) for m in c.params.values())
    # amplitude = expected counts per component per pixel; expected = sum of parts
    np.testing.assert_allclose(c.components.sum(axis=1), c.amplitude, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c.expected, c.components.sum(0) + c.background, rtol=1e-12)
    np.testing.assert_allclose(c.background.sum(0), 30.0)
    # exposure = mean source counts per remnant pixel
    assert c.amplitude.sum(0)[c.mask].mean() == pytest.approx(500.0)
    # spectra are those of the parameter maps
    i, j = np.argwhere(c.mask)[len(np.argwhere(c.mask)) // 2]
    th = xs.thermal_spectrum(c.params["kT"][i, j], c.params["z"][i, j], energies=c.energies)
    np.testing.assert_allclose(c.components[0, :, i, j], c.amplitude[0, i, j] * th, rtol=1e-10)


def test_cube_morphology_and_parameter_ranges(cube):
    mask = cube.mask
    assert 0.3 < mask.mean() < 0.8  # a remnant with empty sky around it
    assert np.all(cube.amplitude[:, ~mask] == 0)
    assert np.all(cube.components[:, :, ~mask] == 0)
    assert np.all(cube.amplitude[0, mask] > 0)
    # synchrotron concentrated at the rim: filaments brighter than the centre
    h, w = mask.shape
    centre = cube.amplitude[1, h // 2 - 5 : h // 2 + 5, w // 2 - 5 : w // 2 + 5].mean()
    assert cube.amplitude[1].max() > 20 * centre
    for name, (lo, hi) in xs.PARAM_RANGES.items():
        m = cube.params[name]
        assert np.all(np.isfinite(m)) and lo <= m.min() and m.max() <= hi, name
    assert np.abs(cube.params["z"][mask]).max() > 0.003  # bulk motions are present
    assert np.ptp(cube.params["kT"][mask]) > 1.0 and np.ptp(cube.params["photon_index"][mask]) > 0.5
    assert cube.amplitude.sum(0)[mask].mean() == pytest.approx(xs.EXPOSURE_PRESETS["high"])


def test_poisson_counts_match_expectation(cube):
    total, mu = cube.counts.sum(), cube.expected.sum()
    assert abs(total - mu) < 5 * np.sqrt(mu)
    # per channel (summed over the sky) a chi-square with E degrees of freedom
    per_channel = cube.counts.sum(axis=(1, 2))
    expected = cube.expected.sum(axis=(1, 2))
    chi2 = np.sum((per_channel - expected) ** 2 / expected)
    n = len(expected)
    assert abs(chi2 - n) < 5 * np.sqrt(2 * n)
    assert np.all(cube.counts[:, ~cube.mask] == 0)  # no source and no background there
    assert np.issubdtype(cube.counts.dtype, np.integer)


def test_cube_is_deterministic():
    a = xs.simulate_cube((20, 20), n_channels=40, seed=5)
    b = xs.simulate_cube((20, 20), n_channels=40, seed=5)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.expected, b.expected)
    other_noise = xs.simulate_cube((20, 20), n_channels=40, seed=5, noise_seed=9)
    np.testing.assert_array_equal(other_noise.expected, a.expected)
    assert not np.array_equal(other_noise.counts, a.counts)
    other = xs.simulate_cube((20, 20), n_channels=40, seed=6)
    assert not np.allclose(other.params["kT"], a.params["kT"])


def test_low_exposure_preset():
    low = xs.simulate_cube((20, 20), n_channels=40, exposure="low")
    assert low.amplitude.sum(0)[low.mask].mean() == pytest.approx(200.0)


def test_plot_maps_draws_each_map(cube):
    pytest.importorskip("matplotlib")
    from frugal.xray.plots import plot_maps

    fig, axes = plot_maps(cube.params, ax=None)
    assert len(axes) == 3
    assert [a.get_title() for a in axes] == ["kT", "z", "photon_index"]
    for a, name in zip(axes, ["kT", "z", "photon_index"]):
        np.testing.assert_array_equal(a.images[0].get_array(), cube.params[name])
    with pytest.raises(ValueError, match="names"):
        plot_maps(cube.amplitude, names=["thermal"])
