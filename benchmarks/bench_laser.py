"""Laser Bi-Tuning speed: training tokens/s against a plain LLM training step, and inference users/s.

    python benchmarks/bench_laser.py                          # the shared Amazon Scientific set
    python benchmarks/bench_laser.py --primary data/03_primary/amazon-scientific --users 64 --steps 4
    python benchmarks/bench_laser.py --items 1000 --set prefix=false mformer.n_experts=1

Model settings are the default run's ``laser`` parameters (``--set`` overrides them, dotted
below ``laser``). The backbone is the project default in the dtype the machine computes fastest; the
frozen ID model is a randomly initialised SASRec of the configured size (speed does not depend on its
weights). Measured, on one batch of real users (length-bucketed, as in training):

- the bi-tuning step (stage 2: user side; stage 1: plus the targets' item encodings): loss,
  backward, optimizer step; tokens/s over the LLM positions that carry tokens (prefix, prompt, suffix);
- the same backbone's plain training step on token batches of the same shapes: causal-LM forward
  with vocabulary logits and next-token loss, backward into all LLM weights; and the ratio;
- the catalogue encoding (items/s) and full-ranking inference over all items (users/s).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.models.bituning import BiTuning, BiTuningConfig
from llm_seqrec.models.bituning_prompts import Prompts, collate_users, length_buckets, score_users
from llm_seqrec.models.mformer import MFormerConfig
from llm_seqrec.models.sasrec import SASRec, SASRecConfig
from llm_seqrec.params import LaserParams
from project import AMAZON, parameters  # benchmarks/ is the script's folder


def load_tables(primary: Path | None, items_limit: int | None) -> tuple[dict[int, str], list[list[int]]]:
    """Item titles by item_idx (1..I) and users' training items (all but the last two interactions)."""
    if primary is not None:
        catalog = pd.read_parquet(primary / "item_catalog.parquet")
        titles = dict(zip(catalog["item_idx"].astype(int), catalog["title"].astype(str), strict=True))
        histories = [list(map(int, h)) for h in pd.read_parquet(primary / "user_sequences.parquet")["train_items"]]
    else:
        items = pd.read_csv(AMAZON / "items.csv")
        index = {item: i for i, item in enumerate(sorted(items["item_id"]), start=1)}
        titles = {index[i]: t for i, t in zip(items["item_id"], items["title"].astype(str), strict=True)}
        inter = pd.read_csv(AMAZON / "interactions.csv").sort_values(["user_id", "timestamp"], kind="stable")
        histories = [[index[i] for i in group][:-2] for _, group in inter.groupby("user_id")["item_id"]]
    if items_limit is not None:  # a smaller catalogue: its first items, and histories cut to them
        titles = {i: t for i, t in titles.items() if i <= items_limit}
        histories = [[i for i in h if i <= items_limit] for h in histories]
    return titles, [h for h in histories if len(h) >= 2]


