"""RA-Rec's training procedure (no Kedro): the aligner trains on the tailored samples with the LLM and
the ID table frozen, early stopping on full-ranking NDCG@10 at the ``valid`` cutoff over a seeded user
sample; afterwards a check that neither frozen part moved. The artifact's config records the prompt,
the budget spent and that check.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch
from annotated_types import Ge, Gt, Le, MinLen
from pydantic import ConfigDict

from llm_seqrec.data.fingerprint import data_fingerprint, weights_fingerprint
from llm_seqrec.data.leakage import check_inputs_precede_targets
from llm_seqrec.evaluation.scoring import validation_metric
from llm_seqrec.llm.backbone import Backbone, SectionDepth, check_backbone
from llm_seqrec.models.aligner import AlignerConfig, IDAligner, RARec
from llm_seqrec.models.aligner_prompt import PROMPT_KEYS, prompt_layout
from llm_seqrec.training.config import TrainingConfig
from llm_seqrec.training.id_model import eval_user_sample
from llm_seqrec.training.log import training_log
from llm_seqrec.training.loop import fit
from llm_seqrec.training.state import seed_everything

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignmentConfig:
    """RA-Rec (the ``alignment`` parameter section): tailored data, prompt layout, aligner, loss and
    training budget. The defaults hold where no configuration sets a key (tests build sections in
    code); conf/base/parameters_alignment.yml spells them out for editing."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    # The backbone's depth its nodes load (N, all, None = backbone.layers); the aligner has one prefix per layer.
    layers: SectionDepth = None
    # Tailored data (data/alignment_samples.py).
    samples: Annotated[int, Ge(1)] = 256  # budget of (history, target) training samples
    length_buckets: Annotated[int, Ge(1)] = 4  # quantile buckets of users' history lengths
    popularity_buckets: Annotated[int, Ge(1)] = 4  # quantile buckets of items' training interactions
    overlap_field: Literal["title", "text"] = "title"  # item field whose words the target must share with the history
    max_word_df: Annotated[float, Gt(0), Le(1)] = 0.05  # words in more items than this share do not count as overlap
    seed: int = 42
    # Prompt layout (models/aligner_prompt.py): instruction, then per history item an ID token and its text, then readout.
    history_items: Annotated[int, Ge(1)] = 8
    item_tokens: Annotated[int, Ge(1)] = 12
    instruction: Annotated[str, MinLen(1)] = "Items a user chose, oldest first:\n"
    readout: Annotated[str, MinLen(1)] = "The item the user will choose next:"
    # Aligner and loss.
    score_dim: Annotated[int, Ge(1)] = 64
    n_negatives: Annotated[int, Ge(1)] = 16  # BPR negatives per sample, drawn uniformly over items
    infonce_weight: Annotated[float, Ge(0)] = 0.1
    infonce_temperature: Annotated[float, Gt(0)] = 0.1
    eval_batch_size: Annotated[int, Ge(1)] = 16  # users per LLM pass when validating and scoring
    # The frozen ID model whose item table is aligned: sasrec, or sasrec_text (its ID and text views joined).
    id_model: Literal["sasrec", "sasrec_text"] = "sasrec"
    training: TrainingConfig = TrainingConfig(epochs=2, batch_size=8, lr=2e-3, patience=2, eval_users=64)

    def prompt(self) -> dict:
        """The prompt settings (``PROMPT_KEYS``), as the artifact records them."""
        return {key: getattr(self, key) for key in PROMPT_KEYS}


def id_table(id_item_embeddings: pd.DataFrame, n_items: int) -> torch.Tensor:
    """The ID model's item embeddings as ``[n_items + 1, d]`` (row 0, padding, zero)."""
    if sorted(id_item_embeddings["item_idx"].tolist()) != list(range(1, n_items + 1)):
        raise ValueError(f"id_item_embeddings must hold items 1..{n_items} of item_catalog once each")
    frame = id_item_embeddings.sort_values("item_idx")
    table = torch.from_numpy(np.stack(frame["embedding"].to_numpy()).astype(np.float32))
    return torch.cat([table.new_zeros(1, table.shape[1]), table])


def load_ra_rec(aligner_model: dict, llm: Backbone, item_catalog: pd.DataFrame, query_batch_size: int | None = None,
                progress: bool = False) -> RARec:
    """The trained RA-Rec of ``aligner_model`` over ``llm`` (the backbone it was trained on), in eval mode."""
    check_backbone(aligner_model["config"]["backbone"], llm.name, llm.n_layers, what="aligner_model")
    aligner = IDAligner.from_artifact({"config": aligner_model["config"]["aligner"], "state_dict": aligner_model["state_dict"]})
    return RARec(llm.model.get_decoder(), aligner.to(llm.device).eval(),
                 prompt_layout(llm.tokenizer, item_catalog, aligner_model["config"]["prompt"]),
                 backbone_dtype=llm.dtype_name, query_batch_size=query_batch_size, progress=progress, backbone_name=llm.name)


