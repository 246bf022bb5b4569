"""How far two float32 computations of the same values may differ, from float32 rounding.

Two forwards that compute one logit with differently shaped tensors (a padded row against
the row alone, a cached step against a full forward, a fused projection against three)
add the same terms in another order, so each reduction rounds differently. One rounding is
at most half an ulp of the running sum, which is at most the largest magnitude involved;
independent roundings over `terms` additions add up like a random walk, sqrt(terms) of
them. Each stacked reduction (one per layer, plus the output head) contributes its own such
error, and those add in quadrature too. So two results may differ by about

    eps32 * max|value| * sqrt(terms * reductions)

and a bug (a wrong position, a stale K/V, a missing mask) moves a logit by far more: a
fraction of the value itself, not a few ulps of it.
"""

import math

import torch
from torch import Tensor

EPS32 = torch.finfo(torch.float32).eps


def f32_atol(expected: Tensor, terms: int, reductions: int) -> float:
    """The rounding bound above for values like `expected`."""
    return EPS32 * expected.abs().max().item() * math.sqrt(terms * reductions)


def assert_f32_close(actual: Tensor, expected: Tensor, *, terms: int, reductions: int):
    """assert_close with the float32 rounding bound as its absolute tolerance.

    terms: the longest sum behind one value (the hidden width for logits); reductions: the
    stacked reductions it went through (layers + 1 for the output head)."""
    atol = f32_atol(expected, terms, reductions)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


# stdec.testing's tiny configs: width 64, 2 layers, and the output head
TINY = {"terms": 64, "reductions": 3}
