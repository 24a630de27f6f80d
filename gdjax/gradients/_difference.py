"""The network in difference form: the change of the per-example losses when units' pre-activations move by d,
computed without subtracting two nearly equal numbers (layer-aware FD and node perturbation,
`gdjax.gradients.structured`).

The unperturbed forward pass is computed once (`prepared`); a change then runs through the layers after the
perturbed unit on differences only: each hidden layer turns the change of its pre-activation into the change of
its activation with the activation object's exact identity (`Activation.diff`, e.g. sigmoid
`s(z+d) - s(z) = s(z) s(-z) expm1(d) / (1 + s(z) expm1(d))`), the next layer's pre-activation changes by a
matmul of that change, and the loss object turns the change of the logits into the change of each example's
loss (`Loss.diff`, e.g. binary cross-entropy `log1p(s(z) expm1(d))`). Nothing here names an activation or a
loss: they come from `cost.net.activation_fn`, `cost.net.output_fn` and `cost.loss_fn`.

    >>> prep = prepared(cost, params, batch)
    >>> dC = loss_changes(cost, params, prep, k, None, dz)   # (units of layer k, N) per-example loss changes
"""

from __future__ import annotations

import jax.numpy as jnp

from gdjax.costs import Cost


def prepared(cost: Cost, params, batch):
    """What the difference form needs of the unperturbed network, computed once.

    Returns `(inputs, hprep, lprep, y_t)`: per layer the input activations `a_in: (N, n_in)`; per hidden layer
    the activation's `diff_prep` of its pre-activation transposed `(n_out, N)`; the loss' `diff_prep` of the
    logits `(1, n_out, N)` (outputs on axis -2); and the targets transposed `(n_out, N)`.
    """
    states = cost.net.states(params, batch.x)
    act = cost.net.activation_fn
    hprep = [act.diff_prep(s.z.T) for s in states[:-1]]
    y_t = batch.y.T
    lprep = cost.loss_fn.diff_prep(states[-1].z.T, y_t, cost.net.output_fn, axis=0)
    return [s.a_in for s in states], hprep, _lead(lprep), y_t


def _lead(tree):
    """Every array of a nested tuple with a new leading axis of 1."""
    return tuple(_lead(t) if isinstance(t, tuple) else t[None] for t in tree)


def rows(a, i):
    """The rows of `a` of the perturbed units: every row (i None), a slice, or unit indices (a scalar: one row)."""
    if i is None:
        return a
    return a[i] if isinstance(i, slice) else a[jnp.reshape(i, (-1,))]


def loss_changes(cost: Cost, params, prep, k: int, i, dz):
    """Per-example loss changes `(B, N)` when units of layer k move their pre-activations by `dz: (B, N)`.

    The change of the unit's activation, a rank-1 update `da * W[i, :]` of the next layer's pre-activation, the
    remaining layers on differences, then the loss change from the logits' change; no two nearly equal numbers
    are subtracted. `prep = prepared(cost, params, batch)`. `i`: one unit for every row (a scalar, may be
    traced: layer-aware FD's block of inputs of unit i), or row b perturbs unit `i[b]` (an index array or a
    slice; None: row b is unit b, all of the layer's units; node perturbation). The L2 term is not included.
    """
    act = cost.net.activation_fn
    _, hprep, lprep, y_t = prep
    n_layers = len(params)
    if k == n_layers - 1:
        dzo = dz[:, None, :] * rows(jnp.eye(params[k].w.shape[1], dtype=dz.dtype), i)[:, :, None]
    else:
        da = act.diff(tuple(rows(p, i) for p in hprep[k]), dz)
        dzo = da[:, None, :] * rows(params[k + 1].w, i)[:, :, None]  # rank-1 update of the next layer
        for m in range(k + 1, n_layers - 1):
            da = act.diff(tuple(p[None] for p in hprep[m]), dzo)
            dzo = jnp.einsum("mo,bmn->bon", params[m + 1].w, da)
    return cost.loss_fn.diff(lprep, dzo, y_t[None], cost.net.output_fn, axis=-2)
