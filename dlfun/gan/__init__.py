"""dlfun.gan: generative adversarial networks. The two-player state and step, sampling, and
evaluation (modes, quality, class coverage, classifier-feature Fréchet distance)."""

from .evaluate import class_coverage as class_coverage
from .evaluate import detect_mode_collapse as detect_mode_collapse
from .evaluate import feature_frechet_distance as feature_frechet_distance
from .evaluate import feature_stats as feature_stats
from .evaluate import frechet_distance as frechet_distance
from .evaluate import mode_metrics as mode_metrics
from .sample import generate as generate
from .sample import interpolate_latents as interpolate_latents
from .sample import sample_latent as sample_latent
from .state import GANState as GANState
from .state import create_gan_state as create_gan_state
from .step import GAN_LOSSES as GAN_LOSSES
from .step import make_gan_step as make_gan_step
from .step import r1_penalty as r1_penalty
