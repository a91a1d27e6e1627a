"""Saving and loading IAE models: one self-describing file, written atomically.

Format (version 1): a zip archive (NumPy ``.npz``) holding

* ``header.json``: format name and version, the :class:`IAEConfig`, training information,
  the list of arrays with their shapes, dtypes and SHA-256 digests;
* one ``.npy`` member per array, named by its path in the state pytree
  (``params/decoder/params/output/kernel``, ``reference``, ``anchors``, ...), and, for a
  resumable training checkpoint, the optimiser state and best parameters under
  ``training/``.

The file is written to a temporary file in the same directory, flushed to disk and moved
over the destination with ``os.replace``: a crash leaves either the old file or the new
one, never half of one. Loading checks the format, version, digests and that the arrays
fit the architecture; anything else raises :class:`CheckpointError` (a ``ValueError``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from frugal.iae import model as M

FORMAT = "frugal-iae"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, truncated or incompatible."""


def _flatten(tree, prefix: str) -> dict:
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = "/".join(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path)
        flat[f"{prefix}/{key}" if key else prefix] = np.asarray(leaf)
    return flat


def _unflatten_like(template, arrays: dict, prefix: str, path: str):
    """Fill ``template``'s structure with ``arrays[prefix/...]``, checking every shape."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    expected = _flatten(template, prefix)
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} does not fit this architecture: missing {missing[:3]}")
    out = []
    for (key, ref), leaf in zip(expected.items(), leaves):
        arr = arrays[key]
        if arr.shape != ref.shape:
            raise CheckpointError(
                f"checkpoint {path!r} does not fit this architecture: {key} has shape {arr.shape}, "
                f"expected {ref.shape}"
            )
        out.append(jnp.asarray(arr, dtype=jnp.asarray(leaf).dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint header")


def _atomic_write(path: str, payload: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".frugal", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save(model: M.IAEModel, path, *, training: dict | None = None) -> None:
    """Write ``model`` to ``path`` (atomically). ``training`` holds resumable training state."""
    if not isinstance(model, M.IAEModel):
        raise TypeError(f"model must be an IAEModel, got {type(model).__name__}")
    path = os.fspath(path)
    state = model.state
    arrays = {}
    arrays.update(_flatten(state.params, "params"))
    arrays["reference"] = np.asarray(state.reference)
    arrays["anchors"] = np.asarray(state.anchors)
    arrays["latent_lower"] = np.asarray(state.latent_lower)
    arrays["latent_upper"] = np.asarray(state.latent_upper)
    extra = {}
    if training is not None:
        for name in ("params", "opt_state", "best_params"):
            arrays.update(_flatten(training[name], f"training/{name}"))
        arrays["training/key"] = np.asarray(jax.random.key_data(training["key"])
                                            if jnp.issubdtype(training["key"].dtype, jax.dtypes.prng_key)
                                            else training["key"])
        extra = {k: v for k, v in training.items() if k not in ("params", "opt_state", "best_params", "key")}
    header = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "info": model.info,
        "training": extra or None,
        "arrays": {
            k: {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
            for k, a in arrays.items()
        },
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("header.json", json.dumps(header, default=_json_default))
        for key, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.array(arr, order="C"), allow_pickle=False)
            zf.writestr(key + ".npy", member.getvalue())
    _atomic_write(path, buf.getvalue())


def _read(path) -> tuple[dict, dict]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "header.json" not in names:
                raise CheckpointError(f"{path!r} is not a frugal IAE checkpoint (no header)")
            header = json.loads(zf.read("header.json"))
            if header.get("format") != FORMAT:
                raise CheckpointError(f"{path!r} is not a frugal IAE checkpoint (format {header.get('format')!r})")
            if header.get("version") != VERSION:
                raise CheckpointError(
                    f"checkpoint {path!r} has format version {header.get('version')!r}; this frugal reads "
                    f"version {VERSION}"
                )
            arrays = {}
            for key, meta in header["arrays"].items():
                if key + ".npy" not in names:
                    raise CheckpointError(f"checkpoint {path!r} is truncated: array {key!r} is missing")
                arr = np.lib.format.read_array(io.BytesIO(zf.read(key + ".npy")), allow_pickle=False)
                if list(arr.shape) != meta["shape"] or hashlib.sha256(arr.tobytes()).hexdigest() != meta["sha256"]:
                    raise CheckpointError(f"checkpoint {path!r} is corrupt: array {key!r} fails its checksum")
                arrays[key] = arr
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path!r} is corrupt or truncated: {err}") from err
    return header, arrays


def load(path) -> M.IAEModel:
    """Read a model written by :func:`save`; raises :class:`CheckpointError` on any problem."""
    header, arrays = _read(path)
    path = os.fspath(path)
    try:
        config = M.IAEConfig.from_dict(header["config"])
        encoder, decoder = config.networks()
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {path!r} has an incompatible configuration: {err}") from err
    shape = (1, config.n_inputs, config.n_channels)
    dummy = jnp.ones(shape, jnp.float32)
    template_enc = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), dummy)
    codes = jax.eval_shape(encoder.apply, template_enc, dummy)
    template = {
        "encoder": template_enc,
        "decoder": jax.eval_shape(decoder.init, jax.random.PRNGKey(0), codes),
    }
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
    params = _unflatten_like(template, arrays, "params", path)
    state = M.make_state(
        config, params, jnp.asarray(arrays["reference"]), jnp.asarray(arrays["anchors"]),
        arrays["latent_lower"], arrays["latent_upper"],
    )
    return M.IAEModel(config, state, header.get("info") or {})


def load_training_state(path, params_template, opt_state_template) -> dict:
    """The resumable training state of a checkpoint written during :func:`frugal.iae.train`."""
    header, arrays = _read(path)
    path = os.fspath(path)
    extra = header.get("training")
    if not extra:
        raise CheckpointError(f"checkpoint {path!r} holds a finished model, not a resumable training state")
    return {
        **extra,
        "params": _unflatten_like(params_template, arrays, "training/params", path),
        "best_params": _unflatten_like(params_template, arrays, "training/best_params", path),
        "opt_state": _unflatten_like(opt_state_template, arrays, "training/opt_state", path),
        "key": jnp.asarray(arrays["training/key"]),
    }
