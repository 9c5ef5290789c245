"""Sweeps and reports: mean ± std arithmetic on synthetic run directories, tables, skip/resume, a tiny study."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cnn_jax.report import aggregate, load_runs, mean_std, to_latex, to_markdown, varying_fields, write_report
from cnn_jax.report.tables import tex_escape
from cnn_jax.sweep import Point, grid_points, run_sweep


def fake_run(path: Path, config: dict, accuracy: float | None, params: int = 100, provenance: dict | None = None):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    if provenance is not None:
        (path / "provenance.json").write_text(json.dumps(provenance))
    (path / "metrics.jsonl").write_text(json.dumps({"step": 10, "test/accuracy": accuracy or 0.0}) + "\n")
    if accuracy is not None:
        (path / "final.json").write_text(
            json.dumps(
                {"step": 10, "test/accuracy": accuracy, "params": params, "macs": 2 * params, "images_per_s": 1000.0}
            )
        )


def mnist1d_config(model: str, shuffled: bool, seed: int, **options) -> dict:
    return {
        "seed": seed,
        "dataset": {"name": "mnist1d", "permute_positions": shuffled},
        "model": {"name": model, "conv": {"kind": "standard", "tile": 2}, "options": options},
    }


@pytest.fixture
def study(tmp_path):
    accuracies = {("cnn1d", False): [0.93, 0.95, 0.94], ("cnn1d", True): [0.50, 0.52], ("mlp", False): [0.60]}
    for (model, shuffled), values in accuracies.items():
        for seed, acc in enumerate(values):
            options = {"hidden": [100, 100]} if model == "mlp" else {}
            fake_run(
                tmp_path / f"{model}_{shuffled}" / f"seed{seed}", mnist1d_config(model, shuffled, seed, **options), acc
            )
    fake_run(tmp_path / "unfinished" / "seed0", mnist1d_config("cnn1d", False, 7), None)
    return tmp_path


def test_mean_std_is_the_sample_statistic():
    mean, std = mean_std([93.0, 95.0, 94.0])
    assert mean == pytest.approx(94.0) and std == pytest.approx(1.0)  # ddof=1
    assert mean_std([90.0, 91.0])[1] == pytest.approx(np.std([90.0, 91.0], ddof=1))
    assert math.isnan(mean_std([50.0])[1])


def test_aggregate_pools_seeds_and_skips_unfinished_runs(study):
    runs = load_runs(study)
    assert len(runs) == 7
    factors = varying_fields(runs)
    assert factors == ["dataset.permute_positions", "model.name", "model.options.hidden"]
    rows = {(r.label["model.name"], r.label["dataset.permute_positions"]): r for r in aggregate(runs, factors)}
    assert rows["cnn1d", False].n == 3 and rows["cnn1d", False].mean == pytest.approx(94.0)
    assert rows["cnn1d", False].std == pytest.approx(1.0)
    assert rows["cnn1d", True].mean == pytest.approx(51.0) and rows["cnn1d", True].n == 2
    assert rows["cnn1d", True].std == pytest.approx(math.sqrt(2))
    # published values from Greydanus & Kobak 2024 sit beside ours, with a verdict
    assert rows["cnn1d", False].published == 94.0 and rows["cnn1d", False].verdict == "within noise"
    assert rows["cnn1d", True].published == 56.0 and rows["cnn1d", True].verdict == "off by -5.0"
    assert rows["mlp", False].published == 68.0 and rows["mlp", False].verdict == "off by -8.0"


def test_markdown_and_latex_tables(study):
    runs = load_runs(study)
    rows = aggregate(runs, ["model.name", "dataset.permute_positions"])
    markdown = to_markdown(rows, "MNIST-1D")
    assert "| cnn1d | False | 94.00 ± 1.00 | 3 | 100 | 200 | 1,000 | 94[^1] | within noise |" in markdown
    assert "| mlp | False | 60.00 | 1 |" in markdown
    assert "[^1]: Greydanus & Kobak" in markdown
    latex = to_latex(rows, "MNIST-1D")
    assert r"\toprule" in latex and r"\bottomrule" in latex
    assert r"cnn1d & False & 94.00 $\pm$ 1.00 & 3 & 100 & 200 & 1,000 & 94$^{1}$ & within noise \\" in latex
    assert r"dataset.permute\_positions & test accuracy (\%)" in latex  # LaTeX specials escaped


def test_write_report_files(study):
    markdown = write_report(study)
    assert (study / "results.md").read_text() == markdown
    last = markdown.strip().splitlines()[-1]
    assert last.startswith("1 of 7 runs have not finished and are not in the table. Provenance: 6 runs, 6 of them")
    assert last.endswith(f"regenerate: `python -m experiments.report {study}`.")  # unrecorded: no provenance.json
    assert (study / "results.tex").exists() and (study / "learning_curves.png").stat().st_size > 1000


def test_grid_points_are_the_cartesian_product():
    points = grid_points("c.py", ["model.conv.kind=standard,local", "seed_field=1,2,3"], ["train.num_steps=5"])
    assert len(points) == 6
    assert points[0] == Point(
        "kind=standard__seed_field=1",
        "c.py",
        (("train.num_steps", "5"), ("model.conv.kind", "standard"), ("seed_field", "1")),
    )
    with pytest.raises(ValueError, match="--grid='kind': expected FIELD=VALUE"):
        grid_points("c.py", ["kind"])


def test_sweep_refuses_a_field_the_config_lacks_before_running(tmp_path):
    config = "experiments/configs/lenet5_mnist.py"
    with pytest.raises(
        ValueError,
        match=r"override 'model.options.pol': .*lenet5_mnist.py has no field 'pol' in "
        r"model.options; valid fields there: blur_size, pool",
    ):
        run_sweep([Point("p", config, (("model.options.pol", "avg"),))], [0], tmp_path)
    with pytest.raises(ValueError, match=r"no field 'tile' in model.conv.kind; valid fields there: none"):
        run_sweep([Point("p", config, (("model.conv.kind.tile", "2"),))], [0], tmp_path)
    assert not list(tmp_path.iterdir())


def test_translation_test_columns_average_over_seeds(tmp_path):
    for seed, (acc, shifted) in enumerate([(0.99, 0.90), (0.97, 0.80)]):
        fake_run(tmp_path / "lenet" / f"seed{seed}", {"seed": seed, "model": {"name": "lenet5"}}, acc)
        final = tmp_path / "lenet" / f"seed{seed}" / "final.json"
        final.write_text(json.dumps({**json.loads(final.read_text()), "test/accuracy@shift=2": shifted}))
    rows = aggregate(load_runs(tmp_path), ["model.name"])
    assert rows[0].shifted[2] == pytest.approx((85.0, np.std([90.0, 80.0], ddof=1)))
    markdown = to_markdown(rows)
    assert "| model.name | test accuracy (%) | shifted 2px (%) | seeds |" in markdown
    assert "| lenet5 | 98.00 ± 1.41 | 85.00 ± 7.07 | 2 |" in markdown
    assert r"lenet5 & 98.00 $\pm$ 1.41 & 85.00 $\pm$ 7.07 & 2" in to_latex(rows)


def test_sweep_runs_skips_finished_and_reports_failures(tfds_dir, tmp_path):
    # the tests' 8 host devices are inherited: a batch of 80 divides among them
    common = (
        ("train.num_steps", "5"),
        ("train.log_every_steps", "5"),
        ("train.batch_size", "80"),
        ("dataset.data_dir", tfds_dir),
    )
    points = [
        Point("cnn", "experiments/configs/cnn1d_mnist1d.py", common),
        Point("bad", "experiments/configs/cnn1d_mnist1d.py", common + (("optimizer.name", "rmsprop"),)),
    ]
    with pytest.raises(RuntimeError, match=r"(?s)1 of 2 runs failed:\n.*bad/seed0 \(exit 1\).*rmsprop"):
        run_sweep(points, [0], tmp_path, parallel=2)
    finished = tmp_path / "cnn" / "seed0" / "final.json"
    stamp = finished.stat().st_mtime_ns
    run_sweep(points[:1], [0], tmp_path)  # finished: not run again
    assert finished.stat().st_mtime_ns == stamp


def test_confidence_interval_uses_students_t():
    from cnn_jax.report.stats import confidence_interval

    low, high = confidence_interval([1.0, 2.0, 3.0])  # mean 2, std 1, t(0.975, 2 df) = 4.303
    assert (low, high) == pytest.approx((2 - 4.303 / 3**0.5, 2 + 4.303 / 3**0.5))
    assert confidence_interval([5.0, 5.0]) == (5.0, 5.0)
    with pytest.raises(ValueError, match="at least 2 values, got 1"):
        confidence_interval([1.0])


def provenance(commit: str, dirty: bool = False, jax: str = "0.10.2", changes: tuple = ()) -> dict:
    """A run's provenance.json as cnn_jax.provenance writes it (the fields the report reads)."""
    return {
        "commit": commit,
        "dirty": dirty,
        "diff_sha256": "d" * 64 if dirty else None,
        "versions": {"python": "3.12.3", "jax": jax, "jaxlib": jax, "flax": "0.12.8", "optax": "0.2.8"},
        "platform": "cpu",
        "device_kind": "cpu",
        "device_count": 8,
        "process_count": 1,
        "changes": list(changes),
    }


