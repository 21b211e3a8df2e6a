"""Temperature scaling on a fixture of over-confident logits: the fitted temperature cools them and the
expected calibration error falls."""

import numpy as np

from workflows.lib.calibration import calibrated, expected_calibration_error, fit_temperature


def overconfident(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes, right 80 % of the time, with logits that claim about 99 %."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    predicted = np.where(rng.random(n) < 0.8, labels, 1 - labels)
    logits = np.zeros((n, 2))
    logits[np.arange(n), predicted] = rng.normal(5.0, 0.5, n)
    return logits, labels


def test_calibration_lowers_the_expected_calibration_error() -> None:
    logits, labels = overconfident()
    before = expected_calibration_error(calibrated(logits, 1.0), labels)
    temperature = fit_temperature(logits, labels)
    after = expected_calibration_error(calibrated(logits, temperature), labels)
    assert temperature > 2.0
    assert before > 0.15 and after < 0.03


def test_a_perfectly_calibrated_model_is_left_alone() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.5, 1.0, 5000)
    labels = (rng.random(5000) >= p).astype(int)  # class 0 is right with probability p
    logits = np.stack([np.log(p), np.log(1 - p)], axis=1)
    assert abs(fit_temperature(logits, labels) - 1.0) < 0.1
    assert expected_calibration_error(calibrated(logits, 1.0), labels) < 0.03


def test_the_error_of_a_single_bin_is_its_gap() -> None:
    probabilities = np.array([[0.9, 0.1]] * 10)
    labels = np.array([0] * 7 + [1] * 3)  # 70 % right at 90 % confidence
    assert abs(expected_calibration_error(probabilities, labels) - 0.2) < 1e-9
