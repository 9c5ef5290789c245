"""What a command prints: the library notices that are not the user's concern are kept off the console."""

from __future__ import annotations

import logging as python_logging
import os

from absl import logging

# TensorFlow (imported only to prepare image datasets) prints oneDNN and CPU-feature notices from C++. The oneDNN
# one is printed before TF's log level applies, so its cause goes: oneDNN's custom TF ops, which only change TF's
# own numerics, and TF computes nothing here but the preparation's decoding.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# Notices that are not the user's concern, as (where the record comes from, the lowest level still shown):
# orbax logs every checkpoint step; jax says it found no TPU, and that it resets its compilation cache (when
# cnn_jax points it at its own directory); TFDS says a dataset it is about to prepare has no dataset_info.json
# yet, and that it does not know a download's size.
_QUIET = (
    ("/orbax/", python_logging.WARNING),
    ("/jax/_src/xla_bridge", python_logging.WARNING),
    ("/jax/_src/compilation_cache", python_logging.WARNING),
    ("/tensorflow_datasets/", python_logging.ERROR),
)


class _QuietLibraries(python_logging.Filter):
    def filter(self, record: python_logging.LogRecord) -> bool:
        path = record.pathname.replace("\\", "/")
        return all(record.levelno >= level for fragment, level in _QUIET if fragment in path)


def quiet_libraries() -> None:
    """Drop those notices from absl's log handler (the console of every command); call once, in main."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
        handler.addFilter(_QuietLibraries())
