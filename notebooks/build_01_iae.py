"""Build and execute notebooks/01_iae.ipynb (run: python notebooks/build_01_iae.py)."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

cells = [
    ("md", """# 01 — Learning a spectral family with an Interpolatory AutoEncoder

An IAE (Bobin et al., Digital Signal Processing 2023) learns how a family of spectra deforms
from a handful of examples: it encodes a few *anchor* spectra, represents any member by its
barycentric weights with respect to the encoded anchors, and decodes. Here the family is
built in: a continuum plus three Gaussian lines whose positions, widths and strengths move
with one parameter `t`."""),
    ("code", """import numpy as np
import matplotlib.pyplot as plt
import frugal.iae as iae
from frugal.data import line_family, split

family = line_family(100, 500, seed=0)
s = split(family, test_fraction=0.25, seed=0)
print(family.spectra.shape, "anchors at t =", family.params[s.anchors, 0], "| train", len(s.train), "| test", len(s.test))"""),
    ("md", "## Anchors and a few members of the family"),
    ("code", """fig, ax = plt.subplots(figsize=(9, 3.5))
order = np.argsort(family.params[:, 0])
for i in order[::12]:
    ax.plot(family.energies, family.spectra[i], color=plt.cm.viridis(family.params[i, 0]), lw=1)
for i in s.anchors:
    ax.plot(family.energies, family.spectra[i], "k--", lw=1.5)
ax.set_xlabel("energy (arbitrary units)"); ax.set_ylabel("unit-sum spectrum"); ax.set_title("members (colour = t), anchors dashed");"""),
    ("md", """## Training
Defaults: a dense residual model, Adam with a warm-up + cosine schedule, the best parameters
kept. `valid=` turns on validation-based model selection; `patience=` early stopping."""),
    ("code", """model = iae.train(family.spectra[s.train], family.spectra[s.anchors], valid=family.spectra[s.test],
                  epochs=1500, progress=False)
print(model)
h = model.info["history"]
plt.figure(figsize=(6, 3)); plt.semilogy(h["epoch"], h["train_loss"], label="train"); plt.semilogy(h["epoch"], h["valid_loss"], label="valid")
plt.xlabel("epoch"); plt.legend(); plt.title(f"best epoch {model.info['best_epoch']}");"""),
    ("md", "## Interpolation path, reconstructions, latent against the true parameter"),
    ("code", """from frugal.iae.plots import plot_overview
test = family.spectra[s.test]
nmse = iae.nmse_db(model.reconstruct(test), test)
print(f"held-out NMSE: median {np.median(nmse):.1f} dB, quartiles {np.percentile(nmse, 25):.1f} / {np.percentile(nmse, 75):.1f}")
plot_overview(model, test, family.params[s.test], energies=family.energies, param_name="t")"""),
    ("md", """## Fitting noisy counts: barycentric span projection
`iae.project` fits weights and amplitude under a Poisson likelihood (damped Newton with exact
derivatives, vmapped over the batch)."""),
    ("code", """rng = np.random.default_rng(1)
truth = test[:8]
counts = rng.poisson(2000 * truth)
fit = iae.project(model, counts, loss="poisson", bounds="training")
fast = model.interpolate(counts / counts.sum(1, keepdims=True))
print("true t       :", family.params[s.test[:8], 0].round(2))
print("BSP weight   :", fit.latent[:, 1].round(2))
print("fast weight  :", fast[:, 1].round(2))
print("amplitude / true total:", (fit.amplitude / 2000).round(3))
plt.figure(figsize=(9, 3)); plt.step(family.energies, counts[0], where="mid", lw=0.6, label="counts")
plt.plot(family.energies, fit.spectrum[0], "r", label="BSP fit"); plt.legend();"""),
]

nb = nbformat.v4.new_notebook()
nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src) for kind, src in cells]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
path = Path(__file__).resolve().parent / "01_iae.ipynb"
NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
nbformat.write(nb, path)
print("wrote", path)
