"""Per-layer summary of a model from the command line.

    python -m cnn_jax.analysis --model=resnet50 --input=224,224,3 [--conv=tiled --tile=2] [--dilation=2]
    python -m cnn_jax.analysis --model=lenet5 --input=28,28,1 --num_classes=10 --compare

Prints a Markdown table: output shape, parameters, multiply-adds, receptive field, effective
stride and effective padding per layer, and the totals with XLA's FLOP count.
"""

from absl import app, flags

from cnn_jax import models
from cnn_jax.analysis import compare_conv_variants, summarize
from cnn_jax.compile_cache import enable_compile_cache
from cnn_jax.console import quiet_libraries
from cnn_jax.nn import CONV_KINDS, ConvSpec

MODEL = flags.DEFINE_string("model", "resnet20", "model name (cnn_jax.models.names())")
INPUT = flags.DEFINE_list("input", ["32", "32", "3"], "input shape without batch, e.g. 224,224,3")
NUM_CLASSES = flags.DEFINE_integer("num_classes", 1000, "number of classes")
CONV = flags.DEFINE_enum("conv", "standard", CONV_KINDS, "convolution variant")
TILE = flags.DEFINE_integer("tile", 2, "tile period for --conv=tiled")
DILATION = flags.DEFINE_integer("dilation", 1, "kernel dilation of layers that do not set their own")
COMPARE = flags.DEFINE_bool("compare", False, "instead, compare params, MACs and receptive field across conv variants")


def main(argv):
    del argv
    quiet_libraries()
    enable_compile_cache()
    shape = tuple(int(v) for v in INPUT.value)
    if COMPARE.value:
        print(compare_conv_variants(MODEL.value, shape, NUM_CLASSES.value))
        return
    model = models.create(
        MODEL.value, num_classes=NUM_CLASSES.value, conv=ConvSpec(CONV.value, tile=TILE.value, dilation=DILATION.value)
    )
    print(summarize(model, shape).to_markdown())


if __name__ == "__main__":
    app.run(main)
