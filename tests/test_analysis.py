"""Receptive fields read off the traced model: published values and a brute-force measurement."""

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import analysis, models
from cnn_jax import nn as cnn
from cnn_jax.nn import ConvSpec
from cnn_jax.report.figures import erf_heatmaps
from cnn_jax.report.published import CONTEXT_MODULE_FIELD, LENET5_C3, LENET5_TRAINABLE, RECEPTIVE_FIELDS

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize(
    "name, shape, size",
    [
        ("alexnet", (224, 224, 3), RECEPTIVE_FIELDS["alexnet"]),
        ("vgg16", (224, 224, 3), RECEPTIVE_FIELDS["vgg16"]),
        ("resnet50", (224, 224, 3), RECEPTIVE_FIELDS["resnet50"]),
        ("context_net", (80, 80, 3), CONTEXT_MODULE_FIELD),
    ],
)
def test_published_receptive_fields(name, shape, size):
    field = analysis.model_receptive_field(models.create(name, num_classes=10), shape)
    assert [f.size for f in field] == [size, size]


@pytest.mark.parametrize(
    "name, field",
    [
        ("resnet50", (RECEPTIVE_FIELDS["resnet50"], 32, 213)),
        ("resnet18", (435, 32, 217)),
    ],
)
def test_symmetric_padding_centres_the_resnet_fields(name, field):
    """torchvision pads every convolution and pool symmetrically, so the field of the last map's first unit
    is centred on it: effective padding (size - 1) / 2. "SAME" on the strided 3x3 layers gave 185 and 189."""
    got = analysis.model_receptive_field(models.create(name, num_classes=10), (224, 224, 3))
    assert [(f.size, f.stride, f.padding) for f in got] == [field, field]


