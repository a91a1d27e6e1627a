"""Spectra of another energy calibration (frugal.gamma.calibration): the overlap operator
against a slow loop and exact integrals, and SEMSUN on channels of another gain and offset
than the model's, against the truth."""

import dataclasses
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import frugal.iae as iae
from frugal.gamma import unmix
from frugal.gamma.calibration import calibrated, edges_from_centres, overlap_matrix
from frugal.unmix import BarycentricManifold, ManifoldModel


def slow_overlap(model_edges, channel_edges):
    """R[j, i] by a double loop over interval intersections."""
    out = np.zeros((len(channel_edges) - 1, len(model_edges) - 1))
    for j in range(out.shape[0]):
        for i in range(out.shape[1]):
            lo = max(channel_edges[j], model_edges[i])
            hi = min(channel_edges[j + 1], model_edges[i + 1])
            out[j, i] = max(hi - lo, 0.0) / (model_edges[i + 1] - model_edges[i])
    return out


def test_overlap_matrix_is_the_share_of_each_bin_in_each_channel():
    rng = np.random.default_rng(0)
    model_edges = np.cumsum(rng.uniform(0.5, 2.0, 41))
    channel_edges = np.cumsum(rng.uniform(0.3, 3.0, 30)) + model_edges[0] - 2.0
    r = overlap_matrix(model_edges, channel_edges, spread="uniform")
    np.testing.assert_allclose(r, slow_overlap(model_edges, channel_edges), atol=1e-12)
    # Conservation. Uniform: a bin inside the channels' range is shared out whole. Cubic (the
    # share of a channel depends on the neighbouring bins): every bin, when the channels cover
    # the model's range; and a signature's total is then kept.
    inside = (model_edges[:-1] >= channel_edges[0]) & (model_edges[1:] <= channel_edges[-1])
    np.testing.assert_allclose(r.sum(0)[inside], 1.0, rtol=1e-12)
    assert np.all(r.sum(0) <= 1 + 1e-12)
    covering = np.concatenate([[model_edges[0] - 1.7], np.sort(rng.uniform(model_edges[0], model_edges[-1], 60)),
                               [model_edges[-1] + 0.4]])
    np.testing.assert_allclose(overlap_matrix(model_edges, covering).sum(0), 1.0, rtol=1e-12)
    for spread in ("uniform", "cubic"):
        np.testing.assert_allclose(overlap_matrix(model_edges, model_edges, spread=spread), np.eye(40), atol=1e-12)
    # The cubic spread follows a density that varies within a model bin: a Gaussian line of
    # sigma 4 keV on 1 keV bins through 0.73 keV channels, against its exact integrals.
    exact = line_integrals(CHANNEL_EDGES, [54.0])[0]
    on_model = line_integrals(MODEL_EDGES, [54.0])[0]
    errors = {spread: np.max(np.abs(overlap_matrix(MODEL_EDGES, CHANNEL_EDGES, spread) @ on_model - exact))
              / exact.max() for spread in ("cubic", "uniform")}
    assert errors["cubic"] < 3e-3 < errors["uniform"], errors  # measured 2.2e-3 and 1.75e-2
    # Centres of a linear calibration give back its edges.
    edges = 3.1 + 0.73 * np.arange(11)
    np.testing.assert_allclose(edges_from_centres(0.5 * (edges[1:] + edges[:-1])), edges, rtol=1e-12)
    with pytest.raises(ValueError, match="strictly increasing"):
        overlap_matrix(model_edges, channel_edges[::-1])


#: The model's grid (1 keV bins from 0 to 120 keV) and the measured channels (0.73 keV per
#: channel from -1.3 keV: another gain and offset, covering the whole model range).
MODEL_EDGES = np.arange(121.0)
CHANNEL_EDGES = -1.3 + 0.73 * np.arange(168)


