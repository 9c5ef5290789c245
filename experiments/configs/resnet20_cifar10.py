"""ResNet-20 on CIFAR-10 as in He et al. 2016 (SGD 0.1, momentum 0.9, wd 1e-4, 4-pixel crops, flips).

    python -m experiments.train --config=experiments/configs/resnet20_cifar10.py --workdir=runs/resnet20_cifar10

Needs the CIFAR-10 download (network, or cifar-10-binary.tar.gz under <download_dir>/cifar10/) and
accelerator time: 182 epochs are hours on a GPU. Expected: He et al.'s accuracy (cnn_jax/report/published.py).
"""

from cnn_jax.train.config import default_config


def get_config():
    c = default_config()
    c.dataset.name = "cifar10"
    c.dataset.augment.crop_padding = 4
    c.dataset.augment.flip = True
    c.model.name = "resnet20"
    c.optimizer.learning_rate = 0.1
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "step"
    c.optimizer.decay_boundaries = (0.5, 0.75)
    c.train.num_epochs = 182
    return c
