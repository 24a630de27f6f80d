"""`check_grad`: is this gradient right? The FD kernel as a gradient checker for research code.

    >>> report = gdjax.check_grad(loss, params, x, y, key=dropout_key)   # loss(params, x, y, key=...) -> scalar
    >>> report.status              # "ok" | "kinks" | "inconclusive" | "failed"
    >>> report.assert_ok()         # AssertionError with the per-leaf table unless "ok"
    >>> gdjax.check_grad(loss, params, x, grad=my_grad, check={"mode": "directions", "num_directions": 32})

See docs/gradcheck.md for the API, the modes, the tolerance rule and what "inconclusive" and "kink" mean.
Layout: `_core` (arguments, compute dtype, mode), `_problem` (f as a function of the differentiable leaves;
point evaluators), `_full` (full mode: the FD kernel pass, refinement, kinks), `_localise` (random directions,
group testing), `_estimate` (error estimates), `_report` (the report), `_cache` (JAX's persistent cache).
"""

from gdjax.check._cache import enable_compilation_cache
from gdjax.check._core import OPTIONS, check_grad, check_methods
from gdjax.check._report import GradCheck, LeafCheck, NamedEntry

__all__ = ["OPTIONS", "GradCheck", "LeafCheck", "NamedEntry", "check_grad", "check_methods", "enable_compilation_cache"]
