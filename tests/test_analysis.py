"""Receptive fields read off the traced model: published values and a brute-force measurement."""
import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import analysis, models, nn as cnn
from cnn_jax.nn import ConvSpec

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("name, shape, size", [
    ("alexnet", (224, 224, 3), 195),   # Araujo et al. 2019, Table: AlexNet pool5
    ("vgg16", (224, 224, 3), 212),     # Araujo et al. 2019: VGG-16 pool5
    ("context_net", (80, 80, 3), 67),  # Yu & Koltun 2016, Table 1: basic context module
])
def test_published_receptive_fields(name, shape, size):
    field = analysis.model_receptive_field(models.create(name, num_classes=10), shape)
    assert [f.size for f in field] == [size, size]


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


@pytest.mark.parametrize("name, shape, options", [
    # Inputs larger than the field, so the measured span is not just the whole image.
    ("resnet20", (96, 96, 3), {}),
    ("resnet20", (96, 96, 3), {"conv": ConvSpec("tiled", tile=2)}),
    ("context_net", (24, 24, 1), {"features": 4, "dilations": (1, 2, 4), "conv": ConvSpec("local")}),
    ("context_net", (72, 72, 1), {"features": 4}),
    ("context_net", (48, 48, 1), {"features": 4, "dilations": (1, 2, 5, 9)}),
    ("context_net", (40, 40, 1), {"features": 4, "dilations": (2, 2, 2, 2)}),
    ("cnn1d", (40, 1), {}),
])
def test_receptive_field_matches_brute_force(name, shape, options):
    model = models.create(name, num_classes=2, **options)
    field = analysis.model_receptive_field(model, shape)
    measured, centre = _measured_span(model, shape)
    for f, (lo, hi), u, n in zip(field, measured, centre, shape[:-1]):
        start, stop = f.span(u)
        assert (lo, hi) == (max(start, 0), min(stop, n - 1)), (f, u)
        assert (lo, hi) != (0, n - 1), "the field should fit inside the input"
