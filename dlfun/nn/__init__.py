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
from .gan_blocks import DCGANDiscriminator as DCGANDiscriminator
from .gan_blocks import DCGANGenerator as DCGANGenerator
from .gan_blocks import doublings as doublings
from .gan_blocks import upsample_nearest as upsample_nearest
from .small_cnn import SmallCNN as SmallCNN
