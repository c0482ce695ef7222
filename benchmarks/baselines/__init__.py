"""dlfun's own reference implementations of the benchmark models: plain Flax Linen + Optax,
and PyTorch (eager, or ``torch.compile``), with the same shapes, batches and optimizers.

* :mod:`.specs`: the models' shapes, batch sizes, losses, optimizers and analytic FLOPs;
* :mod:`.flax_models` and :mod:`.flax_step`: plain Flax (``python -m
  benchmarks.baselines.flax_step --model mlp`` prints a ``RESULT {json}`` line);
* :mod:`.torch_models` and :mod:`.torch_step`: PyTorch (``python -m
  benchmarks.baselines.torch_step --model mlp --mode eager --device gpu``);
* :mod:`.matmul`: the device's matrix-product peak (``--dtype bf16``).

Written here from the model definitions so that a clone runs every benchmark; the scripts in
``../shared/baselines`` stay an outside cross-check (``--cross-check`` on the step
benchmarks). Only :mod:`.specs` is imported here: torch is imported only by its modules.
"""

from .specs import SPECS as SPECS
from .specs import STEP_MODELS as STEP_MODELS
from .specs import ModelSpec as ModelSpec
from .specs import make_data as make_data
