"""Differentiable detector resolution: agreement with the simulator, gradients through SEMSUN."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import frugal.iae as iae
from frugal.data import split
from frugal.gamma import resolution as R
from frugal.gamma import simulate as S
from frugal.gamma.differentiable import unmix_function

M = 48
EDGES = S.bin_edges(M, 32.0, 18.0)  # 18-1554 keV in 32 keV bins


def _f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)
                        else a, tree)


# ---------------------------------------------------------------------------------------
# (i) the simulator's smearing, and an independent quadrature


@pytest.mark.parametrize("detector, nuclide, thickness", [
    ("NaI", "Co60", np.array([0.0, 12.0])),
    ("HPGe", "Cs137", 3.0),
    (S.DETECTORS["NaI"]._replace(fwhm_ref_kev=60.0, fwhm_exponent=0.5, fwhm_noise_kev=3.0), "Ba133", 5.0),
])
def test_fold_reproduces_simulator_signature(detector, nuclide, thickness):
    edges = S.bin_edges()
    ref = S.signature(nuclide, thickness, detector=detector, edges=edges)
    dep = R.deposit(nuclide, thickness, detector=detector, edges=edges)
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(lambda d: R.fold(d, edges, **R.resolution_params(detector)))(dep))
    assert got.shape == ref.shape
    # the simulator's erfc is good to ~1e-7 relative, amplified by sigma / cell width in the smearing
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * ref.max())
    peaks = ref > 1e-3 * ref.max()
    np.testing.assert_allclose(got[peaks], ref[peaks], rtol=1e-4)


@pytest.fixture(scope="module")
def bkg_deposit():
    return R.background_deposit(EDGES)


def test_fold_reproduces_simulator_background(bkg_deposit):
    ref = S.background(EDGES)
    with jax.enable_x64(True):
        got = np.asarray(R.fold(bkg_deposit, EDGES, **R.resolution_params("NaI")))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-8)


def _cell_row_quadrature(lo, h, sigma, edges, k=4000):
    """Bin masses of a unit count spread evenly over [lo, lo + h), blurred by N(., sigma^2): midpoints."""
    e = lo + (np.arange(k) + 0.5) * h / k
    cdf = np.array([[0.5 * math.erfc(-(b - x) / (sigma * math.sqrt(2.0))) for b in edges] for x in e])
    return np.diff(cdf, axis=1).mean(axis=0)


def test_smearing_matrix_matches_quadrature():
    edges = np.array([600.0, 630.0, 650.0, 655.0, 660.0, 700.0, 780.0])
    w1, a, w0 = 45.0, 0.55, 2.0
    with jax.enable_x64(True):
        sm = np.asarray(R.smearing_matrix(1000, edges, w1, exponent=a, noise_kev=w0))
        fw = np.asarray(R.fwhm(np.array([652.5]), w1, exponent=a, noise_kev=w0))
    np.testing.assert_allclose(fw, math.sqrt(w0**2 + (w1 * (652.5 / 661.657) ** a) ** 2))
    for cell in (652, 657, 540, 900):  # inside a bin, straddling nothing, far below, far above
        sigma = math.sqrt(w0**2 + (w1 * ((cell + 0.5) / 661.657) ** a) ** 2) / (2 * math.sqrt(2 * math.log(2)))
        ref = _cell_row_quadrature(float(cell), 1.0, sigma, edges)
        np.testing.assert_allclose(sm[cell], ref, rtol=1e-6, atol=1e-14)
    # lines: exact Gaussian masses; a line well inside the range keeps its area
    with jax.enable_x64(True):
        got = np.asarray(R.broaden_lines(np.array([662.0]), np.array([2.0]), edges, w1, exponent=a, noise_kev=w0))
    sigma = math.sqrt(w0**2 + (w1 * (662.0 / 661.657) ** a) ** 2) / (2 * math.sqrt(2 * math.log(2)))
    cdf = np.array([0.5 * math.erfc(-(b - 662.0) / (sigma * math.sqrt(2.0))) for b in edges])
    np.testing.assert_allclose(got, 2.0 * np.diff(cdf), rtol=1e-10)
    with jax.enable_x64(True):
        wide = np.asarray(R.broaden_lines(np.array([300.0, 1000.0]), np.ones(2), S.bin_edges(), 40.0))
    np.testing.assert_allclose(wide.sum(), 2.0, rtol=1e-12)


def test_broaden_runs_under_jit_and_vmap():
    density = np.zeros(1700)
    density[[500, 1200]] = [1.0, 2.0]
    f = jax.jit(lambda w: R.broaden(density, EDGES, w))
    out = jax.vmap(f)(jnp.array([30.0, 50.0]))
    assert out.shape == (2, M)
    np.testing.assert_allclose(np.asarray(out.sum(-1)), 3.0, rtol=1e-5)
    # wider resolution, lower maximum
    assert float(out[1].max()) < float(out[0].max())


# ---------------------------------------------------------------------------------------
# (ii) gradients through SEMSUN with respect to the resolution


@pytest.fixture(scope="module")
def problem(bkg_deposit):
    fam = S.family("Co60", np.linspace(0.0, 30.0, 12), edges=EDGES)
    s = split(fam)
    # a small network keeps compilation short; its accuracy does not matter for gradient checks
    model = iae.train(fam.spectra[s.train], fam.spectra[s.anchors], epochs=60, progress=False,
                      width=32, latent_dim=8, depth=2)
    bkg, cs = bkg_deposit, R.deposit("Cs137", 0.0, edges=EDGES)
    true = dict(fwhm_ref_kev=50.0, exponent=0.55)
    rows = np.stack([np.asarray(R.fold(bkg, EDGES, **true)), np.asarray(R.fold(cs, EDGES, **true)),
                     S.signature("Co60", 12.0, edges=EDGES)])
    y = S.mixture(rows, np.array([4e4, 1e4, 2e4]), seed=3).astype(float)
    return model, bkg, cs, y


@pytest.mark.parametrize("mode", ["implicit", "unrolled"])
def test_resolution_gradient_through_semsun(problem, mode):
    model, bkg, cs, y = problem
    with jax.enable_x64(True):
        states = _f64((model.state,))
        yj = jnp.asarray(y)
        f = unmix_function([model], n_fixed=2, mode=mode, n_unrolled=100, tol=1e-12, max_iter=500)

        def scalar(theta):
            w1, a = theta[0], theta[1]
            fixed = jnp.stack([R.fold(bkg, EDGES, w1, exponent=a), R.fold(cs, EDGES, w1, exponent=a)])
            counts, latent = f(yj, fixed, states)
            return counts[0] + 2.0 * counts[1] + 0.5 * counts[2] + 1e3 * latent[1]

        # one compiled program (value and gradient) serves the finite differences too
        value_and_grad = jax.jit(jax.value_and_grad(scalar))
        theta = jnp.array([45.0, 0.6])
        _, g = value_and_grad(theta)
        assert np.all(np.isfinite(np.asarray(g)))
        for v, h in ((jnp.array([1.0, 0.0]), 1e-3), (jnp.array([0.0, 1.0]), 1e-5)):
            fd = (value_and_grad(theta + h * v)[0] - value_and_grad(theta - h * v)[0]) / (2 * h)
            np.testing.assert_allclose(float(g @ v), float(fd), rtol=1e-4)


# ---------------------------------------------------------------------------------------
# (iii) argument checks


def test_bad_arguments_name_the_argument():
    density = np.ones(100)
    with pytest.raises(ValueError, match="fwhm_ref_kev"):
        R.broaden(density, EDGES, -1.0)
    with pytest.raises(ValueError, match="fwhm_ref_kev"):
        R.broaden(density, EDGES, np.array([40.0, 50.0]))
    with pytest.raises(ValueError, match="exponent"):
        R.broaden(density, EDGES, 40.0, exponent=float("nan"))
    with pytest.raises(ValueError, match="noise_kev"):
        R.fwhm(np.array([100.0]), 40.0, noise_kev=-1.0)
    with pytest.raises(ValueError, match="ref_kev"):
        R.fwhm(np.array([100.0]), 40.0, ref_kev=0.0)
    with pytest.raises(ValueError, match="cell_kev"):
        R.broaden(density, EDGES, 40.0, cell_kev=0.0)
    with pytest.raises(ValueError, match="edges"):
        R.broaden(density, EDGES[::-1], 40.0)
    with pytest.raises(ValueError, match="density"):
        R.broaden(np.ones((2, 2, 100)), EDGES, 40.0)
    with pytest.raises(ValueError, match="density"):
        R.broaden(-density, EDGES, 40.0)
    with pytest.raises(ValueError, match="n_cells"):
        R.smearing_matrix(0, EDGES, 40.0)
    with pytest.raises(ValueError, match="areas"):
        R.broaden_lines(np.array([662.0]), np.ones(2), EDGES, 40.0)
    with pytest.raises(ValueError, match="energies"):
        R.broaden_lines(np.array([-5.0]), np.ones(1), EDGES, 40.0)
    with pytest.raises(TypeError, match="dep"):
        R.fold(np.ones(10), EDGES, 40.0)
    with pytest.raises(ValueError, match="detector"):
        R.resolution_params("CZT")
    with pytest.raises(ValueError, match="thickness_mm"):
        R.deposit("Cs137", -1.0, edges=EDGES)
    with pytest.raises(ValueError, match="shield"):
        R.deposit("Cs137", 1.0, shield="wood", edges=EDGES)
    with pytest.raises(ValueError, match="edges"):
        jax.jit(lambda e: R.broaden(density, e, 40.0))(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="fwhm_ref_kev"):
        jax.grad(lambda w: R.broaden(density, EDGES, w).sum())(jnp.ones(2))
