"""Figures: every plotting entry point writes a PNG through frugal.plotting and leaves the
user's matplotlib backend alone (a library must never call ``matplotlib.use``)."""

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

PNG = b"\x89PNG\r\n\x1a\n"
FRUGAL = Path(__file__).resolve().parents[1] / "frugal"


def _fake_iae(n=32):
    """Just what ``plot_overview`` reads of a model: two anchors, decode = barycentric mix."""
    anchors = np.stack([np.exp(-0.5 * ((np.arange(n) - c) / 3.0) ** 2) for c in (10, 20)])

    def interpolate(x):
        w = np.clip(np.asarray(x)[:, 20] / (np.asarray(x)[:, 10] + np.asarray(x)[:, 20]), 0, 1)
        return np.stack([1 - w, w], axis=1)

    return SimpleNamespace(
        config=SimpleNamespace(n_channels=n, joint=False), anchors=anchors, n_anchors=2,
        decode=lambda lam: np.asarray(lam) @ anchors, interpolate=interpolate,
        reconstruct=lambda x: 0.95 * np.asarray(x),
    )


def draw_all(out: Path, everything: bool = True) -> dict:
    """Draw one figure through each public plotting entry point (only the helper and
    ``plot_fit`` unless ``everything``); returns name -> PNG path."""
    from frugal.gamma.plots import plot_family, plot_fit
    from frugal.plotting import colormap, figure

    rng = np.random.default_rng(0)
    paths = {}

    fig = figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.plot(np.arange(10), np.arange(10) ** 2, color=colormap("magma")(0.5))
    paths["figure"] = out / "figure.png"
    fig.savefig(paths["figure"])

    m = 64
    e = np.linspace(30.0, 400.0, m)
    sig = np.stack([np.exp(-0.5 * ((e - c) / 15.0) ** 2) for c in (120.0, 300.0)], axis=1)
    sig /= sig.sum(0)
    y = rng.poisson(sig @ np.array([500.0, 300.0])).astype(float)
    paths["plot_fit"] = out / "fit.png"
    returned = plot_fit(y, sig, [500.0, 300.0], energies=e, names=["a", "b"], title="fit", path=paths["plot_fit"])
    assert returned.__class__.__name__ == "Figure"
    if not everything:
        return paths

    from frugal import bench
    from frugal.iae.plots import plot_overview
    from frugal.xray.plots import plot_demo_maps, plot_map_panel, plot_maps

    family = SimpleNamespace(spectra=np.stack([sig[:, 0] * (1 + 0.1 * k) for k in range(5)]),
                             params=np.arange(5.0)[:, None], param_names=["thickness_mm"], energies=e)
    ax = plot_family(family, label="family")
    paths["plot_family"] = out / "family.png"
    ax.figure.savefig(paths["plot_family"])

    model = _fake_iae()
    test = model.decode(rng.dirichlet([1.0, 1.0], size=6)) + 0.01
    paths["plot_overview"] = out / "overview.png"
    plot_overview(model, test, np.arange(6.0), path=paths["plot_overview"])

    h = w = 8
    maps = {k: rng.normal(size=(h, w)) for k in ("kT", "z", "photon_index")}
    fig, _ = plot_maps(maps)
    paths["plot_maps"] = out / "maps.png"
    fig.savefig(paths["plot_maps"])
    paths["xray_panel"] = out / "panel.png"
    plot_map_panel(maps, paths["xray_panel"], "panel")
    fit = SimpleNamespace(params=maps, amplitude=rng.random((1, h, w)))
    cube = SimpleNamespace(params=maps, amplitude=fit.amplitude, component_names=["thermal"],
                           mask=np.ones((h, w), bool))
    paths["xray_demo"] = out / "demo.png"
    plot_demo_maps(cube, fit, fit, paths["xray_demo"], "demo")

    variants = {"a": {"median_gap_per_iteration": [1.0, 1e-3, 1e-7], "seconds_per_iteration": 0.01},
                "b": {"median_gap_per_iteration": [1.0, 0.1, 1e-2, 1e-4], "seconds_per_iteration": 0.002}}
    paths["plot_convergence"] = bench.plot_convergence({"variants": variants}, out / "convergence.png", "conv")
    return paths


def _assert_pngs(paths):
    for name, p in paths.items():
        data = Path(p).read_bytes()
        assert data[:8] == PNG, name
        assert len(data) > 1000, name


def test_the_helper_and_plot_fit_write_pngs_and_keep_the_backend(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    before = matplotlib.get_backend()
    _assert_pngs(draw_all(tmp_path, everything=False))
    assert matplotlib.get_backend() == before


def test_every_entry_point_leaves_a_non_agg_backend_alone_and_never_loads_pyplot(tmp_path):
    # A fresh process whose user chose the (non-interactive, non-Agg) pdf backend: drawing and
    # saving a figure through every entry point must neither switch it nor even import pyplot.
    pytest.importorskip("matplotlib")
    env = dict(os.environ, MPLBACKEND="pdf")
    res = subprocess.run([sys.executable, __file__, str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split()[-3:] == ["pngs=8", "pyplot=False", "backend=pdf"], res.stdout


def test_missing_matplotlib_gives_the_install_hint(monkeypatch):
    from frugal.plotting import colormap, figure

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'frugal-unmix[plot]'")):
        figure()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'frugal-unmix[plot]'")):
        colormap("viridis")


def test_no_library_module_switches_the_backend_or_imports_pyplot():
    banned = re.compile(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot")
    offenders = [f"{p.relative_to(FRUGAL.parent)}:{i}: {line.strip()}"
                 for p in sorted(FRUGAL.rglob("*.py"))
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if banned.search(line)]
    assert not offenders, "library code must leave the backend to the user:\n" + "\n".join(offenders)


if __name__ == "__main__":  # the subprocess of the backend test
    written = draw_all(Path(sys.argv[1]))
    _assert_pngs(written)
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    import matplotlib

    print(f"pngs={len(written)}", f"pyplot={pyplot_loaded}", f"backend={matplotlib.get_backend()}")
