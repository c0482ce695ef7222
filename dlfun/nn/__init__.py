"""Layers and the pure ops under them."""

from .conv_ops import conv2d as conv2d
from .conv_ops import describe_conv_lowering as describe_conv_lowering
from .conv_ops import max_pool2d as max_pool2d
