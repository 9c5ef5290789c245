"""The package's layering, checked on fresh interpreters through sys.modules: the library never imports the
scripts in experiments/, training does not import the sweep above it, and reading results does not load the
training engine (orbax, optax)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `code`."""
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(result.stdout.split())


def test_no_library_module_imports_the_scripts():
    every_module = (
        "import importlib, pkgutil, cnn_jax\n"
        "for m in pkgutil.walk_packages(cnn_jax.__path__, 'cnn_jax.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)"
    )
    loaded = loaded_after(every_module)
    assert {"cnn_jax.train.loop", "cnn_jax.sweep", "cnn_jax.report.write"} <= loaded  # the walk imported them
    assert not [m for m in loaded if m == "experiments" or m.startswith("experiments.")]


def test_report_does_not_import_the_training_engine():
    loaded = loaded_after("import cnn_jax.report")
    assert "cnn_jax.report.tables" in loaded
    assert not [m for m in loaded if m.startswith("cnn_jax.train") or m.startswith("orbax") or m == "optax"]


def test_the_training_command_does_not_import_the_sweep():
    # The sweep launches training commands; the arrow never points back up.
    loaded = loaded_after("import cnn_jax.train.cli")
    assert "cnn_jax.config_check" in loaded
    assert "cnn_jax.sweep" not in loaded


def test_metric_writer_loads_tensorboardx_without_torch(torch, tmp_path):
    # tensorboardX imports torch whenever it is installed (seconds of every run's start); scalars need none of it.
    loaded = loaded_after(
        "from cnn_jax.train.metrics import MetricWriter\n"
        f"w = MetricWriter({str(tmp_path)!r}, enabled=True)\n"
        "w.write(1, loss=0.5)\n"
        "w.close()\n"
        "import sys; assert 'torch' not in sys.modules, 'torch was loaded'\n"
        "import torch  # hidden only during tensorboardX's import"
    )
    assert "tensorboardX" in loaded and "torch" in loaded
    assert list((tmp_path / "tensorboard").iterdir()), "no event file written"
