"""Gradient estimators behind one signature: `gradient(cost, method, **options)(params, batch[, key])`."""

from gdjax.gradients import autodiff  # noqa: F401  (registers "reverse", "forward")
from gdjax.gradients import backprop, finite_diff  # noqa: F401  ("backprop", "fd-*", "fd-loop")
from gdjax.gradients import structured, stochastic  # noqa: F401
from gdjax.gradients import activity  # noqa: F401  ("forward-gradient-activity")
from gdjax.gradients.registry import (KINDS, Estimator, Method, Subset, available_methods, gradient, import_modules,
                                      method_info, methods_where, n_params, reference_method)

# every other public module of this package registers its methods on import too (in name order, after the ones
# above): adding an estimator is one module here (docs/architecture.md, "Where new things go")
import_modules(__name__, __path__)

__all__ = ["KINDS", "Estimator", "Method", "Subset", "available_methods", "gradient", "method_info", "methods_where",
           "n_params", "reference_method"]
