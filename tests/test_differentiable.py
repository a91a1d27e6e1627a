"""Gradients through SEMSUN (implicit and unrolled) against central finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import frugal.iae as iae
from frugal.data import line_family, split
from frugal.gamma import unmix
from frugal.gamma.differentiable import unmix_function

M = 48


@pytest.fixture(scope="module")
def problem():
    fam = line_family(20, M, seed=0)
    s = split(fam)
    model = iae.train(fam.spectra[s.train], fam.spectra[s.anchors], epochs=200, progress=False)
    sig = model.decode(np.array([0.3, 0.7], np.float32))
    bkg = np.linspace(2, 1, M)
    bkg /= bkg.sum()
    y = np.random.default_rng(0).poisson(1e4 * bkg + 2e4 * sig / sig.sum()).astype(float)
    return model, bkg, y


def _f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)
                        else a, tree)


@pytest.mark.parametrize("mode", ["implicit", "unrolled"])
def test_gradients_match_finite_differences(problem, mode):
    model, bkg, y = problem
    with jax.enable_x64(True):
        states = _f64((model.state,))
        yj, fixed = jnp.asarray(y), jnp.asarray(bkg[None])
        f = unmix_function([model], mode=mode, n_unrolled=100, tol=1e-12, max_iter=500)

        @jax.jit  # one compiled solve for the six finite-difference evaluations
        def scalar(yy, ff, ss):
            counts, latent = f(yy, ff, ss)
            return counts[1] + 100.0 * latent[1]

        gy, gf, gs = jax.jit(jax.grad(scalar, argnums=(0, 1, 2)))(yj, fixed, states)
        h = 1e-3
        rng = np.random.default_rng(1)
        v = jnp.asarray(rng.normal(size=M))
        fd = (scalar(yj + h * v, fixed, states) - scalar(yj - h * v, fixed, states)) / (2 * h)
        np.testing.assert_allclose(float(gy @ v), float(fd), rtol=1e-5)
        vb = jnp.asarray(rng.normal(size=(1, M))) * bkg.mean()
        fd = (scalar(yj, fixed + h * vb, states) - scalar(yj, fixed - h * vb, states)) / (2 * h)
        np.testing.assert_allclose(float(jnp.sum(gf * vb)), float(fd), rtol=1e-4)
        # IAE weights: one direction through all decoder parameters.
        params = states[0].params
        direction = jax.tree.map(lambda a: 1e-2 * jnp.cos(jnp.arange(a.size).reshape(a.shape) * 1.0), params)
        ad = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(gs[0].params), jax.tree.leaves(direction)))

        def shifted(t):
            return (states[0]._replace(params=jax.tree.map(lambda p, d: p + t * d, params, direction)),)

        fd = (scalar(yj, fixed, shifted(h)) - scalar(yj, fixed, shifted(-h))) / (2 * h)
        np.testing.assert_allclose(float(ad), float(fd), rtol=1e-4)


def test_forward_values_agree_with_unmix(problem):
    model, bkg, y = problem
    f = jax.jit(unmix_function([model]))
    counts, latent = f(jnp.asarray(y, jnp.float32), jnp.asarray(bkg[None], jnp.float32), (model.state,))
    ref = unmix(y, model, background=bkg)
    # unmix stops within gtol = 0.05 standard errors of the optimum, unmix_function far
    # below (its gradients are those of the exact optimum): they agree to twice that.
    assert ref.converged
    assert np.all(np.abs(np.asarray(counts) - ref.counts) <= 0.1 * ref.stderr)
    assert np.all(np.abs(np.asarray(latent) - ref.latent[0])[1:] <= 0.1 * ref.latent_stderr[0][1:])
    # vmap over spectra
    ys = jnp.asarray(np.stack([y, y[::-1]]), jnp.float32)
    batch = jax.vmap(f, in_axes=(0, None, None))(ys, jnp.asarray(bkg[None], jnp.float32), (model.state,))
    np.testing.assert_allclose(batch[0][0], counts, rtol=1e-5)


@pytest.mark.parametrize("mode", ["implicit", "unrolled"])
def test_every_product_of_the_gradient_program_is_full_precision(problem, mode):
    # TF32 products on GPUs stall the solver (see frugal._precision): the forward solve and
    # the backward pass (traced apart in implicit mode) must both carry HIGHEST.
    model, bkg, y = problem
    f = unmix_function([model], mode=mode, n_unrolled=3)

    def scalar(yy, ff, ss):
        counts, latent = f(yy, ff, ss)
        return counts[1] + latent[1]

    args = (jnp.asarray(y, jnp.float32), jnp.asarray(bkg[None], jnp.float32), (model.state,))
    text = jax.jit(jax.grad(scalar, argnums=(0, 1))).lower(*args).as_text()
    dots = [line for line in text.splitlines() if "dot_general" in line]
    assert dots and all("HIGHEST" in line for line in dots), [d for d in dots if "HIGHEST" not in d][:3]
