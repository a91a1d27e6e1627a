"""Build and execute notebooks/03_xray_sushi.ipynb (run: python notebooks/build_03_xray_sushi.py)."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

cells = [
    ("md", """# 03 — Unmixing an X-ray cube with SUSHI

SUSHI (Lascar, Bobin & Acero, A&A 686, A259, 2024) unmixes a Poisson hyperspectral cube
into components whose spectra vary smoothly across the sky: each component has an IAE, a
map of barycentric weights (its *latent* map, regularised by l1 sparsity of its starlet
coefficients) and a non-negative amplitude map. Here: the toy supernova remnant of
`frugal.xray.simulate` (thermal plasma + synchrotron filaments), at low exposure."""),
    ("code", """import numpy as np
import matplotlib.pyplot as plt
from frugal.xray import simulate_cube, sushi, fit_pixels
from frugal.xray.builtin import BUILTIN, builtin_family, train_family
from frugal.xray.report import map_errors

cube = simulate_cube((48, 48), exposure="low", seed=0)
print(cube.counts.shape, cube.component_names, "counts per remnant pixel:", int(cube.counts[:, cube.mask].sum(0).mean()))
fig, ax = plt.subplots(1, 3, figsize=(11, 3.2))
ax[0].imshow(cube.counts.sum(0)); ax[0].set_title("counts (all channels)")
ax[1].imshow(cube.params["kT"] * cube.mask); ax[1].set_title("true kT (keV)")
ax[2].imshow(cube.params["photon_index"] * cube.mask); ax[2].set_title("true photon index");"""),
    ("md", """## One IAE per component, trained on labelled simulations
Each model comes with a small regression from its latent weights to the physical parameters
(kT and z for the thermal plasma, the photon index for the synchrotron)."""),
    ("code", """models, pmaps = [], []
for name in ("thermal", "synchrotron"):
    sz = BUILTIN[name]
    m, p = train_family(builtin_family(name), name, epochs=400, width=sz["width"], depth=sz["depth"],
                        latent_dim=sz["latent_dim"], log=sz["log"])
    models.append(m); pmaps.append(p)
    print(name, m.n_anchors, "anchors; latent->parameter RMS residual", {k: round(float(v), 4) for k, v in p.residual.items()})"""),
    ("md", "## Per-pixel fits (what is done today) against SUSHI"),
    ("code", """pixels = fit_pixels(cube.counts, models, param_maps=pmaps, names=cube.component_names, mask=cube.mask)
reg = sushi(cube.counts, models, param_maps=pmaps, names=cube.component_names, mask=cube.mask, init=pixels)
errs = {"per-pixel": map_errors(pixels, cube), "SUSHI": map_errors(reg, cube)}
for k in errs["SUSHI"]:
    print(f"{k:34s} per-pixel {errs['per-pixel'][k]:9.4g}   SUSHI {errs['SUSHI'][k]:9.4g}")
print("SUSHI sweeps:", int(reg.n_iter), "converged:", bool(reg.converged))"""),
    ("code", """fig, axes = plt.subplots(3, 3, figsize=(10, 9), constrained_layout=True)
for row, key in enumerate(["kT", "z", "photon_index"]):
    truth = np.where(cube.mask, cube.params[key], np.nan)
    vmin, vmax = np.nanpercentile(truth, [2, 98])
    for col, (title, img) in enumerate([("truth", truth), ("per-pixel", np.where(cube.mask, pixels.params[key], np.nan)),
                                          ("SUSHI", np.where(cube.mask, reg.params[key], np.nan))]):
        axes[row, col].imshow(img, vmin=vmin, vmax=vmax); axes[row, col].set_title(f"{key}: {title}")
        axes[row, col].axis("off")"""),
    ("md", "## Spectra of a few pixels and their fits"),
    ("code", """from frugal.xray.simulate import energies
e = cube.energies
ys, xs = np.nonzero(cube.mask)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for ax, i in zip(axes, [0, len(ys) // 2, len(ys) - 1]):
    y, x = ys[i], xs[i]
    ax.step(e, cube.counts[:, y, x], where="mid", lw=0.5, color="0.5", label="counts")
    ax.plot(e, cube.expected[:, y, x], "k", lw=1, label="truth")
    ax.plot(e, reg.model[:, y, x], "r", lw=1, label="SUSHI")
    ax.set_title(f"pixel ({y}, {x})"); ax.set_xlabel("keV")
axes[0].legend();"""),
]

nb = nbformat.v4.new_notebook()
nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src) for kind, src in cells]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
path = Path(__file__).resolve().parent / "03_xray_sushi.ipynb"
NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
nbformat.write(nb, path)
print("wrote", path)
