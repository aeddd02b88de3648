"""Datasets and loaders: a job's data source -> in-memory train/val/test sets.

Sources: `builtin:digits`, `builtin:digits28`, .npz, .npy pairs, .csv, .parquet and MNIST IDX
files or folders; see `read_source`. Every problem with a source is a one-line `DataError`.
"""

from __future__ import annotations

from skylift.data._dataset import Dataset, Splits
from skylift.data._source import read_source
from skylift.data._split import load_splits, stratified_split

__all__ = ["Dataset", "Splits", "load_splits", "read_source", "stratified_split"]
