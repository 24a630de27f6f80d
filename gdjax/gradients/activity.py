"""The activity-perturbed forward gradient: random tangents on the units' pre-activations, not on the weights.

"forward-gradient-activity" (Ren et al., ICLR 2023, "Scaling forward gradient with local losses", without the
local losses): for every layer l and every example x, a Gaussian tangent `u ~ N(0, I_{n_l})` on the layer's
pre-activation `z_l(x)`; the directional derivative `delta_l(x) . u` of the per-example cost `C_x`
(`delta_l(x) = dC_x/dz_l`, the backprop error of layer l) comes from one `jax.jvp`, and

    delta_hat_l(x) = mean_k (delta_l(x) . u_k) u_k                 (N, n_l), one fresh u_k per example and layer
    dC/dW_l = mean_x a_{l-1}(x) delta_hat_l(x)^T,  dC/db_l = mean_x delta_hat_l(x)   (+ l2 W_l exactly)

where `a_{l-1}(x)` is the layer's input. Shifting `z_l(x)` is shifting the bias `b_l` for that one example, so
the jvp is taken with respect to a per-example offset of `b_l` through `cost.per_example`: the network code
is the cost's own. The layers are perturbed one at a time (one jvp per layer and direction), so a layer's
estimate sees only its own units' noise.

Unbiased: `E[(d . u) u] = d` for `u ~ N(0, I)`, so `E[delta_hat] = delta` and the weight gradient, linear in
delta_hat, is exact in expectation. Variance (Gaussian fourth moments, `E[u_i^4] = 3`): for one direction,
`Var[(d . u) u_i] = |d|^2 + d_i^2` with `|d|^2` summed over the n_l units of the layer. The tangents are
independent across examples, layers and the k directions, so per entry

    Var[dC/dW_l[j, i]] = 1/(k N^2) sum_x a_{l-1,j}(x)^2 (|delta_l(x)|^2 + delta_{l,i}(x)^2)
    Var[dC/db_l[i]]    = 1/(k N^2) sum_x             (|delta_l(x)|^2 + delta_{l,i}(x)^2)

It grows with the number of units in the layer (through |delta_l|^2), not with the number of weights P as
the weight-perturbed "forward-gradient" does (`Var_i = (|grad C|^2 + (dC/dp_i)^2) / k`, |grad C|^2 over all
P parameters), and the batch average divides it by N (independent tangents per example), which the weight
forward gradient's one shared direction cannot do.

Cost: `evaluations` is None, as for "forward-gradient": it counts cost evaluations, and a jvp is not one. Per
layer one primal pass (XLA may merge the L identical ones) and k tangent passes that run only through the
layers after the perturbed one, then the outer product `a^T delta_hat` (about one first-layer matmul);
benchmarks measure it as XLA's FLOPs of the gradient program over those of the cost.

    >>> est = gradient(make_cost(MLP((784, 30, 10)), "quadratic"), "forward-gradient-activity", num_directions=4)
    >>> g = est(params, batch, jax.random.key(0))     # a pytree like params; a fresh key for every step
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gdjax import _checks
from gdjax.costs import require_mlp_cost
from gdjax.data import check_batch
from gdjax.gradients import _validate
from gdjax.gradients.registry import Estimator, no_count, register
from gdjax.models.mlp import Layer, layer_grads


def activity_deltas(cost, params, batch, key, num_directions: int) -> list:
    """Estimates of every layer's per-example error `dC_x/dz_l`, from random tangents on the pre-activations.

    Args:
      cost: a `gdjax.make_cost` cost; params: its MLP params (L layers); batch: `Batch(x: (N, n_0), y)`.
      key: a PRNG key; num_directions: k >= 1 tangents per example and layer.
    Returns:
      a list over layers of `(N, n_l)` arrays `mean_k (delta_l(x) . u_k(x)) u_k(x)`, u_k(x) ~ N(0, I).
    """
    n = batch.x.shape[0]
    out = []
    for l, kl in enumerate(jax.random.split(key, len(params))):
        layer = params[l]
        u = jax.random.normal(kl, (num_directions, n, layer.b.shape[0]), layer.b.dtype)

        def slope(t, x, y, l=l, layer=layer):  # delta_l(x) . t for one example x and one tangent t: (n_l,)
            def c(e):  # the per-example cost with z_l(x) shifted by e (= b_l shifted for this example)
                return cost.per_example(params[:l] + (Layer(layer.w, layer.b + e),) + params[l + 1:], x, y)

            return jax.jvp(c, (jnp.zeros_like(t),), (t,))[1]

        s = jax.vmap(jax.vmap(slope), (0, None, None))(u, batch.x, batch.y)  # (k, N) directional derivatives
        out.append(jnp.einsum("kn,kni->ni", s, u) / num_directions)
    return out


@register("forward-gradient-activity", kind="stochastic", structured=True,
          summary="jvp along random pre-activation tangents per example and layer; weights by outer product",
          cost_formula="1 + k (one `jvp` per direction, tangents on the pre-activations)",
          error_order="stochastic: variance grows with the units per layer, not the weights")
def forward_gradient_activity(cost, *, num_directions=1) -> Estimator:
    """Activity-perturbed forward gradient; see the module docstring for the estimate and its variance.

    Options: num_directions k >= 1 (tangents per example and layer, averaged). Needs a `gdjax.make_cost` cost.
    Evaluations: None (jvp tangent passes are not cost evaluations; see the module docstring).
    """
    cost = require_mlp_cost(cost, "forward-gradient-activity")
    k = _checks.positive_int(num_directions, "num_directions (random tangents per example and layer)")

    @jax.jit
    def kernel(params, batch, key):
        inputs = [s.a_in for s in cost.net.states(params, batch.x)]
        return layer_grads(params, inputs, activity_deltas(cost, params, batch, key, k), cost.l2)

    def fn(params, batch, key):
        cost.net.check_params(params)
        _validate.check_params(params, "forward-gradient-activity")
        check_batch(batch, net=cost.net)
        return kernel(params, batch, key)

    return Estimator("forward-gradient-activity", fn, no_count, stochastic=True, options={"num_directions": k})