def test_a_table_ends_with_the_commits_and_versions_of_its_runs(tmp_path, caplog):
    for seed in range(2):
        fake_run(
            tmp_path / "a" / f"seed{seed}", mnist1d_config("cnn1d", False, seed), 0.9, provenance=provenance("a" * 40)
        )
    fake_run(tmp_path / "b" / "seed0", mnist1d_config("mlp", False, 0), 0.6)  # from before provenance.json
    with caplog.at_level("WARNING"):
        markdown = write_report(tmp_path, ["model.name"])
    last = markdown.strip().splitlines()[-1]
    assert last == (
        "Provenance: 3 runs, 1 of them unrecorded (no provenance.json); commit aaaaaaa; jax 0.10.2, "
        "jaxlib 0.10.2, flax 0.12.8, optax 0.2.8; devices 8 x cpu; "
        f"regenerate: `python -m experiments.report {tmp_path} --factors=model.name`."
    )
    assert "mix" not in caplog.text
    latex = (tmp_path / "results.tex").read_text().splitlines()
    assert (
        latex[-2].startswith(r"\\[2pt]{\footnotesize Provenance: 3 runs") and "commit aaaaaaa; jax 0.10.2" in latex[-2]
    )
    assert latex[-2].endswith(
        r"\texttt{python -m experiments.report " + tex_escape(str(tmp_path)) + r" --factors=model.name}.}"
    )


