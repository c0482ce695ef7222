"""dlfun.parallel: simulated devices and meshes, logical-axis rules, data parallelism (jit,
shard_map, pmap), model sharding (tensor parallel, FSDP), the hybrid "one weird trick",
pipeline stages, multi-process start-up and collective accounting from HLO."""

from .collectives import Collective as Collective
from .collectives import find_collectives as find_collectives
from .collectives import ring_allreduce_bytes as ring_allreduce_bytes
from .collectives import summarize as summarize
from .collectives import tree_bytes as tree_bytes
from .data_parallel import METHODS as METHODS
from .data_parallel import DataParallel as DataParallel
from .data_parallel import make_data_parallel as make_data_parallel
from .data_parallel import model_axis_name as model_axis_name
from .devices import DATA as DATA
from .devices import MODEL as MODEL
from .devices import STAGE as STAGE
from .devices import data_mesh as data_mesh
from .devices import make_mesh as make_mesh
from .devices import simulate_cpu_devices as simulate_cpu_devices
from .distributed import global_batch as global_batch
from .distributed import initialize as initialize
from .distributed import local_rows as local_rows
from .nets import ShardedMLP as ShardedMLP
from .nets import SmallCNN as SmallCNN
from .nets import SmallMLP as SmallMLP
from .pipeline import bubble_fraction as bubble_fraction
from .pipeline import create_pipeline_state as create_pipeline_state
from .pipeline import gpipe_schedule as gpipe_schedule
from .pipeline import init_stages as init_stages
from .pipeline import make_pipeline_loss as make_pipeline_loss
from .pipeline import make_pipeline_train_step as make_pipeline_train_step
from .pipeline import split_layers as split_layers
from .rules import DATA_PARALLEL_RULES as DATA_PARALLEL_RULES
from .rules import FSDP_RULES as FSDP_RULES
from .rules import HYBRID_RULES as HYBRID_RULES
from .rules import TENSOR_PARALLEL_RULES as TENSOR_PARALLEL_RULES
from .rules import constrain as constrain
from .schemes import SCHEMES as SCHEMES
from .schemes import Scheme as Scheme
from .schemes import build_scheme as build_scheme
from .schemes import check_scheme_fits as check_scheme_fits
from .sharding import create_sharded_train_state as create_sharded_train_state
from .sharding import make_sharded_train_step as make_sharded_train_step
from .sharding import max_bytes_per_device as max_bytes_per_device
from .sharding import state_shardings as state_shardings
