"""Model zoo: `create(name, num_classes=..., conv=ConvSpec(...), **options)` and `names()`.

Every model is a linen Module called as `model.apply(variables, x, train=...)` on NHWC (or NWC)
inputs, composes cnn_jax.nn modules only, and builds its convolutions from a ConvSpec, so the
standard / tiled / locally connected / dilated variant is one configuration value.
`from_torch_state_dict(name, state_dict)` brings torchvision weights into the ImageNet models, and
`to_nnx(model, variables)` puts any model into flax NNX code.
"""

from cnn_jax.models import alexnet, context, inception, lenet, resnet, small, vgg  # noqa: F401 (registers them)
from cnn_jax.models.nnx_interop import to_nnx
from cnn_jax.models.registry import create, names, register
from cnn_jax.models.torch_weights import from_torch_state_dict

__all__ = ["create", "from_torch_state_dict", "names", "register", "to_nnx"]