def test_a_table_mixing_commits_and_versions_warns(tmp_path, caplog):
    # seed 1 was resumed with a newer jax on a dirty tree of commit b: it counts under both of its states
    resume = {"time": "t", "host": "h", "command": ["c"], "step": 5, "changed": {"dirty": [False, True]}}
    resume["changed"] |= {"diff_sha256": [None, "d" * 64], "versions.jax": ["0.10.2", "0.11.2"]}
    for seed, record in enumerate([provenance("a" * 40), provenance("b" * 40, changes=[resume])]):
        fake_run(tmp_path / "a" / f"seed{seed}", mnist1d_config("cnn1d", False, seed), 0.9, provenance=record)
    with caplog.at_level("WARNING"):
        markdown = write_report(tmp_path, ["model.name"], command="python -m experiments.conv_variants")
    last = markdown.strip().splitlines()[-1]
    assert "; commits aaaaaaa (1 run), bbbbbbb (1 run), bbbbbbb+dirty (1 run); jax 0.10.2 / 0.11.2," in last
    assert last.endswith(
        "regenerate: `python -m experiments.conv_variants`. Warning: these runs mix 3 code states, jax 0.10.2 and "
        "0.11.2: a difference between rows may come from the code."
    )
    assert f"{tmp_path / 'results.md'}: these runs mix 3 code states, jax 0.10.2 and 0.11.2" in caplog.text
    assert "Warning: these runs mix 3 code states" in (tmp_path / "results.tex").read_text()


