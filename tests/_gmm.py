"""A Gaussian-mixture log-likelihood as in ADBench (the cost on which the FD kernel's budget default chunk was
1.8x slower than chunk 1): a test and benchmark problem that is not gdjax's MLP.

    >>> cost, params, x = gmm_problem()          # d = 10, k = 25, n = 1000, float64: P = 1,650
    >>> cost, params, x = gmm_problem(3, 4, 20)  # the tiny version the tests use: P = 40

params: {"alphas": (k,), "means": (k, d), "icf": (k, d + d(d-1)/2)} (log-diagonal then strictly lower entries of
each component's inverse Cholesky factor Q); x: (n, d). The cost is the negative mean log-likelihood
-(mean_i logsumexp_k(alpha_k + sum log diag Q_k - |Q_k (x_i - mu_k)|^2 / 2) - logsumexp(alpha)) (without the
constant and the Wishart prior).
"""

import jax
import jax.numpy as jnp
import numpy as np


def gmm_cost(params, x):
    alphas, means, icf = params["alphas"], params["means"], params["icf"]
    d = means.shape[1]
    rows, cols = np.tril_indices(d, -1)
    log_diag = icf[:, :d]
    q = jnp.zeros((means.shape[0], d, d), icf.dtype).at[:, rows, cols].set(icf[:, d:])
    q = q + jax.vmap(jnp.diag)(jnp.exp(log_diag))
    centered = x[:, None, :] - means[None]                       # (n, k, d)
    qx = jnp.einsum("kij,nkj->nki", q, centered)                 # (n, k, d)
    main = jax.nn.logsumexp((alphas + jnp.sum(log_diag, axis=1))[None] - 0.5 * jnp.sum(qx**2, axis=-1), axis=1)
    return -(jnp.mean(main) - jax.nn.logsumexp(alphas))


def gmm_problem(d: int = 10, k: int = 25, n: int = 1000, dtype="float64", seed: int = 0):
    """(cost, params, x) for the mixture of k components in d dimensions on n random points."""
    ka, km, ki, kx = jax.random.split(jax.random.key(seed), 4)
    dt = jnp.dtype(dtype)
    params = {"alphas": jax.random.normal(ka, (k,), dt), "means": jax.random.normal(km, (k, d), dt),
              "icf": 0.3 * jax.random.normal(ki, (k, d + d * (d - 1) // 2), dt)}
    return gmm_cost, params, jax.random.normal(kx, (n, d), dt)
