"""Layers as Flax Linen modules (pure init/apply)."""

# --- recurrent layers (RNN / LSTM / GRU) ---
from .recurrent_cells import GRUCell as GRUCell
from .recurrent_cells import LSTMCell as LSTMCell
from .recurrent_cells import LSTMState as LSTMState
from .recurrent_cells import RNNCell as RNNCell
from .recurrent import Bidirectional as Bidirectional
from .recurrent import Recurrent as Recurrent
from .recurrent import StackedRNN as StackedRNN
from .recurrent import make_rnn as make_rnn
from .recurrent_torch import params_from_torch as rnn_params_from_torch
from .recurrent_torch import params_to_torch as rnn_params_to_torch
# --- end recurrent layers ---
