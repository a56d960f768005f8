"""SASRec's training procedure (no Kedro): next-item prediction at every position of every user's
training items, early stopping on full-ranking NDCG@10 at the ``valid`` cutoff over a seeded sample.

Each batch's mean loss is weighted by its share of the epoch's target positions, so that an epoch
optimises the mean over every position however the batches group them (length buckets do not
up-weight the positions of short histories). The same weights make the batch's loss the sum of its
parts' when several processes share a batch (``shard_users``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch
from annotated_types import Ge, Lt

from llm_seqrec.data.fingerprint import data_fingerprint, weights_fingerprint
from llm_seqrec.data.padding import left_pad
from llm_seqrec.data.schema import PAD
from llm_seqrec.evaluation.scoring import validation_metric
from llm_seqrec.llm.device import choose_device, cpu_has_fast_bf16, dtype_name
from llm_seqrec.llm.item_embeddings import embedding_matrix
from llm_seqrec.models.sasrec import SASRec, SASRecArchitecture, SASRecConfig
from llm_seqrec.models.sasrec_text import SASRecText, SASRecTextConfig, TextFusion
from llm_seqrec.training.config import TrainingConfig
from llm_seqrec.training.loop import FitResult, fit, training_dtype
from llm_seqrec.training.state import seed_everything

logger = logging.getLogger(__name__)

# ``dropout: auto``, the SASRec paper's rule (Kang & McAuley 2018): 0.2 on the dense MovieLens-1M, 0.5 on
# its sparse Amazon and Steam sets. Data whose users hold at least DENSE_MEAN_TRAIN_ITEMS training items on
# average is dense: ML-1M 163.6 (its 300 users of the quick env 168.4), ML-100K 104.0; Amazon Scientific 5.0.
DENSE_DROPOUT, SPARSE_DROPOUT, DENSE_MEAN_TRAIN_ITEMS = 0.2, 0.5, 40.0


@dataclass(frozen=True)
class SASRecSettings(SASRecArchitecture):
    """The ``sasrec`` parameter section: the model's shape, then how it trains."""

    # A probability, or auto: chosen by the training data's density when the model is built (``auto_dropout``).
    dropout: Annotated[float, Ge(0), Lt(1)] | Literal["auto"] = "auto"
    loss: Literal["ce", "sampled_softmax"] = "ce"
    n_sampled_negatives: Annotated[int, Ge(1)] = 256
    # Batches of similar history lengths, so that a batch (cut to its longest member) pads little: each
    # epoch's shuffled users are sorted by length within windows of this many batches, and the batches
    # are shuffled. None = plain shuffled batches.
    bucket_window: Annotated[int, Ge(1)] | None = None
    # The full cross-entropy's three matmuls (states x items, and its two gradients) alone in this dtype;
    # the log-softmax, the gradients' sums and the rest of the step stay float32 (``training.precision``
    # is the whole step's autocast). auto = bfloat16 where the device computes it natively (a CPU with
    # AVX512-BF16 or AMX included), else float32.
    output_matmul: Literal["float32", "bfloat16", "auto"] = "float32"
    training: TrainingConfig = TrainingConfig()


def length_bucketed_batches(lengths: torch.Tensor, batch_size: int, window: int | None,
                            generator: torch.Generator) -> list[torch.Tensor]:
    """Row indices of each batch of an epoch: the rows shuffled; with ``window``, sorted by ``lengths``
    within each run of ``window`` batches and the batches shuffled, so that a batch holds similar lengths."""
    order = torch.randperm(len(lengths), generator=generator)
    if window is None:
        return list(order.split(batch_size))
    batches = []
    for part in order.split(window * batch_size):
        batches += part[torch.argsort(lengths[part], stable=True)].split(batch_size)
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


def auto_dropout(user_sequences: pd.DataFrame) -> tuple[float, float]:
    """``dropout: auto``: SASRec's dropout for these users' training items, and the statistic it was chosen
    by, the mean number of training items per user (``DENSE_DROPOUT`` from ``DENSE_MEAN_TRAIN_ITEMS``, else
    ``SPARSE_DROPOUT``)."""
    mean_items = float(user_sequences["train_items"].map(len).mean())
    return (DENSE_DROPOUT if mean_items >= DENSE_MEAN_TRAIN_ITEMS else SPARSE_DROPOUT), mean_items


def output_matmul_dtype(device: torch.device, requested: str) -> torch.dtype:
    """``SASRecSettings.output_matmul`` on ``device``: ``auto`` is bfloat16 where it is native (a GPU
    with bf16, a CPU with AVX512-BF16 or AMX: there the output layer's matmuls run 3x faster), else float32."""
    if requested != "auto":
        return getattr(torch, requested)
    native = cpu_has_fast_bf16() if device.type == "cpu" else training_dtype(device, "auto") == torch.bfloat16
    return torch.bfloat16 if native else torch.float32


