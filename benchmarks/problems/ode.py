"""A neural ODE solved by fixed-step RK4 inside `lax.scan`: dy/dt = tanh(y W + b), y(0) = y0 (a batch of
states), `steps` steps of dt = 1 / steps to t = 1, squared error of y(1) against targets (float64).

Params: {"w": (d, d), "b": (d,)}. Batch: (y0 (N, d), target (N, d)).

    >>> prob = make()      # d = 16, N = 64, 20 steps: P = 272
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.problems import import_torch, require_x64, to_torch
from gdjax.bench.problem import Problem


def _rk4_step(f, y, dt):
    k1 = f(y)
    k2 = f(y + 0.5 * dt * k1)
    k3 = f(y + 0.5 * dt * k2)
    k4 = f(y + dt * k3)
    return y + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def make_cost(steps: int):
    """cost(params, (y0, target)) = mean((y(1) - target)^2), y(1) by `steps` RK4 steps under `lax.scan`."""

    def cost(params, batch):
        y0, target = batch

        def f(y):
            return jnp.tanh(y @ params["w"] + params["b"][None])

        y1, _ = jax.lax.scan(lambda y, _: (_rk4_step(f, y, 1.0 / steps), None), y0, None, length=steps)
        return jnp.mean((y1 - target) ** 2)

    cost.steps = steps
    return cost


def make(d: int = 16, n: int = 64, steps: int = 20, seed: int = 0) -> Problem:
    """The benchmark's neural-ODE problem (float64; x64 must be on)."""
    require_x64("ode")
    rng = np.random.default_rng([seed, d, n, steps])
    params = {"w": jnp.asarray(rng.standard_normal((d, d)) / np.sqrt(d)), "b": jnp.asarray(0.1 * rng.standard_normal(d))}
    batch = (jnp.asarray(rng.standard_normal((n, d))), jnp.asarray(rng.standard_normal((n, d))))
    return Problem(make_cost(steps), params, batch, name=f"ode-rk4-d{d}-s{steps}-n{n}", batch_size=n,
                   description=f"neural ODE dy/dt = tanh(yW + b), RK4, {steps} steps in lax.scan, d={d}, "
                               f"squared error, float64")


def tiny() -> Problem:
    """Test sizes: d = 3, N = 4, 5 steps (P = 12)."""
    return make(d=3, n=4, steps=5)


def torch_cost(problem: Problem):
    """The same solve in PyTorch (a Python loop of RK4 steps): (f, inputs), f(b, w) -> 0-d tensor (leaf order
    of the params dict: b, w)."""
    torch = import_torch()
    steps = problem.cost.steps
    y0, target = (torch.tensor(np.asarray(a, np.float64)) for a in problem.batch)

    def f(b, w):
        y = y0
        for _ in range(steps):
            y = _rk4_step(lambda z: torch.tanh(z @ w + b[None]), y, 1.0 / steps)
        return torch.mean((y - target) ** 2)

    return f, to_torch(problem)
