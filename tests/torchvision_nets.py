"""torchvision's ImageNet networks, rewritten layer by layer from torchvision/models/{alexnet,vgg,resnet,googlenet}.py.

torchvision itself cannot be installed beside the CPU build of torch, so these are the reference: the
same modules, names (hence state_dict keys), padding, BatchNorm epsilon, pooling (ceil_mode included)
and flatten order. Only inference is needed, so dropout and weight initialisation are left out.
The antialiased ResNets are written the same way from Zhang's antialiased-cnns 0.3
(github.com/adobe/antialiased-cnns, antialiased_cnns/{blurpool,resnet}.py, tag v0.3).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


VGG_CONFIGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, depth: int, batch_norm: bool, num_classes: int = 1000):
        super().__init__()
        layers, channels = [], 3
        for v in VGG_CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
            layers += [nn.BatchNorm2d(v), nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(inplace=True)]
            channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, planes, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """v1.5: the stride is in the 3x3 convolution."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = conv1x1(cin, planes), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = conv1x1(planes, planes * 4), nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(out)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, block: type, layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class BlurPool(nn.Module):
    """antialiased_cnns.BlurPool: reflection padding (f - 1) // 2 before, ceil((f - 1) / 2) after, then the
    depthwise binomial filter `filt` (channels, 1, f, f) at `stride`; filt_size 1 only subsamples."""

    def __init__(self, channels: int, filt_size: int = 4, stride: int = 2):
        super().__init__()
        self.filt_size, self.stride = filt_size, stride
        a = np.array([math.comb(filt_size - 1, k) for k in range(filt_size)], np.float64)
        filt = torch.Tensor(a[:, None] * a[None, :])
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))
        self.pad = nn.ReflectionPad2d([(filt_size - 1) // 2, filt_size // 2] * 2)

    def forward(self, x):
        if self.filt_size == 1:
            return x[:, :, :: self.stride, :: self.stride]
        return nn.functional.conv2d(self.pad(x), self.filt, stride=self.stride, groups=x.shape[1])


class AntialiasedBasicBlock(BasicBlock):
    """conv1 at stride 1; a subsampling block blurs before conv2: conv2 = Sequential(BlurPool, conv3x3)."""

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample=None, filter_size: int = 4):
        super().__init__(cin, planes, 1, downsample)
        if stride != 1:
            self.conv2 = nn.Sequential(BlurPool(planes, filter_size, stride), conv3x3(planes, planes))


class AntialiasedBottleneck(Bottleneck):
    """conv2 at stride 1; a subsampling block blurs before conv3: conv3 = Sequential(BlurPool, conv1x1)."""

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample=None, filter_size: int = 4):
        super().__init__(cin, planes, 1, downsample)
        if stride != 1:
            self.conv3 = nn.Sequential(BlurPool(planes, filter_size, stride), conv1x1(planes, planes * 4))


class AntialiasedResNet(ResNet):
    """pool_only=True (the published weights): the 7x7 stem keeps stride 2, maxpool = Sequential(MaxPool2d(2,
    stride=1), BlurPool); a subsampling shortcut is Sequential(BlurPool, conv1x1, BatchNorm2d)."""

    def __init__(self, block: type, layers: list[int], num_classes: int = 1000, filter_size: int = 4):
        self.filter_size = filter_size  # read by _make_layer, which ResNet.__init__ calls
        super().__init__(block, layers, num_classes)
        self.maxpool = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=1), BlurPool(64, filter_size, 2))

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            blur = [BlurPool(self.inplanes, self.filter_size, stride)] if stride != 1 else []
            downsample = nn.Sequential(
                *blur, conv1x1(self.inplanes, planes * block.expansion), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.filter_size)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, filter_size=self.filter_size) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """branch5x5_kernel=3 is torchvision's (its "known bug", pytorch/vision#906); 5 is the paper's."""

    def __init__(self, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, branch5x5_kernel=3):
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(cin, ch3x3red, kernel_size=1), BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1)
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(cin, ch5x5red, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=branch5x5_kernel, padding=branch5x5_kernel // 2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True), BasicConv2d(cin, pool_proj, kernel_size=1)
        )

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.conv = BasicConv2d(cin, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = torch.flatten(self.conv(nn.functional.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(torch.relu(self.fc1(x)))


class GoogLeNet(nn.Module):
    """`forward` returns (logits, aux1, aux2), the auxiliary logits computed in eval mode too, to test them."""

    def __init__(
        self,
        num_classes: int = 1000,
        branch5x5_kernel: int = 3,
        aux_logits: bool = False,
        transform_input: bool = False,
    ):
        super().__init__()
        self.transform_input = transform_input
        inception = lambda *widths: Inception(*widths, branch5x5_kernel=branch5x5_kernel)
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, num_classes) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(1024, num_classes)

    def _transform_input(self, x):
        if not self.transform_input:
            return x
        channels = [
            x[:, c : c + 1] * (std / 0.5) + (mean - 0.5) / 0.5
            for c, (mean, std) in enumerate([(0.485, 0.229), (0.456, 0.224), (0.406, 0.225)])
        ]
        return torch.cat(channels, 1)

    def forward(self, x):
        x = self.maxpool1(self.conv1(self._transform_input(x)))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return self.fc(torch.flatten(self.avgpool(x), 1)), aux1, aux2


def build(name: str, num_classes: int = 1000, **options) -> nn.Module:
    """The reference network registered in cnn_jax as `name`, in eval mode."""
    builders = {
        "alexnet": lambda: AlexNet(num_classes),
        "vgg11": lambda: VGG(11, False, num_classes),
        "vgg11_bn": lambda: VGG(11, True, num_classes),
        "vgg16": lambda: VGG(16, False, num_classes),
        "resnet18": lambda: ResNet(BasicBlock, [2, 2, 2, 2], num_classes),
        "resnet50": lambda: ResNet(Bottleneck, [3, 4, 6, 3], num_classes),
        "googlenet": lambda: GoogLeNet(num_classes, **options),
    }
    return builders[name]().eval()


def build_antialiased(name: str, filter_size: int, num_classes: int = 1000) -> nn.Module:
    """antialiased-cnns' ResNet `name` (resnet18/34/50) with `filter_size`, in eval mode."""
    blocks = {
        "resnet18": (AntialiasedBasicBlock, [2, 2, 2, 2]),
        "resnet34": (AntialiasedBasicBlock, [3, 4, 6, 3]),
        "resnet50": (AntialiasedBottleneck, [3, 4, 6, 3]),
    }
    return AntialiasedResNet(*blocks[name], num_classes, filter_size).eval()


@torch.no_grad()
def randomise(net: nn.Module, generator: torch.Generator) -> None:
    """Random weights that keep activations of order one, with BatchNorm made to matter.

    Running variances lie in [0.05, 1], where BatchNorm's epsilon (1e-3 against 1e-5) changes a
    channel's gain by up to 1%; the scale is drawn relative to sqrt(var) so the gain stays near one.
    """
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
            if module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
        elif isinstance(module, nn.BatchNorm2d):
            shape = module.weight.shape
            module.running_var.copy_(0.05 + 0.95 * torch.rand(shape, generator=generator))
            module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
            module.weight.copy_((0.5 + torch.rand(shape, generator=generator)) * module.running_var.sqrt())
            module.bias.copy_(0.1 * torch.randn(shape, generator=generator))
