"""dlfun.nn: layers as Flax Linen modules (pure ``init``/``apply``)."""

from .activations import ACTIVATIONS as ACTIVATIONS
from .activations import get_activation as get_activation
from .conv import Conv as Conv
from .conv import conv_output_size as conv_output_size
from .conv_ops import conv2d as conv2d
from .conv_ops import describe_conv_lowering as describe_conv_lowering
from .conv_ops import max_pool2d as max_pool2d
from .conv_ops import plain_lowering as plain_lowering
from .conv_ops import traced_with_plain_lowering as traced_with_plain_lowering
from .dense import MLP as MLP
from .dense import Dense as Dense
from .dropout import Dropout as Dropout
from .dropout import dropout as dropout
from .dropout import dropout_per_example as dropout_per_example
from .norm import BatchNorm as BatchNorm
from .pooling import avg_pool as avg_pool
from .pooling import global_avg_pool as global_avg_pool
from .pooling import l2_pool as l2_pool
from .pooling import max_pool as max_pool
from .pooling import min_pool as min_pool
from .residual import Residual as Residual
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
# --- models over the recurrent layers, hidden-state gradients, sampling ---
from .hidden_gradients import gradient_norms_over_time as gradient_norms_over_time
from .hidden_gradients import hidden_state_gradients as hidden_state_gradients
from .sampling import sample_language_model as sample_language_model
from .sampling import sample_tokens as sample_tokens
from .sequence_models import CharLM as CharLM
from .sequence_models import SequenceToOne as SequenceToOne
from .sequence_models import lstm_bias_init as lstm_bias_init
from .sequence_models import sequence_hidden_gradients as sequence_hidden_gradients
# --- end recurrent layers ---
from .gan_blocks import DCGANDiscriminator as DCGANDiscriminator
from .gan_blocks import DCGANGenerator as DCGANGenerator
from .gan_blocks import doublings as doublings
from .gan_blocks import upsample_nearest as upsample_nearest
from .small_cnn import SmallCNN as SmallCNN
# Convolutional classifiers (features/classify split for class activation maps).
from .cnn_models import BasicBlock as BasicBlock
from .cnn_models import ConvBN as ConvBN
from .cnn_models import LeNet5 as LeNet5
from .cnn_models import Plain20 as Plain20
from .cnn_models import ResNet20 as ResNet20
from .cnn_models import VGGSmall as VGGSmall
from .cnn_models import param_at as param_at