def _measured_span(model, shape):
    """Brute force: the input pixels the centre unit of the last spatial map depends on.

    With positive weights and a positive input nothing cancels and every ReLU passes, so the
    gradient is nonzero exactly on the receptive field (clipped to the image)."""
    x = jnp.ones((1, *shape))
    variables = jax.tree.map(jnp.abs, model.init(KEY, x))

    def keep_spatial(next_fun, args, kwargs, context):  # stop before global pooling
        if isinstance(context.module, cnn.GlobalAvgPool):
            return args[0]
        return next_fun(*args, **kwargs)

    def centre(x):
        with flax_nn.intercept_methods(keep_spatial):
            y = model.apply(variables, x)
        centre_index = tuple(n // 2 for n in y.shape[1:-1])
        return y[(0, *centre_index)].sum(), centre_index

    grad, centre_index = jax.grad(centre, has_aux=True)(x)
    support = np.nonzero(np.abs(np.asarray(grad[0])).sum(-1))
    return [(int(s.min()), int(s.max())) for s in support], centre_index


@pytest.mark.parametrize(
    "name, shape, options",
    [
        # Inputs larger than the field, so the measured span is not just the whole image.
        pytest.param("resnet20", (96, 96, 3), {}, marks=pytest.mark.slow),
        pytest.param("resnet20", (96, 96, 3), {"conv": ConvSpec("tiled", tile=2)}, marks=pytest.mark.slow),
        ("context_net", (24, 24, 1), {"features": 4, "dilations": (1, 2, 4), "conv": ConvSpec("local")}),
        ("context_net", (72, 72, 1), {"features": 4}),
        ("context_net", (48, 48, 1), {"features": 4, "dilations": (1, 2, 5, 9)}),
        ("context_net", (40, 40, 1), {"features": 4, "dilations": (2, 2, 2, 2)}),
        ("cnn1d", (40, 1), {}),
    ],
)
def test_receptive_field_matches_brute_force(name, shape, options):
    model = models.create(name, num_classes=2, **options)
    field = analysis.model_receptive_field(model, shape)
    measured, centre = _measured_span(model, shape)
    for f, (lo, hi), u, n in zip(field, measured, centre, shape[:-1]):
        start, stop = f.span(u)
        assert (lo, hi) == (max(start, 0), min(stop, n - 1)), (f, u)
        assert (lo, hi) != (0, n - 1), "the field should fit inside the input"


@pytest.mark.parametrize("kind", ["standard", "tiled", "local"])
def test_summary_rows_and_totals(kind):
    from cnn_jax.ops import conv_macs

    model = models.create("lenet5", num_classes=10, conv=ConvSpec(kind, tile=2))
    summary = analysis.summarize(model, (28, 28, 1))
    rows = {r.path: r for r in summary.rows}
    assert [r.path for r in summary.rows] == ["conv1", "MaxPool_0", "conv2", "MaxPool_1", "fc1", "fc2", "output"]
    assert rows["conv1"].output_shape == (1, 28, 28, 6)
    # Every variant does the same multiply-adds: one dot product per output value.
    assert rows["conv2"].macs == conv_macs((10, 10), (5, 5), 6, 16) == 240_000
    assert rows["fc1"].macs == 400 * 120
    assert summary.params == sum(p.size for p in jax.tree.leaves(model.init(KEY, jnp.zeros((1, 28, 28, 1)))))
    assert summary.macs == sum(r.macs for r in summary.rows)
    assert analysis.params_and_macs(model, (28, 28, 1)) == (summary.params, summary.macs)  # what final.json records
    assert [(f.size, f.stride) for f in rows["MaxPool_1"].field] == [(16, 4), (16, 4)]
    assert "Total:" in summary.to_markdown()


def test_lenet5_classic_is_counted_as_published():
    """C3's parameters and multiply-adds over its connection table only, and the receptive field after each
    trainable subsampling: LeCun et al. count C3's 151,600 connections as its 150,000 multiply-adds plus one
    bias per output value; C5 sees the whole 32x32 field."""
    summary = analysis.summarize(models.create("lenet5_classic", num_classes=10), (32, 32, 1))
    rows = {r.path: r for r in summary.rows}
    params, connections = LENET5_C3
    assert (rows["C3"].params, rows["C3"].macs + 10 * 10 * 16) == (params, connections)
    assert summary.params - rows["output"].params == LENET5_TRAINABLE and rows["output"].params == 850
    fields = {path: [(f.size, f.stride) for f in rows[path].field] for path in ("S2", "C3", "S4", "C5")}
    assert fields == {"S2": [(6, 2)] * 2, "C3": [(14, 2)] * 2, "S4": [(16, 4)] * 2, "C5": [(32, 4)] * 2}


def test_summary_flops_agree_with_xla():
    summary = analysis.summarize(models.create("resnet20", num_classes=10), (32, 32, 3))
    assert summary.params == 269_722
    assert 0.85 < summary.xla_flops / (2 * summary.macs) < 1.15


def test_summary_cli():
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnn_jax.analysis",
            "--model=lenet5",
            "--input=28,28,1",
            "--num_classes=10",
            "--conv=tiled",
            "--tile=2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "| conv2 | TiledConv | 10x10x16 | 9,664 | 240,000 | 14x14 | 2x2 | 2x2 |" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "cnn_jax.analysis", "--conv=dilated"], capture_output=True, text=True)
    assert bad.returncode != 0 and "value should be one of <standard|tiled|local>" in bad.stderr


@pytest.mark.parametrize("dilation", [1, 2])
def test_erf_of_one_conv_layer_is_its_kernel_support(dilation):
    model = models.create("context_net", num_classes=2, features=3, dilations=(dilation,))
    erf = analysis.effective_receptive_field(model, (11, 11, 1), samples=4, inits=2)
    support = np.zeros((11, 11), bool)
    support[5 - dilation : 6 + dilation : dilation, 5 - dilation : 6 + dilation : dilation] = True
    np.testing.assert_array_equal(erf.grad_map > 0, support)
    assert erf.centre == (5.0, 5.0) and erf.radius95 <= dilation


def test_erf_is_smaller_than_the_theoretical_field_and_saved_as_png(tmp_path):
    model = models.create("resnet20", num_classes=2)
    erf = analysis.effective_receptive_field(model, (64, 64, 3), samples=4, inits=2)
    size = analysis.model_receptive_field(model, (64, 64, 3))[0].size
    assert 0 < 2 * erf.radius95 + 1 < size  # Luo et al.: the effective field is a fraction of the theoretical
    path = erf_heatmaps({"resnet20": erf}, tmp_path / "erf.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_erf_of_a_uniform_linear_stack_is_the_n_fold_box_convolution(depth):
    """Luo et al. 2016: with all weights equal and no nonlinearity the ERF is the depth-fold convolution
    of the 3-tap box, whose variance per axis is exactly depth * 2/3 (and the theoretical field 2 depth + 1)."""
    model = models.create(
        "context_net", num_classes=1, features=4, dilations=(1,) * depth, activation="linear", kernel_init="uniform"
    )
    erf = analysis.effective_receptive_field(model, (2 * depth + 9, 2 * depth + 9, 1), samples=2, inits=1)
    np.testing.assert_allclose(erf.std, [np.sqrt(2 * depth / 3)] * 2, rtol=1e-5)
    box = np.ones(3)
    for _ in range(depth - 1):
        box = np.convolve(box, np.ones(3))
    c = depth + 4  # centre of the (2 depth + 9)-pixel input
    np.testing.assert_allclose(
        erf.grad_map[c - depth : c + depth + 1, c - depth : c + depth + 1] / erf.grad_map.max(),
        np.outer(box, box) / box.max() ** 2,
        rtol=1e-5,
    )
    assert erf.field == (2 * depth + 1,) * 2 and erf.holes == 0


@pytest.mark.parametrize(
    "dilations, field, holes", [((1, 2, 4, 8), 31, 0.0), ((1, 2, 5, 9), 35, 0.0), ((2, 2, 2, 2), 17, 1 - 9**2 / 17**2)]
)
def test_gridding_leaves_holes_in_the_effective_field(dilations, field, holes):
    """Wang et al. 2018: dilations sharing a factor (2,2,2,2) see only every second offset; (1,2,4,8) and
    the hybrid schedule (1,2,5,9) reach every position of their theoretical field."""
    model = models.create("context_net", num_classes=1, features=4, dilations=dilations)
    erf = analysis.effective_receptive_field(model, (field + 4, field + 4, 1), samples=2, inits=2)
    assert erf.field == (field, field) and erf.holes == pytest.approx(holes)


@pytest.mark.slow
def test_translation_equivariance_of_the_conv_variants():
    x = jax.random.normal(KEY, (4, 24, 24, 1))
    errors = {}
    for kind in ("standard", "tiled", "local"):
        model = models.create("context_net", num_classes=3, features=4, dilations=(1, 1), conv=ConvSpec(kind, tile=2))
        variables = model.init(KEY, x)
        errors[kind] = {r.shift: r.feature_error for r in analysis.translation_response(model, variables, x, [1, 2, 4])}
    assert max(errors["standard"].values()) < 1e-5  # equivariant to every shift (stride 1)
    assert errors["tiled"][1] > 0.1 and errors["tiled"][2] < 1e-5  # only to multiples of the tile
    assert errors["tiled"][4] < 1e-5
    assert min(errors["local"].values()) > 0.1  # to none


def test_conv_variant_comparison_table():
    table = analysis.compare_conv_variants("lenet5", (28, 28, 1), 10)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert set(rows) == {"standard", "tiled t=2", "tiled t=4", "locally connected", "dilation 2"}
    assert "| 61,706 | 1.0 | 416,520 | 16x16 |" in rows["standard"]
    assert "| 416,520 |" in rows["locally connected"]  # same multiply-adds, unshared weights
