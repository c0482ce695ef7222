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
# Readers for files a user already has (nothing downloads), text corpus, augmentation.
from .augment import augment_cifar as augment_cifar
from .augment import crop_windows as crop_windows
from .augment import random_crop as random_crop
from .augment import random_flip_left_right as random_flip_left_right
from .cifar import CIFAR10_CLASSES as CIFAR10_CLASSES
from .cifar import RestrictedUnpickler as RestrictedUnpickler
from .cifar import load_cifar10 as load_cifar10
from .cifar import load_cifar10_class_names as load_cifar10_class_names
from .idx import load_fashion_mnist as load_fashion_mnist
from .idx import load_idx_dataset as load_idx_dataset
from .idx import load_mnist as load_mnist
from .idx import read_idx as read_idx
from .locate import DATA_ENV_VAR as DATA_ENV_VAR
from .locate import resolve_data_dir as resolve_data_dir
from .text import STDLIB_CORPUS_MODULES as STDLIB_CORPUS_MODULES
from .text import CharVocab as CharVocab
from .text import TextCorpus as TextCorpus
from .text import load_corpus as load_corpus
from .text import load_stdlib_corpus as load_stdlib_corpus
from .text import load_text_file as load_text_file
from .text import split_held_out as split_held_out
