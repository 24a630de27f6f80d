"""What the library knows about a network, each thing once: activations, losses, the MLP and its forward pass.

  activations.py  one `Activation` object per activation (fn, derivative, difference form, analytic); registries
  losses.py       one `Loss` object per loss (per-example cost, output error, difference form); `LOSSES`
  mlp.py          `MLP`, `Layer`, `init_mlp` and the one forward pass (`forward`, `MLP.states`): per layer the
                  input, pre-activation and activation, the protocol the structured gradient methods read

`gdjax.nn` and `gdjax.costs` re-export these under their familiar names.
"""

from gdjax.models.activations import ACTIVATIONS, OUTPUT_ACTIVATIONS, Activation, register, unregister
from gdjax.models.losses import LOSSES, Loss
from gdjax.models.mlp import (
    INIT_SCHEMES, MLP, Layer, LayerState, Params, check_params, forward, init_mlp, layer_grads,
)

__all__ = [
    "ACTIVATIONS", "OUTPUT_ACTIVATIONS", "Activation", "register", "unregister",
    "LOSSES", "Loss",
    "INIT_SCHEMES", "MLP", "Layer", "LayerState", "Params", "check_params", "forward", "init_mlp", "layer_grads",
]
