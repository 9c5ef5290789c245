"""cnn_jax's ImageNet models compute torchvision's functions: torchvision's weights, converted by
`models.from_torch_state_dict`, give the same eval-mode logits as the PyTorch reference networks
(tests/torchvision_nets.py, written from torchvision's definitions)."""

import functools

import jax
import numpy as np
import pytest
from flax import traverse_util
from helpers import TORCH_MISSING

from cnn_jax import models
from cnn_jax.models.common import ceil_mode_padding
from cnn_jax.models.inception import AuxHead

torch = pytest.importorskip("torch", reason=TORCH_MISSING)
import torchvision_nets  # noqa: E402  (PyTorch's networks: only where PyTorch is)

RTOL = 1e-4  # of the largest logit
# The models with a torchvision counterpart; the converter must take every one of them.
TORCHVISION_NAMES = {
    "alexnet",
    "googlenet",
    "resnet18",
    "resnet34",
    "resnet50",
    *(f"vgg{d}{s}" for d in (11, 13, 16, 19) for s in ("", "_bn")),
}


@pytest.fixture(autouse=True)
def float32_exact():
    torch.use_deterministic_algorithms(True)
    with jax.default_matmul_precision("highest"):
        yield


def reference(name: str, seed: int = 0, num_classes: int = 1000, **options) -> torch.nn.Module:
    net = torchvision_nets.build(name, num_classes, **options)
    torchvision_nets.randomise(net, torch.Generator().manual_seed(seed))
    return net


def images(batch: int, size: int) -> np.ndarray:
    """NCHW float32 images."""
    return np.random.default_rng(1).standard_normal((batch, 3, size, size)).astype(np.float32)


def cnn_jax_outputs(name: str, net: torch.nn.Module, x: np.ndarray, capture=None, **options):
    variables = models.from_torch_state_dict(name, net.state_dict(), **options)
    model = models.create(name, num_classes=1000, **options)
    return model.apply(variables, x.transpose(0, 2, 3, 1), train=False, capture_intermediates=capture or False)


def assert_same_logits(ours, theirs):
    ours, theirs = np.asarray(ours), theirs.numpy()
    scale = np.abs(theirs).max()
    assert scale > 0
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=RTOL * scale)


def check(name: str, size: int, batch: int = 2, **options):
    net = reference(name)
    x = images(batch, size)
    with torch.no_grad():
        theirs = net(torch.from_numpy(x))
    assert_same_logits(cnn_jax_outputs(name, net, x, **options), theirs)


@pytest.mark.parametrize(
    "name, size, batch",
    [
        ("alexnet", 224, 2),
        ("vgg11", 224, 1),
        ("vgg11_bn", 224, 1),
        ("resnet18", 224, 2),
        ("resnet18", 97, 2),
        pytest.param("vgg16", 224, 1, marks=pytest.mark.slow),
        pytest.param("resnet50", 224, 1, marks=pytest.mark.slow),
    ],
)
def test_logits_match_torchvision(name, size, batch):
    check(name, size, batch)


# 248 makes every ceil_mode pool matter: 124 -> 62 -> 31 -> 15 -> 8 (floor mode: 123, 61, 30, 15, 7; "SAME"
# differs at the odd sizes); 224 is torchvision's input size.
@pytest.mark.parametrize(
    "branch5x5_kernel, size",
    [pytest.param(3, 224, marks=pytest.mark.slow), pytest.param(5, 248, marks=pytest.mark.slow)],
)
def test_googlenet_logits_and_aux_heads_match_torchvision(branch5x5_kernel, size):
    net = reference("googlenet", branch5x5_kernel=branch5x5_kernel, aux_logits=True)
    x = images(1, size)
    with torch.no_grad():
        logits, aux1, aux2 = net(torch.from_numpy(x))
    ours, state = cnn_jax_outputs(
        "googlenet",
        net,
        x,
        capture=lambda module, _: isinstance(module, AuxHead),
        branch5x5_kernel=branch5x5_kernel,
        aux_heads=True,
    )
    assert_same_logits(ours, logits)
    assert_same_logits(state["intermediates"]["aux_4a"]["__call__"][0], aux1)
    assert_same_logits(state["intermediates"]["aux_4d"]["__call__"][0], aux2)


