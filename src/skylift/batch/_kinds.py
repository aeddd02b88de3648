"""The kinds of registered model batch inference runs, found by the signature's `kind` in KINDS.

Each kind says which options it takes, what it reads (numeric features, or text with the
model's own tokenizer) and what it writes: a classifier its class (and probabilities or top-k),
a regressor one value per target, a generator (language model) each text's log-likelihood and
token count.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from skylift.batch._predictor import Outputs, Predictor, ValuesPredictor
from skylift.errors import DataError, SpecError

if TYPE_CHECKING:
    from skylift.batch._job import PredictJob
    from skylift.registry import LoadedModel

_TEXT_SUFFIXES = (".jsonl", ".ndjson", ".txt")


class Kind:
    """One kind: options it accepts, its input source, its predictor and its output columns."""

    name: ClassVar[str]

    def check(self, model: LoadedModel, fmt: str, proba: bool, top_k: int | None) -> None:
        """SpecError for options this kind does not take."""
        if proba or top_k is not None:
            flag = "--proba" if proba else "--top-k"
            raise SpecError(f"{flag} applies to classifiers; {model.ref} is a {self.name} ({model.task})")
        _check_keyed(model, fmt)

    def outputs(self, model: LoadedModel, proba: bool, top_k: int | None) -> Outputs:
        raise NotImplementedError

    def predictor(self, model: LoadedModel, outputs: Outputs) -> Any:
        raise NotImplementedError

    def open(self, job: PredictJob, model: LoadedModel, arrow_threads: bool) -> Any:
        """The job's input for this model: numeric features, text with the model's tokenizer, or
        media files decoded with its recorded preprocessing."""
        if model.data.get("input") == "text":
            from skylift.tasks._text import encode

            tok = _tokenizer(model)
            length = int(model.data["max_length"])
            return _text(job, lambda texts: encode(tok, texts, length), lines=False)
        if model.preprocessing is not None:
            from skylift.batch._media_source import MediaSource

            return MediaSource(job.input, model.preprocessing, job.chunk_rows)
        return _features(job, model, arrow_threads)


class Classifier(Kind):
    name = "classifier"

    def check(self, model: LoadedModel, fmt: str, proba: bool, top_k: int | None) -> None:
        """The options were checked on their own (`check_options`); here against the class count."""
        if top_k is not None and top_k > len(model.classes):
            raise SpecError(f"--top-k {top_k} exceeds the model's {len(model.classes)} classes")
        _check_keyed(model, fmt)

    def outputs(self, model: LoadedModel, proba: bool, top_k: int | None) -> Outputs:
        return Outputs(proba, top_k, key=_key(model))

    def predictor(self, model: LoadedModel, outputs: Outputs) -> Any:
        return _keyed(Predictor(model.module, model.input_shape, len(model.classes), outputs), outputs)


class Regressor(Kind):
    name = "regressor"

    def outputs(self, model: LoadedModel, proba: bool, top_k: int | None) -> Outputs:
        return Outputs(columns=tuple((str(t), "float32") for t in model.data["targets"]), key=_key(model))

    def predictor(self, model: LoadedModel, outputs: Outputs) -> Any:
        return _keyed(ValuesPredictor(model.module, model.input_shape, len(outputs.columns)), outputs)


class Generator(Kind):
    name = "generator"

    def check(self, model: LoadedModel, fmt: str, proba: bool, top_k: int | None) -> None:
        super().check(model, fmt, proba, top_k)
        if fmt == "npy":
            raise SpecError(
                f"{model.ref} is a language model: it writes log_likelihood and tokens, which one .npy "
                "array cannot hold; use .npz, .parquet, .csv or .jsonl"
            )

    def outputs(self, model: LoadedModel, proba: bool, top_k: int | None) -> Outputs:
        from skylift.batch._likelihood import COLUMNS

        return Outputs(columns=COLUMNS)

    def predictor(self, model: LoadedModel, outputs: Outputs) -> Any:
        from skylift.batch._likelihood import LikelihoodPredictor

        tok = _tokenizer(model)
        eos = model.data.get("eos_id", tok.eos_id)
        if eos is None:
            raise SpecError(f"{model.ref}: its tokenizer has no end-of-text token to start texts with")
        return LikelihoodPredictor(model.module, tok, int(model.data["block_size"]), int(eos))

    def open(self, job: PredictJob, model: LoadedModel, arrow_threads: bool) -> Any:
        return _text(job, lambda texts: texts, lines=True)


KINDS: dict[str, Kind] = {k.name: k for k in (Classifier(), Regressor(), Generator())}


def kind_of(model: LoadedModel) -> Kind:
    """The model's kind from its signature (classifier for versions registered before kinds);
    SpecError for a kind batch inference does not run (an imported embedder: serve it)."""
    kind = str(model.info.get("signature", {}).get("kind", "classifier"))
    if kind not in KINDS:
        raise SpecError(
            f"{model.ref} is an {kind}: batch prediction runs {', '.join(KINDS)} models so far "
            "(skylift serve answers /v1/embeddings)"
        )
    return KINDS[kind]


def _key(model: LoadedModel) -> str | None:
    """The key column of a model's rows: the file's path for media models, else none."""
    from skylift.batch._media_source import KEY

    return KEY if model.preprocessing is not None else None


def _keyed(predictor: Any, outputs: Outputs) -> Any:
    from skylift.batch._predictor import KeyedPredictor

    return KeyedPredictor(predictor) if outputs.key is not None else predictor


def _check_keyed(model: LoadedModel, fmt: str) -> None:
    if fmt == "npy" and model.preprocessing is not None:
        raise SpecError(
            f"{model.ref} reads files: its output pairs each file's path with its prediction, which one "
            ".npy array cannot hold; use .csv, .parquet, .jsonl or .npz"
        )


def _tokenizer(model: LoadedModel) -> Any:
    from skylift.data._tokenizer import TextTokenizer

    if not model.tokenizer:
        raise DataError(f"{model.ref} is a text model but holds no tokenizer; re-register it from its run")
    return TextTokenizer.from_json(model.tokenizer, source=f"{model.ref}: tokenizer.json")


def _text(job: PredictJob, prepare: Any, lines: bool) -> Any:
    from skylift.batch._text_source import TextSource, read_texts

    return TextSource(job.input, read_texts(job.input, job.text_column, lines), job.chunk_rows, prepare)


def _features(job: PredictJob, model: LoadedModel, arrow_threads: bool) -> Any:
    from pathlib import Path

    from skylift.data import open_features

    suffix = Path(job.input.strip()).suffix.lower()
    if suffix in _TEXT_SUFFIXES:
        raise DataError(
            f"{job.input}: model {model.ref} takes numeric features (input_shape "
            f"{list(model.input_shape)}); {suffix} text is for text models"
        )
    source = open_features(
        job.input, chunk_rows=job.chunk_rows, label_column=job.label_column, use_threads=arrow_threads
    )
    want = math.prod(model.input_shape)
    if source.features != want:
        source.close()
        raise DataError(
            f"{job.input}: samples have {source.features} features (shape {list(source.sample_shape)}) but "
            f"model {model.ref} takes input_shape {list(model.input_shape)} ({want} values per row)"
        )
    return source