def timed(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, tuple[float, float]]:
    """Wall and CPU seconds per call of each function, after one warm-up call each. The calls are
    interleaved (a, b, a, b, ...), so load from other processes hits every function alike; CPU
    seconds (this process, all its threads) hardly depend on that load at all."""
    for fn in fns.values():
        fn()
    totals = {name: [0.0, 0.0] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            totals[name][0] += time.perf_counter() - wall
            totals[name][1] += time.process_time() - cpu
    return {name: (wall / repeats, cpu / repeats) for name, (wall, cpu) in totals.items()}


def rates(tokens: int, seconds: tuple[float, float]) -> str:
    return f"{tokens / seconds[0]:.0f} tokens/s, {tokens / seconds[1]:.0f} tokens per CPU-second"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--primary", type=Path, help="folder with user_sequences.parquet and item_catalog.parquet")
    parser.add_argument("--items", type=int, help="use only the first N items of the catalogue")
    parser.add_argument("--users", type=int, default=32, help="users for the inference measurement")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per measurement")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides below laser, e.g. prefix=false")
    args = parser.parse_args(argv)

    conf = parameters()
    laser = OmegaConf.to_container(OmegaConf.merge(conf["laser"], OmegaConf.from_dotlist(args.set)))
    params = LaserParams.model_validate(laser).model("laser")
    id_conf = OmegaConf.create(conf["sasrec"])

    titles, histories = load_tables(args.primary, args.items)
    llm = load_backbone()
    torch.manual_seed(params.training.seed)
    prompts = Prompts(params.prompts, llm.tokenizer, titles)
    id_model = SASRec(SASRecConfig(n_items=prompts.n_items, max_len=id_conf.max_len, hidden_size=id_conf.hidden_size))
    mformer = MFormerConfig.sized(params.mformer, id_conf.hidden_size, llm.hidden_size)
    config = BiTuningConfig(
        n_items=prompts.n_items, llm_hidden_size=llm.hidden_size, backbone=llm.name, rec_size=params.rec_size,
        n_suffix_tokens=params.n_suffix_tokens, temperature=params.temperature, balance_weight=params.balance_weight,
        mformer=mformer if params.prefix else None,
    )
    net = BiTuning(config, llm.model, prompts.items(), id_model.to(llm.device) if params.prefix else None).to(llm.device)
    print(f"{args.primary or AMAZON}: {len(histories)} users, {prompts.n_items} items; backbone {llm.name} on "
          f"{llm.device} in {llm.dtype}; torch threads {torch.get_num_threads()}")
    print(f"trainable parameters: {net.n_trainable_parameters():,} (M-Former, virtual tokens, projections); "
          f"frozen LLM: {sum(p.numel() for p in llm.model.parameters()):,}")

    wall, cpu = time.perf_counter(), time.process_time()
    net.refresh_items(params.item_batch_size)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    item_tokens = sum(len(p) + params.n_suffix_tokens for p in net.item_prompts)
    print(f"catalogue encoding: {prompts.n_items / wall:.1f} items/s, {rates(item_tokens, (wall, cpu))} "
          f"({wall:.1f} s per pass)")

    # One training batch: the first batch_size users of a length bucket, targets their last training item.
    users = histories[: max(args.users, params.training.batch_size)]
    rows = length_buckets([len(prompts.user(h[:-1])) for h in users], params.training.batch_size)[0]
    id_max_len = id_conf.max_len if params.prefix else None
    batch = collate_users([prompts.user(users[r][:-1]) for r in rows], [users[r][:-1] for r in rows], id_max_len)
    batch = {k: v.to(llm.device) for k, v in batch.items()}
    batch["target"] = torch.tensor([users[r][-1] for r in rows], device=llm.device)
    extra = (params.mformer.n_query_tokens if params.prefix else 0) + params.n_suffix_tokens
    positions = int(batch["length"].sum()) + extra * len(rows)
    optimizer = torch.optim.AdamW([p for p in net.parameters()], lr=params.training.lr)

    def bituning_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        net.loss(**batch).backward()
        optimizer.step()

    # The plain step on the same shapes: every position a real token, the LM head and weight gradients.
    width = int(batch["length"].max()) + extra
    tokens = torch.randint(0, llm.tokenizer.vocab_size, (len(rows), width), device=llm.device)
    mask = (torch.arange(width, device=llm.device) < (batch["length"] + extra).unsqueeze(1)).long()
    labels = tokens.masked_fill(mask == 0, -100)
    plain_optimizer = torch.optim.SGD(llm.model.parameters(), lr=0.0)  # lr 0: the weights stay as loaded

    def plain_step() -> None:
        llm.model.requires_grad_(True)
        plain_optimizer.zero_grad(set_to_none=True)
        llm.model(input_ids=tokens, attention_mask=mask, labels=labels).loss.backward()
        plain_optimizer.step()
        plain_optimizer.zero_grad(set_to_none=True)
        llm.model.requires_grad_(False)

    def stage_step(stage: int) -> Callable[[], None]:
        def step() -> None:
            net.set_item_side_trainable(stage == 1)
            bituning_step()

        return step

    net.train()
    seconds = timed({"stage 2": stage_step(2), "stage 1": stage_step(1), "plain": plain_step}, args.steps)
    targets = batch["target"].unique().tolist()
    stage1_tokens = positions + sum(len(net.item_prompts[t]) + params.n_suffix_tokens for t in targets)
    print(f"bi-tuning step, stage 2 (user side): {rates(positions, seconds['stage 2'])} "
          f"({seconds['stage 2'][0]:.2f} s per batch of {len(rows)} users, {positions} tokens)")
    print(f"bi-tuning step, stage 1 (+ the targets' item encodings): {rates(stage1_tokens, seconds['stage 1'])} "
          f"({stage1_tokens} tokens)")
    print(f"plain LLM training step (LM head, next-token loss, weight gradients): {rates(positions, seconds['plain'])}")
    for stage, n in (("stage 2", positions), ("stage 1", stage1_tokens)):
        wall = (n / seconds[stage][0]) / (positions / seconds["plain"][0])
        cpu = (n / seconds[stage][1]) / (positions / seconds["plain"][1])
        print(f"ratio bi-tuning {stage} / plain, tokens per second: {wall:.2f}x wall, {cpu:.2f}x CPU")

    net.eval()
    inputs = [h[:-1] for h in users[: args.users]]
    user_prompts = [prompts.user(h) for h in inputs]
    wall, cpu = timed({"score": lambda: score_users(net, user_prompts, inputs, params.score_batch_size)}, 1)["score"]
    print(f"full-ranking inference: {len(inputs) / wall:.1f} users/s, {len(inputs) / cpu:.1f} users per CPU-second "
          f"({len(inputs)} users against "
          f"{prompts.n_items} items, batches of {params.score_batch_size}, item encodings cached)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
