"""The studies: their grids and row labels in one process (every study module imported side by side),
one study run from another directory, and each study command end to end on a tiny grid (long tier)."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cnn_jax.config_tree import flatten
from cnn_jax.report.published import PARAMETER_COUNTS, RECEPTIVE_FIELDS
from cnn_jax.sweep import run_batches, sweep_runs
from experiments import conv_variants, mnist1d_gap, normalization, pooling, receptive_fields, reproduce, shift
from experiments.study import Study, config, run_and_report

REPO = Path(__file__).resolve().parents[1]
# The tests' 8 host devices are inherited by the runs: batches of 80 (or 16, 32) divide among them.
TINY = ("--seeds=0", "--set=train.num_steps=5", "--set=train.log_every_steps=5", "--parallel=2")


def run_study(module: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", f"experiments.{module}", *TINY, *args], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_config(point) -> dict:
    """The flattened config a point's run records in its config.json."""
    from cnn_jax.config_check import load_config

    c = load_config(point.config)
    for field, value in point.overrides:
        c.update_from_flattened_dict({field: value})
    return flatten(c.to_dict())


def test_grids_are_typed_and_label_their_runs_from_the_configs(tmp_path):
    grids = {
        "mnist1d": (conv_variants.mnist1d_points(), conv_variants.mnist1d_label),
        "images": (conv_variants.image_points(), conv_variants.image_label),
        "pooling": (pooling.points(), pooling.label),
        "normalization": (normalization.points(), normalization.label),
        "reproduce": (reproduce.trained_points(), reproduce.label),
        "receptive_fields": (receptive_fields.accuracy_points(), receptive_fields.label),
        "mnist1d_gap": (mnist1d_gap.POINTS, mnist1d_gap.label),
        "shift": (shift.points(), shift.label),
    }
    for name, (points, label) in grids.items():
        labels = [label(run_config(p)) for p in points]
        assert len({repr(row) for row in labels}) == len(points), name  # one row per grid point
        assert all(Path(p.config.partition(":")[0]).is_absolute() for p in points)  # the same file from anywhere
        # A sweep parses every run's overrides to group them into run batches: each run in exactly one batch.
        jobs = sweep_runs(points, (0, 1), tmp_path / name)
        batches = run_batches(jobs, None)
        assert sorted(job[2] for batch in batches for job in batch) == sorted(job[2] for job in jobs), name
    assert [p.name for p in normalization.points([32, 128], 16)] == [
        f"{norm}__{batch}" for batch in (32, 128) for norm in ("none", "batch", "ghost16", "lrn")
    ]
    grid = {p.name: dict(p.overrides) for p in normalization.points([32, 128], 16)}
    assert grid["ghost16__32"]["model.options.virtual_batch_size"] == 16
    assert grid["none__32"]["optimizer.learning_rate"] == 0.025  # linear scaling, 0.1 at batch 128
    assert normalization.label(run_config(normalization.points([32], 16)[2])) == {"norm": "ghost16", "batch": 32}
    # Seeds share a program; the norms and batch sizes change its structure (ghost16's a placeholder field).
    batches = run_batches(sweep_runs(normalization.points([32, 128], 16), (0, 1, 2), tmp_path / "n"), None)
    assert [[job[2].relative_to(tmp_path / "n").as_posix() for job in b] for b in batches] == [
        [f"{norm}__{batch}/seed{seed}" for seed in (0, 1, 2)]
        for batch in (32, 128)
        for norm in ("none", "batch", "ghost16", "lrn")
    ]
    images = {p.name: dict(p.overrides) for p in conv_variants.image_points(None, ["resnet"], ["fashion_mnist"])}
    assert list(images) == [f"resnet-{v}__fashion_mnist" for v in ("cnn", "tiled2", "tiled4", "local")]
    assert images["resnet-tiled4__fashion_mnist"]["model.conv.tile"] == 4
    assert all(o["dataset.eval_shifts"] == (2, 4) for o in images.values())
    assert run_config(conv_variants.image_points(["cnn"], ["resnet"], ["mnist"])[0])["model.name"] == "resnet8"
    assert conv_variants.mnist1d_label(run_config(conv_variants.mnist1d_points(["logreg"])[1])) == {
        "model": "logreg",
        "data": "shuffled",
    }
    assert reproduce.label(run_config(reproduce.trained_points()[-1])) == {"run": "cnn on mnist1d_shuffled"}
    with pytest.raises(ValueError, match=r"--pools: unknown \['maxx'\]; valid values are max, avg"):
        pooling.points(["maxx"])
    shifted = {p.name: run_config(p) for p in shift.points()}
    assert shift.label(shifted["lenet5_blur5__mnist"]) == {"model": "lenet5", "variant": "blur5", "data": "mnist"}
    assert shift.label(shifted["lenet5_standard__mnist"])["variant"] == "standard"  # max pooling
    assert shift.label(shifted["resnet8_blur3__fashion_mnist"])["variant"] == "blur3"
    circular = shifted["resnet8_circular__mnist"]
    assert shift.label(circular)["variant"] == "circular" and circular["model.options.blur_size"] == 0
    assert shifted["resnet8_standard__mnist"]["dataset.eval_shifts"] == tuple(range(1, 9))
    assert [p.name for p in shift.points(["resnet8"], ["mnist"], ["circular", "standard"])] == [
        "resnet8_standard__mnist",
        "resnet8_circular__mnist",
    ]
    with pytest.raises(ValueError, match=r"--models: unknown \['vgg'\]; valid values are lenet5, resnet8"):
        shift.points(["vgg"])
    with pytest.raises(ValueError, match=r"--variants: unknown \['reflect'\]; valid values are standard, blur3"):
        shift.points(variants=["reflect"])


