"""dlfun.runs: a run's life, once for every experiment.

Configs and presets (:mod:`.config`), the command line (:mod:`.cli`), the locked run
directory (:mod:`.rundir`), restore-or-start, the checkpoint policy and signals
(:mod:`.run`), the metrics log (:mod:`.metrics_log`), the experiment's end and summary
(:mod:`.experiment`), and the wiring of config flags into ``dlfun.train.fit``
(:mod:`.training`, :mod:`.classifier`). Sits above ``dlfun.train``, ``dlfun.parallel``,
``dlfun.rl`` and ``dlfun.gan``, which never import it.
"""

from .cli import parse_config as parse_config
from .cli import run_cli as run_cli
from .config import RunConfig as RunConfig
from .config import TrainConfig as TrainConfig
from .experiment import run_experiment as run_experiment
from .metrics_log import MetricsLog as MetricsLog
from .run import Run as Run
from .run import RunInterrupted as RunInterrupted
from .rundir import RunDir as RunDir
