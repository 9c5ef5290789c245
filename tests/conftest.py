"""Test setup: 8 host CPU devices for the cross-device tests (must precede importing jax), and one compilation
cache for the whole session, in a temporary directory unless $CNN_JAX_CACHE_DIR names one: the tests' processes
share it, and no test writes to the user's own cache."""

import atexit
import collections
import gc
import os
import shutil
import tempfile

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

if "CNN_JAX_CACHE_DIR" not in os.environ:
    os.environ["CNN_JAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnn_jax-test-xla-")
    atexit.register(shutil.rmtree, os.environ["CNN_JAX_CACHE_DIR"], ignore_errors=True)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cnn_jax.compile_cache import enable_compile_cache  # noqa: E402

enable_compile_cache()

# Where a test's time goes: JAX reports each program's tracing, lowering and XLA compilation (or cache load).
_PHASES = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
}
_phase_seconds: collections.Counter = collections.Counter()
_file_seconds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def _on_duration(event: str, seconds: float, **kwargs) -> None:
    if event in _PHASES:
        _phase_seconds[_PHASES[event]] += seconds


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def pytest_runtest_setup(item):
    _phase_seconds.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Charge the test's JAX seconds to its last phase's report, which pytest-xdist carries to the controller."""
    outcome = yield
    outcome.get_result().jax_seconds = dict(_phase_seconds) if call.when == "teardown" else {}


def pytest_runtest_logreport(report):
    counts = _file_seconds[report.location[0]]
    counts["wall"] += report.duration
    counts.update(getattr(report, "jax_seconds", {}))  # none on xdist's report of a crashed worker


def pytest_terminal_summary(terminalreporter):
    """Per test file: the tests' seconds, and those JAX spent tracing, lowering and compiling (or loading from the
    cache) in the test process. A jit traced inside another's trace counts in both; compilation in a test's
    subprocesses (the command-line tests) counts as the rest."""
    rows = sorted(_file_seconds.items(), key=lambda kv: -kv[1]["wall"])
    if not rows:
        return
    total = sum((counts for _, counts in rows), collections.Counter())
    terminalreporter.section("where the tests' time went (seconds)")
    terminalreporter.write_line(f"{'file':36} {'wall':>7} {'trace':>7} {'lower':>7} {'compile':>8} {'rest':>7}")
    for name, s in [*rows, ("all", total)]:
        rest = s["wall"] - s["trace"] - s["lower"] - s["compile"]
        terminalreporter.write_line(
            f"{name:36} {s['wall']:7.1f} {s['trace']:7.1f} {s['lower']:7.1f} {s['compile']:8.1f} {rest:7.1f}"
        )


def pytest_runtest_teardown(item, nextitem):
    """Drop a test file's compiled programs after its last test.

    JAX keeps every program it compiles, and XLA:CPU maps each one's code, constants and data into memory (about
    1.5 maps for a small program) until it is dropped. Both tiers in one process compile enough (random shapes,
    every model) to near Linux's limit on a process's maps (vm.max_map_count, 65,530 by default; 37,000 before
    half of the tests). At the limit LLVM fails with "Cannot allocate memory" and XLA:CPU dies with a
    segmentation fault in the next compilation. Programs shared between files come back from the persistent
    cache. Some programs are held in reference cycles, hence the collection.
    """
    if nextitem is None or nextitem.path != item.path:
        jax.clear_caches()
        gc.collect()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def torch():
    """PyTorch, the outside reference; the test skips where it is not installed (helpers.TORCH_MISSING)."""
    from helpers import TORCH_MISSING

    return pytest.importorskip("torch", reason=TORCH_MISSING)


@pytest.fixture
def x64():
    """Double precision, for finite-difference gradient checks."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def download_dir() -> str:
    """Raw dataset files: $CNN_JAX_DOWNLOAD_DIR, else ../shared/datasets beside the repository."""
    from pathlib import Path

    path = os.environ.get("CNN_JAX_DOWNLOAD_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "datasets")
    if not Path(path, "mnist").is_dir():
        pytest.fail(
            f"raw MNIST files not found in {path}/mnist: set CNN_JAX_DOWNLOAD_DIR to a directory holding "
            f"<dataset>/<file> as TFDS downloads them"
        )
    return path


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> str:
    """One TFDS data directory for the whole session, so each dataset is prepared once."""
    return str(tmp_path_factory.mktemp("tensorflow_datasets"))
