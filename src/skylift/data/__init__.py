"""Datasets and loaders: a job's data source -> in-memory train/val/test sets, text and token files.

Sources: `builtin:digits`, `builtin:digits28`, .npz, .npy pairs, .csv, .parquet and MNIST IDX
files or folders; see `read_source`. `open_features` reads the features of such a source (or a
folder of files) a chunk at a time, for batch inference on inputs larger than memory. Text:
`read_text_table` (texts with labels or targets), `read_corpus` (.txt documents),
`TextTokenizer`, and `tokenize_corpus` + `TokenBlocks` for corpora larger than memory. Image
and audio files (class folders or a table of paths, with `data.image` / `data.audio` in the spec)
go through `load_splits` too: decoded once by `ImagePrep` / `AudioPrep`, cached on disk by
content (`_media_source`). Every problem with a source is a one-line `DataError`.
"""

from __future__ import annotations

from skylift.data._corpus import Corpus as Corpus
from skylift.data._corpus import read_corpus as read_corpus
from skylift.data._dataset import Dataset, Splits
from skylift.data._features import FeatureSource as FeatureSource
from skylift.data._features import open_features as open_features
from skylift.data._source import read_source
from skylift.data._split import load_splits, stratified_split
from skylift.data._text import TextTable as TextTable
from skylift.data._text import read_text_table as read_text_table
from skylift.data._tokenizer import TextTokenizer as TextTokenizer
from skylift.data._tokens import TokenBlocks as TokenBlocks
from skylift.data._tokens import TokenFile as TokenFile
from skylift.data._tokens import tokenize_corpus as tokenize_corpus

__all__ = ["Dataset", "Splits", "load_splits", "read_source", "stratified_split"]
