"""The human-readable views of ``metrics``: markdown tables and a comparison figure."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from llm_seqrec.data.schema import PROTOCOLS, SPLITS
from llm_seqrec.evaluation.protocol import ALL_USERS

PROTOCOL_NAMES = {"full": "full ranking", "sampled": "sampled ranking"}
PLOTTED = [("full", "ndcg@10"), ("full", "hr@10"), ("sampled", "hr@1")]


def _users_name(label: str, n_users: int) -> str:
    return f"all users (n = {n_users})" if label == ALL_USERS else f"seeded user sample '{label}' (n = {n_users})"


def _groups(metrics: pd.DataFrame):
    """(dataset, protocol, split, users) groups in reading order: valid before test, all before samples."""
    keys = metrics[["dataset", "protocol", "split", "users"]].drop_duplicates()
    keys = keys.assign(
        _p=keys["protocol"].map(PROTOCOLS.index),
        _s=keys["split"].map(SPLITS.index),
        _u=keys["users"] != ALL_USERS,
    ).sort_values(["dataset", "_p", "_s", "_u", "users"])
    for dataset, protocol, split, users in keys[["dataset", "protocol", "split", "users"]].itertuples(index=False):
        chosen = (
            (metrics["dataset"] == dataset)
            & (metrics["protocol"] == protocol)
            & (metrics["split"] == split)
            & (metrics["users"] == users)
        )
        yield (dataset, protocol, split, users), metrics[chosen]


def metrics_markdown(metrics: pd.DataFrame, exclude_seen: bool, n_negatives: int) -> str:
    """One table per dataset / protocol / split / user set: models as rows, metrics as columns."""
    seen = "removed from" if exclude_seen else "kept in"
    lines = [
        "# Evaluation",
        "",
        "Leave-one-out by time: the last interaction is the test target, the one before it the validation target.",
        f"- **full ranking**: the target ranked against every item; the user's input items are {seen} the "
        f"ranking (`evaluation.exclude_seen: {str(exclude_seen).lower()}`).",
        f"- **sampled ranking**: the target ranked against {n_negatives} seeded negatives, the same for every model.",
        "- Ties count half. A model appears under every user set it scored completely; LLM models score a "
        "seeded user sample, on which every other model is reported too.",
    ]
    for (dataset, protocol, split, users), group in _groups(metrics):
        table = group.pivot_table(index="model", columns="metric", values="value", sort=False)
        table = table.loc[list(dict.fromkeys(group["model"])), list(dict.fromkeys(group["metric"]))]
        n_users = int(group["n_users"].iloc[0])
        lines += [
            "",
            f"## {dataset} · {PROTOCOL_NAMES[protocol]} · {split} split · {_users_name(users, n_users)}",
            "",
            "| model | " + " | ".join(table.columns) + " |",
            "|---|" + "---:|" * len(table.columns),
        ]
        lines += [f"| {model} | " + " | ".join(f"{v:.4f}" for v in row) + " |" for model, row in table.iterrows()]
    return "\n".join(lines) + "\n"


def metrics_figure(metrics: pd.DataFrame, split: str = "test") -> Figure:
    """Bars of NDCG@10 and HR@10 (full ranking) and HR@1 (sampled), one bar per model, one row per
    dataset, on ``split``; each panel on one user set, named in its title."""
    datasets = list(dict.fromkeys(metrics["dataset"]))
    figure = Figure(figsize=(4.2 * len(PLOTTED), 3.6 * max(1, len(datasets))), layout="constrained")
    axes = figure.subplots(max(1, len(datasets)), len(PLOTTED), squeeze=False)
    for row, dataset in enumerate(datasets):
        for col, (protocol, metric) in enumerate(PLOTTED):
            ax = axes[row][col]
            chosen = metrics[
                (metrics["dataset"] == dataset)
                & (metrics["protocol"] == protocol)
                & (metrics["split"] == split)
                & (metrics["metric"] == metric)
            ]
            if chosen.empty:
                ax.set_axis_off()
                ax.set_title(f"{dataset}: no {metric} ({PROTOCOL_NAMES[protocol]}, {split})", fontsize=9)
                continue
            # The largest user set on which every model of the panel is reported: all users where
            # it is, else the LLM sample (every model is reported there).
            models = set(chosen["model"])
            labels = [ALL_USERS, *sorted(set(chosen["users"]) - {ALL_USERS})]
            users = next(u for u in labels if set(chosen.loc[chosen["users"] == u, "model"]) == models)
            chosen = chosen[chosen["users"] == users]
            bars = ax.bar(chosen["model"], chosen["value"], color="tab:blue")
            ax.bar_label(bars, fmt="%.3f", fontsize=8)
            ax.tick_params(axis="x", labelrotation=45)
            ax.set_ylabel(metric.upper())
            ax.set_title(
                f"{dataset}: {metric} · {PROTOCOL_NAMES[protocol]}\n{split} split · "
                f"{_users_name(users, int(chosen['n_users'].iloc[0]))}",
                fontsize=9,
            )
    return figure
