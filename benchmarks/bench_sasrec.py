"""Train SASRec for a fixed number of epochs and report seconds per epoch, peak memory and metrics,
for today's training step and the project's, side by side in one run.

    python benchmarks/bench_sasrec.py --dataset ml-1m --epochs 2
    python benchmarks/bench_sasrec.py --primary data/03_primary/ml-1m --epochs 20 --arms bf16 --set training.lr=0.002

Arms, each trained from the same seed (on the same batches but for `buckets`), one after the other, never
side by side:

- ``before``: the step as it was, rebuilt here in a few lines: float32, plain shuffled batches
  (``bucket_window: null``), ``nn.Dropout``'s masks (``bernoulli_``), attention under a materialised
  padding mask, the logits of every target position against every item at once, then ``F.cross_entropy``;
- ``fp32``: the project's step in float32 (what a CPU without native bf16 runs) on plain shuffled
  batches: ``SASRec.loss`` (rows rotated so that attention is plain causal, no mask; dropout masks
  from random integers), the chunked ``linear_cross_entropy``;
- ``bf16``: the same under bfloat16 autocast of the whole step, run only where the device has native
  bf16 (a CPU with AVX512-BF16 or AMX, or a GPU with bf16);
- ``buckets``: ``fp32`` with batches of similar history lengths (``bucket_window: 16``);
- ``bf16_output``: ``buckets`` with the output layer's three matmuls alone in bfloat16
  (``output_matmul: bfloat16``; log-softmax and sums in float32), only where bf16 is native.

The model settings are the default run's ``sasrec`` parameters (``--set`` overrides them, dotted below
``sasrec``), but for ``training.epochs``: the benchmark trains exactly ``--epochs`` (no early stopping,
no time budget, no checkpoints). Peak memory is the process's resident set while the arm trained, and
its rise over the resident set the arm started with. Data: ``--primary DIR`` reads
``user_sequences.parquet`` and ``item_catalog.parquet`` from DIR; otherwise the data_processing
pipeline runs for ``--dataset`` in a throwaway copy of the project.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path
from unittest import mock

import pandas as pd
import psutil
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from llm_seqrec.data.schema import PAD
from llm_seqrec.evaluation.metrics import metrics_from_ranks
from llm_seqrec.evaluation.scoring import score_table
from llm_seqrec.llm.device import choose_device
from llm_seqrec.models import sasrec as sasrec_model
from llm_seqrec.models.sasrec import SASRec
from llm_seqrec.params import SASRecParams, validate_section
from llm_seqrec.training import training_log
from llm_seqrec.training.id_model import output_matmul_dtype, train_sasrec
from project import parameters, processed_tables  # benchmarks/ is the script's folder

# arm -> its sasrec settings (dtype: training.precision)
ARMS = {"before": {"precision": "float32", "bucket_window": None, "output_matmul": "float32"},
        "fp32": {"precision": "float32", "bucket_window": None, "output_matmul": "float32"},
        "bf16": {"precision": "bfloat16", "bucket_window": None, "output_matmul": "float32"},
        "buckets": {"precision": "float32", "bucket_window": 16, "output_matmul": "float32"},
        "bf16_output": {"precision": "float32", "bucket_window": 16, "output_matmul": "bfloat16"}}
NATIVE_BF16_ARMS = ("bf16", "bf16_output")


def forward_before(self: SASRec, item_seq: torch.Tensor) -> torch.Tensor:
    """The forward pass as it was: left-padded rows, attention under a ``[B, 1, L, L]`` mask (causal,
    items never see padding, a padding position sees itself); the same modules and weights."""
    length = item_seq.shape[1]
    valid = item_seq != PAD
    positions = torch.arange(length - 1, -1, -1, device=item_seq.device)
    x = self.item_embedding(item_seq) * math.sqrt(self.config.hidden_size) + self.position_embedding(positions)
    x = self.embedding_dropout(x * valid.unsqueeze(-1))
    causal = torch.ones(length, length, dtype=torch.bool, device=item_seq.device).tril()
    eye = torch.eye(length, dtype=torch.bool, device=item_seq.device)
    mask = (causal & (valid.unsqueeze(1) | eye)).unsqueeze(1)
    for block in self.blocks:
        attention, h = block.attention, block.attention_norm(x)
        batch, _, hidden = h.shape
        q, k, v = attention.qkv(h).view(batch, length, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                  dropout_p=attention.dropout if self.training else 0.0)
        x = x + block.dropout(attention.out(attended.transpose(1, 2).reshape(batch, length, hidden)))
        x = x + block.dropout(block.ffn(block.ffn_norm(x)))
    return self.final_norm(x) * valid.unsqueeze(-1)


def loss_before(self: SASRec, item_seq: torch.Tensor, targets: torch.Tensor, negatives=None,
                matmul_dtype=None) -> torch.Tensor:
    """The training loss as it was computed before the chunked one: the same value, with the whole
    ``[positions, items]`` logits and their log-softmax held for the backward pass."""
    keep = targets != PAD
    hidden = forward_before(self, item_seq)[keep]
    return F.cross_entropy(hidden @ self.item_embedding.weight[1:].T, targets[keep] - 1)


def primary_tables(dataset: str, primary: Path | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    if primary is None:
        tables = processed_tables(dataset)
        return tables["user_sequences"], tables["item_catalog"]
    return pd.read_parquet(primary / "user_sequences.parquet"), pd.read_parquet(primary / "item_catalog.parquet")


def run_arm(arm: str, user_sequences, item_catalog, sasrec: dict, evaluation: dict) -> dict:
    """Train one arm; its seconds per epoch, peak memory and full-ranking NDCG@10 per split."""
    settings = dict(ARMS[arm])
    dtype = settings.pop("precision")
    sasrec = {**sasrec, **settings, "training": {**sasrec["training"], "precision": dtype}}
    rss_before = psutil.Process().memory_info().rss / 2**20
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    params = validate_section(SASRecParams, sasrec)
    # ("before" trains with the former step; its model is scored by today's forward, the same function.)
    with contextlib.ExitStack() as stack:
        if arm == "before":
            stack.enter_context(mock.patch.object(SASRec, "loss", loss_before))
            stack.enter_context(mock.patch.object(sasrec_model.Dropout, "forward", nn.Dropout.forward))
        model, fitted = train_sasrec(user_sequences, int(item_catalog["item_idx"].max()), params, evaluation["exclude_seen"])
    log = training_log("sasrec", fitted.history)
    print(log.drop(columns=["model", "stage", "peak_cuda_mb", "backbone_dtype"]).to_string(index=False))
    result = {"arm": arm, "dtype": dtype, "output_matmul": sasrec["output_matmul"],
              "bucket_window": sasrec["bucket_window"], "losses": log["loss"].tolist(),
              "seconds/epoch": log["seconds"].mean(),
              "first epoch loss": log["loss"].iloc[0], "last epoch loss": log["loss"].iloc[-1],
              "peak RSS MiB": log["peak_rss_mb"].max(), "RSS rise MiB": log["peak_rss_mb"].max() - rss_before}
    if torch.cuda.is_available():
        result["peak CUDA MiB"] = torch.cuda.max_memory_allocated() / 2**20

    scores = score_table(model.eval(), user_sequences, None, exclude_seen=evaluation["exclude_seen"],
                         batch_size=params.training.batch_size)
    for split, rows in scores.groupby("split", sort=False):
        m = metrics_from_ranks(rows["rank"].to_numpy(), [10], "full")
        result[f"{split} NDCG@10"] = m["ndcg@10"]
        print(f"{arm}: {split} full ranking (exclude_seen={evaluation['exclude_seen']}): "
              f"NDCG@10 {m['ndcg@10']:.4f}  HR@10 {m['hr@10']:.4f}  MRR {m['mrr']:.4f}")
    print(f"{arm} ({dtype}): seconds/epoch: {result['seconds/epoch']:.1f} (mean of {len(log)}); "
          f"peak RSS: {result['peak RSS MiB']:.0f} MiB (+{result['RSS rise MiB']:.0f} MiB over the arm's start)",
          flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m", choices=["ml-1m", "ml-100k"])
    parser.add_argument("--primary", type=Path, help="folder with user_sequences.parquet and item_catalog.parquet")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS),
                        help="bf16 is skipped where the device has no native bf16")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--progress", action="store_true", help="show a progress bar per epoch")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides below sasrec, e.g. training.lr=0.002")
    args = parser.parse_args(argv)

    conf = parameters()
    overrides = {"training": {"epochs": args.epochs, "patience": args.epochs, "max_minutes": None,
                              "checkpoint_dir": None, "device": args.device, "progress": args.progress}}
    sasrec = OmegaConf.to_container(OmegaConf.merge(conf["sasrec"], overrides, OmegaConf.from_dotlist(args.set)))
    evaluation = conf["evaluation"]
    device = choose_device(args.device)
    native_bf16 = output_matmul_dtype(device, "auto") == torch.bfloat16
    arms = [arm for arm in args.arms if arm not in NATIVE_BF16_ARMS or native_bf16]

    user_sequences, item_catalog = primary_tables(args.dataset, args.primary)
    print(f"{args.dataset if args.primary is None else args.primary}: {len(user_sequences)} users, "
          f"{len(item_catalog)} items; device {device}, native bf16: {native_bf16}; torch threads "
          f"{torch.get_num_threads()}; sasrec {sasrec}")
    if set(NATIVE_BF16_ARMS) & set(args.arms) and not native_bf16:
        print("bf16 arms skipped: this device has no native bf16 (it would be emulated, slower than float32)")

    results = pd.DataFrame([run_arm(arm, user_sequences, item_catalog, sasrec, evaluation) for arm in arms]).set_index("arm")
    print()
    print(results.drop(columns="losses").to_string(float_format=lambda v: f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"))
    if "before" in results.index:
        for arm in results.index.drop("before"):
            print(f"speed-up {arm} ({results.loc[arm, 'dtype']}) over before (float32): "
                  f"{results.loc['before', 'seconds/epoch'] / results.loc[arm, 'seconds/epoch']:.2f}x per epoch")
            if ARMS[arm]["bucket_window"] is None:
                # The same batches, other dropout masks (the integers' stream, not bernoulli_'s): the epoch
                # losses agree to about 1e-2 (8e-3 on ML-1M); with --set dropout=0 up to rounding.
                gap = max(abs(a - b) for a, b in zip(results.loc[arm, "losses"], results.loc["before", "losses"], strict=True))
                print(f"{arm} against before, the same batches: largest per-epoch loss difference {gap:.2e}")


if __name__ == "__main__":
    sys.exit(main())
