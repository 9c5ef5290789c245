"""Defaults every training config starts from; a config file overrides what its run needs.

Every field can be overridden from the command line, e.g. --config.train.batch_size=256.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "mnist"
    c.dataset.data_dir = ""  # TFDS data directory; "" = $TFDS_DATA_DIR or TFDS's default
    c.dataset.download_dir = ""  # raw downloads as <dir>/<dataset>/<file>; "" = $CNN_JAX_DOWNLOAD_DIR or network
    c.dataset.permute_positions = False
    c.dataset.permutation_seed = 0
    c.dataset.test_shift = 0  # translate test inputs by this many pixels along the width
    c.dataset.eval_shifts = ()  # after training, also evaluate on test inputs shifted by each of these
    c.dataset.augment = ml_collections.ConfigDict()
    c.dataset.augment.crop_padding = 0  # random translation by up to this many pixels (zero-pad + crop)
    c.dataset.augment.flip = False

    c.model = ml_collections.ConfigDict()
    c.model.name = "lenet5"
    c.model.conv = ml_collections.ConfigDict()
    c.model.conv.kind = "standard"  # standard | tiled | local
    c.model.conv.tile = 2
    c.model.conv.dilation = 1
    c.model.conv.flip = False
    c.model.options = ml_collections.ConfigDict()  # passed to the model's constructor

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"  # sgd | adam | adamw
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.weight_decay = 0.0
    c.optimizer.schedule = "cosine"  # constant | cosine | step
    c.optimizer.warmup_steps = 0
    c.optimizer.decay_boundaries = (0.5, 0.75)  # fractions of training (step schedule)
    c.optimizer.decay_factor = 0.1
    c.optimizer.clip_norm = 0.0  # global-norm clipping; 0 = off

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 128  # global: the math does not depend on the device count
    c.train.eval_batch_size = 1000
    c.train.num_epochs = 10
    c.train.num_steps = 0  # if > 0, train this many steps instead of num_epochs
    c.train.label_smoothing = 0.0
    c.train.dtype = "float32"  # float32 | bfloat16 (compute; parameters stay float32)
    c.train.parallel = "shard_map"  # shard_map | pmap
    c.train.steps_per_dispatch = 16  # steps per compiled program (lax.scan); the results do not depend on it
    c.train.data_placement = "auto"  # auto | device | host: splits on the devices (auto: where they fit)
    c.train.log_every_steps = 100
    c.train.eval_every_epochs = 1
    c.train.checkpoint_every_steps = 0  # 0 = at the end of every epoch
    c.train.keep_checkpoints = 3
    return c
