"""The solver-variant harness: gap arithmetic against hand-made traces, one small real run."""

import numpy as np
import pytest

import frugal.iae as iae
from frugal import bench
from frugal.data import line_family, split


def test_gap_arithmetic_on_hand_made_traces():
    # problem 0 converges to the reference; problem 1 stops in a higher minimum; NaN after stops
    trace = np.array([[10.0, 2.0, 1.0001, 1.0, np.nan],
                      [10.0, 5.0, 3.0, np.nan, np.nan]])
    n_iter = np.array([3, 2])
    best = bench.reference_objective(np.array([[9.0, 1.0], [9.0, 2.0]]), np.array([1, 1]))
    np.testing.assert_allclose(best, [1.0, 2.0])
    gap = bench.relative_gap(trace, best)
    np.testing.assert_allclose(gap[0, :4], [9.0, 1.0, 1e-4, 0.0], atol=1e-12)
    np.testing.assert_allclose(gap[1, :3], [4.0, 1.5, 0.5])  # max(|f*|, 1) = 2
    np.testing.assert_array_equal(bench.iterations_to_gap(trace, best, 1e-4), [2, -1])
    np.testing.assert_array_equal(bench.iterations_to_gap(trace, best, 1e-6), [3, -1])
    run = bench.VariantRun("x", {}, trace, n_iter, [2.0, 4.0, 3.0], {})
    s = bench.summarise(run, best)
    assert s["seconds_median"] == 3.0 and s["iterations_max"] == 3
    assert s["seconds_per_iteration"] == pytest.approx(1.0)
    assert s["reached_1e-06"] == 0.5 and s["failures"]["not_reaching_1e-06"] == 1
    assert s["iterations_to_1e-06_median"] == 3 and s["seconds_to_1e-06_max"] == pytest.approx(3.0)
    # the curve holds each problem's final value after its stop
    np.testing.assert_allclose(s["median_gap_per_iteration"], np.median(
        [[9.0, 1.0, 1e-4, 0.0, 0.0], [4.0, 1.5, 0.5, 0.5, 0.5]], axis=0), atol=1e-12)


@pytest.fixture(scope="module")
def tiny():
    m = 48
    fam = line_family(20, m, seed=0)
    s = split(fam)
    model = iae.train(fam.spectra[s.train], fam.spectra[s.anchors], epochs=60, progress=False)
    sig = model.decode(np.array([[0.3, 0.7]], np.float32))[0]
    bkg = np.linspace(2, 1, m)
    bkg /= bkg.sum()
    a_true = np.array([1e4, 2e4])
    y = np.random.default_rng(0).poisson(a_true[0] * bkg + a_true[1] * sig / sig.sum(), size=(4, m))
    return model, bkg, a_true, y


def test_real_run_report_table_and_figure(tiny, tmp_path):
    model, bkg, a_true, y = tiny
    variants = {k: bench.GAMMA_VARIANTS[k] for k in ("newton", "bcd mult+newton gs")}
    rep = bench.run_gamma(y, model, background=bkg, true_counts=a_true, variants=variants, max_iter=30,
                          repeats=1, log=lambda *_: None)
    for name, v in rep["variants"].items():
        # both reach the reference's optimum of this easy problem, with no failure
        assert v["reached_1e-06"] == 1.0 and v["failures"]["non_finite"] == 0, name
        assert abs(v["final_gap_median"]) < 1e-6, name
        assert v["accuracy"]["abs_rel_err_pct_median"] < 5.0, name
    text = bench.table(rep)
    assert "newton" in text and "bcd mult+newton gs" in text
    path = bench.plot_convergence(rep, tmp_path / "c.png")
    assert path.stat().st_size > 1000
    assert bench.public(rep)["variants"].keys() == rep["variants"].keys()
