"""A small ResNet-style backbone (He et al. 2016 CIFAR layout, one basic block per stage: ResNet-8)
for 28x28 images; the conv-variant study uses it beside LeNet-5.

    python -m experiments.train --config=experiments/configs/resnet8_images.py --workdir=runs/resnet8_mnist \
        --config.dataset.download_dir=../shared/datasets

Expected: 99.54 +- 0.03% test accuracy on MNIST, 92.94 +- 0.07% on Fashion-MNIST (--config.dataset.name=
fashion_mnist), 3 seeds (measured; docs/results.md). About 10 minutes per run on 2 CPU cores;
2 minutes on one H200 shared by 12 such runs.
"""

from cnn_jax.train.config import default_config


def get_config():
    c = default_config()
    c.dataset.name = "mnist"
    c.model.name = "resnet8"
    c.model.options.norm = "batch"
    c.model.options.blur_size = 0  # > 0: anti-aliased downsampling (Zhang 2019; experiments/shift.py)
    c.optimizer.learning_rate = 0.1
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 5e-4
    c.optimizer.warmup_steps = 200
    c.train.num_epochs = 10
    return c
