"""Gaussian-mixture log-likelihood with a Wishart prior, as ADBench's GMM objective (Srajer, Kukelova and
Fitzgibbon, "A benchmark of selected algorithmic differentiation tools on some problems in computer vision and
machine learning", 2018): d = 10, k = 25, n = 1000, float64, P = k + k d + k d (d + 1) / 2 = 1,650.

Params: alphas (k,) mixture logits, means (k, d), icf (k, d (d + 1) / 2): the inverse covariance factor Q = L +
diag(exp(icf[:, :d])) with L's strictly lower triangle filled column by column from icf[:, d:]. Batch: x (n, d).

    >>> prob = make()                                  # x64 on first
    >>> prob.cost(prob.params, prob.batch)             # the objective (a scalar)
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from benchmarks.problems import import_torch, require_x64, to_torch
from gdjax.bench.problem import Problem

WISHART_GAMMA, WISHART_M = 1.0, 0


def _lower_indices(d: int):
    """(rows, cols) of the strictly lower triangle of a d x d matrix in column-major order (ADBench's layout)."""
    upper_rows, upper_cols = np.triu_indices(d, 1)  # row-major upper = column-major lower, transposed
    return upper_cols, upper_rows


def _constant(n: int, d: int, k: int) -> float:
    """The terms of the objective that do not depend on the params: -n d / 2 log(2 pi) and the Wishart
    normaliser k C, C = m' d (log gamma - log(2) / 2) - log Gamma_d(m' / 2), m' = d + m + 1."""
    m = d + WISHART_M + 1
    log_gamma_d = 0.25 * d * (d - 1) * math.log(math.pi) + sum(math.lgamma(0.5 * m + 0.5 * (1 - j))
                                                              for j in range(1, d + 1))
    c = m * d * (math.log(WISHART_GAMMA) - 0.5 * math.log(2.0)) - log_gamma_d
    return -0.5 * n * d * math.log(2 * math.pi) - k * c


def cost(params, x):
    """ADBench's GMM objective: sum_i logsumexp_j(alpha_j + sum log diag Q_j - |Q_j (x_i - mu_j)|^2 / 2)
    - n logsumexp(alpha) + ADBench's Wishart term sum_j (gamma^2 / 2 ||Q_j||_F^2 - m sum log diag Q_j) + constants
    (the terms and signs as ADBench writes them). params as in the module docstring, x (n, d)."""
    alphas, means, icf = params["alphas"], params["means"], params["icf"]
    n, d = x.shape
    k = alphas.shape[0]
    rows, cols = _lower_indices(d)
    log_diag = icf[:, :d]
    q_diag = jnp.exp(log_diag)
    lower = jnp.zeros((k, d, d), icf.dtype).at[:, rows, cols].set(icf[:, d:])
    centred = x[:, None, :] - means[None]  # (n, k, d)
    qx = q_diag[None] * centred + jnp.einsum("kij,nkj->nki", lower, centred)
    sum_qs = jnp.sum(log_diag, axis=1)
    inner = alphas[None] + sum_qs[None] - 0.5 * jnp.sum(qx**2, axis=2)  # (n, k)
    prior = jnp.sum(0.5 * WISHART_GAMMA**2 * (jnp.sum(q_diag**2, axis=1) + jnp.sum(icf[:, d:] ** 2, axis=1))
                    - WISHART_M * sum_qs)
    return jnp.sum(logsumexp(inner, axis=1)) - n * logsumexp(alphas) + prior + _constant(n, d, k)


def make(d: int = 10, k: int = 25, n: int = 1000, seed: int = 0) -> Problem:
    """The benchmark's GMM problem (float64; x64 must be on): params and data drawn with numpy."""
    require_x64("gmm")
    rng = np.random.default_rng([seed, d, k, n])
    params = {"alphas": jnp.asarray(rng.standard_normal(k)), "means": jnp.asarray(rng.random((k, d))),
              "icf": jnp.asarray(0.5 * rng.standard_normal((k, d * (d + 1) // 2)))}
    x = jnp.asarray(rng.standard_normal((n, d)))
    return Problem(cost, params, x, name=f"gmm-d{d}-k{k}-n{n}", batch_size=n,
                   description=f"Gaussian-mixture log-likelihood with a Wishart prior (ADBench GMM), d={d}, k={k}, "
                               f"n={n}, float64")


def tiny() -> Problem:
    """Test sizes: d = 3, k = 4, n = 20 (P = 40)."""
    return make(d=3, k=4, n=20)


def torch_cost(problem: Problem):
    """The same objective in PyTorch: (f, inputs), f(alphas, icf, means) -> 0-d tensor (leaf order of the
    params dict: alphas, icf, means), float64."""
    torch = import_torch()
    x = torch.tensor(np.asarray(problem.batch, np.float64))
    n, d = x.shape
    rows, cols = (torch.as_tensor(i) for i in _lower_indices(d))

    def f(alphas, icf, means):
        k = alphas.shape[0]
        log_diag = icf[:, :d]
        q_diag = torch.exp(log_diag)
        lower = torch.zeros((k, d, d), dtype=icf.dtype)
        lower[:, rows, cols] = icf[:, d:]
        centred = x[:, None, :] - means[None]
        qx = q_diag[None] * centred + torch.einsum("kij,nkj->nki", lower, centred)
        sum_qs = torch.sum(log_diag, dim=1)
        inner = alphas[None] + sum_qs[None] - 0.5 * torch.sum(qx**2, dim=2)
        prior = torch.sum(0.5 * WISHART_GAMMA**2 * (torch.sum(q_diag**2, dim=1) + torch.sum(icf[:, d:] ** 2, dim=1))
                          - WISHART_M * sum_qs)
        return (torch.sum(torch.logsumexp(inner, dim=1)) - n * torch.logsumexp(alphas, dim=0) + prior
                + _constant(n, d, k))

    return f, to_torch(problem)
