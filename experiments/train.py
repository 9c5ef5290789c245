"""Train a model from a config file; every config field is a flag.

    python -m experiments.train --config=experiments/configs/lenet5_mnist.py --workdir=runs/lenet5 \
        --config.model.conv.kind=tiled --config.model.conv.tile=2

Multi-host: add --distributed (coordinator and process id from flags, or from SLURM/MPI/Kubernetes/TPU).
The command is the library's (`python -m cnn_jax.train`, cnn_jax/train/cli.py); this name keeps the
configs' and launchers' commands short.
"""

from cnn_jax.train.cli import run

if __name__ == "__main__":
    run()
