"""dlfun.viz: looking inside trained models (class activation maps, filters, activations)."""

from .cam import cam as cam
from .cam import class_activation_maps as class_activation_maps
from .cam import feature_maps as feature_maps
from .cam import grad_cam as grad_cam
from .cam import upsample_maps as upsample_maps
from .projection import pca_project as pca_project
