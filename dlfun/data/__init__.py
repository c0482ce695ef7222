"""dlfun.data: embedded datasets, splits, batching by key, and readers for users' files."""

from .batching import batch_indices as batch_indices
from .batching import check_batch_size as check_batch_size
from .batching import iterate_batches as iterate_batches
from .batching import num_batches as num_batches
from .embedded import Table as Table
from .embedded import advertising as advertising
from .embedded import apartments as apartments
from .embedded import digits as digits
from .embedded import xor as xor
from .split import Split as Split
from .split import Splits as Splits
from .split import split_indices as split_indices
from .split import standardize as standardize
from .split import train_val_test as train_val_test