def test_mnist1d_gap_table_reads_final_and_best_accuracy(tmp_path):
    """The table from run directories as training writes them (config.json, final.json, metrics.jsonl)."""
    import json

    for point in mnist1d_gap.POINTS[:2]:
        config = run_config(point)
        for seed, (final, best) in enumerate([(0.90, 0.92), (0.92, 0.93)]):
            run = tmp_path / point.name / f"seed{seed}"
            run.mkdir(parents=True)
            nested: dict = {}
            for field, value in {**config, "seed": seed}.items():
                *parents, leaf = field.split(".")
                node = nested
                for parent in parents:
                    node = node.setdefault(parent, {})
                node[leaf] = list(value) if isinstance(value, tuple) else value
            (run / "config.json").write_text(json.dumps(nested))
            (run / "final.json").write_text(json.dumps({"test/accuracy": final, "params": 5210, "macs": 1}))
            records = [{"step": 240, "test/accuracy": best}, {"step": 6000, "test/accuracy": final}]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    markdown, latex = mnist1d_gap.table(tmp_path, seed=0)
    rows = [line for line in markdown.splitlines() if line.startswith("| cnn") or line.startswith("| mlp")]
    assert rows == [
        "| cnn | 5,210 | 91.00 ± 1.41 | 92.50 ± 0.71 | 2 | 94[^1] |",
        "| mlp 100 | 5,210 | 91.00 ± 1.41 | 92.50 ± 0.71 | 2 | 68[^1] |",
    ]
    assert "Greydanus" in markdown and r"\begin{tabular}" in latex


@pytest.mark.slow
def test_erf_exponent_sweep_table():
    settings = receptive_fields.ErfSettings(samples=2, inits=1)
    command = "python -m experiments.receptive_fields --part=exponent"
    markdown, latex = receptive_fields.exponent_tables([1, 2, 3, 4], 2, settings, command)
    rows = [line for line in markdown.splitlines() if line.startswith("| random")]
    assert [r.split(" | ")[1] for r in rows] == ["1-4 (fit)", "2-4 (fit)", "1-2", "2-3", "3-4"] * 2
    assert all(r.endswith("| 2 |") for r in rows) and r"\begin{tabular}" in latex
    # No runs behind it: the line names this process's own code, versions and devices.
    last = markdown.strip().splitlines()[-1]
    assert re.match(r"Provenance: values computed by the command itself; commit [0-9a-f]{7}(\+dirty)?; jax ", last)
    assert last.endswith(f"regenerate: `{command}`.") and "Warning" not in last


