"""Language modelling: causal next-token prediction over packed blocks of a tokenized text corpus.

The corpus is tokenized once into a token file (cached by content, so re-runs and tuning trials
skip it) and read block by block from disk, so a corpus larger than memory trains in bounded
memory. Metrics: loss (nats per token), perplexity, and bits per byte of text (comparable across
tokenizers). Shape legend: b batch rows, T tokens per block, V vocabulary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from skylift import _atomic
from skylift.data._rows import StreamRows, batches
from skylift.errors import DataError
from skylift.tasks._base import Task, TaskData

if TYPE_CHECKING:
    import torch

    from skylift.data._rows import Rows
    from skylift.spec import JobSpec, TrainSpec

PROMPTS = 3  # continuations sampled at each epoch end
PROMPT_TOKENS = 8  # each prompt: the first tokens of a validation block
NEW_TOKENS = 24  # tokens sampled after each prompt
TEMPERATURE = 0.8
EVAL_LOGITS = 1 << 24  # logits held at once in evaluation (64 MiB of float32)


class LanguageModeling(Task):
    name = "language_modeling"
    columns = ("val_perplexity", "val_bits_per_byte")
    unit_rate = "tokens_per_s"

    def load(self, spec: JobSpec, cache: Path | None = None) -> TaskData:
        from skylift.data._corpus import read_corpus
        from skylift.data._tokens import TokenBlocks, tokenize_corpus
        from skylift.home import skylift_home
        from skylift.tasks._text import text_meta, tokenizer_for

        d = spec.data
        block = d.block_size or 0
        corpus = read_corpus(d.train)
        tok = tokenizer_for(d, corpus.texts())
        cache = cache or skylift_home(None) / "cache"
        tokens = tokenize_corpus(corpus, tok, cache / "tokens")
        blocks = TokenBlocks(tokens, block)
        n = len(blocks)
        test_rows: Rows | None = None
        if d.test is not None:
            test_blocks = TokenBlocks(tokenize_corpus(read_corpus(d.test), tok, cache / "tokens"), block)
            test_rows = StreamRows(test_blocks)
            n_test = 0
        else:
            n_test = round(d.test_split * n) if d.test_split > 0 else 0
        n_val = max(1, round(d.validation_split * (n - n_test)))
        n_train = n - n_test - n_val
        if n_train < 1:
            raise DataError(
                f"{d.train}: {tokens.count} tokens make {n} block(s) of {block}: too few to hold out "
                f"validation and train on; use a smaller data.block_size or more text"
            )
        rows = StreamRows(blocks)
        if n_test:
            test_rows = rows.part(slice(n_train + n_val, n))
        return TaskData(
            train=rows.part(slice(0, n_train)),
            val=rows.part(slice(n_train, n_train + n_val)),
            test=test_rows,
            input_shape=(block,),
            n_outputs=tok.vocab_size,
            terms_per_row=block,
            meta={
                "task": self.name,
                **text_meta(tok, block),
                "eos_id": tok.eos_id,
                "block_size": block,
                # Served for /v1/chat/completions; a model trained without one gets the plain template.
                **({"chat_template": d.chat_template} if d.chat_template is not None else {}),
            },
            fingerprint=tokens.corpus_fingerprint,
            extras={"bytes_per_token": tokens.bytes_per_token},
        )

    def loss_sum(self, out: torch.Tensor, y: torch.Tensor, t: TrainSpec, data: TaskData) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="sum")

    def eval_sums(self, model: torch.nn.Module, rows: Rows, data: TaskData) -> torch.Tensor:
        """float64 [loss in nats summed over tokens, tokens]."""
        import torch
        import torch.nn.functional as F

        model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        # Rows per batch by logits size: (b, T, V) float32 logits plus their log-softmax, ~64 MiB each.
        rows_per_batch = max(1, EVAL_LOGITS // (data.terms_per_row * data.n_outputs))
        with torch.no_grad():
            for x_bT, y_bT in batches(rows, rows_per_batch):
                logits_bTV = model(x_bT)
                nats_N = F.cross_entropy(
                    logits_bTV.reshape(-1, logits_bTV.shape[-1]), y_bT.reshape(-1), reduction="none"
                )
                sums[0] += nats_N.double().sum()  # per-token float32, summed in float64
                sums[1] += y_bT.numel()
        return sums

    def summarize(
        self, sums: torch.Tensor, data: TaskData, prefix: str = "val_"
    ) -> tuple[float, dict[str, float]]:
        nats, tokens = (float(v) for v in sums.cpu())
        loss = nats / max(tokens, 1.0)
        bits_per_byte = loss / math.log(2) / data.extras.get("bytes_per_token", 1.0)
        return loss, {
            f"{prefix}perplexity": math.exp(min(loss, 700.0)),
            f"{prefix}bits_per_byte": bits_per_byte,
        }

    def epoch_end(self, model: torch.nn.Module, data: TaskData, run: Path, epoch: int) -> list[str]:
        """Continuations of fixed prompts (the first tokens of spread validation blocks), sampled with a
        seed of the epoch; printed and appended to run/samples.jsonl."""
        import torch

        from skylift.data._tokenizer import TextTokenizer

        tok = TextTokenizer.from_json(data.meta["tokenizer"])
        n = len(data.val)
        picks = sorted({i * n // PROMPTS for i in range(PROMPTS)})
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        x, _ = data.val.take(torch.tensor(picks, device=device))
        prompts = x[:, :PROMPT_TOKENS]
        out = generate(model, prompts, NEW_TOKENS, data.meta["block_size"], seed=epoch)
        lines, records = [], []
        for p, o in zip(prompts.tolist(), out.tolist(), strict=True):
            prompt, more = tok.decode(p), tok.decode(o)
            records.append({"epoch": epoch, "prompt": prompt, "continuation": more})
            lines.append(f"epoch {epoch} sample: {prompt!r} -> {more!r}")
        path = run / "samples.jsonl"
        old = path.read_text() if path.exists() else ""
        kept = "".join(line + "\n" for line in old.splitlines() if json.loads(line)["epoch"] < epoch)
        _atomic.write_text(path, kept + "".join(json.dumps(r) + "\n" for r in records))
        return lines


def generate(
    model: torch.nn.Module, prompt_bT: torch.Tensor, new: int, context: int, seed: int
) -> torch.Tensor:
    """`new` tokens sampled after each prompt (temperature TEMPERATURE, a seeded generator), without
    a KV cache: each step re-reads the last `context` tokens (fine for a few samples per epoch)."""
    import torch

    gen = torch.Generator(device=prompt_bT.device).manual_seed(seed)
    ids = prompt_bT
    was = model.training
    model.eval()
    with torch.no_grad():
        for _ in range(new):
            logits_bV = model(ids[:, -context:])[:, -1].float() / TEMPERATURE
            probs = torch.softmax(logits_bV, dim=-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1, generator=gen)], dim=1)
    model.train(was)
    return ids[:, prompt_bT.shape[1] :]
