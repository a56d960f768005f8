"""The LoRA recommender's steps: training examples/s and scoring rows/s, arms side by side in one run.

    python benchmarks/bench_lora.py                     # the shared Amazon Scientific set, 16 + 16 users
    python benchmarks/bench_lora.py --users 32 --arms 30:1 30:4 8:4/1 8:4/8:bfloat16
    python benchmarks/bench_lora.py --head likelihood   # DMPO's title-likelihood head (SFT steps)

An arm is ``layers:train[/score][:dtype]`` (``backbone.layers``; ``prompt_batch.train`` and
``.score``, prompts per forward, both ``train`` unless ``score`` is given; the backbone's dtype, float32
unless given). The default arms: today's settings (30 layers, one prompt at a time), then the default
``PromptBatch`` at 30, 16 and 8 layers, and, where the CPU has native bf16
(``llm.device.cpu_has_fast_bf16``), the 8-layer arm again in bfloat16 (the fp32/bf16 ratio), once with
the default batches and once scoring ``--bf16-score-batch`` prompts per forward. Each arm loads its backbone, scores
``--users`` (user, test split) rows of 1 + ``--candidates`` candidates with a fresh adapter (LoRA's B is
zero at initialisation, so arms at one depth and dtype give the same scores up to float rounding: the
largest difference is printed), then trains one epoch of the head's procedure (``fit_yes_no``: the
positive and ``--negatives`` random items per prompt; ``fit_sft``: the positive title) over ``--users``
training users, batches of ``--batch-size`` prompts. Prompts as ``trsr_no_summary``'s (the shared set has
no summaries: a summary adds about 70 prompt tokens), titles cut at ``--max-item-chars`` as conf/amazon.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from llm_seqrec.data.negatives import sample_eval_candidates
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.device import cpu_has_fast_bf16
from llm_seqrec.llm.prompts import item_titles
from llm_seqrec.models.llm_recommender import LLMRecommender, PromptBatch, PromptSettings, RecommenderConfig
from llm_seqrec.models.recommender import Queries
from llm_seqrec.params import TRSRParams
from llm_seqrec.pipelines.data_processing.nodes import prepare_interactions, split_leave_one_out
from llm_seqrec.training import TrainingConfig
from llm_seqrec.training.lora import fit_sft, fit_yes_no, train_cutoff_examples, training_users
from project import AMAZON  # benchmarks/ is the script's folder


@dataclass(frozen=True)
class Arm:
    layers: int
    batch: PromptBatch
    dtype: str = "float32"

    @classmethod
    def parse(cls, text: str) -> Arm:
        parts = text.split(":")
        if len(parts) not in (2, 3) or parts[2:] not in ([], ["float32"], ["bfloat16"]):
            raise argparse.ArgumentTypeError(f"an arm is layers:train[/score][:float32|bfloat16], not {text!r}")
        train, _, score = parts[1].partition("/")
        return cls(int(parts[0]), PromptBatch(int(train), int(score or train)), *parts[2:])

    def __str__(self) -> str:
        return f"layers {self.layers}, prompt_batch {self.batch.train}/{self.batch.score}, {self.dtype}"


def default_arms(bf16_score_batch: int) -> list[Arm]:
    chosen = PromptBatch()
    arms = [Arm(30, PromptBatch(1, 1)), Arm(30, chosen), Arm(16, chosen), Arm(8, chosen)]
    if cpu_has_fast_bf16():
        arms += [Arm(8, chosen, "bfloat16"), Arm(8, PromptBatch(chosen.train, bf16_score_batch), "bfloat16")]
    return arms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=16, help="training users, and scored (user, test) rows")
    parser.add_argument("--head", default="yes_no", choices=["yes_no", "likelihood"])
    parser.add_argument("--candidates", type=int, default=20, help="negatives per scored row (evaluation.n_negatives)")
    parser.add_argument("--negatives", type=int, default=TRSRParams().negatives, help="per training prompt (yes_no)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per optimiser step (training.batch_size)")
    parser.add_argument("--bf16-score-batch", type=int, default=8, help="prompts per scoring forward, last default arm")
    parser.add_argument("--max-item-chars", type=int, default=80)
    parser.add_argument("--arms", type=Arm.parse, nargs="+", help="layers:train[/score][:dtype] ... (default: see above)")
    args = parser.parse_args(argv)
    arms = args.arms or default_arms(args.bf16_score_batch)

    dataset = {"format": "csv", "name": AMAZON.name, "interactions": AMAZON / "interactions.csv", "items": AMAZON / "items.csv"}
    interactions, catalog, _ = prepare_interactions(dataset, {}, {})
    sequences = split_leave_one_out(interactions)
    titles = item_titles(catalog, args.max_item_chars)
    n_items = int(catalog["item_idx"].max())
    seed = TRSRParams().seed
    examples = train_cutoff_examples(sequences, training_users(sequences, [], args.users, seed))
    # Scored rows: other users than the trained ones, at the test cutoff, the target and seeded negatives.
    rows = sequences[~sequences["user_idx"].isin([e.user_idx for e in examples])].sample(args.users, random_state=seed)
    candidates = sample_eval_candidates(rows, n_items, args.candidates, seed)
    candidates = candidates[candidates["split"] == "test"].set_index("user_idx").loc[rows["user_idx"], "candidates"]
    queries = Queries(tuple(int(u) for u in rows["user_idx"]), "test",
                      tuple(tuple(int(i) for i in (*t, v)) for t, v in zip(rows["train_items"], rows["valid_target"], strict=True)))
    candidate_lists = [[int(c) for c in items] for items in candidates]
    print(f"Amazon Scientific: {len(examples)} training users, {len(queries)} scored rows of {1 + args.candidates} "
          f"candidates; head {args.head}; torch threads {torch.get_num_threads()}; native bf16: {cpu_has_fast_bf16()}")

    results: list[tuple[float, float, np.ndarray]] = []
    for arm in arms:
        llm = load_backbone(dtype=arm.dtype, device="cpu", layers=arm.layers)
        config = RecommenderConfig(head=args.head, backbone=llm.name, prompt=PromptSettings(3, False))
        torch.manual_seed(seed)
        model = LLMRecommender(llm, config, titles, prompt_batch=arm.batch)
        model.score_candidates(queries.take([0]), candidate_lists[:1])  # warm-up
        started = time.perf_counter()
        scores = np.array(model.score_candidates(queries, candidate_lists))
        score_seconds = time.perf_counter() - started

        training = TrainingConfig(epochs=1, batch_size=args.batch_size, lr=3e-3, checkpoint_dir=None, progress=False,
                                  device="cpu", seed=seed)
        started = time.perf_counter()
        if args.head == "yes_no":
            fit_yes_no(model, examples, titles, n_items, args.negatives, training, "bench_lora")
        else:
            fit_sft(model, examples, titles, training, "bench_lora")
        train_seconds = time.perf_counter() - started
        results.append((len(examples) / train_seconds, len(queries) / score_seconds, scores))
        print(f"{arm} (dtype {llm.dtype_name}): training {results[-1][0]:.2f} examples/s ({train_seconds:.1f} s), "
              f"scoring {results[-1][1]:.2f} rows/s ({score_seconds:.1f} s)", flush=True)

    print(f"\nratios against {arms[0]}, measured side by side in this run:")
    for arm, (train, score, _) in zip(arms[1:], results[1:], strict=True):
        print(f"  {arm}: training {train / results[0][0]:.2f}x, scoring {score / results[0][1]:.2f}x")
    for i, arm in enumerate(arms):
        # the first arm at this depth and dtype that scores one prompt at a time
        single = next((j for j, a in enumerate(arms) if (a.layers, a.dtype, a.batch.score) == (arm.layers, arm.dtype, 1)), None)
        if single is not None and arm.batch.score > 1:
            print(f"  {arm} against score batch 1: largest score difference {np.abs(results[i][2] - results[single][2]).max():.2e}")
        fp32 = next((j for j, a in enumerate(arms) if (a.layers, a.batch, a.dtype) == (arm.layers, arm.batch, "float32")), None)
        if arm.dtype == "bfloat16" and fp32 is not None:
            print(f"  fp32/bf16 at {arm}: bf16 training {results[i][0] / results[fp32][0]:.2f}x, scoring "
                  f"{results[i][1] / results[fp32][1]:.2f}x as fast as float32; largest score difference "
                  f"{np.abs(results[i][2] - results[fp32][2]).max():.2e}")


if __name__ == "__main__":
    sys.exit(main())