def line_integrals(edges, centre, width=4.0):
    """Exact unit-sum integrals of a Gaussian line over the bins ``edges`` (independent of the
    piecewise-uniform spreading of the overlap operator)."""
    cdf = 0.5 * (1 + erf((np.asarray(edges)[None, :] - np.asarray(centre)[:, None]) / (np.sqrt(2) * width)))
    x = np.diff(cdf, axis=-1)
    return x / x.sum(-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Line(BarycentricManifold):
    """A Gaussian line at ``lambda . (40, 80)`` keV integrated over the model's 1 keV bins."""

    n_channels: int = 120
    n_coords: int = 2
    n_inputs: int = 1

    def signatures(self, params, coords, n_channels=None):
        from jax.scipy.special import erf as jerf

        centre = coords @ jnp.array([40.0, 80.0])
        cdf = 0.5 * (1 + jerf((params["edges"] - centre[..., None, None]) / (np.sqrt(2) * 4.0)))
        x = jnp.diff(cdf, axis=-1)
        return x / jnp.sum(x, axis=-1, keepdims=True)


def test_semsun_on_channels_of_another_calibration_recovers_the_truth():
    line = ManifoldModel(Line(), {"edges": jnp.asarray(MODEL_EDGES, jnp.float32)}, [0.0, 0.0], [1.0, 1.0])
    (seen,) = calibrated(line, CHANNEL_EDGES, model_edges=MODEL_EDGES)
    lam = np.array([0.35, 0.65])  # the line at 54 keV
    # The model seen through the channels against the exact integral over the channels: the
    # only error is the interpolation within a 1 keV model bin.
    exact = line_integrals(CHANNEL_EDGES, [lam @ [40.0, 80.0]])[0]
    got = np.asarray(seen.manifold.signatures(seen.params, jnp.asarray(lam, jnp.float32)))[0]
    assert np.max(np.abs(got - exact)) < 3e-3 * exact.max()
    flat = np.full(CHANNEL_EDGES.size - 1, 1.0 / (CHANNEL_EDGES.size - 1))
    y = np.random.default_rng(1).poisson(4000 * flat + 6000 * exact)
    res = unmix(y, seen, background=flat)
    assert res.converged
    assert np.all(np.abs(res.counts - [4000, 6000]) < 4 * res.stderr)
    assert abs(res.latent[0][0] - lam[0]) < 4 * res.latent_stderr[0][0]
    assert res.gof_pvalue > 1e-3  # the model describes the spectrum on its measured channels
    # A model that does not store its grid cannot be given a calibration.
    with pytest.raises(ValueError, match="does not store its energy grid"):
        unmix(y, line, background=flat, edges=CHANNEL_EDGES)
    with pytest.raises(ValueError, match="167 edges for counts of 167 channels"):
        unmix(y, line, background=flat, edges=CHANNEL_EDGES[:-1])


def test_partial_coverage_warns_and_no_overlap_is_an_error():
    line = ManifoldModel(Line(), {"edges": jnp.asarray(MODEL_EDGES, jnp.float32)}, [0.0, 0.0], [1.0, 1.0])
    with pytest.warns(UserWarning, match="cover 50.0 %"):
        calibrated(line, np.linspace(60.0, 130.0, 50), model_edges=MODEL_EDGES)
    with pytest.raises(ValueError, match="do not overlap"):
        calibrated(line, np.linspace(200.0, 300.0, 50), model_edges=MODEL_EDGES)


def test_iae_stores_its_grid_and_identical_channels_change_nothing(gamma_toy, tmp_path):
    model, background = gamma_toy.model, gamma_toy.background
    with pytest.raises(ValueError, match="energy_edges must be 97 increasing"):
        iae.train(gamma_toy.joint[gamma_toy.split.train], gamma_toy.joint[gamma_toy.split.anchors],
                  epochs=1, progress=False, energy_edges=np.arange(50.0))
    grid = np.arange(97.0) * 2.0 + 18.0
    gridded = dataclasses.replace(model, info={**model.info, "energy_edges": list(grid)})
    iae.save(gridded, tmp_path / "m.frugal")
    np.testing.assert_array_equal(iae.load(tmp_path / "m.frugal").info["energy_edges"], grid)
    rng = np.random.default_rng(2)
    mu = 3000 * background + 5000 * gamma_toy.joint[4, 0] + 2000 * gamma_toy.joint[4, 1]
    y = rng.poisson(mu, size=(3, background.size))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # full coverage: no warning
        plain = unmix(y, model, background=background)
        same = unmix(y, gridded, background=background, energies=0.5 * (grid[1:] + grid[:-1]))
    np.testing.assert_allclose(same.counts, plain.counts, rtol=1e-5)
    np.testing.assert_allclose(same.latent[0], plain.latent[0], atol=1e-5)
