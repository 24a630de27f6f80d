"""Gradient estimators behind one signature: `gradient(cost, method, **options)(params, batch[, key])`."""

from gdjax.gradients import autodiff  # noqa: F401  (registers "reverse", "forward")
from gdjax.gradients import backprop, finite_diff  # noqa: F401  ("backprop", "fd-*", "fd-loop")
from gdjax.gradients import structured, stochastic  # noqa: F401
from gdjax.gradients._directions import direction_mesh
from gdjax.gradients.registry import Estimator, Method, available_methods, gradient, method_info, n_params

__all__ = ["Estimator", "Method", "available_methods", "direction_mesh", "gradient", "method_info", "n_params"]
