"""Summarisation speed on real Amazon Scientific histories.

1. The same block prompts generated as batches (left-padded, length-sorted, KV cache, finished rows
   leaving the batch), as the same batches through transformers' ``generate`` (which computes finished
   rows until the batch's longest one ends), and one at a time: generated tokens per second of each,
   the ratios, and whether the greedy outputs agree. Reading the prompts (prefill, timed alone with one
   new token) is the same work both ways and bounds the ratio; the decoding steps' ratio is printed apart.
2. Summaries per minute of each method (hierarchical, recurrent) through the cached driver, on a
   fresh cache.

    OMP_NUM_THREADS=2 .venv/bin/python -u benchmarks/bench_summarization.py --prompts 32 --users 6
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from llm_seqrec.datasets.summary_cache import SummaryCache
from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.llm.generation import GenerationSettings, chat_prompt, generate, generate_chat
from llm_seqrec.llm.summarize import Request, Templates, history_blocks, item_lines, summarize
from llm_seqrec.params import SummarizationParams
from project import AMAZON  # benchmarks/ is the script's folder


def amazon_histories(min_length: int) -> tuple[list[list[int]], dict[int, str]]:
    """Users' item histories in time order (at least ``min_length`` items) and each item's text."""
    inter = pd.read_csv(AMAZON / "interactions.csv").sort_values(["user_id", "timestamp"], kind="stable")
    histories = [h for h in inter.groupby("user_id")["item_id"].apply(list) if len(h) >= min_length]
    items = pd.read_csv(AMAZON / "items.csv").fillna("")
    texts = {
        int(row.item_id): f"{row.title}; brand: {row.brand}; categories: {row.categories}; description: {row.description}"
        for row in items.itertuples()
    }
    return histories, texts


def transformers_generate(backbone, prompts: list[str], settings: GenerationSettings) -> list[str]:
    """The texts of ``model.generate`` on the same length-sorted, left-padded batches."""
    tokenizer = backbone.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    order = sorted(range(len(prompts)), key=lambda i: len(tokenizer(prompts[i], add_special_tokens=False)["input_ids"]),
                   reverse=True)
    texts: list[str] = [""] * len(prompts)
    try:
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            batch = tokenizer([prompts[i] for i in rows], add_special_tokens=False, padding=True, return_tensors="pt")
            with torch.inference_mode():
                output = backbone.model.generate(
                    **batch.to(backbone.device), max_new_tokens=settings.max_new_tokens, do_sample=False,
                    pad_token_id=tokenizer.pad_token_id, no_repeat_ngram_size=settings.no_repeat_ngram_size,
                )
            new = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            for i, text in zip(rows, new, strict=True):
                texts[i] = text.strip()
    finally:
        tokenizer.padding_side = side
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="block prompts for the batched vs one-at-a-time comparison")
    parser.add_argument("--users", type=int, default=6, help="users summarised (test cutoff) per method")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the configured summarization.generation value")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the configured summarization.generation value")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="the backbone's dtype (auto: float32 on a CPU)")
    args = parser.parse_args()

    params = SummarizationParams()
    templates = Templates(version=params.prompt_version, **params.templates.model_dump())
    backbone = load_backbone(dtype=args.dtype, device="cpu")
    print(f"model {backbone.name} on {backbone.device} in {backbone.dtype}, torch threads {torch.get_num_threads()}")

    histories, texts = amazon_histories(min_length=params.block_size * 2 + 2)
    rng = np.random.default_rng(args.seed)
    chosen = [histories[i] for i in rng.choice(len(histories), size=max(args.users, args.prompts // 2), replace=False)]
    inputs = [h[:-1] for h in chosen]  # the test cutoff: everything before the last item
    blocks = [history_blocks(h, params.block_size, params.max_blocks) for h in inputs]
    lines = item_lines({i: texts[i] for h in inputs for i in h}, backbone.tokenizer, params.item_tokens)

    # 1. batched vs one at a time, on the same block prompts
    block_messages = [
        templates.block.format(items="\n".join(f"{n}. {lines[i]}" for n, i in enumerate(b, start=1)))
        for user_blocks in blocks for b in user_blocks
    ][: args.prompts]
    prompts = [chat_prompt(backbone, m, templates.system) for m in block_messages]
    # The configured decoding (greedy, n-gram ban), with this run's budget.
    overrides = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}
    settings = dataclasses.replace(params.generation, **{k: v for k, v in overrides.items() if v is not None})
    one = dataclasses.replace(settings, batch_size=1)
    generate(backbone, prompts[:2], settings)  # warm-up
    began = time.perf_counter()
    batched = generate(backbone, prompts, settings)
    batched_s = time.perf_counter() - began
    began = time.perf_counter()
    single = [generate(backbone, [p], one)[0] for p in prompts]
    single_s = time.perf_counter() - began
    began = time.perf_counter()
    reference = transformers_generate(backbone, prompts, settings)
    reference_s = time.perf_counter() - began
    began = time.perf_counter()
    generate(backbone, prompts, dataclasses.replace(settings, max_new_tokens=1))
    batched_prefill_s = time.perf_counter() - began
    one_prefill = dataclasses.replace(one, max_new_tokens=1)
    began = time.perf_counter()
    for p in prompts:
        generate(backbone, [p], one_prefill)
    single_prefill_s = time.perf_counter() - began
    new_tokens = sum(g.tokens_out for g in batched)
    prompt_tokens = sum(g.tokens_in for g in batched)
    same = sum(a.text == b.text for a, b in zip(batched, single, strict=True))
    print(f"\n{len(prompts)} block prompts, {prompt_tokens} prompt tokens (mean {prompt_tokens / len(prompts):.0f}), "
          f"{new_tokens} generated tokens, max_new_tokens {settings.max_new_tokens}")
    print(f"  batched (batch {settings.batch_size}): {batched_s:7.1f} s  {new_tokens / batched_s:7.1f} generated tokens/s")
    print(f"  transformers generate, same batches: {reference_s:7.1f} s  {new_tokens / reference_s:7.1f} generated tokens/s")
    print(f"  one at a time:        {single_s:7.1f} s  {sum(g.tokens_out for g in single) / single_s:7.1f} generated tokens/s")
    print(f"  speed-up: {single_s / batched_s:.1f}x over one at a time, {reference_s / batched_s:.2f}x over transformers "
          f"generate; identical greedy outputs: {same}/{len(prompts)} (one at a time), "
          f"{sum(a.text == b for a, b in zip(batched, reference, strict=True))}/{len(prompts)} (generate)")
    print(f"  prefill (one new token): batched {batched_prefill_s:.1f} s, one at a time {single_prefill_s:.1f} s = "
          f"{batched_prefill_s / batched_s:.0%} of the batched time; decoding steps alone: batched "
          f"{batched_s - batched_prefill_s:.1f} s, one at a time {single_s - single_prefill_s:.1f} s, "
          f"speed-up {(single_s - single_prefill_s) / (batched_s - batched_prefill_s):.1f}x")

    # 2. summaries per minute of each method, through the driver, on a fresh cache
    requests = [Request(u, "test", tuple(map(tuple, b))) for u, b in enumerate(blocks[: args.users])]
    print(f"\n{len(requests)} users, {sum(len(b) for b in blocks[: args.users])} blocks "
          f"(block_size {params.block_size}, max_blocks {params.max_blocks})")
    for method in ("hierarchical", "recurrent"):
        with tempfile.TemporaryDirectory() as folder:
            cache = SummaryCache(folder)
            began = time.perf_counter()
            out = summarize(
                requests, method=method, templates=templates, lines=lines,
                generate_fn=lambda messages: generate_chat(backbone, messages, settings, system=templates.system),
                model=backbone.name, generation=settings.identity(), known=cache.summaries(),
                on_chunk=cache.append, chunk_size=params.chunk_size, progress=False,
            )
            seconds = time.perf_counter() - began
            made = cache.to_frame()
        print(f"  {method:12s}: {len(made):3d} summaries in {seconds:6.1f} s = {60 * len(made) / seconds:6.1f} summaries/min "
              f"({60 * len(out) / seconds:5.1f} user summaries/min, {made['tokens_out'].mean():.0f} tokens out per summary)")
        print(f"    e.g. user 0: {out['summary'].iloc[0][:300]!r}")


if __name__ == "__main__":
    main()
