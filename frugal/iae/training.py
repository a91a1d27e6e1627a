"""Training an IAE with Optax.

Objective over the training set ``T`` (anchors included), DESIGN.md section 2:

.. math:: \\mathcal{L} = \\ell\\big(\\Psi(P(\\Phi(\\tilde x))), x\\big)
          + \\mu\\, \\frac{\\|\\Phi(\\tilde x) - P(\\Phi(\\tilde x))\\|^2}{s(\\Omega)}

where ``P`` projects a code onto the affine hull of the encoded anchors (barycentric
weights), ``x~`` is ``x`` plus optional Gaussian training noise at a given SNR, and
``s(Omega)`` is the mean squared distance of the anchor codes to their centroid (so the
interpolation penalty is scale free). The reconstruction loss ``l`` is, per input channel
``c`` (one per radionuclide in a joint model), the channel-weighted squared error
normalised by the mean power of the training spectra: ``"squared"`` averages these over
``c``; ``"log"`` averages their logarithms (the log-MSE of SEMSUN).

One jitted call runs several epochs (``lax.fori_loop`` over epochs, ``lax.scan`` over
shuffled minibatches), then the host evaluates, updates the progress bar, keeps the best
parameters, stops early if asked and writes a resumable checkpoint if asked.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from frugal._validation import check_array, check_choice, check_float, check_int
from frugal.iae import model as M
from frugal.iae.barycenter import flatten_levels, interpolate_codes

#: Reference spectrum floor, relative to its maximum: channels with (almost) no signal in the
#: whole training set still get a positive scale, so inputs stay bounded and ``exp`` outputs
#: can reach them.
REFERENCE_FLOOR = 1e-3

#: Peak learning rate of the default optimiser (see :func:`make_optimizer`).
DEFAULT_LEARNING_RATE = 2e-3


def training_objective(config, loss_kind, mu, params, reference, anchors, x_clean, x_input, channel_weights, power):
    r"""The IAE training loss of one batch and its two parts ``(total, (reconstruction,
    interpolation))``: the reconstruction of ``x_clean`` through the projection of
    ``x_input`` (its noisy copy, or itself) onto the affine hull of the encoded anchors, per
    input the channel-weighted squared error over ``power`` (its mean, or the mean of its log
    for ``loss_kind="log"``), plus ``mu`` times the interpolation term: the squared distance of
    the codes from their projection onto that hull, relative to the spread of the anchors' codes."""
    anchor_codes = M.encode(config, params, reference, anchors)
    codes = M.encode(config, params, reference, x_input)
    # Training projects onto the affine hull: constraints only apply at inference.
    lam = M.latent_from_codes(dataclasses.replace(config, constraint=None), codes, anchor_codes)
    projected = interpolate_codes(lam, anchor_codes)
    x_hat = M.decode_codes(config, params, reference, projected)
    per_input = jnp.mean(jnp.sum(channel_weights * jnp.square(x_hat - x_clean), axis=-1), axis=0) / power
    if loss_kind == "log":
        rec = jnp.mean(jnp.log(per_input + 1e-30))
    else:
        rec = jnp.mean(per_input)
    z = flatten_levels(codes, 1)
    pz = flatten_levels(projected, 1)
    omega = flatten_levels(anchor_codes, 1)
    spread = jnp.mean(jnp.sum(jnp.square(omega - omega.mean(0)), -1)) + 1e-30
    interp = jnp.mean(jnp.sum(jnp.square(z - pz), -1)) / spread
    return rec + mu * interp, (rec, interp)


def _add_noise(key, x, snr_db):
    """``x`` plus white Gaussian noise at an SNR (dB) drawn per spectrum in ``snr_db = (lo, hi)``."""
    k1, k2 = jax.random.split(key)
    snr = jax.random.uniform(k1, (x.shape[0], 1, 1), minval=snr_db[0], maxval=snr_db[1])
    rms = jnp.sqrt(jnp.mean(jnp.square(x), axis=(-2, -1), keepdims=True))
    return x + rms * 10.0 ** (-snr / 20.0) * jax.random.normal(k2, x.shape, x.dtype)