def test_welch_interval_by_hand():
    from cnn_jax.report.stats import t975, welch_interval

    # [90, 91] vs [95, 96, 97]: v = 0.5/2 and 1/3, df = (0.25 + 1/3)^2 / (0.25^2/1 + (1/3)^2/2) = 2.88 -> 2
    half = 4.303 * math.sqrt(0.25 + 1 / 3)
    assert welch_interval((90.5, math.sqrt(0.5), 2), (96.0, 1.0, 3)) == pytest.approx((-5.5, -5.5 - half, -5.5 + half))
    # equal sizes and spreads: df = 2 (n - 1) = 4 exactly, not rounded down to 3 by float error
    half = 2.776 * math.sqrt(2 / 3)
    assert welch_interval((2.0, 1.0, 3), (4.0, 1.0, 3)) == pytest.approx((-2.0, -2.0 - half, -2.0 + half))
    assert welch_interval((1.0, 1.0, 40), (0.0, 1.0, 40)) == pytest.approx(
        (1.0, 1 - 1.96 * 0.05**0.5, 1 + 1.96 * 0.05**0.5)
    )
    assert welch_interval((5.0, 0.0, 3), (4.0, 0.0, 2)) == (1.0, 1.0, 1.0)  # no spread: the difference itself
    assert (t975(1), t975(2.999), t975(30.5), t975(31)) == (12.706, 4.303, 2.042, 1.96)
    with pytest.raises(ValueError, match="at least 2 values in each sample, got 1 and 3"):
        welch_interval((1.0, float("nan"), 1), (0.0, 1.0, 3))


def test_differences_from_a_baseline_row(tmp_path):
    accuracies = {
        ("max", "mnist"): [0.95, 0.96, 0.97],
        ("avg", "mnist"): [0.90, 0.91],  # -5.5 [-8.79, -2.21]: the interval excludes 0
        ("l2", "mnist"): [0.95, 0.97, 0.99],  # +1: v = 4/3 and 1/3, df = (5/3)^2 / ((16/9 + 1/9) / 2) = 2.94 -> 2
        ("max", "fashion_mnist"): [0.90],
        ("avg", "fashion_mnist"): [0.88, 0.89],  # the baseline has one seed
        ("none", "mnist1d"): [0.50, 0.52],  # no max pooling run on this dataset
    }
    for (pool, data), values in accuracies.items():
        for seed, acc in enumerate(values):
            config = {"seed": seed, "dataset": {"name": data}, "model": {"name": "lenet5", "options": {"pool": pool}}}
            fake_run(tmp_path / f"{pool}_{data}" / f"seed{seed}", config, acc)
    rows = aggregate(
        load_runs(tmp_path), lambda run: {"pool": run.get("model.options.pool"), "data": run.get("dataset.name")}
    )
    markdown = to_markdown(rows, baseline={"pool": "max"})
    half = 4.303 * math.sqrt(0.25 + 1 / 3)  # as in test_welch_interval_by_hand
    assert "| pool | data | test accuracy (%) | vs baseline (points)[^1] | seeds |" in markdown
    assert "| max | mnist | 96.00 ± 1.00 | baseline | 3 |" in markdown
    assert f"| avg | mnist | 90.50 ± 0.71 | -5.50 [{-5.5 - half:.2f}, {-5.5 + half:.2f}] * | 2 |" in markdown
    assert "| l2 | mnist | 97.00 ± 2.00 | +1.00 [-4.56, 6.56] | 3 |" in markdown  # 1 ± 4.303 sqrt(5/3)
    assert "| avg | fashion_mnist | 88.50 ± 0.71 | 1 seed | 2 |" in markdown
    assert "| none | mnist1d | 51.00 ± 1.41 | no baseline row | 2 |" in markdown
    assert "[^1]: vs baseline: the row's mean test accuracy minus its baseline row's (pool = max, the other" in markdown
    assert "* marks an interval that excludes 0." in markdown
    assert r"vs baseline (points)$^{1}$" in to_latex(rows, baseline={"pool": "max"})
    with pytest.raises(
        ValueError, match=r"\['pooling'\] are not columns of the table; its columns are \['pool', 'data'\]"
    ):
        to_markdown(rows, baseline={"pooling": "max"})


