"""The training config: its fields and defaults (`default_config`), and the check of their values (`validate`),
run before any data is loaded or anything is traced."""

from __future__ import annotations

import ml_collections

from cnn_jax import models
from cnn_jax.data import CORRUPT_POLICIES, DATASETS, IMAGE_FOLDER
from cnn_jax.nn.conv import CONV_KINDS, CONV_PADDING_MODES
from cnn_jax.train.feed import PLACEMENTS
from cnn_jax.train.parallel import DISPATCH_FORMS
from cnn_jax.train.run_batch import RUN_FORMS

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
PARALLEL = ("shard_map", "pmap")
DTYPES = ("float32", "bfloat16")
SOURCES = ("auto", "memory", "files")


def default_config() -> ml_collections.ConfigDict:
    """Every field a training run reads, with its default; a config file starts from this and overrides
    what its run needs. Every field can be overridden from the command line, e.g.
    --config.train.batch_size=256; `validate` checks the values."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "mnist"  # a dataset held in memory (cnn_jax.data.DATASETS), a TFDS name, or "image_folder"
    # auto | memory | files: the whole split in host memory, or read from files as it trains (datasets larger
    # than memory: JPEGs decoded and augmented on the host; auto: memory for DATASETS, files for the others)
    c.dataset.source = "auto"
    c.dataset.image_folder = ""  # root of ROOT/train/<class>/*, ROOT/val/<class>/* when name is "image_folder"
    c.dataset.image_size = 224  # files: the training crop and the evaluation crop
    c.dataset.eval_resize = 0  # files: the shorter side before the evaluation crop; 0 = 256/224 of image_size
    c.dataset.readers = 8  # files: threads decoding and augmenting each process's examples
    c.dataset.on_corrupt = "stop"  # files: stop | skip a corrupt image (skip: replaced by the next, counted)
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
    c.model.conv.padding_mode = "zeros"  # zeros | circular | reflect: what padded convolutions pad with
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
    c.train.steps_per_dispatch = 16  # steps per dispatch from Python; the results do not depend on it
    # auto | scan | per_step: a dispatch's steps as one lax.scan program, or one program each (auto: per_step on
    # CPU devices, scan on accelerators; docs/performance.md has the measurements behind the choice)
    c.train.dispatch_form = "auto"
    # auto | vmap | sequential: how the runs of a run batch share a program (one vmapped step, or taking turns on
    # the single-run step; auto: sequential on CPU devices, vmap on accelerators; cnn_jax/train/run_batch.py)
    c.train.run_form = "auto"
    c.train.data_placement = "auto"  # auto | device | host: splits on the devices (auto: where they fit)
    # GPUs: compile with XLA's deterministic ops, so identical runs give identical numbers, at a cost
    # (docs/training.md); shard_map only. CPU runs are deterministic either way.
    c.train.deterministic = False
    c.train.log_every_steps = 100
    c.train.eval_every_epochs = 1
    # Checkpoints are written in the background, at the end, on SIGTERM/SIGUSR1, and every checkpoint_every_steps
    # steps if > 0, else at most every checkpoint_every_seconds of wall time.
    c.train.checkpoint_every_steps = 0
    c.train.checkpoint_every_seconds = 300.0
    c.train.keep_checkpoints = 3
    return c


def _choice(field: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"config.{field}={value!r}: unknown; valid values are {', '.join(map(str, valid))}")


def _positive(field: str, value, allow_zero: bool = False) -> None:
    if not (isinstance(value, (int, float)) and (value >= 0 if allow_zero else value > 0)):
        raise ValueError(f"config.{field}={value!r} must be a {'non-negative' if allow_zero else 'positive'} number")


def _get(config: ml_collections.ConfigDict, field: str):
    for key in field.split("."):
        config = config[key]
    return config


def reads_files(config: ml_collections.ConfigDict) -> bool:
    """Whether the dataset is read from files as it trains (dataset.source, resolved), not held in memory."""
    source = config.dataset.source
    return source == "files" or (source == "auto" and config.dataset.name not in DATASETS)


def _validate_files(d: ml_collections.ConfigDict) -> None:
    if d.name == IMAGE_FOLDER and not d.image_folder:
        raise ValueError(
            "config.dataset.name='image_folder' needs config.dataset.image_folder=ROOT, a directory holding "
            "ROOT/train/<class>/* and ROOT/val/<class>/*"
        )
    for field, value in (
        ("permute_positions", d.permute_positions),
        ("test_shift", d.test_shift),
        ("eval_shifts", tuple(d.eval_shifts)),
        ("augment.crop_padding", d.augment.crop_padding),
    ):
        if value:
            raise ValueError(
                f"config.dataset.{field}={value!r}: not available for a dataset read from files (dataset "
                f"{d.name!r}, source {d.source!r}), which is cropped at random on the host; leave it unset"
            )
    _choice("dataset.on_corrupt", d.on_corrupt, CORRUPT_POLICIES)
    for field in ("image_size", "readers"):
        if not (isinstance(d[field], int) and d[field] > 0):
            raise ValueError(f"config.dataset.{field}={d[field]!r} must be a positive integer")
    if not (isinstance(d.eval_resize, int) and (d.eval_resize == 0 or d.eval_resize >= d.image_size)):
        raise ValueError(
            f"config.dataset.eval_resize={d.eval_resize!r} must be 0 (256/224 of image_size) or at least "
            f"config.dataset.image_size={d.image_size}"
        )


def validate(config: ml_collections.ConfigDict, *, device_count: int, process_count: int = 1) -> None:
    """Raise ValueError naming the first bad field, its value and what would be valid."""
    _choice("dataset.source", config.dataset.source, SOURCES)
    if reads_files(config):
        _validate_files(config.dataset)
    else:
        _choice("dataset.name", config.dataset.name, DATASETS)
    _choice("model.name", config.model.name, models.names())
    _choice("model.conv.kind", config.model.conv.kind, CONV_KINDS)
    _choice("model.conv.padding_mode", config.model.conv.padding_mode, CONV_PADDING_MODES)
    _choice("optimizer.name", config.optimizer.name, OPTIMIZERS)
    _choice("optimizer.schedule", config.optimizer.schedule, SCHEDULES)
    _choice("train.parallel", config.train.parallel, PARALLEL)
    _choice("train.dtype", config.train.dtype, DTYPES)
    _choice("train.data_placement", config.train.data_placement, PLACEMENTS)
    _choice("train.dispatch_form", config.train.dispatch_form, DISPATCH_FORMS)
    _choice("train.run_form", config.train.run_form, RUN_FORMS)
    for field in (
        "optimizer.learning_rate",
        "train.batch_size",
        "train.eval_batch_size",
        "train.num_epochs",
        "train.log_every_steps",
        "train.keep_checkpoints",
        "train.steps_per_dispatch",
        "train.checkpoint_every_seconds",
    ):
        _positive(field, _get(config, field))
    for field in (
        "optimizer.weight_decay",
        "optimizer.warmup_steps",
        "optimizer.clip_norm",
        "optimizer.momentum",
        "train.num_steps",
        "train.checkpoint_every_steps",
        "dataset.augment.crop_padding",
    ):
        _positive(field, _get(config, field), allow_zero=True)
    if config.train.deterministic and config.train.parallel != "shard_map":
        raise ValueError(
            f"config.train.deterministic=True needs config.train.parallel='shard_map' (it is "
            f"{config.train.parallel!r}): jax.pmap takes no compiler options"
        )
    if not 0 <= config.train.label_smoothing < 1:
        raise ValueError(f"config.train.label_smoothing={config.train.label_smoothing!r} must be in [0, 1)")
    if config.dataset.augment.flip and not reads_files(config) and not DATASETS[config.dataset.name].flip:
        raise ValueError(
            f"config.dataset.augment.flip=True: a horizontal flip changes the label of "
            f"{config.dataset.name!r} examples; flip is valid for "
            f"{', '.join(n for n, d in DATASETS.items() if d.flip)}"
        )
    for field in ("batch_size", "eval_batch_size"):
        batch = config.train[field]
        if batch % device_count:
            raise ValueError(
                f"config.train.{field}={batch} is not divisible by the {device_count} devices; "
                f"use a multiple of {device_count}"
            )
        if batch % process_count:
            raise ValueError(f"config.train.{field}={batch} is not divisible by the {process_count} processes")
