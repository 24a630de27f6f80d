"""The structured methods and the MLP reproduce the numbers pinned in tests/data/structured_golden.npz.

The fixture was written by tests/data/make_structured_golden.py (tiny float64 nets: sigmoid, tanh and relu
hidden units; sigmoid, softmax and identity outputs; both losses; one and two hidden layers; with and without
weight decay) for backprop, layer-aware FD, node perturbation, the activity-perturbed forward gradient (fixed
key), the output and the cost, from the code before `gdjax.models` existed.
On the machine that wrote the fixture (CPU, jax 0.10) every array but backprop's is reproduced bit for bit;
backprop differs by at most 4e-16 of its scale, because it applies the batch mean's 1/N after the weight
gradient's matmul (`models.mlp.layer_grads`, shared with node perturbation) instead of to the output error
before it. The asserted tolerance leaves room for other XLA versions and CPUs, which may order a float64 sum
differently: 1e-12 of each array's largest entry (plus 1e-15 absolute for all-zero arrays) for values computed
directly, and 1e-9 for the FD quotients of layer-aware FD and node perturbation, whose rounding is amplified by
|C| / h <= 1e5 (eps >= 1e-5). Any change of an activation, a loss, the forward pass, a step or a key split
moves the numbers by far more (at least the truncation error, ~1e-5 relative).
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
