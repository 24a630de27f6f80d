"""The structured methods and the MLP reproduce the numbers pinned in tests/data/structured_golden.npz.

The fixture was written by tests/data/make_structured_golden.py (tiny float64 nets: sigmoid, tanh and relu
hidden units; sigmoid, softmax and identity outputs; both losses; one and two hidden layers; with and without
weight decay) for backprop,
layer-aware FD, node perturbation, the activity-perturbed forward gradient (fixed key), the output and the cost.
Tolerance 1e-12 relative to each array's largest entry (plus 1e-15 absolute for all-zero arrays): the same
operations in float64 give the same bits, but XLA may reassociate a sum (a matmul split otherwise, the
1/N of the batch mean applied before or after the weight-gradient matmul), which moves a result by a few
eps_mach = 2.2e-16 times its scale; an FD quotient amplifies that by at most |C| / h ~ 1e5 in the worst case
(eps 1e-5), so its rounding stays below 1e-10 of the scale. We assert 1e-9 for the FD quotients for that
reason and 1e-12 for everything else. Any change of an activation, a loss, the forward pass, a step or a key
split moves the numbers by far more (at least the truncation error, ~1e-5 relative).
"""

import numpy as np
import pytest

from conftest import ROOT, load_script

GOLDEN = ROOT / "tests" / "data" / "structured_golden.npz"
FD = ("fd-layerwise", "node-perturbation")  # FD quotients: rounding amplified by |C| / h (module docstring)


@pytest.fixture(scope="module")
def computed():
    return load_script("tests/data/make_structured_golden.py").compute()


def test_reproduces_golden(computed):
    golden = np.load(GOLDEN)
    assert sorted(golden.files) == sorted(computed), "the fixture and the script disagree on what is pinned"
    for name in golden.files:
        want, got = golden[name], computed[name]
        assert got.shape == want.shape and got.dtype == want.dtype == np.float64, name
        rtol = 1e-9 if any(f"/{m}" in name for m in FD) else 1e-12
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale + 1e-15, err_msg=name)
