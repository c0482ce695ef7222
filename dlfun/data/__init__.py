"""Datasets: readers for files a user already has, a text corpus, keyed augmentation."""

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
