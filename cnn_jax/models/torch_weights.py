"""Flax variables for a cnn_jax model from a PyTorch `state_dict` with torchvision's parameter names.

    import torchvision
    from cnn_jax import models
    variables = models.from_torch_state_dict("resnet50", torchvision.models.resnet50(weights="DEFAULT").state_dict())
    logits = models.create("resnet50", num_classes=1000).apply(variables, images_nhwc, train=False)

Every cnn_jax leaf has one torchvision tensor, named by the model's rename rule plus the leaf's suffix:
Conv and Linear "kernel" <- "weight" (OIHW -> HWIO, (out, in) -> (in, out)), "bias" <- "bias";
BatchNorm "scale" <- "weight", "bias" <- "bias", batch_stats "mean" <- "running_mean", "var" <-
"running_var" ("num_batches_tracked" is ignored). A dense layer that reads a flattened feature map
(AlexNet's and VGG's first classifier layer, GoogLeNet's auxiliary fc1) has its input rows permuted
from PyTorch's NCHW flatten order to cnn_jax's NHWC order. The ResNets with `blur_size` take the names
of Zhang's antialiased-cnns (`_resnet`); its BlurPool `filt` buffers are checked against the model's
filter, not loaded. Anything missing, unexpected, mis-shaped or a wrong filter fails with one
ValueError naming every such tensor.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from cnn_jax import ops
from cnn_jax.models.registry import create

Path = tuple[str, ...]
IGNORED_SUFFIX = "num_batches_tracked"
# (collection, leaf name) -> the torch tensor's last name component.
LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


@dataclasses.dataclass(frozen=True)
class Family:
    """How one torchvision family names its modules.

    rename: a cnn_jax module-path component -> its torchvision name (components it leaves out keep theirs).
    flattened: module path of a dense layer -> (H, W) of the feature map flattened into it.
    moved: module path -> the whole torch module name, where renaming each component does not give it.
    filters: torch buffer name -> the value it must hold; checked, never loaded (BlurPool's `filt`).
    """

    rename: Callable[[str], str]
    flattened: Mapping[Path, tuple[int, int]] = dataclasses.field(default_factory=dict)
    moved: Mapping[Path, str] = dataclasses.field(default_factory=dict)
    filters: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)


def _table(names: Mapping[str, str]) -> Callable[[str], str]:
    return lambda component: names.get(component, component)


def _alexnet(model: nn.Module) -> Family:
    names = {
        "conv1": "features.0",
        "conv2": "features.3",
        "conv3": "features.6",
        "conv4": "features.8",
        "conv5": "features.10",
        "fc1": "classifier.1",
        "fc2": "classifier.4",
        "fc3": "classifier.6",
    }
    return Family(_table(names), {("fc1",): (6, 6)})


def _vgg(model: nn.Module) -> Family:
    """torchvision's `features` is one Sequential: conv, [BatchNorm], ReLU per convolution, one entry per pool."""
    names = {"fc1": "classifier.0", "fc2": "classifier.3", "fc3": "classifier.6"}
    index = 0
    for i, layer in enumerate(model.config):
        if layer == "M":
            index += 1
            continue
        names[f"conv{i}"] = f"features.{index}"
        if model.layers.norm.kind == "batch":
            names[f"norm{i}"] = f"features.{index + 1}"
            index += 1
        index += 2
    return Family(_table(names), {("fc1",): (7, 7)})


def _resnet_component(component: str) -> str:
    """stem_conv -> conv1, stage2_block1 -> layer2.0, norm3 -> bn3, shortcut_conv -> downsample.0."""
    fixed = {"stem_conv": "conv1", "stem_norm": "bn1", "shortcut_conv": "downsample.0", "shortcut_norm": "downsample.1"}
    if component in fixed:
        return fixed[component]
    if match := re.fullmatch(r"stage(\d+)_block(\d+)", component):
        return f"layer{match[1]}.{int(match[2]) - 1}"
    return re.sub(r"^norm(\d)$", r"bn\1", component)


def _resnet(model: nn.Module) -> Family:
    """torchvision's names; with `blur_size`, antialiased-cnns' (Zhang 2019, v0.3) in the subsampling blocks.

    There a BlurPool precedes the conv that follows the subsampling, in one Sequential: the BasicBlock's
    conv2 is `conv2.1` after the BlurPool `conv2.0` (the Bottleneck's conv3: `conv3.0`, `conv3.1`), the
    shortcut is `downsample.0` BlurPool, `.1` conv, `.2` BatchNorm, and the stem's MaxBlurPool is
    `maxpool.0` max-pool, `maxpool.1` BlurPool. Each BlurPool holds its filter as a buffer `filt`.
    """
    if not model.blur_size:
        return Family(_resnet_component)
    expansion = 1 if model.block == "basic" else 4
    blurred = "conv2" if model.block == "basic" else "conv3"  # the conv after the block's BlurPool
    moved, filters = {}, {"maxpool.1.filt": _blur_filter(model.blur_size, model.widths[0])}
    # The first block of every stage after the first subsamples (ResNet's stride rule).
    for stage in range(2, len(model.stage_sizes) + 1):
        block, layer = f"stage{stage}_block1", f"layer{stage}.0"
        moved[(block, blurred)] = f"{layer}.{blurred}.1"
        moved[(block, "shortcut_conv")] = f"{layer}.downsample.1"
        moved[(block, "shortcut_norm")] = f"{layer}.downsample.2"
        filters[f"{layer}.{blurred}.0.filt"] = _blur_filter(model.blur_size, model.widths[stage - 1])
        filters[f"{layer}.downsample.0.filt"] = _blur_filter(model.blur_size, expansion * model.widths[stage - 2])
    return Family(_resnet_component, moved=moved, filters=filters)


def _blur_filter(size: int, channels: int) -> np.ndarray:
    """antialiased-cnns' BlurPool buffer: the 2-D binomial filter once per channel, (channels, 1, size, size)."""
    taps = ops.binomial_filter(size)
    return np.broadcast_to(np.outer(taps, taps), (channels, 1, size, size))


def _googlenet(model: nn.Module) -> Family:
    names = {
        "norm": "bn",
        "b1": "branch1",
        "b2_reduce": "branch2.0",
        "b2_conv": "branch2.1",
        "b3_reduce": "branch3.0",
        "b3_conv": "branch3.1",
        "b4_proj": "branch4.1",
        "aux_4a": "aux1",
        "aux_4d": "aux2",
    }
    return Family(_table(names), {("aux_4a", "fc1"): (4, 4), ("aux_4d", "fc1"): (4, 4)})


FAMILIES: dict[str, Callable[[nn.Module], Family]] = {
    "alexnet": _alexnet,
    "googlenet": _googlenet,
    "resnet18": _resnet,
    "resnet34": _resnet,
    "resnet50": _resnet,
    **{f"vgg{depth}{suffix}": _vgg for depth in (11, 13, 16, 19) for suffix in ("", "_bn")},
}


def _to_flax(value: np.ndarray, flat_hw: tuple[int, int] | None) -> np.ndarray:
    """A torch weight in cnn_jax's layout: OIHW -> HWIO, (out, in) -> (in, out), NCHW -> NHWC rows."""
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if value.ndim == 2 and flat_hw is not None:
        out, features = value.shape
        h, w = flat_hw
        # Row c*H*W + h*W + w of torch's input becomes row h*W*C + w*C + c of cnn_jax's.
        return value.reshape(out, features // (h * w), h, w).transpose(2, 3, 1, 0).reshape(features, out)
    return value.T if value.ndim == 2 else value


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch shape of a cnn_jax leaf of `shape`: HWIO -> OIHW, (in, out) -> (out, in)."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return shape[::-1]


def _torch_key(family: Family, path: Path) -> str:
    collection, *modules, leaf = path
    module = family.moved.get(tuple(modules)) or ".".join(family.rename(m) for m in modules)
    return f"{module}.{LEAF_NAMES[(collection, leaf)]}"


def from_torch_state_dict(name: str, state_dict: Mapping[str, Any], *, num_classes: int = 1000, **options) -> dict:
    """Flax variables {"params": ..., "batch_stats": ...} for `models.create(name, num_classes, **options)`.

    Args:
      name: a model with a torchvision counterpart: alexnet, vgg11/13/16/19 (and _bn), resnet18/34/50,
        googlenet (torchvision's has a 3x3 "5x5" branch: pass branch5x5_kernel=3; aux_heads=True for a
        state_dict that holds aux1 and aux2); resnet18/34/50 with blur_size=k (1..7) for antialiased-cnns'
        ResNets of filter_size=k (Zhang 2019; the published weights' `torch.load(path)["state_dict"]`).
      state_dict: torchvision's tensor names -> CPU tensors or arrays (`module.state_dict()`).
      num_classes, options: as for `models.create`; they must describe the torch model's shapes.
    Returns:
      float32 variables for `model.apply(variables, x_nhwc, train=False)`.
    Raises:
      ValueError naming every missing, unexpected or mis-shaped tensor and every BlurPool filter that is not
      the model's, or the supported names.
    """
    if name not in FAMILIES:
        raise ValueError(f"model {name!r} has no torchvision counterpart; valid names are {', '.join(FAMILIES)}")
    model = create(name, num_classes=num_classes, **options)
    family = FAMILIES[name](model)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
    leaves = traverse_util.flatten_dict(dict(shapes))
    keys = {path: _torch_key(family, path) for path in leaves}
    _check(name, state_dict, keys, leaves, family.filters)
    flat = {
        path: jnp.asarray(_to_flax(np.asarray(state_dict[key]), family.flattened.get(path[1:-1])), leaves[path].dtype)
        for path, key in keys.items()
    }
    return traverse_util.unflatten_dict(flat)


def _check(
    name: str,
    state_dict: Mapping[str, Any],
    keys: Mapping[Path, str],
    leaves: Mapping[Path, Any],
    filters: Mapping[str, np.ndarray],
) -> None:
    """Raise one ValueError listing every missing, unexpected, mis-shaped and (for filters) mis-valued tensor."""
    wanted = set(keys.values()) | set(filters)
    problems = [
        f"missing {key!r} (for cnn_jax {'/'.join(path)})" for path, key in keys.items() if key not in state_dict
    ]
    unexpected = [key for key in state_dict if key not in wanted and not key.endswith(IGNORED_SUFFIX)]
    problems += [f"unexpected {key!r}" for key in unexpected]
    for path, key in keys.items():
        expected = _torch_shape(leaves[path].shape)
        if key in state_dict and tuple(np.shape(state_dict[key])) != expected:
            problems.append(
                f"{key!r} has shape {tuple(np.shape(state_dict[key]))}, expected {expected} "
                f"(for cnn_jax {'/'.join(path)})"
            )
    problems += _filter_problems(state_dict, filters, unexpected)
    if problems:
        raise ValueError(f"state_dict does not fit {name!r} with these options:\n  " + "\n  ".join(problems))


def _filter_problems(
    state_dict: Mapping[str, Any], filters: Mapping[str, np.ndarray], unexpected: list[str]
) -> list[str]:
    """Every missing or wrong BlurPool filter; for a model without any, what an unexpected one asks for."""
    if not filters:
        blur_filter = next((key for key in unexpected if key.endswith(".filt")), None)
        if blur_filter is None:
            return []
        size = np.shape(state_dict[blur_filter])[-1]
        return [f"{blur_filter!r} is an antialiased-cnns BlurPool filter of {size} taps: load with blur_size={size}"]
    problems = [f"missing {key!r} (a BlurPool filter, checked, not loaded)" for key in filters if key not in state_dict]
    return problems + [
        problem
        for key, expected in filters.items()
        if key in state_dict and (problem := _wrong_filter(key, np.asarray(state_dict[key], np.float64), expected))
    ]


def _wrong_filter(key: str, value: np.ndarray, expected: np.ndarray) -> str | None:
    """How the BlurPool buffer `value` differs from the filter the model applies, or None if it does not."""
    size = expected.shape[-1]
    if value.shape != expected.shape:
        hint = (
            f" (a state_dict for blur_size={value.shape[-1]}?)" if value.ndim == 4 and value.shape[-1] != size else ""
        )
        return (
            f"{key!r} has shape {value.shape}, expected {expected.shape}: blur_size={size}'s filter per channel{hint}"
        )
    # Zhang's float32 filters are exact: binomial coefficients over a power of two.
    wrong = np.flatnonzero(~np.isclose(value, expected, rtol=1e-6, atol=0).all(axis=(1, 2, 3)))
    if not wrong.size:
        return None
    channel = wrong[0]
    return (
        f"{key!r} is not blur_size={size}'s binomial filter in {wrong.size} of {len(value)} channels: "
        f"channel {channel} holds {np.round(value[channel, 0], 6).tolist()}, expected {expected[channel, 0].tolist()}"
    )
