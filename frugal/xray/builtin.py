"""The built-in labelled X-ray families of the toy simulator and their IAEs.

``BUILTIN`` sizes the ``thermal`` and ``synchrotron`` families (:mod:`frugal.xray.simulate`)
and their small dense IAEs; ``builtin_family`` draws one; ``train_family`` trains an IAE on
any labelled family and fits its latent -> physical-parameter map
(:class:`frugal.xray.ParameterMap`); ``builtin_models`` does both for the two built-in
components, as ``frugal demo xray`` and ``frugal bench`` use them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["BUILTIN", "builtin_family", "builtin_models", "train_family"]

#: Built-in families: size, parameter range (a little wider than the toy remnant's
#: :data:`frugal.xray.simulate.PARAM_RANGES`, so that the anchors bracket it) and IAE size
#: (small dense models: 10-15 s of CPU each, most of it compilation).
BUILTIN = {
    "thermal": {"n_spectra": 120, "range": {"kT_range": (0.8, 5.0)}, "width": 64, "depth": 2, "latent_dim": 8,
                "log": ("kT",)},
    "synchrotron": {"n_spectra": 40, "range": {"index_range": (1.8, 3.5)}, "width": 32, "depth": 2,
                    "latent_dim": 4, "log": ()},
}


def builtin_family(name: str, n_spectra: int | None = None, n_channels: int = 375, seed: int = 0):
    """The labelled family ``name`` (``"thermal"`` or ``"synchrotron"``) of the toy simulator."""
    from frugal.xray import simulate as xs

    if name not in BUILTIN:
        raise ValueError(f"builtin family must be one of {sorted(BUILTIN)}, got {name!r}")
    make = xs.thermal_family if name == "thermal" else xs.synchrotron_family
    return make(n_spectra or BUILTIN[name]["n_spectra"], energies=xs.energies(n_channels), seed=seed,
                **BUILTIN[name]["range"])


def train_family(family, name: str, *, epochs: int = 500, width: int = 64, depth: int = 2, latent_dim: int = 8,
                 anchors=None, log=None, degree: int = 3, seed: int = 0, progress: bool = False):
    """Train an IAE on a labelled ``Family`` and fit its latent -> parameter map.

    anchors: indices of the anchor spectra (default: nearest the corners of the parameter
    box, with the ``log`` parameters spaced in log). Returns ``(model, param_map)``; the
    model's ``info["xray"]`` holds the name, the energies and the parameter map.
    """
    import frugal.iae as iae
    from frugal.xray.params import ParameterMap
    from frugal.xray.simulate import anchor_indices

    names = tuple(str(n) for n in family.param_names)
    log = tuple(n for n in names if n == "kT") if log is None else tuple(log)
    unknown = [n for n in log if n not in names]
    if unknown:
        raise ValueError(f"log parameters {unknown} are not among the family's parameters {names}")
    spectra = np.asarray(family.spectra, dtype=np.float64)
    params = np.asarray(family.params, dtype=np.float64).reshape(len(spectra), -1)
    if anchors is None:
        anchors = anchor_indices(params, log_axes=tuple(names.index(n) for n in log))
    anchors = np.asarray(anchors, dtype=int)
    if anchors.ndim != 1 or len(anchors) < 2 or anchors.min() < 0 or anchors.max() >= len(spectra):
        raise ValueError(f"anchors must be at least 2 indices into the {len(spectra)} spectra, got {anchors.tolist()}")
    rest = np.setdiff1d(np.arange(len(spectra)), anchors)
    model = iae.train(spectra[rest], spectra[anchors], arch="dense", epochs=epochs, seed=seed, progress=progress,
                      width=width, depth=depth, latent_dim=latent_dim)
    pmap = ParameterMap.fit(model, spectra, params, names, degree=degree, log=log)
    meta = {"name": name, "energies": np.asarray(family.energies, dtype=np.float64).tolist(),
            "param_map": pmap.to_dict(), "anchors": anchors.tolist()}
    model = dataclasses.replace(model, info={**model.info, "xray": meta})
    return model, pmap


def builtin_models(*, epochs: int = 500, seed: int = 0, progress: bool = True):
    """The thermal and synchrotron IAEs of the built-in toy families and their parameter maps."""
    models, pmaps = [], []
    for name in ("thermal", "synchrotron"):
        family, sz = builtin_family(name, seed=seed), BUILTIN[name]
        model, pmap = train_family(family, name, epochs=epochs, width=sz["width"], depth=sz["depth"],
                                   latent_dim=sz["latent_dim"], log=sz["log"], seed=seed, progress=progress)
        models.append(model)
        pmaps.append(pmap)
        res = ", ".join(f"{n} {pmap.residual[n]:.2g}" for n in pmap.names)
        print(f"trained {name} IAE ({model.n_anchors} anchors); parameter map RMS residual: {res}")
    return models, pmaps