def _epoch_fn(data, *, config, loss_kind, optimizer, batch_size, noisy, mu, snr_db, unroll):
    """One pass over shuffled minibatches: ``carry -> carry`` (``lax.scan`` over batches)."""
    train_x, reference, anchors, weights, power = data
    n = train_x.shape[0]
    n_batches = -(-n // batch_size)

    def step(c, idx):
        params, opt_state, key = c
        key, sub = jax.random.split(key)
        x = train_x[idx]
        x_in = _add_noise(sub, x, snr_db) if noisy else x
        grads, _ = jax.grad(
            lambda p: training_objective(config, loss_kind, mu, p, reference, anchors, x, x_in, weights, power),
            has_aux=True,
        )(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), None

    def epoch(c):
        params, opt_state, key = c
        key, sub = jax.random.split(key)
        perm = jax.random.permutation(sub, n)
        # Wrap around so every minibatch is full: one shape, one compilation.
        idx = jnp.concatenate([perm, perm])[: n_batches * batch_size].reshape(n_batches, batch_size)
        c, _ = jax.lax.scan(step, (params, opt_state, key), idx, unroll=unroll)
        return c

    return epoch


#: Convolutions compiled inside an XLA loop run ~6x slower on CPUs than outside one
#: (measured with jax 0.10 on x86: 20 ms vs 120-160 ms per step of the default conv
#: model). Convolutional models therefore run each epoch as one unrolled program called
#: from the host; dense models keep every epoch of a chunk inside one compiled loop.
_UNROLL_LIMIT = 64

_STATIC = ("config", "loss_kind", "optimizer", "batch_size", "noisy", "unroll")


@partial(jax.jit, static_argnames=_STATIC)
def _run_epochs_in_loop(carry, n_epochs, data, **kw):
    epoch = _epoch_fn(data, **kw)
    return jax.lax.fori_loop(0, n_epochs, lambda _, c: epoch(c), carry)


@partial(jax.jit, static_argnames=_STATIC)
def _run_one_epoch(carry, data, **kw):
    return _epoch_fn(data, **kw)(carry)


def run_epochs(carry, n_epochs, data, *, config, batch_size, **kw):
    """Run ``n_epochs`` epochs (see :data:`_UNROLL_LIMIT` for why conv models differ)."""
    n_batches = -(-data[0].shape[0] // batch_size)
    if config.arch == "conv" and n_batches <= _UNROLL_LIMIT:
        for _ in range(int(n_epochs)):
            carry = _run_one_epoch(carry, data, config=config, batch_size=batch_size, unroll=True, **kw)
        return carry
    return _run_epochs_in_loop(carry, n_epochs, data, config=config, batch_size=batch_size, unroll=1, **kw)


@partial(jax.jit, static_argnames=("config", "loss_kind"))
def _evaluate(params, x, data, *, config, loss_kind, mu):
    _, reference, anchors, weights, power = data
    total, (rec, interp) = training_objective(config, loss_kind, mu, params, reference, anchors, x, x, weights, power)
    return total, rec


@functools.lru_cache(maxsize=32)
def make_optimizer(learning_rate: float, total_steps: int) -> optax.GradientTransformation:
    """The default optimiser of :func:`train`: Adam with gradient clipping and a warm-up +
    cosine schedule down to 1 % of the peak.

    ``optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))``: the gradient is
    first rescaled to a global (all-parameter) norm of at most 1, then Adam (optax's
    defaults ``b1=0.9``, ``b2=0.999``, ``eps=1e-8``) steps with learning rate ``schedule(t)``,
    which rises linearly from ``0.1 * learning_rate`` to ``learning_rate`` over
    ``max(1, min(200, total_steps // 20))`` steps, then follows a half cosine down to
    ``0.01 * learning_rate`` at step ``max(2, total_steps)``.

    Cached, so that equal settings give the same object and the jitted epoch loop (which
    takes the optimiser as a static argument) compiles once per architecture.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.1 * learning_rate, peak_value=learning_rate,
        warmup_steps=max(1, min(200, total_steps // 20)), decay_steps=max(2, total_steps),
        end_value=1e-2 * learning_rate,
    )
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))


def _check_optimizer(optimizer, learning_rate):
    """``(optimizer or None, learning_rate or None)`` checked: one of them at most is given."""
    if optimizer is None:
        lr = DEFAULT_LEARNING_RATE if learning_rate is None else learning_rate
        return None, check_float(lr, "learning_rate", minimum=0.0, strict=True)
    if not isinstance(optimizer, optax.GradientTransformation):
        hint = (" (a function: call it, e.g. optax.adam(1e-3), to get the transformation)"
                if callable(optimizer) else "")
        raise TypeError(
            "optimizer must be None (the default Adam) or an optax.GradientTransformation such as "
            f"optax.adam(1e-3), got {type(optimizer).__name__}{hint}"
        )
    if learning_rate is not None:
        raise ValueError(
            "give either optimizer or learning_rate, not both: learning_rate sets the peak of the "
            "default optimizer's schedule; set the learning rate of a custom optimizer inside it"
        )
    return optimizer, None


_KIND = {"default": "the default", "custom": "a custom"}


def _opt_state_signature(opt_state) -> list:
    """What a resumed optimiser state must match: every leaf's path, shape and dtype
    (JSON-friendly lists, stored with a checkpoint's training state)."""
    leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    return [[jax.tree_util.keystr(path), list(np.shape(leaf)), str(jnp.asarray(leaf).dtype)]
            for path, leaf in leaves]


def _describe(signature: list) -> str:
    """A short account of an optimiser state signature, for error messages."""
    if not signature:
        return "empty (no arrays)"
    paths = ", ".join(path for path, *_ in signature[:3]) + (", ..." if len(signature) > 3 else "")
    return f"{len(signature)} arrays ({paths})"


def _validate_training_data(spectra, anchors, valid, output):
    nonneg = output != "linear"
    # float64 until the data are rescaled (see train): spectra scaled by 1e-40 or 1e40 are
    # still representable, and their squares do not underflow or overflow.
    spectra = check_array(spectra, "spectra", ndim=(2, 3), nonnegative=nonneg, dtype=np.float64)
    joint = spectra.ndim == 3
    shape = spectra.shape[1:]
    anchors = check_array(anchors, "anchors", ndim=spectra.ndim, nonnegative=nonneg, dtype=np.float64)
    if anchors.shape[1:] != shape:
        raise ValueError(
            f"anchors must have the same spectrum shape as spectra {shape}, got {anchors.shape[1:]} "
            "(anchors that do not match the channels)"
        )
    if anchors.shape[0] < 2:
        raise ValueError(f"anchors must hold at least 2 spectra, got {anchors.shape[0]}")
    check_distinct_anchors(anchors)
    if valid is not None:
        valid = check_array(valid, "valid", ndim=spectra.ndim, nonnegative=nonneg, dtype=np.float64)
        if valid.shape[1:] != shape:
            raise ValueError(f"valid must have spectrum shape {shape}, got {valid.shape[1:]}")
    as3 = (lambda a: a) if joint else (lambda a: None if a is None else a[:, None, :])
    return as3(spectra), as3(anchors), as3(valid), joint


#: Anchors closer than this (relative to the larger norm) count as the same spectrum.
DUPLICATE_ANCHOR_RTOL = 1e-6


def check_distinct_anchors(anchors: np.ndarray) -> None:
    """Refuse repeated anchors: their codes coincide, the Gram matrix of the encoded anchors
    is singular and the barycentric weights are not unique (training then wanders)."""
    flat = anchors.reshape(anchors.shape[0], -1)
    sq = np.einsum("ij,ij->i", flat, flat)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    close = dist2 <= DUPLICATE_ANCHOR_RTOL**2 * np.maximum(sq[:, None], sq[None, :])
    i, j = np.nonzero(np.triu(close, k=1))
    if i.size:
        pairs = ", ".join(f"{a} and {b}" for a, b in zip(i[:5].tolist(), j[:5].tolist()))
        more = f" (and {i.size - 5} more pairs)" if i.size > 5 else ""
        raise ValueError(
            f"anchors must be distinct spectra: anchors {pairs}{more} are identical (relative difference "
            f"<= {DUPLICATE_ANCHOR_RTOL:g}); repeated anchors make the barycentric weights not unique"
        )


def _data_scale(train_x: np.ndarray) -> np.ndarray:
    """``(c, 1)`` mean absolute channel value of each input over the training set.

    Training divides every spectrum by it, so the network always sees data of order one: the
    learnt model (hence its NMSE) does not depend on the units of the spectra, and neither
    float32 underflow (1e-20 * unit-sum spectra square to ~1e-44) nor overflow can occur.
    The scale goes back into the model's reference spectrum afterwards.
    """
    scale = np.mean(np.abs(train_x), axis=(0, 2))[:, None]
    empty = np.flatnonzero(scale[:, 0] == 0)
    if empty.size:
        where = "" if train_x.shape[1] == 1 else f" (input channel {int(empty[0])})"
        raise ValueError(f"spectra and anchors are all zero{where}: nothing to learn")
    return scale


def default_epochs(n_spectra: int, n_channels: int) -> int:
    """Epochs for a good fit in about a minute of CPU for ~100 spectra of ~1000 channels."""
    return int(np.clip(300_000 // max(n_spectra, 1), 500, 5000))


def train(
    spectra,
    anchors,
    *,
    arch: str = "dense",
    epochs: int | None = None,
    valid=None,
    seed: int = 0,
    batch_size: int = 16,
    learning_rate: float | None = None,
    optimizer: optax.GradientTransformation | None = None,
    mu: float = 1e-3,
    loss: str = "squared",
    channel_weights=None,
    noise_snr=None,
    patience: int | None = None,
    eval_every: int | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    energy_edges=None,
    **architecture,
) -> M.IAEModel:
    """Train an IAE on ``spectra`` with ``anchors`` and return the model with the best parameters.

    spectra: ``(N, n)`` training spectra, or ``(N, c, n)`` for a joint model of ``c`` inputs
      (e.g. radionuclides). The anchors are added to the training set. Any overall scale
      works (counts, unit sum, 1e-20 of either): training rescales each input to a mean
      channel value of one, and the model returned works in the spectra's own units.
    anchors: ``(d, n)`` or ``(d, c, n)``, ``d >= 2`` distinct spectra.
    arch: ``"dense"`` or ``"conv"``; further keyword arguments set the architecture
      (``latent_dim``, ``width``, ``depth``, ``filters``, ``kernels``, ``strides``,
      ``lateral``, ``activation``, ``output``, ``rel_eps``; see :class:`IAEConfig`).
    epochs: passes over the training set (default from :func:`default_epochs`).
    valid: optional held-out spectra; the best parameters are those of lowest validation loss
      (training loss when ``valid`` is None), and ``patience`` (epochs without improvement)
      stops early.
    learning_rate: peak learning rate of the default optimiser (default 2e-3); not allowed
      together with ``optimizer``.
    optimizer: ``None`` for the default, ``make_optimizer(learning_rate, total_steps)``:
      the gradient clipped to a global norm of at most 1, then Adam with a learning rate that
      warms up linearly from ``0.1 * learning_rate`` to ``learning_rate`` over
      ``max(1, min(200, total_steps // 20))`` steps and decays along a half cosine to
      ``0.01 * learning_rate`` at the last step (``total_steps = epochs * ceil(N' /
      batch_size)``, ``N'`` the training spectra plus the anchors). Or any
      ``optax.GradientTransformation`` (e.g. ``optax.adamw(1e-3)``), which then replaces it
      whole (schedule and clipping included: add them to the chain if wanted). It is a static
      argument of the compiled epoch loop: reuse one object across calls to compile once.
      Resuming a checkpoint needs an optimiser whose state has the same structure as the
      one that wrote it (a different one raises ``ValueError``); use the same optimiser.
    loss: ``"squared"`` or ``"log"`` (mean over inputs of the log of the normalised MSE).
    channel_weights: optional ``(n,)`` or ``(c, n)`` non-negative weights of the squared error.
    noise_snr: ``None``, an SNR in dB, or a range ``(lo, hi)``: Gaussian noise added to the
      encoder's input during training (robustness to noisy data).
    checkpoint: a file to save the training state to every ``checkpoint_every`` epochs
      (atomically); with ``resume=True`` an existing one is continued from where it stopped.
    progress: show a progress bar (epochs, losses).
    energy_edges: optional ``(n + 1,)`` bin edges (keV) of the spectra's channels, stored in
      ``info["energy_edges"]``: with it the model unmixes spectra of any energy calibration
      (``frugal.gamma.unmix(..., energies=...)``).
    """
    output = architecture.get("output", "exp")
    x, e, v, joint = _validate_training_data(spectra, anchors, valid, output)
    check_choice(arch, "arch", ("dense", "conv"))
    check_choice(loss, "loss", ("squared", "log"))
    seed = check_int(seed, "seed", minimum=0)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    custom_optimizer, learning_rate = _check_optimizer(optimizer, learning_rate)
    mu = check_float(mu, "mu", minimum=0.0)
    raw_x = np.concatenate([e, x], axis=0)
    scale = _data_scale(raw_x)
    train_x = (raw_x / scale).astype(np.float32)
    e_scaled = (e / scale).astype(np.float32)
    v = None if v is None else (v / scale).astype(np.float32)
    n_train, c, n = train_x.shape
    if energy_edges is not None:
        energy_edges = check_array(energy_edges, "energy_edges", ndim=1, dtype=np.float64)
        if energy_edges.shape != (n + 1,) or np.any(np.diff(energy_edges) <= 0):
            raise ValueError(f"energy_edges must be {n + 1} increasing bin edges (keV) for spectra of {n} channels, "
                             f"got shape {energy_edges.shape}")
    epochs = default_epochs(n_train, n) if epochs is None else check_int(epochs, "epochs", minimum=1)
    eval_every = max(1, epochs // 100) if eval_every is None else check_int(eval_every, "eval_every", minimum=1)
    if patience is not None:
        patience = check_int(patience, "patience", minimum=1)
    batch_size = min(batch_size, n_train)
    if noise_snr is None:
        snr_db = (0.0, 0.0)
    else:
        lo, hi = (noise_snr, noise_snr) if np.ndim(noise_snr) == 0 else tuple(noise_snr)
        snr_db = (check_float(lo, "noise_snr"), check_float(hi, "noise_snr"))
    if channel_weights is None:
        weights = np.ones((c, n), np.float32)
    else:
        weights = check_array(channel_weights, "channel_weights", ndim=(1, 2), shape=(n,), nonnegative=True)
        weights = np.broadcast_to(weights, (c, n)).astype(np.float32)

    known = {f.name for f in dataclasses.fields(M.IAEConfig)} - {"n_channels", "n_anchors", "n_inputs", "joint", "arch"}
    unknown = sorted(set(architecture) - known)
    if unknown:
        raise TypeError(f"train() got unknown argument(s) {unknown}; architecture arguments are {sorted(known)}")
    config = M.IAEConfig(
        n_channels=n, n_anchors=e.shape[0], n_inputs=c, joint=joint, arch=arch,
        **{k: tuple(v) if isinstance(v, list) else v for k, v in architecture.items()},
    )
    encoder, decoder = config.networks()  # validates the activation and architecture
    M.output_map(config, jnp.zeros(1))  # validates the output name

    mean = train_x.mean(axis=0)
    reference = np.maximum(mean, REFERENCE_FLOOR * mean.max(axis=-1, keepdims=True))
    if not np.all(reference > 0):
        raise ValueError("spectra are all zero in at least one input channel: nothing to learn")
    if output == "linear":
        reference = np.maximum(np.abs(mean), REFERENCE_FLOOR * np.abs(mean).max(axis=-1, keepdims=True))
    # The model the user gets works in the spectra's own units: the same network with the
    # reference multiplied back by the scale (x / (s r) = (x / s) / r, and s r g = s (r g)).
    user_reference = reference * scale
    f32 = np.finfo(np.float32)
    # Normal float32 numbers, and decoded spectra (up to e^MAX_LOG_RATIO times the reference)
    # that stay finite.
    if not (np.all(user_reference >= f32.tiny) and np.all(user_reference * np.exp(M.MAX_LOG_RATIO) < f32.max)):
        raise ValueError(
            f"spectra have a mean channel value of {float(scale.min()):.3g}..{float(scale.max()):.3g}, "
            "beyond what a float32 model can represent; rescale them (e.g. to unit sum)"
        )
    user_anchors = jnp.asarray(e, jnp.float32)
    user_reference = jnp.asarray(user_reference, jnp.float32)
    power = np.mean(np.sum(weights * train_x**2, axis=-1), axis=0) + 1e-30
    data = tuple(jnp.asarray(a, jnp.float32) for a in (train_x, reference, e_scaled, weights, power))

    key = jax.random.PRNGKey(seed)
    key, k_enc, k_dec = jax.random.split(key, 3)
    enc_params = encoder.init(k_enc, data[0][:1] / data[1])
    codes = encoder.apply(enc_params, data[0][:1] / data[1])
    params = {"encoder": enc_params, "decoder": decoder.init(k_dec, codes)}

    steps_per_epoch = -(-n_train // batch_size)
    total_steps = epochs * steps_per_epoch
    if custom_optimizer is None:
        optimizer, optimizer_kind = make_optimizer(learning_rate, total_steps), "default"
    else:
        optimizer, optimizer_kind = custom_optimizer, "custom"
    opt_state = optimizer.init(params)
    opt_signature = _opt_state_signature(opt_state)
    valid_x = None if v is None else jnp.asarray(v, jnp.float32)

    history = {"epoch": [], "train_loss": [], "train_reconstruction": [], "valid_loss": []}
    best = {"loss": np.inf, "params": params, "epoch": 0}
    start_epoch, elapsed_before = 0, 0.0
    fingerprint = _fingerprint(train_x, v, config, loss, mu, seed, snr_db, batch_size, learning_rate, epochs,
                               scale.ravel().tolist())

    if checkpoint is not None and resume and os.path.exists(checkpoint):
        from frugal.iae.checkpoint import load_training_state

        # The optimiser state is unflattened only after the checks below, so that an
        # optimiser of another kind or state gets its own error, not a pytree one.
        saved = load_training_state(checkpoint, params)
        # Checkpoints written before the optimiser became an argument hold the default's state.
        saved_kind = saved.get("optimizer", "default")
        if saved_kind != optimizer_kind:
            raise ValueError(
                f"checkpoint {os.fspath(checkpoint)!r} was written with {_KIND.get(saved_kind, saved_kind)} "
                f"optimizer, not {_KIND[optimizer_kind]} one: resume "
                "with the same optimizer argument (and learning_rate) that wrote it, or use another "
                "checkpoint path"
            )
        saved_signature = saved.get("opt_state_signature")
        if saved_signature is not None and saved_signature != opt_signature:
            raise ValueError(
                f"checkpoint {os.fspath(checkpoint)!r} holds the state of another optimizer: its "
                f"optimizer state is {_describe(saved_signature)}, that of this optimizer argument is "
                f"{_describe(opt_signature)}; resume with the optimizer that wrote it, or use another "
                "checkpoint path"
            )
        if saved["fingerprint"] != fingerprint:
            raise ValueError(
                f"checkpoint {os.fspath(checkpoint)!r} was written for other data or settings; "
                "use the same spectra, anchors and arguments to resume, or another checkpoint path"
            )
        opt_state = saved["restore_opt_state"](opt_state)
        params, key = saved["params"], saved["key"]
        best = {"loss": saved["best_loss"], "params": saved["best_params"], "epoch": saved["best_epoch"]}
        history, start_epoch, elapsed_before = saved["history"], saved["epoch"], saved["elapsed"]

    run = partial(
        run_epochs, config=config, loss_kind=loss, optimizer=optimizer, batch_size=batch_size,
        noisy=noise_snr is not None, mu=mu, snr_db=jnp.asarray(snr_db, jnp.float32),
    )
    evaluate = partial(_evaluate, config=config, loss_kind=loss, mu=mu)
    carry = (params, opt_state, key)
    epoch, stopped_early, t0 = start_epoch, False, time.perf_counter()
    last_saved = start_epoch
    with tqdm(total=epochs, initial=start_epoch, desc="IAE training", unit="epoch", disable=not progress,
              dynamic_ncols=True, leave=True, mininterval=1.0) as bar:
        while epoch < epochs:
            chunk = min(eval_every, epochs - epoch)
            carry = run(carry, chunk, data)
            epoch += chunk
            train_total, train_rec = evaluate(carry[0], data[0], data)
            monitored = train_total if valid_x is None else evaluate(carry[0], valid_x, data)[0]
            train_total, monitored = float(train_total), float(monitored)
            if not np.isfinite(train_total):
                raise FloatingPointError(
                    f"training diverged at epoch {epoch} (loss {train_total}); lower "
                    + ("learning_rate" if custom_optimizer is None else "the learning rate of optimizer")
                )
            history["epoch"].append(epoch)
            history["train_loss"].append(train_total)
            history["train_reconstruction"].append(float(train_rec))
            history["valid_loss"].append(None if valid_x is None else monitored)
            if monitored < best["loss"]:
                best = {"loss": monitored, "params": carry[0], "epoch": epoch}
            bar.update(chunk)
            bar.set_postfix(loss=f"{train_total:.3e}", **({} if valid_x is None else {"valid": f"{monitored:.3e}"}))
            if checkpoint is not None and checkpoint_every and epoch - last_saved >= checkpoint_every:
                partial_model = M.IAEModel(
                    config, M.make_state(config, best["params"], user_reference, user_anchors),
                    {"history": history, "best_epoch": int(best["epoch"]), "partial": True},
                )
                _save_progress(checkpoint, partial_model, carry, best, history, epoch,
                               elapsed_before + time.perf_counter() - t0, fingerprint, optimizer_kind)
                last_saved = epoch
            if patience is not None and epoch - best["epoch"] >= patience:
                stopped_early = True
                break

    params = best["params"]
    state = M.make_state(config, params, user_reference, user_anchors)
    fitted = M.IAEModel(config, state, {})
    lam = fitted.interpolate(np.asarray(raw_x, np.float32).reshape((-1,) + fitted.signal_shape))
    state = state._replace(latent_lower=jnp.min(lam, 0), latent_upper=jnp.max(lam, 0))
    info = {
        "history": history,
        "best_epoch": int(best["epoch"]),
        "best_loss": float(best["loss"]),
        "epochs_run": int(epoch),
        "stopped_early": stopped_early,
        "train_time_s": elapsed_before + time.perf_counter() - t0,
        "n_train": int(n_train),
        "seed": seed,
        "loss": loss,
        "mu": mu,
        "noise_snr": None if noise_snr is None else list(snr_db),
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "optimizer": optimizer_kind,
        "energy_edges": None if energy_edges is None else [float(v) for v in energy_edges],
    }
    model = M.IAEModel(config, state, info)
    if checkpoint is not None:
        # Keep the training state with the final model: rerunning the same call with
        # resume=True then returns at once instead of training again.
        _save_progress(checkpoint, model, carry, best, history, epoch, info["train_time_s"], fingerprint,
                       optimizer_kind)
    return model


def _fingerprint(train_x, valid, config, *settings) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(train_x, np.float32).tobytes())
    if valid is not None:
        h.update(np.ascontiguousarray(valid, np.float32).tobytes())
    h.update(repr((config, settings)).encode())
    return h.hexdigest()


def _save_progress(path, model, carry, best, history, epoch, elapsed, fingerprint, optimizer_kind):
    from frugal.iae.checkpoint import save

    params, opt_state, key = carry
    save(model, path, training={
        "params": params, "opt_state": opt_state, "key": key, "best_params": best["params"],
        "best_loss": float(best["loss"]), "best_epoch": int(best["epoch"]), "epoch": int(epoch),
        "history": history, "elapsed": float(elapsed), "fingerprint": fingerprint,
        "optimizer": optimizer_kind, "opt_state_signature": _opt_state_signature(opt_state),
    })
