"""The shared layer-Hessian helpers of GPTQ and SparseGPT: dead channels, the dampened inverse factor, one thread."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimkit.calib.hessian import inverse_hessian_factor, one_thread, prepare_hessian
from slimkit.numerics import NonFiniteError


@settings(max_examples=25, deadline=None)
@given(cols=st.integers(1, 24), tokens=st.integers(1, 40), damp=st.floats(0.001, 0.5), seed=st.integers(0, 99))
def test_factor_is_the_upper_cholesky_of_the_dampened_inverse(cols, tokens, damp, seed):
    x = torch.randn(tokens, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    h = 2 * x.T @ x / tokens  # (cols, cols), singular when tokens < cols
    u = inverse_hessian_factor(h, damp)
    assert torch.equal(u, torch.triu(u)) and bool((torch.diagonal(u) > 0).all())
    lam = damp * float(torch.diagonal(h).mean())
    expected = torch.linalg.inv(h + lam * torch.eye(cols, dtype=torch.float64))
    assert torch.allclose(u.T @ u, expected, rtol=1e-6, atol=1e-9 * float(expected.abs().max()))


def test_an_indefinite_hessian_gets_more_dampening_until_it_factors():
    h = torch.diag(torch.tensor([1.0, 1.0, -0.5], dtype=torch.float64))  # -0.5 + 0.01·0.5 stays negative
    u = inverse_hessian_factor(h, damp=0.01)
    assert torch.isfinite(u).all() and bool((torch.diagonal(u) > 0).all())
    inverse = u.T @ u  # (H + λI)⁻¹ for the λ that first made it positive definite: 0.05 fails, 0.5 too, 5.0 works
    assert torch.allclose(inverse, torch.diag(1 / torch.tensor([6.0, 6.0, 4.5], dtype=torch.float64)))


def test_the_factor_names_nan_instead_of_definiteness():
    h = torch.eye(8, dtype=torch.float64)
    h[2, 3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"the layer Hessian .* holds 1 NaN and 0 infinite values \(of 64\)"):
        inverse_hessian_factor(h, damp=0.01)


def test_dead_input_channels_are_zeroed_and_get_a_unit_diagonal():
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4) + 1
    h = torch.diag(torch.tensor([2.0, 0.0, 3.0, 0.0]))
    w2, h2 = prepare_hessian(w, h)
    assert torch.equal(w2[:, [1, 3]], torch.zeros(3, 2)) and torch.equal(w2[:, [0, 2]], w[:, [0, 2]])
    assert torch.equal(torch.diagonal(h2), torch.tensor([2.0, 1.0, 3.0, 1.0], dtype=torch.float64))
    assert w2.dtype == torch.float32 and h2.dtype == torch.float64
    assert torch.equal(w[:, 1], torch.tensor([2.0, 6.0, 10.0])) and h[1, 1] == 0  # the inputs are not modified


def test_one_thread_restores_the_thread_count_even_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), one_thread():
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
