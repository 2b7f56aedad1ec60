"""Float tolerances shared by the tests, each with the reason for its size.

Vectorised seeds promise (README, "Vectorised seeds"): member i of an E-member model is built from the
same generator draws as the single-seed model, so its weights, minibatch indices, group elements and
noise are *bit-identical*; its float results are not, because a batched matmul of another shape may
run another BLAS kernel with another summation order (seen: 3e-8 apart on an AMD EPYC, 0 on an Intel
VM). Reordering a float32 sum of n products changes it by at most about n·2⁻²⁴·Σ|xᵢwᵢ|: for the
widths used here (≤ 512) that stays far below these bounds, whatever the CPU.
"""

from typing import TypedDict


class Tolerance(TypedDict):
    """Keyword arguments of ``torch.testing.assert_close``."""

    rtol: float
    atol: float


#: One forward pass of a member against the same network with one member (≈ 80 float32 ulps relative).
MEMBER_FORWARD = Tolerance(rtol=1e-5, atol=1e-6)
#: A member's weights after a short training run against the single-seed run: rounding differences
#: of each step feed the next one through Adam, so they grow with the number of steps.
MEMBER_TRAINING = Tolerance(rtol=1e-4, atol=1e-5)
