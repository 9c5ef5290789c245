"""Predictions under translation and Zhang 2019's consistency, against brute-force counts; a run restored as a
classifier."""

import numpy as np
import pytest
from test_train import small_config

from cnn_jax.analysis.shift import consistency, predictions_at_shifts, shift_robustness
from cnn_jax.data import shift_width
from cnn_jax.train import train_and_evaluate
from cnn_jax.train.restore import load_classifier


def test_consistency_counts_every_pair_of_different_shifts(rng):
    for shifts, n in [(2, 5), (3, 40), (9, 17)]:
        p = rng.integers(0, 3, (shifts, n))
        agree = pairs = 0
        for i in range(n):
            for a in range(shifts):
                for b in range(a + 1, shifts):
                    agree += p[a, i] == p[b, i]
                    pairs += 1
        assert consistency(p) == pytest.approx(agree / pairs)
    assert consistency(np.zeros((4, 6), int)) == 1.0
    with pytest.raises(ValueError, match=r"expected \(shifts >= 2, inputs\)"):
        consistency(np.zeros((1, 6), int))


def test_predictions_follow_the_shifted_input(rng):
    x = rng.integers(0, 256, (23, 8, 8, 1), dtype=np.uint8)
    labels = rng.integers(0, 2, 23)

    def brightest_column(batch):  # depends on where things are: changes under shifts
        return batch[..., 0].sum(axis=1).argmax(axis=1) % 2

    shifts = [0, 1, 3]
    p = predictions_at_shifts(brightest_column, x, shifts, batch_size=5)
    assert p.shape == (3, 23)
    for row, s in zip(p, shifts):
        np.testing.assert_array_equal(row, brightest_column(shift_width(x, s)))
    np.testing.assert_array_equal(predictions_at_shifts(brightest_column, x, shifts, batch_size=1000), p)
    result = shift_robustness(p, labels, shifts)
    assert result["accuracy@shift=3"] == pytest.approx(np.mean(p[2] == labels))
    assert result["consistency"] == pytest.approx(consistency(p))


def test_a_classifier_that_ignores_position_is_fully_consistent(rng):
    x = np.zeros((10, 12, 12, 1), np.uint8)
    x[:, 4:8, 2:6] = rng.integers(0, 256, (10, 4, 4, 1))  # content stays inside the image for shifts <= 6

    def total(batch):
        return batch.reshape(len(batch), -1).sum(axis=1) % 7

    p = predictions_at_shifts(total, x, range(7))
    assert consistency(p) == 1.0
    assert len(set(shift_robustness(p, total(x), range(7)).values())) == 1  # every accuracy is 1, and consistency


def test_circular_shifts_wrap_around_and_lose_nothing(rng):
    images, signals = rng.integers(0, 256, (5, 6, 9, 2), dtype=np.uint8), rng.normal(size=(4, 11))
    for x, axis in ((images, 2), (signals, 1)):
        for shift in (0, 3, -2, 13):
            wrapped = shift_width(x, shift, circular=True)
            np.testing.assert_array_equal(wrapped, np.roll(x, shift, axis))
            np.testing.assert_array_equal(np.sort(wrapped, axis), np.sort(x, axis))  # every value kept
    x = rng.integers(1, 256, (10, 8, 8, 1), dtype=np.uint8)  # content up to every edge

    def total(batch):  # ignores position, sees every pixel
        return batch.reshape(len(batch), -1).astype(np.int64).sum(axis=1) % 5

    assert consistency(predictions_at_shifts(total, x, range(9), circular=True)) == 1.0
    assert consistency(predictions_at_shifts(total, x, range(9))) < 1.0  # zero fill loses the columns that leave


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="shifts is empty"):
        predictions_at_shifts(lambda b: b, np.zeros((2, 4)), [])
    with pytest.raises(ValueError, match="2 shifts for predictions at 3"):
        shift_robustness(np.zeros((3, 4), int), np.zeros(4, int), [0, 1])


def test_a_finished_run_classifies_as_its_final_evaluation_did(tfds_dir, tmp_path):
    # The restored classifier, at shift 0 and at an evaluated shift, reproduces the accuracies in final.json.
    config = small_config(tfds_dir, num_steps=10)
    config.dataset.eval_shifts = (3,)
    final = train_and_evaluate(config, tmp_path / "run")
    classify, data = load_classifier(tmp_path / "run")
    p = predictions_at_shifts(classify, data.test.inputs, [0, 3], batch_size=300)
    robustness = shift_robustness(p, data.test.labels, [0, 3])
    assert robustness["accuracy@shift=0"] == pytest.approx(final["test/accuracy"], abs=1e-6)
    assert robustness["accuracy@shift=3"] == pytest.approx(final["test/accuracy@shift=3"], abs=1e-6)
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_classifier(tmp_path)
