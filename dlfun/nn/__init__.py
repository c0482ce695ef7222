"""dlfun.nn: layers as Flax Linen modules (pure ``init``/``apply``)."""

from .activations import ACTIVATIONS as ACTIVATIONS
from .activations import get_activation as get_activation
from .conv import Conv as Conv
from .conv import conv_output_size as conv_output_size
from .dense import MLP as MLP
from .dense import Dense as Dense
from .dropout import Dropout as Dropout
from .dropout import dropout as dropout
from .norm import BatchNorm as BatchNorm
from .pooling import avg_pool as avg_pool
from .pooling import global_avg_pool as global_avg_pool
from .pooling import l2_pool as l2_pool
from .pooling import max_pool as max_pool
from .pooling import min_pool as min_pool
from .residual import Residual as Residual
# Convolutional classifiers (features/classify split for class activation maps).
from .cnn_models import BasicBlock as BasicBlock
from .cnn_models import ConvBN as ConvBN
from .cnn_models import LeNet5 as LeNet5
from .cnn_models import Plain20 as Plain20
from .cnn_models import ResNet20 as ResNet20
from .cnn_models import VGGSmall as VGGSmall
from .cnn_models import param_at as param_at