@pytest.mark.slow
def test_googlenet_transform_input_and_epsilon():
    """torchvision's pretrained GoogLeNet sets transform_input; its BatchNorm epsilon is 1e-3, and with
    the random running variances here 1e-5 would change the logits far beyond the tolerance."""
    net = torchvision_nets.build("googlenet", transform_input=True)
    torchvision_nets.randomise(net, torch.Generator().manual_seed(0))
    x = images(1, 224)
    with torch.no_grad():
        theirs = net(torch.from_numpy(x))[0]
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eps = 1e-5
        other_epsilon = net(torch.from_numpy(x))[0]
    assert_same_logits(cnn_jax_outputs("googlenet", net, x, branch5x5_kernel=3, transform_input=True), theirs)
    assert np.abs((other_epsilon - theirs).numpy()).max() > 10 * RTOL * np.abs(theirs.numpy()).max()


@pytest.mark.parametrize("window, stride, padding", [(3, 2, 0), (2, 2, 0), (3, 1, 1), (3, 2, 1), (3, 3, 1)])
def test_ceil_mode_padding_gives_pytorch_ceil_mode_windows(window, stride, padding):
    for n in range(max(window - 2 * padding, 1), 20):
        x = torch.arange(float(n)).reshape(1, 1, n)
        theirs = torch.nn.functional.max_pool1d(x, window, stride, padding, ceil_mode=True)[0, 0].numpy()
        lo, hi = ceil_mode_padding(n, window, stride, padding)
        padded = np.concatenate([np.full(lo, -np.inf), np.arange(float(n)), np.full(hi, -np.inf)])
        count = (len(padded) - window) // stride + 1
        ours = [padded[i * stride : i * stride + window].max() for i in range(count)]
        np.testing.assert_array_equal(ours, theirs, err_msg=f"n={n}")


def test_every_torchvision_model_in_the_registry_converts():
    """A registered ImageNet model the converter does not know is a failure, not a skip."""
    imagenet = {
        name
        for name in models.names()
        if name.startswith(("alexnet", "vgg", "resnet", "googlenet"))
        and not name.endswith("_cifar")
        and name not in {f"resnet{d}" for d in (8, 20, 32, 44, 56, 110)}
    }
    assert imagenet == TORCHVISION_NAMES
    net = reference("resnet18", num_classes=10)
    variables = models.from_torch_state_dict("resnet18", net.state_dict(), num_classes=10)
    assert set(variables) == {"params", "batch_stats"}
    kernel = variables["params"]["stage2_block1"]["conv1"]["kernel"]
    np.testing.assert_array_equal(kernel, net.layer2[0].conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        variables["batch_stats"]["stage2_block1"]["shortcut_norm"]["var"],
        net.layer2[0].downsample[1].running_var.numpy(),
    )


@pytest.fixture(scope="module")
def resnet18_state():
    return torchvision_nets.build("resnet18", 10).state_dict()


def test_missing_key_is_named(resnet18_state):
    state = {k: v for k, v in resnet18_state.items() if k != "layer3.1.bn2.running_var"}
    with pytest.raises(
        ValueError,
        match=r"missing 'layer3.1.bn2.running_var' \(for cnn_jax "
        r"batch_stats/stage3_block2/norm2/var\)",
    ):
        models.from_torch_state_dict("resnet18", state, num_classes=10)


def test_extra_key_is_named(resnet18_state):
    state = {**resnet18_state, "layer5.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected 'layer5.0.conv1.weight'"):
        models.from_torch_state_dict("resnet18", state, num_classes=10)


def test_wrong_shape_is_named(resnet18_state):
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \(10, 512\), expected \(1000, 512\)"):
        models.from_torch_state_dict("resnet18", resnet18_state)


def test_model_without_torchvision_counterpart_is_refused(resnet18_state):
    with pytest.raises(ValueError, match=r"model 'resnet20' has no torchvision counterpart; valid names are alexnet"):
        models.from_torch_state_dict("resnet20", resnet18_state)


def antialiased_reference(name: str, filter_size: int, num_classes: int = 1000) -> torch.nn.Module:
    net = torchvision_nets.build_antialiased(name, filter_size, num_classes)
    torchvision_nets.randomise(net, torch.Generator().manual_seed(0))
    return net


# 64 is the smallest size at which every filter size reflects (layer4 blurs 4x4 maps); 75 makes the maps the
# stem and layer3 blur odd (37, 5), so the padding's asymmetry and ceil(n / 2) count.
@pytest.mark.parametrize(
    "name, filter_size, size",
    [
        ("resnet18", 4, 64),
        ("resnet18", 3, 75),
        ("resnet18", 1, 64),
        pytest.param("resnet18", 7, 75, marks=pytest.mark.slow),
        pytest.param("resnet50", 3, 32, marks=pytest.mark.slow),
        pytest.param("resnet50", 4, 75, marks=pytest.mark.slow),
    ],
)
def test_logits_match_antialiased_cnns(name, filter_size, size):
    """Zhang's published state_dicts (antialiased-cnns 0.3 naming) load into blur_size=filter_size."""
    net = antialiased_reference(name, filter_size)
    x = images(2, size)
    with torch.no_grad():
        theirs = net(torch.from_numpy(x))
    variables = models.from_torch_state_dict(name, net.state_dict(), blur_size=filter_size)
    model = models.create(name, num_classes=1000, blur_size=filter_size)
    # One program: run eagerly, every blur's strided slices compile one by one (resnet18: 8 s against 2 s).
    apply = jax.jit(functools.partial(model.apply, train=False))
    assert_same_logits(apply(variables, x.transpose(0, 2, 3, 1)), theirs)


