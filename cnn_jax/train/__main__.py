"""`python -m cnn_jax.train --config=... --workdir=...`: see cnn_jax/train/cli.py."""

from cnn_jax.train.cli import run

run()
