"""A few users shown whole: their last items, the target, and each model's top items for them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from llm_seqrec.data.schema import split_input


def example_users_markdown(
    user_sequences: pd.DataFrame,
    item_catalog: pd.DataFrame,
    eval_candidates: pd.DataFrame,
    scored: Mapping[str, pd.DataFrame],
    users: Sequence[int],
    split: str = "test",
    top_n: int = 5,
    history_items: int = 5,
) -> str:
    """For each of ``users``: the last items before ``split``'s target, the target, and per model and
    protocol the target's rank and the model's top ``top_n`` items (the target in bold)."""
    titles = dict(zip(item_catalog["item_idx"].astype(int), item_catalog["title"], strict=True))
    sequences = user_sequences.set_index("user_idx")
    candidates = eval_candidates[eval_candidates["split"] == split].set_index("user_idx")["candidates"]
    lines = [
        "# Example users",
        "",
        f"Seeded users of the LLM sample, {split} split. Full ranking: each model's top {top_n} of every item "
        f"(the user's input items removed where `evaluation.exclude_seen`); sampled: its top {top_n} of the "
        "target and the shared negatives. Rank: the target's, from 0 (ties count half).",
    ]
    for user in users:
        sequence = sequences.loc[int(user)]
        history = split_input(sequence["train_items"], sequence["valid_target"], split)
        target = int(sequence[f"{split}_target"])

        def name(item: int) -> str:
            text = str(titles.get(int(item), item)).replace("|", "\\|")
            return f"**{text}**" if int(item) == target else text

        lines += [
            "",
            f"## user {int(user)} ({sequence['user_id']})",
            "",
            f"Last {min(history_items, len(history))} of {len(history)} items, oldest first: "
            + "; ".join(name(i) for i in history[-history_items:]),
            "",
            f"Target: {name(target)}",
            "",
            "| model | protocol | target rank | top items |",
            "|---|---|---:|---|",
        ]
        for model, table in scored.items():
            rows = table[(table["user_idx"] == int(user)) & (table["split"] == split)]
            for row in rows.sort_values("protocol").itertuples(index=False):
                if row.protocol == "full":
                    top = list(row.top_items)[:top_n]
                else:
                    order = np.argsort(-np.asarray(row.candidate_scores, dtype=float), kind="stable")[:top_n]
                    top = np.asarray(candidates.loc[int(user)])[order].tolist()
                lines.append(
                    f"| {model} | {row.protocol} | {row.rank:g} of {row.n_ranked} | " + "; ".join(name(i) for i in top) + " |"
                )
    return "\n".join(lines) + "\n"
