"""Activation observers: ranges, qparams and which clipping rule wins on heavy-tailed data."""

import pytest
import torch

from slimkit.quantize.fake_quant import fake_quantize
from slimkit.quantize.observers import (
    ActivationGrid,
    ActivationObserver,
    mse_range,
    percentile_range,
    range_to_qparams,
)
from tests.quantize._single_thread import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")


def _batches(seed=0, n=6, heavy=True):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(4, 64, 32, generator=g)  # (B, T, C)
        if heavy:  # a few huge outliers, as in transformer activations
            mask = torch.rand(4, 64, 32, generator=g) < 0.001
            x = torch.where(mask, x * 60, x)
        out.append(x)
    return out


def _mse(x, scale, zero, grid):
    return float((fake_quantize(x, scale, zero, grid.qmin, grid.qmax) - x).double().pow(2).mean())


@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "affine"])
def test_minmax_covers_every_value_and_error_is_half_a_step(symmetric):
    grid = ActivationGrid(8, symmetric)
    obs = ActivationObserver("minmax", grid)
    batches = _batches()
    for b in batches:
        obs.update(b)
    scale, zero = obs.qparams()
    x = torch.cat([b.reshape(-1) for b in batches]).double()
    slack = float(scale) / 2 + 1e-6  # the affine zero point is rounded: the grid may shift by half a step
    assert float(x.min()) >= float((grid.qmin - zero) * scale) - slack
    assert float(x.max()) <= float((grid.qmax - zero) * scale) + slack
    err = (fake_quantize(x, scale.double(), zero.double(), grid.qmin, grid.qmax) - x).abs()
    assert float(err.max()) <= float(scale) / 2 * (1 + 1e-6)


def test_range_to_qparams_keeps_zero_exact():
    grid = ActivationGrid(8, symmetric=False)
    scale, zero = range_to_qparams(torch.tensor([0.3]), torch.tensor([5.0]), grid)  # range must include 0
    assert float(zero) == 0.0
    assert fake_quantize(torch.zeros(3), scale, zero, grid.qmin, grid.qmax).abs().max() == 0


@pytest.mark.parametrize(("kind", "ratio"), [("percentile", 0.95), ("mse", 0.7)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clipping_observers_beat_minmax_on_heavy_tailed_data(kind, ratio, seed):
    # Student-t(4) activations at 6 bits, judged on the calibration data itself (the sample holds all of it):
    # clipping the rare extremes buys a finer step for everything else.
    grid = ActivationGrid(6, symmetric=True)
    torch.manual_seed(seed)
    batches = [torch.distributions.StudentT(4.0).sample((4, 64, 32)) for _ in range(5)]
    minmax, clipped = ActivationObserver("minmax", grid), ActivationObserver(kind, grid, percentile=99.9)
    for b in batches:
        minmax.update(b)
        clipped.update(b)
    x = torch.cat([b.reshape(-1) for b in batches])
    assert _mse(x, *clipped.qparams(), grid) < ratio * _mse(x, *minmax.qparams(), grid)


def test_moving_average_follows_batches_but_damps_one_outlier_batch():
    grid = ActivationGrid(8, symmetric=True)
    obs = ActivationObserver("moving_average", grid, momentum=0.9)
    for _ in range(10):
        obs.update(torch.linspace(-1, 1, 100))
    obs.update(torch.linspace(-100, 100, 100))
    assert obs.hi is not None and 10.0 < float(obs.hi) < 11.0  # 0.9 · 1 + 0.1 · 100


def test_per_channel_ranges_follow_each_channel():
    grid = ActivationGrid(8, symmetric=True, per_channel=True)
    x = torch.randn(128, 5) * torch.tensor([0.1, 1.0, 10.0, 100.0, 1.0])
    obs = ActivationObserver("minmax", grid)
    obs.update(x)
    scale, _ = obs.qparams()
    assert scale.shape == (5,)
    covering = torch.maximum(x.amin(dim=0) / -128, x.amax(dim=0) / 127)  # the smallest step holding [lo, hi]
    assert torch.allclose(scale, covering)
    levels = torch.round(x / scale)
    assert torch.equal(levels.amin(dim=0) == -128, x.amin(dim=0) / -128 >= x.amax(dim=0) / 127)  # -128 in use


def test_percentile_range_matches_torch_quantile_reference():
    sample = torch.randn(1000, 3, dtype=torch.float64)
    lo, hi = percentile_range(sample.float(), 99.0, per_channel=True)
    assert torch.allclose(hi.double(), torch.quantile(sample, 0.99, dim=0), atol=1e-5)
    assert torch.allclose(lo.double(), torch.quantile(sample, 0.01, dim=0), atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mse_range_cuts_the_error_of_a_skewed_sample(seed):
    grid = ActivationGrid(4, symmetric=False)
    torch.manual_seed(seed)
    sample = torch.randn(4000, 1).exp()  # log-normal: a long right tail that min-max spends most levels on
    lo, hi = sample.min().reshape(1), sample.max().reshape(1)
    best_lo, best_hi = mse_range(sample, lo, hi, grid)
    best = _mse(sample, *range_to_qparams(best_lo, best_hi, grid), grid)
    assert best < 0.75 * _mse(sample, *range_to_qparams(lo, hi, grid), grid)  # measured 0.58-0.63


def test_observer_without_data_explains_itself():
    with pytest.raises(RuntimeError, match="saw no activations"):
        ActivationObserver("minmax", ActivationGrid()).qparams()


def test_sample_stays_bounded():
    obs = ActivationObserver("percentile", ActivationGrid(), max_sample_values=1000)
    for b in _batches(n=4):
        obs.update(b)
    assert obs._sample is not None and obs._sample.numel() <= 1000