def test_study_runs_from_another_directory(tfds_dir, download_dir, tmp_path, monkeypatch):
    """Config paths resolve relative to the package: a study started elsewhere finds its config files."""
    monkeypatch.chdir(tmp_path)
    fixed = (
        ("train.num_steps", 3),
        ("train.batch_size", 80),
        ("dataset.data_dir", tfds_dir),
        ("dataset.download_dir", download_dir),
    )
    study = Study(Path("study"), seeds=(0,), parallel=2, fixed=fixed)
    points = pooling.points(["avg", "max"], ["mnist"])
    table = run_and_report(study, points, pooling.label, "Two pools", baseline=pooling.BASELINE)
    rows = [line.split(" |")[:4] for line in table.splitlines() if line.startswith("| avg") or line.startswith("| max")]
    assert [row[:2] for row in rows] == [["| avg", " mnist"], ["| max", " mnist"]]  # grid order, labels from configs
    assert [row[3] for row in rows] == [" 1 seed", " baseline"]  # one seed: no interval
    assert table.strip().splitlines()[-1].startswith("Provenance: 2 runs; commit ")
    assert (tmp_path / "study" / "max__mnist" / "seed0" / "final.json").exists()
    assert config("lenet5_mnist") == str(REPO / "experiments" / "configs" / "lenet5_mnist.py")


@pytest.mark.slow
def test_conv_variants_study(tfds_dir, tmp_path):
    result = run_study(
        "conv_variants",
        f"--study_dir={tmp_path}",
        "--variants=cnn,local",
        "--set=train.batch_size=80",
        f"--set=dataset.data_dir={tfds_dir}",
    )
    table = (tmp_path / "mnist1d" / "results.md").read_text()
    assert table in result.stdout
    rows = [line for line in table.splitlines() if line.startswith("| cnn") or line.startswith("| local")]
    assert [r.split(" |")[0:2] for r in rows] == [
        ["| cnn", " normal"],
        ["| cnn", " shuffled"],
        ["| local", " normal"],
        ["| local", " shuffled"],
    ]  # ladder order
    assert "94[^1]" in table and "56[^1]" in table


@pytest.mark.slow
def test_reproduce_study(tfds_dir, download_dir, tmp_path):
    result = run_study(
        "reproduce",
        f"--study_dir={tmp_path}",
        "--set=train.batch_size=80",
        f"--set=dataset.data_dir={tfds_dir}",
        f"--download_dir={download_dir}",
    )
    table = (tmp_path / "results.md").read_text()
    assert table in result.stdout and (tmp_path / "results.tex").exists()
    alexnet = f"{PARAMETER_COUNTS['alexnet'].count:,}"
    assert f"| alexnet parameters | {alexnet} | {alexnet}[^1] | exact |" in table
    resnet50 = RECEPTIVE_FIELDS["resnet50"]
    assert f"| resnet50 receptive field (last spatial map) | {resnet50} | {resnet50}[^3] | exact |" in table
    assert "| resnet110 parameters | 1,727,962 | 1,700,000[^2] | within rounding |" in table
    for run in ("lenet5_classic on mnist", "cnn on mnist1d", "cnn on mnist1d_shuffled", "logreg on mnist1d"):
        assert f"| {run} test accuracy (%), 1 seed |" in table
    assert "0.95% test error" in table and "off by" in table  # 5 steps are far from the published values


@pytest.mark.slow
def test_receptive_fields_study(tfds_dir, tmp_path):
    result = run_study(
        "receptive_fields",
        f"--study_dir={tmp_path}",
        "--depths=2,4,8",
        "--samples=2",
        "--inits=1",
        "--set=train.batch_size=80",
        f"--set=dataset.data_dir={tfds_dir}",
    )
    table = (tmp_path / "results.md").read_text()
    assert table in result.stdout and (tmp_path / "results.tex").exists()
    assert "| 4 | 9 | 1.63 |" in table  # uniform linear stack: std sqrt(2 * 4 / 3), exactly
    assert "| ERF growth exponent a (std ~ depth^a), uniform, linear | 0.500 | 0.5[^1] | within 0.05 |" in table
    assert "| (2,2,2,2) | 17 |" in table and "| 72.0 |" in table  # gridding: 1 - 81/289 of the field unseen
    for schedule in ("1-1-1-1", "2-2-2-2", "1-2-4-8", "1-2-5-9"):
        assert (tmp_path / "accuracy" / f"long_range_xor__d{schedule}" / "seed0" / "final.json").exists()
    assert "not run" not in table and "(1) | " in table  # accuracies of both tasks, one seed each
    notes = [line for line in table.splitlines() if line.startswith("Provenance: ")]
    assert len(notes) == 3  # the depth table, the exponent fit and the schedules, each ends with its sources
    assert notes[-1].startswith("Provenance: 8 runs and values computed by the command itself; commit")
    for figure in ("erf_growth.png", "erf_depth_heatmaps.png", "erf_dilation_heatmaps.png"):
        assert (tmp_path / figure).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_pooling_study(tfds_dir, download_dir, tmp_path):
    result = run_study(
        "pooling",
        f"--study_dir={tmp_path}",
        "--datasets=fashion_mnist",
        "--set=train.batch_size=80",
        f"--set=dataset.data_dir={tfds_dir}",
        f"--download_dir={download_dir}",
    )
    table = (tmp_path / "results.md").read_text()
    assert table in result.stdout and "| shifted 2px (%) | shifted 4px (%) |" in table
    rows = [line.split(" |")[0] for line in table.splitlines()[4:11]]
    assert rows == ["| max", "| avg", "| l2", "| strided", "| none", "| blurmax", "| blurstrided"]
    assert "| none | fashion_mnist |" in table and "1,119,626" in table  # no pooling: a 9216 x 120 dense layer
    versus = {line.split(" | ")[0]: line.split(" | ")[3] for line in table.splitlines()[4:11]}
    assert versus["| max"] == "baseline" and versus["| avg"] == "1 seed"  # each pool against max, one seed
    command = shlex.join(["python", "-m", "experiments.pooling", *TINY, f"--study_dir={tmp_path}"])
    assert f"regenerate: `{command} --datasets=fashion_mnist --set=train.batch_size=80" in table


