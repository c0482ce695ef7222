"""dlfun.train: training state, pure steps, epochs (loop or scan), K models, fit, checkpoints,
run directories and metric logs."""

from .checkpoint import Checkpointer as Checkpointer
from .early_stopping import EarlyStopping as EarlyStopping
from .epoch import make_indexed_step as make_indexed_step
from .epoch import make_scan_epoch as make_scan_epoch
from .epoch import over_models as over_models
from .fit import FitOptions as FitOptions
from .fit import FitResult as FitResult
from .fit import fit as fit
from .fit import init_states as init_states
from .fit import run_keys as run_keys
from .layer_probe import make_layer_probe as make_layer_probe
from .state import TrainState as TrainState
from .state import count_params as count_params
from .state import create_train_state as create_train_state
from .state import state_from_params as state_from_params
from .step import make_eval_step as make_eval_step
from .step import make_generated_train_step as make_generated_train_step
from .step import make_predict as make_predict
from .step import make_train_step as make_train_step
from .adversarial import make_adversarial_train_step as make_adversarial_train_step
from .adversarial import make_input_loss as make_input_loss
from .ewc import ewc_penalty as ewc_penalty
from .ewc import fisher_diagonal as fisher_diagonal
from .ewc import make_ewc_penalty as make_ewc_penalty
