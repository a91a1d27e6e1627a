"""Saving and loading IAE models: one self-describing file, written atomically.

Format (version 2): a zip archive (NumPy ``.npz``) holding

* ``header.json``: format name and version, the :class:`IAEConfig`, training information,
  the list of arrays with their shapes, dtypes, sizes and SHA-256 digests;
* ``header.sha256``: the SHA-256 digest of ``header.json``, so that the header (the
  configuration, hence which model the arrays describe) is covered like the arrays;
* one ``.npy`` member per array, named by its path in the state pytree
  (``params/decoder/params/output/kernel``, ``reference``, ``anchors``, ...), and, for a
  resumable training checkpoint, the optimiser state and best parameters under
  ``training/``. The digest of an array is that of its whole ``.npy`` member (the
  ``.npy`` header too), so a changed dtype or shape fails it as well as changed data.

The file is written to a temporary file in the same directory (created with mode
``0o666`` less the umask, like any other file), flushed to disk and moved over the
destination with ``os.replace``: a crash leaves either the old file or the new one, never
half of one. Loading checks the digests *before* parsing anything they cover, then the
format, version and that the arrays fit the architecture: a damaged file either raises
:class:`CheckpointError` (a ``ValueError``) or, if the damage missed everything that is
read (zip padding, comments), loads the very model that was saved.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from frugal.iae import model as M

FORMAT = "frugal-iae"
#: Version 2 added ``header.sha256`` and digests of whole ``.npy`` members; version 1 files
#: (whose header no digest covered) are refused rather than trusted.
VERSION = 2

_HEADER = "header.json"
_HEADER_DIGEST = "header.sha256"


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


def _create_temporary(directory: str) -> tuple[int, str]:
    """A new, empty file next to the destination: ``(fd, path)``.

    ``tempfile.mkstemp`` would create it with mode 0600 whatever the umask; ``os.open``
    with 0666 lets the kernel apply the umask, so the checkpoint gets the permissions any
    other new file of the user would (and a shared directory stays shared).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(directory, f".tmp-{secrets.token_hex(8)}.frugal")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # a name drawn twice: draw again
            continue


def _atomic_write(path: str, payload: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_temporary(directory)
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


def _npy_bytes(arr: np.ndarray) -> bytes:
    member = io.BytesIO()
    np.lib.format.write_array(member, np.array(arr, order="C"), allow_pickle=False)
    return member.getvalue()


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
    members = {key: _npy_bytes(arr) for key, arr in arrays.items()}
    header = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "info": model.info,
        "training": extra or None,
        "arrays": {
            k: {"shape": list(a.shape), "dtype": str(a.dtype), "nbytes": len(members[k]),
                "sha256": hashlib.sha256(members[k]).hexdigest()}
            for k, a in arrays.items()
        },
    }
    header_bytes = json.dumps(header, default=_json_default).encode("utf-8")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_HEADER, header_bytes)
        zf.writestr(_HEADER_DIGEST, hashlib.sha256(header_bytes).hexdigest())
        for key, member in members.items():
            zf.writestr(key + ".npy", member)
    _atomic_write(path, buf.getvalue())


def _parse(zf: zipfile.ZipFile, path: str) -> tuple[dict, dict]:
    infos = {info.filename: info for info in zf.infolist()}
    if _HEADER not in infos:
        raise CheckpointError(f"{path!r} is not a frugal IAE checkpoint (no header)")
    header_bytes = zf.read(_HEADER)
    header = json.loads(header_bytes)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise CheckpointError(f"{path!r} is not a frugal IAE checkpoint (format {found!r})")
    if header.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path!r} has format version {header.get('version')!r}; this frugal reads "
            f"version {VERSION}"
        )
    if _HEADER_DIGEST not in infos:
        raise CheckpointError(f"checkpoint {path!r} is truncated: the digest of its header is missing")
    if zf.read(_HEADER_DIGEST).decode("ascii").strip() != hashlib.sha256(header_bytes).hexdigest():
        raise CheckpointError(f"checkpoint {path!r} is corrupt: its header fails its checksum")
    # From here the header is what save wrote; each member is checked against it before
    # NumPy parses it (a damaged .npy header could otherwise ask for any allocation).
    arrays = {}
    for key, meta in header["arrays"].items():
        name = key + ".npy"
        if name not in infos:
            raise CheckpointError(f"checkpoint {path!r} is truncated: array {key!r} is missing")
        if infos[name].file_size != meta["nbytes"]:
            raise CheckpointError(
                f"checkpoint {path!r} is corrupt: array {key!r} has {infos[name].file_size} bytes, "
                f"its header says {meta['nbytes']}"
            )
        raw = zf.read(name)
        if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
            raise CheckpointError(f"checkpoint {path!r} is corrupt: array {key!r} fails its checksum")
        arrays[key] = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    return header, arrays


def read_archive(source, path: str) -> tuple[dict, dict]:
    """``(header, arrays)`` of the checkpoint in ``source`` (a file name or binary file
    object; ``path`` names it in messages), every failure a :class:`CheckpointError`."""
    try:
        with zipfile.ZipFile(source) as zf:
            return _parse(zf, path)
    except CheckpointError:
        raise
    except Exception as err:
        # A damaged zip fails in many ways (BadZipFile, zlib.error, NotImplementedError for
        # a flipped compression method, RuntimeError for a flipped encryption flag, EOFError,
        # UnicodeDecodeError, ...): whichever it is, the file is what is wrong.
        raise CheckpointError(
            f"checkpoint {path!r} is corrupt or truncated: {type(err).__name__}: {err}"
        ) from err


def read_parts(path) -> tuple[dict, dict]:
    """``(header, arrays)`` of the checkpoint file ``path``, every failure a :class:`CheckpointError`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    return read_archive(path, path)


def load(path) -> M.IAEModel:
    """Read a model written by :func:`save`; raises :class:`CheckpointError` on any problem."""
    header, arrays = read_parts(path)
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


def load_training_state(path, params_template, opt_state_template=None) -> dict:
    """The resumable training state of a checkpoint written during :func:`frugal.iae.train`.

    ``opt_state`` is unflattened like ``opt_state_template``; without one the dict holds
    ``restore_opt_state(template)`` instead, so that the caller can first compare the saved
    optimiser description with its own (the file is read once either way).
    """
    header, arrays = read_parts(path)
    path = os.fspath(path)
    extra = header.get("training")
    if not extra:
        raise CheckpointError(f"checkpoint {path!r} holds a finished model, not a resumable training state")

    def restore_opt_state(template):
        return _unflatten_like(template, arrays, "training/opt_state", path)

    out = {
        **extra,
        "params": _unflatten_like(params_template, arrays, "training/params", path),
        "best_params": _unflatten_like(params_template, arrays, "training/best_params", path),
        "key": jnp.asarray(arrays["training/key"]),
    }
    if opt_state_template is None:
        out["restore_opt_state"] = restore_opt_state
    else:
        out["opt_state"] = restore_opt_state(opt_state_template)
    return out