@pytest.mark.slow
def test_normalization_study(tfds_dir, tmp_path):
    # One batch size (the grid test covers two); 8 devices: per-device batches of 2, ghost batches of 2.
    # MNIST-1D instead of Fashion-MNIST: evaluating ResNet-20 on 1,000 short signals, not 10,000 images.
    result = run_study(
        "normalization",
        f"--study_dir={tmp_path}",
        "--batch_sizes=16",
        "--ghost_batch=2",
        "--set=train.num_steps=3",
        "--set=dataset.name=mnist1d",
        "--set=dataset.augment.flip=False",
        "--set=dataset.augment.crop_padding=0",
        f"--set=dataset.data_dir={tfds_dir}",
    )
    table = (tmp_path / "results.md").read_text()
    assert table in result.stdout
    for norm in ("none", "batch", "ghost2", "lrn"):
        assert f"| {norm} | 16 |" in table
    config = (tmp_path / "ghost2__16" / "seed0" / "config.json").read_text()
    assert '"virtual_batch_size": 2' in config and '"norm": "batch"' in config


@pytest.mark.slow
def test_shift_study(tfds_dir, download_dir, tmp_path):
    result = run_study(
        "shift",
        f"--study_dir={tmp_path}",
        "--models=lenet5",
        "--datasets=mnist",
        "--variants=standard,blur5,circular",
        "--set=train.batch_size=80",
        f"--set=dataset.data_dir={tfds_dir}",
        f"--download_dir={download_dir}",
    )
    table = (tmp_path / "results_shift.md").read_text()
    assert table in result.stdout and "| 0 px (%) | 1 px (%) | 2 px (%) |" in table and "consistency (%)" in table
    rows = [line.split(" | ")[:3] for line in table.splitlines()[4:7]]
    assert rows == [["| lenet5", variant, "mnist"] for variant in ("standard", "blur5", "circular")]  # grid order
    assert all((tmp_path / f"accuracy_by{kind}_shift.png").stat().st_size > 0 for kind in ("", "_circular"))
    circular = (tmp_path / "results_shift_circular.md").read_text()
    assert circular in result.stdout and "wrapped around" in circular
    # The analysis of the checkpoint agrees with the engine's own evaluation at every shift it made.
    run = tmp_path / "lenet5_blur5__mnist" / "seed0"
    analysed, final = (json.loads((run / name).read_text()) for name in ("shift.json", "final.json"))
    assert analysed["accuracy@shift=0"] == pytest.approx(final["test/accuracy"], abs=1e-6)
    for s in range(1, 9):
        assert analysed[f"accuracy@shift={s}"] == pytest.approx(final[f"test/accuracy@shift={s}"], abs=1e-6)
    assert 0 < analysed["consistency"] <= 1
    wrapped = analysed["circular"]  # wrapped around: the same at shift 0, different beyond it
    assert wrapped["accuracy@shift=0"] == analysed["accuracy@shift=0"]
    assert wrapped["accuracy@shift=8"] != analysed["accuracy@shift=8"] and 0 < wrapped["consistency"] <= 1