def shard_users(batch: dict, rank: int, world: int) -> tuple[dict | None, float]:
    """``fit``'s ``shard`` for SASRec batches: process ``rank``'s contiguous rows (the sampled negatives
    shared), with weight 1, since each part's loss is already weighted by its own target positions."""
    n = len(batch["item_seq"])
    lo, hi = n * rank // world, n * (rank + 1) // world
    if lo == hi:
        return None, 0.0
    return {k: v if k == "negatives" else v[lo:hi] for k, v in batch.items()}, 1.0


def eval_user_sample(user_sequences: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """The seeded users whose validation metric early stopping reads (in ``user_sequences`` order); all when ``n`` is None."""
    if n is None or n >= len(user_sequences):
        return user_sequences
    return user_sequences.iloc[np.sort(np.random.default_rng(seed).choice(len(user_sequences), n, replace=False))]


@dataclass(frozen=True)
class SASRecTextSettings(SASRecSettings):
    """The ``sasrec_text`` parameter section: SASRec's, and how the item text joins the ID embedding."""

    fusion: TextFusion = TextFusion()


def train_sasrec(
    user_sequences: pd.DataFrame, n_items: int, settings: SASRecSettings, exclude_seen: bool = False,
    build: Callable[[SASRecConfig], SASRec] = SASRec, name: str = "sasrec",
) -> tuple[SASRec, FitResult]:
    """SASRec (or the subclass ``build`` makes from the config) over items 1..``n_items``, trained on every
    user's training items; the model holds the best weights (``FitResult.best_state_dict``)."""
    training = settings.training
    seed_everything(training.seed)
    dropout = settings.dropout
    if dropout == "auto":
        dropout, mean_items = auto_dropout(user_sequences)
        logger.info("%s: dropout auto = %g (%.1f training items per user on average; %g from %g, else %g)", name,
                    dropout, mean_items, DENSE_DROPOUT, DENSE_MEAN_TRAIN_ITEMS, SPARSE_DROPOUT)
    config = SASRecConfig(n_items=n_items, **{**settings.architecture(), "dropout": dropout})
    model = build(config)

    sequences = [s for s in user_sequences["train_items"] if len(s) > 1]
    inputs = left_pad([s[:-1] for s in sequences], settings.max_len)
    targets = left_pad([s[1:] for s in sequences], settings.max_len)
    lengths = (inputs != PAD).sum(1)
    positions_per_batch = float(lengths.sum()) / math.ceil(len(inputs) / training.batch_size)
    n_negatives = settings.n_sampled_negatives if settings.loss == "sampled_softmax" else None
    output_dtype = output_matmul_dtype(choose_device(training.device), settings.output_matmul)
    matmul_dtype = None if output_dtype == torch.float32 else output_dtype

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[dict]:
        for rows in length_bucketed_batches(lengths, training.batch_size, settings.bucket_window, generator):
            width = int(lengths[rows].max())
            batch = {"item_seq": inputs[rows, -width:], "targets": targets[rows, -width:]}
            if n_negatives is not None:
                batch["negatives"] = torch.randint(1, n_items + 1, (n_negatives,), generator=generator)
            yield batch

    valid = eval_user_sample(user_sequences, training.eval_users, training.seed)

    def validate(model: SASRec) -> float:
        return validation_metric(model, valid, exclude_seen=exclude_seen, batch_size=training.batch_size)

    def loss_fn(model: SASRec, batch: dict) -> torch.Tensor:
        return model.loss(**batch, matmul_dtype=matmul_dtype) * ((batch["targets"] != PAD).sum() / positions_per_batch)

    run_config = {
        "model": model.config.to_dict(),
        "loss": settings.loss,
        "n_sampled_negatives": n_negatives,
        "bucket_window": settings.bucket_window,
        "output_matmul": dtype_name(output_dtype),
        "exclude_seen": exclude_seen,
        "data": data_fingerprint(inputs, targets, valid["user_idx"].to_numpy(), valid["valid_target"].to_numpy()),
    }
    if isinstance(model, SASRecText):
        run_config["text_vectors"] = weights_fingerprint({"text_vectors": model.text_vectors})
    result = fit(model, loss_fn, make_batches, validate, training, name, run_config, shard=shard_users)
    return model, result


def train_sasrec_text(
    user_sequences: pd.DataFrame, llm_item_embeddings: pd.DataFrame, n_items: int, settings: SASRecTextSettings,
    exclude_seen: bool = False,
) -> tuple[SASRecText, FitResult]:
    """``sasrec_text``: SASRec whose items are their ID embedding joined with their frozen text vector
    (``models.sasrec_text``), trained as SASRec is."""
    vectors, has_text = embedding_matrix(llm_item_embeddings, n_items)

    def build(config: SASRecConfig) -> SASRecText:
        text_config = SASRecTextConfig(**config.to_dict(), text_dim=vectors.shape[1], fusion=settings.fusion)
        return SASRecText(text_config, vectors, has_text)

    return train_sasrec(user_sequences, n_items, settings, exclude_seen, build=build, name="sasrec_text")
