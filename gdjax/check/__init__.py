"""`check_grad`: the FD kernel as a gradient checker for research code (custom VJPs, fused kernels, new layers).

    >>> report = gdjax.check_grad(f, params, x, y)            # f(params, x, y) -> scalar; checks jax.grad(f)
    >>> report.assert_ok()                                    # AssertionError with the per-leaf table
    >>> print(report)                                         # path, shape, errors, worst index, tolerance
    >>> gdjax.check_grad(f, params, x, grad=my_grad, mode="full", method="fd-central", richardson=True)

What is compared: the gradient under test, `grad(params, *args)` (default `jax.grad(f)`, which differentiates
through any custom_vjp / custom_jvp rules), against finite differences of the primal `f` alone, evaluated by
the FD kernel (`gdjax.gradients.finite_diff.fd_multi_step`, the kernel of "fd-central" | "fd-forward" | "fd-complex"
at the steps h and h / 2 in one compiled program: chunked, vmapped, sharded).

Modes:
  "full"        every entry: 2 FD passes (steps h and h / 2), 4P evaluations for fd-central, 2(P + 1) for
                fd-forward, P for fd-complex (one pass). Names the leaf and index of every failure.
  "directions"  k = num_directions random unit directions u_j (from `key`): the FD derivative of
                t -> f(v + t u_j) against grad . u_j, 4k evaluations; for P too large for a full check.
  "auto"        full when (its evaluations) x (the time of one jitted f call) fits `time_budget` seconds, else
                directions; `report.mode_reason` says which and why. (One call includes its dispatch, so the
                prediction overstates small costs, which the kernel batches.)

Steps: h_i = eps * max(1, |v_i|), the kernel's rule, with eps from the dtype f is evaluated in (eps_m its
machine epsilon): central cbrt(eps_m), forward sqrt(eps_m), complex eps_m^2; `eps` overrides it.

Error estimate and tolerance (per entry, gdjax/check/_estimate.py): the FD values at h and h / 2 give the
truncation error (4/3 |D(h) - D(h/2)| for central, 2 |...| for forward), the rounding term is eps_m |f| / h
(2 eps_m |f| / h forward); an entry fails when

    |grad - fd| > multiple * (truncation + rounding) + atol + rtol * |fd|

with multiple = 10 by default (the estimate's constants are unknown: a cost's rounding is a few ulps of its
terms, not one of |f|), atol = 10 eps_g max|fd| and rtol = 10 eps_g (eps_g: machine epsilon of the gradient
under test's dtype, its own rounding). richardson=True compares the extrapolated value (r D(h/2) - D(h)) / (r-1)
instead, with the error of D(h/2) as its estimate. A non-finite gradient entry always fails.

Low precision: bfloat16 / float16 params work (steps and rounding from their eps_m); compute_dtype="float32" or
"float64" evaluates the FD side with params cast to that dtype (float64 runs under jax.enable_x64 if it is off),
while the gradient under test still runs on the original params.
"""

from gdjax.check._core import check_grad
from gdjax.check._report import GradCheck, LeafCheck

__all__ = ["GradCheck", "LeafCheck", "check_grad"]