def shard_histories(batch: dict, rank: int, world: int) -> tuple[dict | None, float]:
    """``fit``'s ``shard`` for an alignment batch (``PromptLayout.batch`` + targets and negatives):
    process ``rank``'s contiguous rows, with the ID positions of those rows (``id_rows`` renumbered),
    weighted by its share of the rows. The in-batch terms of the loss see only the process's rows."""
    n = len(batch["ids"])
    lo, hi = n * rank // world, n * (rank + 1) // world
    if lo == hi:
        return None, 0.0
    ids = (batch["id_rows"] >= lo) & (batch["id_rows"] < hi)
    part = {k: v[ids] for k, v in batch.items() if k in ("id_cols", "id_items")}
    part["id_rows"] = batch["id_rows"][ids] - lo
    part.update({k: v[lo:hi] for k, v in batch.items() if k not in part})
    return part, (hi - lo) / n


def train_aligner(
    alignment_samples: pd.DataFrame,
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    id_item_embeddings: pd.DataFrame,
    llm: Backbone,
    config: AlignmentConfig,
    exclude_seen: bool = False,
) -> tuple[dict, pd.DataFrame]:
    """The ``aligner_model`` artifact and the ``ra_rec`` training log."""
    training = config.training
    histories = alignment_samples["history"].map(lambda h: [int(i) for i in h]).tolist()
    targets = torch.as_tensor(alignment_samples["target"].to_numpy(dtype=np.int64))
    if not histories:
        raise ValueError("alignment_samples is empty: no candidate shared a word with its history (see alignment.max_word_df)")
    check_inputs_precede_targets(
        user_sequences, alignment_samples["user_idx"], alignment_samples["position"], histories,
        targets=targets.tolist(), what="alignment_samples",
    )
    prompt = config.prompt()
    layout = prompt_layout(llm.tokenizer, item_catalog, prompt)
    n_items = int(item_catalog["item_idx"].max())
    table = id_table(id_item_embeddings, n_items)

    seed_everything(training.seed)
    aligner_config = AlignerConfig(
        n_items=n_items,
        id_dim=int(table.shape[1]),
        hidden_size=llm.hidden_size,
        n_layers=len(llm.model.get_decoder().layers),
        n_prefix=len(layout.instruction),
        score_dim=config.score_dim,
    )
    aligner = IDAligner(aligner_config, table).to(llm.device)
    model = RARec(llm.model.get_decoder(), aligner, layout, backbone_dtype=llm.dtype_name,
                  query_batch_size=config.eval_batch_size, backbone_name=llm.name)
    model.initialise()
    trainable = aligner.trainable_parameters()
    logger.info("RA-Rec aligner: %d trainable parameters (LLM %s and ID table frozen)", trainable, llm.name)
    llm_before = weights_fingerprint(llm.model.state_dict().items())

    def make_batches(epoch: int, generator: torch.Generator) -> Iterator[dict]:
        order = torch.randperm(len(histories), generator=generator)
        for start in range(0, len(order), training.batch_size):
            rows = order[start : start + training.batch_size]
            batch = layout.batch([histories[r] for r in rows.tolist()])
            batch["target"] = targets[rows]
            batch["negatives"] = torch.randint(1, n_items + 1, (len(rows), config.n_negatives), generator=generator)
            yield batch

    valid = eval_user_sample(user_sequences, training.eval_users, training.seed)

    def validate(_aligner: IDAligner) -> float:
        return validation_metric(model, valid, exclude_seen=exclude_seen, batch_size=config.eval_batch_size)

    run_config = {
        "aligner": aligner_config.to_dict(),
        "prompt": prompt,
        "backbone": llm.name,
        "loss": {"n_negatives": config.n_negatives, "infonce_weight": config.infonce_weight,
                 "infonce_temperature": config.infonce_temperature},
        "exclude_seen": exclude_seen,
        "data": data_fingerprint(targets, torch.as_tensor([i for h in histories for i in h]), table,
                                 torch.as_tensor(valid.index.to_numpy())),
    }
    result = fit(
        aligner,
        lambda _aligner, batch: model.loss(batch, config.infonce_weight, config.infonce_temperature),
        make_batches,
        validate,
        training,
        "aligner",
        run_config,
        shard=shard_histories,
    )

    llm_unchanged = weights_fingerprint(llm.model.state_dict().items()) == llm_before
    id_unchanged = torch.equal(aligner.id_table.cpu(), table)
    logger.info("Frozen-weights check after training: LLM unchanged %s, ID table (SASRec item embeddings) unchanged %s",
                llm_unchanged, id_unchanged)
    if not (llm_unchanged and id_unchanged):
        raise RuntimeError("RA-Rec training changed frozen weights (the LLM or the ID table); only the aligner may train")
    # Epoch times (training and validation) are kept in the checkpoint, so a resumed run counts them all.
    minutes = sum(record["seconds"] for record in result.history) / 60
    logger.info("RA-Rec budget: %d samples, %d epochs, %.1f minutes of training and validation",
                len(histories), len(result.history), minutes)
    artifact = {
        "config": {
            "aligner": aligner_config.to_dict(),
            "prompt": prompt,
            "backbone": llm.name,
            "id_model": config.id_model,
            "budget": {
                "samples": len(histories),
                "epochs": len(result.history),
                "best_epoch": result.best_epoch,
                "minutes": round(minutes, 2),
                "trainable_parameters": trainable,
            },
            "best_valid_ndcg@10": result.best_metric,
            "frozen_check": {"llm_sha256": llm_before, "llm_unchanged": llm_unchanged, "id_table_unchanged": id_unchanged},
        },
        "state_dict": aligner.to_artifact()["state_dict"],
    }
    return artifact, training_log("ra_rec", result.history, backbone_dtype=llm.dtype_name)

