import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import minimize

from metahp import InputError, sparsemax


def projection_by_optimizer(z):
    """The definition: argmin_p ||p - z||^2 over the simplex, solved numerically."""
    k = len(z)
    res = minimize(lambda p: ((p - z) ** 2).sum(), np.full(k, 1 / k), jac=lambda p: 2 * (p - z),
                   bounds=[(0, 1)] * k, constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1}],
                   method="SLSQP", options={"ftol": 1e-12, "maxiter": 500})
    return res.x


@given(st.lists(st.floats(-5, 5), min_size=1, max_size=8))
def test_sparsemax_is_the_euclidean_projection_onto_the_simplex(z):
    z = np.array(z)
    got = sparsemax(torch.tensor(z, dtype=torch.float64)).numpy()
    assert np.allclose(got, projection_by_optimizer(z), atol=1e-5)


def test_known_values():
    assert torch.allclose(sparsemax(torch.tensor([1.0, 0.9, -2.0])), torch.tensor([0.55, 0.45, 0.0]))
    assert torch.allclose(sparsemax(torch.tensor([0.0, 0.0, 0.0, 0.0])), torch.full((4,), 0.25))
    assert torch.equal(sparsemax(torch.tensor([5.0, 0.0])), torch.tensor([1.0, 0.0]))


def test_dim_argument_and_batching():
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    along1 = sparsemax(x, dim=1)
    assert torch.allclose(along1.sum(dim=1), torch.ones(3, 5, dtype=torch.float64))
    assert torch.allclose(along1, sparsemax(x.transpose(1, 2), dim=-1).transpose(1, 2))


def test_minus_inf_entries_get_exactly_zero():
    x = torch.tensor([[0.3, float("-inf"), 0.1], [float("-inf"), 2.0, float("-inf")]])
    out = sparsemax(x)
    assert out[0, 1] == 0 and torch.allclose(out[0], sparsemax(torch.tensor([0.3, -1e9, 0.1])))
    assert torch.equal(out[1], torch.tensor([0.0, 1.0, 0.0]))


@pytest.mark.parametrize("bad, match", [(torch.tensor([float("nan"), 1.0]), "NaN"),
                                        (torch.tensor([float("inf"), 1.0]), r"\+inf"),
                                        (torch.full((2,), float("-inf")), "no finite entry"),
                                        (torch.zeros(0), "empty")])
def test_bad_input(bad, match):
    with pytest.raises(InputError, match=match):
        sparsemax(bad)
