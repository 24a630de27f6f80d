"""The any-cost benchmark suite: problems written for gdjax, each in JAX (a `gdjax.bench.problem.Problem`
factory, usable as `gdjax bench --problem benchmarks.problems.<module>:make`) and in PyTorch (`torch_cost`, the
same objective on the same numbers, for the checker comparison; torch is optional and imported only there).

    gmm          Gaussian-mixture log-likelihood with a Wishart prior, as ADBench's GMM (d = 10, k = 25, n = 1000)
    convnet      an Equinox conv net (two 3x3 convolutions, tanh, a linear read-out, cross-entropy)
    transformer  one pre-LayerNorm transformer block (two-head self-attention + tanh MLP), squared error
    ode          a neural ODE solved by fixed-step RK4 inside `lax.scan`, squared error at the end time

Every problem is float64 (ADBench's GMM is; torch's gradcheck wants it), so x64 must be on before a factory
runs (`jax.config.update("jax_enable_x64", True)`, or `gdjax bench --dtype float64`). Each module has `make`
(the benchmark's sizes), `tiny` (test sizes) and `torch_cost(problem) -> (f, inputs)` with
`f(*inputs) -> 0-d tensor` equal to `problem.cost(problem.params, problem.batch)` and `inputs` the params as
float64 tensors that require grad, in the order of `jax.tree_util.tree_leaves(problem.params)`.
"""

SUITE = ("gmm", "convnet", "transformer", "ode")


def require_x64(name: str) -> None:
    """ValueError (one line, with the fix) when x64 is off: the suite's problems are float64."""
    import jax

    if not jax.config.jax_enable_x64:
        raise ValueError(f"the {name} problem is float64: switch x64 on first (jax.config.update("
                         f"'jax_enable_x64', True), or gdjax bench --dtype float64)")


def import_torch():
    """torch, or ImportError naming the optional extra (the torch versions of the problems need it)."""
    try:
        import torch
    except (ImportError, OSError) as err:  # OSError: a broken install (a missing shared library)
        raise ImportError(f"torch is not installed ({err}); pip install -e '.[torch]' for the torch side") from None
    return torch


def to_torch(problem):
    """The differentiated leaves of `problem.params` as float64 torch tensors that require grad (leaf order)."""
    import jax
    import numpy as np

    torch = import_torch()
    return tuple(torch.tensor(np.asarray(a, np.float64), requires_grad=True)
                 for a in jax.tree_util.tree_leaves(problem.params))
