"""The FD-vs-`jax.grad` benchmark (`gdjax bench`, `make bench`), one concept per module:

    problem.py   the lecture's problem: network, params, data, float64 reference gradient, restriction, error
"""