def test_crowded_figures_become_small_multiples_with_shared_axes_and_one_legend(tmp_path, monkeypatch):
    from cnn_jax.report import figures

    study1 = [
        {"backbone": b, "model": m, "data": d}
        for b in ("lenet", "resnet")
        for d in ("mnist", "fashion_mnist")
        for m in ("cnn", "tiled2", "tiled4", "local")
    ]
    assert figures.panel_factors(study1) == ("backbone", "data")  # fewest values first, until <= 6 a panel
    assert figures.panel_factors([{"pool": p, "data": d} for p in range(7) for d in "ab"]) == ("data",)
    assert figures.panel_factors([{"pool": p, "data": "a"} for p in range(7)]) == ()  # one factor: nothing to split
    assert figures.panel_factors(study1[:6]) == ()  # few enough for one axis
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or Path(path))
    shifts = (0, 1, 2)
    curves = [(label, np.full((2, 3), i % 4 / 20 + i / 400)) for i, label in enumerate(study1)]  # 2 seeds each
    figures.accuracy_by_shift(curves, shifts, tmp_path / "shift.png")
    apart = [(label, values + 0.5 * (label["backbone"] == "resnet")) for label, values in curves]
    figures.accuracy_by_shift(apart, shifts, tmp_path / "apart.png")
    fig, fig_apart = drawn
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == [
        f"backbone={b}, data={d}" for b in ("lenet", "resnet") for d in ("mnist", "fashion_mnist")
    ]
    assert all(len(ax.get_lines()) == 4 for ax in panels)
    assert len({ax.get_ylim() for ax in panels}) == 1 and len({ax.get_xlim() for ax in panels}) == 1  # shared
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["model=cnn", "model=tiled2", "model=tiled4", "model=local"]
    colours = {(ax.get_title(), line.get_label()): line.get_color() for ax in panels for line in ax.get_lines()}
    assert len({c for (_, name), c in colours.items() if name == "model=local"}) == 1  # one colour per legend entry
    np.testing.assert_allclose(panels[0].get_lines()[1].get_ydata(), 100 * (1 / 20 + 1 / 400))  # seeds' mean, in %
    # resnet's curves 50 points above lenet's: on one y axis each panel's curves would fill a quarter of it
    ylims = [ax.get_ylim() for ax in fig_apart.axes if ax.axison]
    assert ylims[0] != ylims[2] and all(high - low < 20 for low, high in ylims)


def test_learning_curves_average_seeds_per_step_even_when_a_seed_is_short(tmp_path, monkeypatch):
    from cnn_jax.report import figures

    for seed, records in enumerate([[(1, 0.5), (2, 0.7)], [(1, 0.3)]]):
        path = tmp_path / f"seed{seed}"
        fake_run(path, mnist1d_config("cnn1d", False, seed), 0.7)
        (path / "metrics.jsonl").write_text(
            "".join(json.dumps({"step": s, "test/accuracy": a}) + "\n" for s, a in records)
        )
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or Path(path))
    figures.learning_curves(load_runs(tmp_path), ["model.name"], tmp_path / "curves.png")
    (fig,) = drawn
    (ax,) = [ax for ax in fig.axes if ax.axison]
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), [0.4, 0.7])
    assert line.get_label() == "name=cnn1d" and ax.get_title() == ""


def test_the_report_draws_its_curves_in_the_table_s_row_order(study, monkeypatch):
    from cnn_jax.report import figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or Path(path))
    monkeypatch.setattr("cnn_jax.report.write.learning_curves", figures.learning_curves)
    write_report(study, ["model.name"], order=lambda row: row.label["model.name"] != "mlp")  # mlp's row first
    (fig,) = drawn
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["name=mlp", "name=cnn1d"]
