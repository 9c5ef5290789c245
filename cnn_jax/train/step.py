"""The per-device train and eval steps. Collectives run over the mesh/pmap axis AXIS ("batch").

The same functions run under `jax.pmap` and under `jax.jit(jax.shard_map(...))` (see parallel.py):
each device sees its slice of the global batch, and gradients, metrics and BatchNorm statistics are
averaged over AXIS, so the update equals the single-device update on the global batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cnn_jax.data import augment, normalize
from cnn_jax.train.optim import Schedule
from cnn_jax.train.state import TrainState

AXIS = "batch"


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How stored examples become model inputs on device: normalisation statistics and augmentation."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float
    crop_padding: int = 0
    flip: bool = False

    def __call__(self, x: jax.Array, keys: jax.Array | None) -> jax.Array:
        x = normalize(x, jnp.asarray(self.mean), jnp.asarray(self.std), self.scale)
        return x if keys is None else augment(x, keys, crop_padding=self.crop_padding, flip=self.flip)


def cross_entropy(
    logits: jax.Array, labels: jax.Array, num_classes: int, label_smoothing: float | jax.Array
) -> jax.Array:
    """Per-example softmax cross-entropy (N,) against one-hot labels smoothed by `label_smoothing`.

    Computed in float32 at least: bfloat16 logits are widened, and float64 ones (under `jax.enable_x64`) are kept.
    """
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), targets)


def _global_indices(local_batch: int) -> jax.Array:
    """Each example's row in the global batch, independent of how many devices share it."""
    return jax.lax.axis_index(AXIS) * local_batch + jnp.arange(local_batch)


def make_train_step(
    model: nn.Module,
    tx: Callable[[Mapping[str, jax.Array]], optax.GradientTransformation],
    schedule: Schedule,
    inputs: InputSpec,
    *,
    num_classes: int,
) -> Callable:
    """Per-device `train_step(state, values, x, labels) -> (state, metrics)`.

    x holds this device's stored examples. `values` are the run's traced values (`run_values.py`): the seed
    (keys for augmentation and dropout: fold_in(key(seed), step)), the optimizer's scalars (`tx(values)`,
    `schedule(count, values)`) and the label smoothing. The metrics include the learning rate the step used.
    """

    def train_step(state: TrainState, values: Mapping[str, jax.Array], x: jax.Array, labels: jax.Array):
        step_key = jax.random.fold_in(jax.random.key(values["seed"]), state.step)
        augment_key, dropout_key = jax.random.split(step_key)
        keys = jax.vmap(jax.random.fold_in, (None, 0))(augment_key, _global_indices(len(labels)))
        x = inputs(x, keys)
        # Dropout masks are drawn per device, so they (unlike everything else) depend on the device count.
        dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(AXIS))

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": dropout_key},
            )
            loss = cross_entropy(logits, labels, num_classes, values["label_smoothing"]).mean()
            return loss, (logits, updates.get("batch_stats", state.batch_stats))

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grads = jax.lax.pmean(grads, AXIS)
        updates, opt_state = tx(values).update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
            "grad_norm": optax.tree.norm(grads),
        }
        metrics = jax.lax.pmean(metrics, AXIS)
        return new_state, {**metrics, "learning_rate": schedule(state.step, values)}

    return train_step


def make_eval_step(model: nn.Module, inputs: InputSpec, *, num_classes: int) -> Callable:
    """Per-device `eval_step(state, x, labels, mask) -> sums` of correct predictions, loss and examples
    (mask 0: padding)."""

    def eval_step(state: TrainState, x: jax.Array, labels: jax.Array, mask: jax.Array):
        logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, inputs(x, None), train=False)
        loss = cross_entropy(logits, labels, num_classes, 0.0)
        sums = {
            "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
            "loss": jnp.sum(loss * mask),
            "count": jnp.sum(mask),
        }
        return jax.lax.psum(sums, AXIS)

    return eval_step


def stacked_batch(resident: bool, args: tuple, k) -> tuple:
    """Step k's per-device arguments from a dispatch's stacked ones.

    Streamed: args are (x (K, batch, ...), labels (K, batch), *rest (K, batch)), sliced at k. Resident:
    args are (inputs, labels, rows (K, batch), *rest), the whole split on the device, and step k gathers
    inputs[rows[k]], labels[rows[k]] there.
    """
    if resident:
        inputs, labels, rows, *rest = args
        return (inputs[rows[k]], labels[rows[k]], *(a[k] for a in rest))
    return tuple(a[k] for a in args)


def stack_length(resident: bool, args: tuple) -> int:
    """K, the number of steps in a dispatch's stacked arguments."""
    return args[2 if resident else 0].shape[0]


def step_of_stack(step: Callable, resident: bool) -> Callable:
    """Per-device `(state, values, *args, k) -> (state, outputs (..., 1))`: step k of a dispatch, its outputs
    with a trailing step axis of length 1, as `scan_steps` stacks them."""

    def one(state, values, *args_and_k):
        *args, k = args_and_k
        state, outputs = step(state, values, *stacked_batch(resident, tuple(args), k))
        return state, jax.tree.map(lambda x: x[..., None], outputs)

    return one


def scan_steps(step: Callable, resident: bool) -> Callable:
    """Per-device `(state, values, *args, count) -> (state, outputs stacked (..., K))`: the first `count` of the K
    steps a dispatch's arguments hold, in one compiled program (`lax.scan`), so a small model is not bound by
    one dispatch per step. Steps from `count` on are skipped (`lax.cond`) and output zeros: a dispatch
    shorter than K (an epoch's last) runs the same program as a full one instead of compiling its own."""

    def run(state, values, *args_and_count):
        *args, count = args_and_count

        def body(carry, k):
            batch = stacked_batch(resident, tuple(args), k)
            skipped = jax.eval_shape(lambda c: step(c, values, *batch)[1], carry)
            return jax.lax.cond(
                k < count,
                lambda c: step(c, values, *batch),
                lambda c: (c, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), skipped)),
                carry,
            )

        state, outputs = jax.lax.scan(body, state, jnp.arange(stack_length(resident, tuple(args))))
        # scan stacks along a new first axis; the step axis goes last, after pmap's device axis.
        return state, jax.tree.map(lambda x: jnp.moveaxis(x, 0, -1), outputs)

    return run


def as_stateful(eval_step: Callable) -> Callable:
    """`eval_step(state, ...) -> sums` as `(state, values, ...) -> (state, sums)`, so it runs like a train step
    (the run values are not used: evaluation depends on the state alone)."""
    return lambda state, values, *batch: (state, eval_step(state, *batch))
