"""ResNet-18 on a folder of images in torchvision's ImageFolder layout, read from disk as it trains.

    python -m experiments.train --config=experiments/configs/resnet18_image_folder.py \
        --config.dataset.image_folder=ROOT --workdir=runs/resnet18_folder

ROOT holds ROOT/train/<class>/*.JPEG and ROOT/val/<class>/*.JPEG (ImageNet's or Imagenette's extracted tree, for
example); classes are sorted as torchvision sorts them, so its label indices carry over. The recipe is
torchvision's for ResNet-18 (batch 256, SGD 0.1 with momentum 0.9, weight decay 1e-4, 90 epochs, the learning rate
divided by 10 every 30 epochs), with its random-resized crops and flips at 224 px and the 256 / 224 centre crop
for evaluation. On ImageNet it is the run behind torchvision's ResNet-18 V1 weights, days on one GPU; smaller
trees (Imagenette) take --config.dataset.image_size=160 or less, and fewer epochs. No expected result is stated
here: ImageNet accuracies are not yet in cnn_jax/report/published.py.
"""

from cnn_jax.train.config import default_config


def get_config():
    c = default_config()
    c.dataset.name = "image_folder"
    c.dataset.image_size = 224
    c.dataset.augment.flip = True
    c.model.name = "resnet18"
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "step"
    c.optimizer.decay_boundaries = (1 / 3, 2 / 3)
    c.train.batch_size = 256
    c.train.eval_batch_size = 250
    c.train.num_epochs = 90
    c.train.checkpoint_every_seconds = 600.0
    return c
