"""The independent NumPy/SciPy SEMSUN (benchmarks/reference) against frugal on a tiny dense IAE."""

import dataclasses
import importlib.util
import types
from pathlib import Path

import jax
import numpy as np
import pytest

import frugal.iae as iae
from frugal.data import line_family, split
from frugal.gamma import unmix
from frugal.solvers import Status

M = 48


def _load_reference():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reference" / "semsun_numpy.py"
    spec = importlib.util.spec_from_file_location("semsun_numpy_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = _load_reference()


@pytest.fixture(scope="module")
def setup():
    fam = line_family(20, M, seed=0)
    s = split(fam)
    model = iae.train(fam.spectra[s.train], fam.spectra[s.anchors], epochs=60, progress=False)
    background = np.linspace(2.0, 1.0, M)
    return model, R.NumpyIAE(model), background / background.sum()


WEIGHTS = [[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.55, 0.45], [-0.05, 1.05]]


def test_numpy_decoder_equals_model_decode(setup):
    model, net, _ = setup
    np.testing.assert_allclose(net.anchor_codes, np.asarray(model.state.anchor_codes[0]), rtol=1e-4,
                               atol=1e-5 * np.abs(net.anchor_codes).max())
    for lam in WEIGHTS:
        ours = net.decode(lam)[0]
        theirs = model.decode(np.asarray(lam, np.float32))
        assert np.max(np.abs(ours - theirs) / np.abs(theirs)) < 1e-5, lam
        # unit-sum signature, clipped at 0 and zero-padded, as frugal builds its rows
        rows = net.rows(lam, M + 7)
        padded = np.concatenate([np.maximum(theirs, 0), np.zeros(7)])
        np.testing.assert_allclose(rows[0], padded / padded.sum(), rtol=1e-5, atol=1e-12)
    batch = net.decode(np.asarray(WEIGHTS))
    np.testing.assert_allclose(batch[:, 0], model.decode(np.asarray(WEIGHTS, np.float32)), rtol=1e-5)


def test_conv_models_are_not_reimplemented(setup):
    model, _, _ = setup
    conv = types.SimpleNamespace(config=dataclasses.replace(model.config, arch="conv"), state=model.state)
    with pytest.raises(NotImplementedError):
        R.NumpyIAE(conv)


#: (background counts, source counts, true weights) of the test spectra
CASES = [(2e4, 3e4, [0.3, 0.7]), (5e4, 5e4, [0.6, 0.4]), (1e4, 4e4, [0.8, 0.2]), (3e4, 1e4, [0.45, 0.55])]


def test_reference_agrees_with_frugal(setup):
    model, net, background = setup
    rng = np.random.default_rng(3)
    y = []
    for a_bkg, a_src, lam in CASES:
        sig = net.rows(lam)[0]
        y.append(rng.poisson(a_bkg * background + a_src * sig))
    y = np.asarray(y)
    latent0 = [np.array([0.5, 0.5])]
    # The algorithms are compared in float64 (frugal at a tight optimality tolerance), where
    # both locate the optimum far below its standard errors; frugal's float32 default is then
    # checked against its own guarantee (converged: within gtol = 0.05 standard errors of its
    # float32 optimum, itself ~0.02 from the float64 one: decoder rounding).
    with jax.enable_x64(True):
        runs = {solver: unmix(y, model, background=background, latent0=latent0, solver=solver, tol=1e-9,
                              gtol=3e-3, max_iter=200)
                for solver in ("newton", "bcd")}
    runs32 = {solver: unmix(y, model, background=background, latent0=latent0, solver=solver)
              for solver in ("newton", "bcd")}
    for res in list(runs.values()) + list(runs32.values()):
        assert np.all(res.converged) and np.all(res.status == Status.CONVERGED)
    for j, yj in enumerate(y):
        ref = R.unmix(yj, [net], background=background, latent0=latent0, tol=1e-6)
        assert ref.converged
        assert ref.counts.shape == (2,) and ref.signatures.shape == (M, 2)
        np.testing.assert_allclose(ref.signatures.sum(0), 1.0, rtol=1e-12)
        for res, within in [(r, 0.01) for r in runs.values()] + [(r, 0.1) for r in runs32.values()]:
            # a small fraction of the Fisher standard errors
            assert np.all(np.abs(ref.counts - res.counts[j]) < within * res.stderr[j]), (j, ref.counts, res.counts[j])
            assert np.all(np.abs(ref.latent[0] - res.latent[0][j]) < within * res.latent_stderr[0][j])
            # frugal's optimum (evaluated with the same float64 model) is at least as good
            dev = R.model_deviance(yj, [net], res.counts[j], [res.latent[0][j]], background=background)
            assert ref.deviance >= dev - 1e-3, (j, ref.deviance, dev)
            assert abs(dev - float(res.loss[j])) < 1e-3 * dev


def test_nnpu_and_deviance_basics():
    rng = np.random.default_rng(0)
    rows = rng.uniform(0.1, 1.0, size=(3, 30))
    rows /= rows.sum(1, keepdims=True)
    mu = np.array([100.0, 300.0, 50.0]) @ rows
    a, _ = R.nnpu(rows, mu, np.full(3, mu.sum() / 3), max_iter=20000, tol=1e-12)
    np.testing.assert_allclose(a, [100.0, 300.0, 50.0], rtol=1e-4)
    y = np.array([0.0, 3.0, 5.0])
    assert R.poisson_deviance(y, y) == pytest.approx(0.0, abs=1e-12)
    assert R.poisson_deviance(y, np.array([1.0, 3.0, 5.0])) == pytest.approx(2.0)  # y = 0 gives 2 mu
