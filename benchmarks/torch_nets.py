"""cnn_jax's lenet5, resnet20 and resnet50 in PyTorch (NCHW), with the same parameter counts, for the benchmarks.

Written without torchvision so that only `torch` is needed. The architectures are cnn_jax's; the only
difference is where the strided 3x3 convolutions of resnet50 pad (torch pads 1 on each side, cnn_jax's
"SAME" pads (0, 1)): same output sizes, same cost. Initialisation is PyTorch's default.

    from benchmarks.torch_nets import NETS
    net = NETS["resnet50"](torch, num_classes=1000)
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


def lenet5(torch: ModuleType, num_classes: int = 10) -> Any:
    """conv 6@5x5 (pad 2) - max-pool 2 - conv 16@5x5 - max-pool 2 - dense 120 - 84 - classes (ReLU); 28x28x1 in."""
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2),
        tnn.ReLU(),
        tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5),
        tnn.ReLU(),
        tnn.MaxPool2d(2),
        tnn.Flatten(),
        tnn.Linear(400, 120),
        tnn.ReLU(),
        tnn.Linear(120, 84),
        tnn.ReLU(),
        tnn.Linear(84, num_classes),
    )


def resnet20(torch: ModuleType, num_classes: int = 10) -> Any:
    """CIFAR ResNet-20 with the parameter-free shortcut (option A: subsample, zero-pad the channels)."""
    tnn, F = torch.nn, torch.nn.functional

    class Block(tnn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.stride, self.extra = stride, cout - cin
            self.c1, self.b1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False), tnn.BatchNorm2d(cout)
            self.c2, self.b2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False), tnn.BatchNorm2d(cout)

        def forward(self, x):
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            if self.extra:
                x = F.pad(
                    x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2)
                )
            return F.relu(y + x)

    widths = [(16, 16)] * 3 + [(16, 32)] + [(32, 32)] * 2 + [(32, 64)] + [(64, 64)] * 2
    blocks = [Block(cin, cout, 2 if cin != cout else 1) for cin, cout in widths]
    return tnn.Sequential(
        tnn.Conv2d(3, 16, 3, padding=1, bias=False),
        tnn.BatchNorm2d(16),
        tnn.ReLU(),
        *blocks,
        tnn.AdaptiveAvgPool2d(1),
        tnn.Flatten(),
        tnn.Linear(64, num_classes),
    )


def resnet50(torch: ModuleType, num_classes: int = 1000) -> Any:
    """ImageNet ResNet-50 in torchvision's v1.5 layout: 7x7/2 stem, 3x3/2 max-pool, bottlenecks striding in the 3x3."""
    tnn, F = torch.nn, torch.nn.functional

    class Bottleneck(tnn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            self.c1, self.b1 = tnn.Conv2d(cin, width, 1, bias=False), tnn.BatchNorm2d(width)
            self.c2, self.b2 = tnn.Conv2d(width, width, 3, stride, 1, bias=False), tnn.BatchNorm2d(width)
            self.c3, self.b3 = tnn.Conv2d(width, 4 * width, 1, bias=False), tnn.BatchNorm2d(4 * width)
            self.project = None
            if stride != 1 or cin != 4 * width:
                self.project = tnn.Sequential(
                    tnn.Conv2d(cin, 4 * width, 1, stride, bias=False), tnn.BatchNorm2d(4 * width)
                )

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            y = F.relu(self.b2(self.c2(y)))
            y = self.b3(self.c3(y))
            return F.relu(y + (x if self.project is None else self.project(x)))

    layers, cin = [], 64
    for stage, blocks in enumerate((3, 4, 6, 3)):
        width = 64 * 2**stage
        for b in range(blocks):
            layers.append(Bottleneck(cin, width, 2 if stage and not b else 1))
            cin = 4 * width
    return tnn.Sequential(
        tnn.Conv2d(3, 64, 7, 2, 3, bias=False),
        tnn.BatchNorm2d(64),
        tnn.ReLU(),
        tnn.MaxPool2d(3, 2, 1),
        *layers,
        tnn.AdaptiveAvgPool2d(1),
        tnn.Flatten(),
        tnn.Linear(cin, num_classes),
    )


NETS = {"lenet5": lenet5, "resnet20": resnet20, "resnet50": resnet50}
