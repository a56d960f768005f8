"""Zero-shot candidate scoring: one shared prompt per user vs one prompt per candidate.

    python benchmarks/bench_zeroshot.py                       # 4 ML-1M users, validation split
    python benchmarks/bench_zeroshot.py --users 20 --dataset ml-100k
    python benchmarks/bench_zeroshot.py --primary data/03_primary/ml-1m --model-input data/05_model_input/ml-1m

Both ways score the same users' ``eval_candidates`` (1 target + 20 negatives) with the frozen
backbone and compute vocabulary logits only where they are used; they differ only in whether the
prompt (the user's recent titles) runs once and its KV cache is shared by the candidates
(``llm.scoring.score_continuations``), or runs again in front of every candidate (one right-padded
batch of prompt + candidate sequences). Prints positions run through the model, seconds, ratios,
and the largest difference between the two scores (they must agree).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from llm_seqrec.data.schema import split_input
from llm_seqrec.evaluation.protocol import llm_user_sample
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.prompts import chat_prompt_ids, item_titles, recent_items_message, text_ids
from llm_seqrec.llm.scoring import score_continuations
from project import parameters, processed_tables  # benchmarks/ is the script's folder


def one_prompt_per_candidate(model, prompt: list[int], continuations: list[list[int]]) -> tuple[torch.Tensor, int]:
    """Summed log-probs with the prompt repeated before every candidate; also the positions computed."""
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    sequences = [prompt + c for c in continuations]
    width = max(len(s) for s in sequences)
    tokens = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, s in enumerate(sequences):
        tokens[row, : len(s)] = torch.tensor(s)
        mask[row, : len(s)] = 1
    hidden = decoder(input_ids=tokens, attention_mask=mask).last_hidden_state
    out = []
    for row, c in enumerate(continuations):
        positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(c))
        logprob = torch.log_softmax(head(hidden[row, positions]).float(), dim=-1)
        out.append(logprob[torch.arange(len(c)), torch.tensor(c)].sum())
    return torch.stack(out), tokens.numel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m", choices=["ml-1m", "ml-100k"])
    parser.add_argument("--primary", type=Path, help="folder with user_sequences.parquet and item_catalog.parquet")
    parser.add_argument("--model-input", type=Path, help="folder with eval_candidates.parquet (with --primary)")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--split", default="valid", choices=["valid", "test"])
    parser.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16"],
                        help="the backbone's dtype (default: the run's backbone.dtype)")
    args = parser.parse_args(argv)

    conf = OmegaConf.create(parameters())
    evaluation, backbone_conf = conf.evaluation, conf.backbone
    if args.primary is not None:
        sequences = pd.read_parquet(args.primary / "user_sequences.parquet")
        catalog = pd.read_parquet(args.primary / "item_catalog.parquet")
        candidates = pd.read_parquet((args.model_input or args.primary) / "eval_candidates.parquet")
    else:
        tables = processed_tables(args.dataset, max_users=max(50, args.users))
        sequences, catalog, candidates = tables["user_sequences"], tables["item_catalog"], tables["eval_candidates"]
    users = llm_user_sample(sequences, args.users, evaluation.seed)
    rows = candidates[(candidates["split"] == args.split) & candidates["user_idx"].isin(users)]
    by_user = sequences.set_index("user_idx")

    llm = load_backbone(dtype=args.dtype or backbone_conf.dtype, device="cpu")
    tokenizer, model = llm.tokenizer, llm.model
    titles = item_titles(catalog, backbone_conf.max_item_chars)
    work = []
    for user, items in zip(rows["user_idx"], rows["candidates"], strict=True):
        seq = by_user.loc[user]
        history = split_input(seq["train_items"], seq["valid_target"], args.split)[-evaluation.zeroshot_recent_items :]
        prompt = chat_prompt_ids(tokenizer, recent_items_message([titles[int(i)] for i in history]))
        work.append((prompt, [text_ids(tokenizer, titles[int(i)]) for i in items]))
    print(f"{args.dataset if args.primary is None else args.primary}: {len(work)} users ({args.split}), "
          f"{sum(len(c) for _, c in work)} candidates, {evaluation.zeroshot_recent_items} recent titles, "
          f"mean prompt {sum(len(p) for p, _ in work) / len(work):.0f} tokens; {llm.dtype}, "
          f"torch threads {torch.get_num_threads()}")

    with torch.inference_mode():
        score_continuations(model, *work[0])  # warm-up
        start = time.perf_counter()
        shared = [score_continuations(model, p, c).logprob for p, c in work]
        shared_seconds = time.perf_counter() - start
        shared_tokens = sum(len(p) + len(c) * (max(map(len, c)) - 1) for p, c in work)

        start = time.perf_counter()
        separate, separate_tokens = [], 0
        for p, c in work:
            logprob, tokens = one_prompt_per_candidate(model, p, c)
            separate.append(logprob)
            separate_tokens += tokens
        separate_seconds = time.perf_counter() - start

    difference = max(float((a - b).abs().max()) for a, b in zip(shared, separate, strict=True))
    print(f"shared prefix        : {shared_tokens:>8,} positions  {shared_seconds:7.2f} s  "
          f"{shared_tokens / shared_seconds:6.0f} positions/s")
    print(f"one prompt/candidate : {separate_tokens:>8,} positions  {separate_seconds:7.2f} s  "
          f"{separate_tokens / separate_seconds:6.0f} positions/s")
    print(f"ratio (separate / shared): {separate_tokens / shared_tokens:.1f}x positions, "
          f"{separate_seconds / shared_seconds:.1f}x seconds; largest score difference {difference:.1e}")


if __name__ == "__main__":
    sys.exit(main())
