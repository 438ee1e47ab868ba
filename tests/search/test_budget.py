"""Budgets and the trial loop: sizes and losses parsed, the size tightened by measured error, the loss bisected,
at most max_trials trials, and only a measured trial that meets every budget kept."""

import pytest

from slimkit.search.budget import Budget, Trial, choose_point, parse_loss, parse_size, relative_loss
from slimkit.search.plan import PathPoint

# estimated bytes 1000, 900, ..., 100; loss grows along the path
PATH = [PathPoint({}, 1000 - 100 * i, float(i)) for i in range(10)]


def fake_trials(extra_bytes=0, loss_per_point=0.01, log=None):
    def try_point(i):
        if log is not None:
            log.append(i)
        return Trial(i, PATH[i].bytes, PATH[i].bytes + extra_bytes, 1.0 - loss_per_point * i, loss_per_point * i, 0.1)

    return try_point


@pytest.mark.parametrize(("text", "size"), [("40MB", 40_000_000), ("1.5 GB", 1_500_000_000), ("300KiB", 307_200),
                                             ("12345", 12_345)], ids=["MB", "GB-space", "KiB", "bytes"])
def test_sizes_parse_in_decimal_and_binary_units(text, size):
    assert parse_size(text) == size


def test_bad_budgets_are_refused():
    for text in ("40 parsecs", "-3MB", "0"):
        with pytest.raises(ValueError, match="--target-size"):
            parse_size(text)
    for text in ("1 percent", "120%", "-1%"):
        with pytest.raises(ValueError, match="--max-metric-loss"):
            parse_loss(text)
    assert parse_loss("1%") == parse_loss("0.01") == 0.01
    with pytest.raises(ValueError, match="needs --target-size, --max-metric-loss or both"):
        Budget()


def test_relative_loss_is_positive_when_worse_for_either_direction():
    assert relative_loss(0.9, 0.81, higher_is_better=True) == pytest.approx(0.1)
    assert relative_loss(20.0, 22.0, higher_is_better=False) == pytest.approx(0.1)


def test_a_size_budget_takes_the_first_point_that_fits_and_tightens_by_the_measured_error():
    log = []
    kept, trials = choose_point(PATH, Budget(target_bytes=650), fake_trials(extra_bytes=120, log=log))
    # point 4 is estimated at 600 but saves 720; 120 bytes of estimate error: aim at 530, point 5 (500 + 120)
    assert log == [4, 5] and kept.point == 5 and kept.size_bytes <= 650


def test_a_loss_budget_bisects_for_the_smallest_model_within_the_limit():
    log = []
    kept, trials = choose_point(PATH, Budget(max_loss=0.045), fake_trials(log=log))
    assert kept.point == 4 and kept.loss <= 0.045
    assert len(log) <= 4 and all(t.meets == (t.point <= 4) for t in trials)


def test_both_budgets_start_at_the_size_and_search_smaller_within_the_loss():
    kept, _ = choose_point(PATH, Budget(target_bytes=750, max_loss=0.065), fake_trials())
    assert kept.point == 6


def test_the_trials_are_limited_and_a_budget_nothing_meets_is_an_error_listing_them():
    log = []
    with pytest.raises(ValueError, match=r"no configuration met the budget.*2 trial\(s\): point 5"):
        choose_point(PATH, Budget(max_loss=0.001, max_trials=2), fake_trials(log=log))
    assert len(log) == 2
    with pytest.raises(ValueError, match="smallest is estimated at 100 bytes"):
        choose_point(PATH, Budget(target_bytes=50), fake_trials())
    with pytest.raises(ValueError, match="no configuration met"):  # fits the size, but already too lossy there
        choose_point(PATH, Budget(target_bytes=500, max_loss=0.01), fake_trials())