def test_antialiased_names_map_to_the_blurred_layers_and_filters_are_not_loaded():
    net = torchvision_nets.build_antialiased("resnet50", 4, num_classes=10)
    variables = models.from_torch_state_dict("resnet50", net.state_dict(), num_classes=10, blur_size=4)
    model = models.create("resnet50", num_classes=10, blur_size=4)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3))))
    assert set(traverse_util.flatten_dict(variables)) == set(traverse_util.flatten_dict(dict(shapes)))
    block = variables["params"]["stage2_block1"]
    np.testing.assert_array_equal(
        block["conv3"]["kernel"], net.layer2[0].conv3[1].weight.detach().numpy().transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(block["shortcut_norm"]["scale"], net.layer2[0].downsample[2].weight.detach().numpy())
    # layer1's projection does not subsample: no BlurPool, torchvision's names.
    np.testing.assert_array_equal(
        variables["batch_stats"]["stage1_block1"]["shortcut_norm"]["mean"],
        net.layer1[0].downsample[1].running_mean.numpy(),
    )


@pytest.fixture(scope="module")
def antialiased_state():
    return torchvision_nets.build_antialiased("resnet18", 4, num_classes=10).state_dict()


def test_wrong_blur_filter_is_named(antialiased_state):
    filt = antialiased_state["layer3.0.conv2.0.filt"].clone()
    filt[5] = 1 / 16
    state = {**antialiased_state, "layer3.0.conv2.0.filt": filt}
    with pytest.raises(
        ValueError,
        match=r"'layer3.0.conv2.0.filt' is not blur_size=4's binomial filter in 1 of 256 channels: "
        r"channel 5 holds \[\[0.0625, .*expected \[\[0.015625, 0.046875, 0.046875, 0.015625\], ",
    ):
        models.from_torch_state_dict("resnet18", state, num_classes=10, blur_size=4)


def test_other_blur_size_is_named(antialiased_state):
    with pytest.raises(
        ValueError,
        match=r"'maxpool.1.filt' has shape \(64, 1, 4, 4\), expected \(64, 1, 3, 3\): blur_size=3's filter "
        r"per channel \(a state_dict for blur_size=4\?\)",
    ):
        models.from_torch_state_dict("resnet18", antialiased_state, num_classes=10, blur_size=3)


def test_missing_blur_filter_is_named(antialiased_state):
    state = {k: v for k, v in antialiased_state.items() if k != "layer4.0.downsample.0.filt"}
    with pytest.raises(ValueError, match=r"missing 'layer4.0.downsample.0.filt' \(a BlurPool filter, checked"):
        models.from_torch_state_dict("resnet18", state, num_classes=10, blur_size=4)


def test_antialiased_state_without_blur_size_names_its_tensors_and_the_option(antialiased_state):
    with pytest.raises(ValueError) as error:
        models.from_torch_state_dict("resnet18", antialiased_state, num_classes=10)
    message = str(error.value)
    assert "missing 'layer2.0.conv2.weight' (for cnn_jax params/stage2_block1/conv2/kernel)" in message
    assert "unexpected 'layer2.0.conv2.1.weight'" in message
    assert "'layer2.0.downsample.1.weight' has shape (128, 64, 1, 1), expected (128,)" in message
    assert message.endswith("'maxpool.1.filt' is an antialiased-cnns BlurPool filter of 4 taps: load with blur_size=4")


def test_converted_weights_run_in_nnx_code(resnet18_state):
    """torchvision's weights into the bridged model: NNX's call gives the linen model's eval-mode logits, which
    test_logits_match_torchvision checks against PyTorch."""
    variables = models.from_torch_state_dict("resnet18", resnet18_state, num_classes=10)
    model = models.create("resnet18", num_classes=10)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    net = models.to_nnx(model, variables)
    # The bridge adds no arithmetic, but XLA may fuse the two programs differently: a few float32 ulps apart.
    np.testing.assert_allclose(
        jax.jit(lambda x: net(x, train=False))(x),
        jax.jit(lambda x: model.apply(variables, x, train=False))(x),
        rtol=1e-5,
        atol=1e-7,
    )
