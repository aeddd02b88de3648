"""An engine for a registry version: the tokenizer and the context come from the version itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from skylift.data._tokenizer import TextTokenizer
from skylift.errors import SpecError
from skylift.generation import Engine, SamplingParams
from skylift.registry import Registry
from skylift.spec import ModelSpec
from skylift.tasks import TASKS
from skylift.tasks._text import text_meta

from .conftest import generate, greedy_reference

BLOCK = 16


def _register(
    registry: Registry, name: str, task: str, layers: list[dict[str, Any]], meta: dict[str, Any]
) -> None:
    spec = ModelSpec(layers=layers)
    meta = {**meta, "task": task, "model": spec.model_dump(mode="json"), "run_id": f"run-{name}"}
    torch.manual_seed(0)
    module = TASKS[task].build(spec, meta, tuple(meta["input_shape"]), meta["n_outputs"])
    registry.register(name, module.state_dict(), meta)


def test_from_loaded_reads_tokenizer_and_block_size(tokenizer: TextTokenizer, tmp_path: Path) -> None:
    registry = Registry(tmp_path, None)
    text = text_meta(tokenizer, BLOCK)
    lm = [{"token_embedding": {"dim": 16}}, {"decoder_block": {"heads": 2}}, {"lm_head": {}}]
    lm_meta = {"n_outputs": tokenizer.vocab_size, "input_shape": [BLOCK], "eos_id": 1, "block_size": BLOCK}
    _register(registry, "lm", "language_modeling", lm, {**lm_meta, **text})
    classifier = [{"token_embedding": {"dim": 16}}, {"pool": {}}, {"dense": {"units": 2}}]
    _register(
        registry,
        "topics",
        "classification",
        classifier,
        {"classes": ["a", "b"], "n_outputs": 2, "input_shape": [BLOCK], **text},
    )
    loaded = registry.load("lm")
    engine = Engine.from_loaded(loaded, max_running=2)
    try:
        assert engine.context == BLOCK
        assert engine.tokenizer.fingerprint() == tokenizer.fingerprint()
        out = generate(
            engine, [5, 6, 7], SamplingParams(max_tokens=BLOCK - 3, temperature=0.0, ignore_eos=True)
        )
        assert list(out.token_ids) == greedy_reference(loaded.module, [5, 6, 7], BLOCK - 3)
    finally:
        engine.close()
    with pytest.raises(SpecError, match="classification model, not a language model"):
        Engine.from_loaded(registry.load("topics"))
