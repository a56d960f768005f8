"""The design exploration of ``sasrec_text`` (README, "SASRec that reads item text"): encode the items once per
text variant (every depth and pooling from one pass, into the node's own cache, so the pipeline later
encodes nothing), then train one model per trial and record its settings, valid / test NDCG@10, the
cold-item slice and seconds.

    python benchmarks/explore_sasrec_text.py --primary data/03_primary/amazon-scientific \\
        --cache data/06_models/amazon-scientific/llm_item_embedding_cache --encode text:64 title:32 \\
        --trial sasrec --trial text=text,layer=16,pooling=mean,combine=add --out trials.csv

A trial is ``key=value`` pairs: ``text``, ``max_tokens``, ``layer``, ``pooling`` (the embedding), ``combine``,
``whiten``, ``id_dropout``, ``text_dropout`` (``sasrec_text.fusion``), ``weight_decay``; ``sasrec`` alone is
the plain SASRec. Model and training settings are conf/amazon's SASRec (max_len 50, dropout 0.5,
patience 5, validation on every user each epoch, no time limit); full ranking excludes the seen items, as
conf/base's evaluation.exclude_seen (in early stopping too).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd

from llm_seqrec.evaluation.metrics import metrics_from_ranks
from llm_seqrec.evaluation.protocol import cold_item_users
from llm_seqrec.evaluation.scoring import score_table
from llm_seqrec.llm.backbone import load_backbone, truncate
from llm_seqrec.llm.item_embeddings import ItemEmbeddingCache, ItemEmbeddingSettings, depth_name, embed_catalog, encoding_dtype, item_key, pooled_states
from llm_seqrec.models.sasrec_text import TextFusion
from llm_seqrec.training.config import TrainingConfig
from llm_seqrec.training.id_model import SASRecSettings, SASRecTextSettings, train_sasrec, train_sasrec_text
from project import append_row  # benchmarks/ is the script's folder

AMAZON_SASREC = dict(max_len=50, dropout=0.5)
AMAZON_TRAINING = dict(epochs=200, batch_size=128, lr=0.002, patience=5, eval_every=1, eval_users=None, seed=42,
                       precision="float32", progress=False)
DEPTHS = (4, 8, 12, 16)  # the plain form lost with depth (issue 21: +3% at 8, +2% at 16, -1% at 30)


def encode(catalog: pd.DataFrame, cache: ItemEmbeddingCache, text: str, max_tokens: int) -> None:
    """Every depth and both poolings of one text variant into ``cache`` (one pass over the items)."""
    settings = ItemEmbeddingSettings(text=text, max_tokens=max_tokens)
    backbone = load_backbone(dtype=encoding_dtype(settings, "auto"))
    depths = [d for d in DEPTHS if d <= backbone.n_layers]
    texts = catalog.sort_values("item_idx")[text].astype(str).tolist()
    names = {d: depth_name(backbone, d) for d in depths}
    start = time.perf_counter()
    encoded = pooled_states(truncate(backbone, depths[-1]), texts, settings, depths, ["mean", "last"])
    print(f"encoded {len(texts)} items ({text}, {max_tokens} tokens, {backbone.dtype_name}) in "
          f"{time.perf_counter() - start:.0f} s")
    for (d, pooling), vectors in encoded.items():
        keyed = dataclasses.replace(settings, pooling=pooling)
        keys = [item_key(names[d], backbone.dtype_name, keyed, t) for t in texts]
        cache.append(pd.DataFrame({"key": keys, "embedding": list(vectors)}))


def evaluate(model, user_sequences: pd.DataFrame) -> dict:
    scores = score_table(model.eval(), user_sequences, None, exclude_seen=True, batch_size=256, progress=False)
    cold = set(cold_item_users(user_sequences, "test").tolist())
    result = {}
    for split, rows in scores.groupby("split"):
        m = metrics_from_ranks(rows["rank"].to_numpy(), [10], "full")
        result[f"{split}_ndcg10"], result[f"{split}_hr10"] = round(m["ndcg@10"], 5), round(m["hr@10"], 5)
        if split == "test":
            c = metrics_from_ranks(rows[rows["user_idx"].isin(cold)]["rank"].to_numpy(), [10], "full")
            result.update(cold_ndcg10=round(c["ndcg@10"], 5), cold_hr10=round(c["hr@10"], 5), cold_users=len(cold))
    return result


def run_trial(spec: str, catalog: pd.DataFrame, user_sequences: pd.DataFrame, cache: ItemEmbeddingCache) -> dict:
    opts = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
    training = TrainingConfig(**AMAZON_TRAINING, weight_decay=float(opts.pop("weight_decay", 0.0)))
    n_items = int(catalog["item_idx"].max())
    start = time.perf_counter()
    if spec == "sasrec":
        model, result = train_sasrec(user_sequences, n_items, SASRecSettings(**AMAZON_SASREC, training=training), True)
    else:
        embedding = ItemEmbeddingSettings(text=opts.pop("text", "text"), max_tokens=int(opts.pop("max_tokens", 64)),
                                          layer=int(opts.pop("layer", 16)), pooling=opts.pop("pooling", "mean"),
                                          progress=False)
        fusion = TextFusion(combine=opts.pop("combine", "add"), whiten=opts.pop("whiten", "false") == "true",
                            id_dropout=float(opts.pop("id_dropout", 0)), text_dropout=float(opts.pop("text_dropout", 0)))
        if opts:
            raise SystemExit(f"unknown trial settings {sorted(opts)}")
        backbone = load_backbone(dtype=encoding_dtype(embedding, "auto"))
        table = embed_catalog(backbone, catalog, embedding, cache)[embedding.layer]
        settings = SASRecTextSettings(**AMAZON_SASREC, training=training, fusion=fusion)
        model, result = train_sasrec_text(user_sequences, table, n_items, settings, True)
    seconds = time.perf_counter() - start
    best = max(result.history, key=lambda r: r.get("metric") or -1)
    row = {"trial": spec, "seconds": round(seconds, 1), "epochs": len(result.history), "best_epoch": best["epoch"],
           **evaluate(model, user_sequences)}
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--primary", type=Path, required=True, help="folder with user_sequences / item_catalog parquet")
    parser.add_argument("--cache", type=Path, required=True, help="the llm_item_embedding_cache folder")
    parser.add_argument("--encode", nargs="*", default=[], help="text variants to encode first, as text:max_tokens")
    parser.add_argument("--trial", action="append", default=[])
    parser.add_argument("--out", type=Path, help="CSV the trial rows are appended to")
    args = parser.parse_args()
    catalog = pd.read_parquet(args.primary / "item_catalog.parquet")
    user_sequences = pd.read_parquet(args.primary / "user_sequences.parquet")
    cache = ItemEmbeddingCache(args.cache)
    for variant in args.encode:
        text, tokens = variant.split(":")
        encode(catalog, cache, text, int(tokens))
    for spec in args.trial:
        row = run_trial(spec, catalog, user_sequences, cache)
        if args.out:
            append_row(args.out, row)


if __name__ == "__main__":
    main()
