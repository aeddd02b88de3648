"""Datasets and loaders: a job's data source -> in-memory train/val/test sets.

Sources: `builtin:digits`, `builtin:digits28`, .npz, .npy pairs, .csv, .parquet and MNIST IDX
files or folders; see `read_source`. `open_features` reads the features of such a source (or a
folder of files) a chunk at a time, for batch inference on inputs larger than memory. Every
problem with a source is a one-line `DataError`.
"""

from __future__ import annotations

from skylift.data._dataset import Dataset, Splits
from skylift.data._features import FeatureSource as FeatureSource
from skylift.data._features import open_features as open_features
from skylift.data._source import read_source
from skylift.data._split import load_splits, stratified_split

__all__ = ["Dataset", "Splits", "load_splits", "read_source", "stratified_split"]
