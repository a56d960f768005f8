"""The human-readable views of ``metrics``: markdown tables, a comparison figure, example users."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from llm_seqrec.data.schema import PROTOCOLS, SPLITS, TRAINING_LOG_COLUMNS, split_input
from llm_seqrec.evaluation.protocol import ALL_USERS, COLD_ITEM_MAX_INTERACTIONS, COLD_ITEMS

PROTOCOL_NAMES = {"full": "full ranking", "sampled": "sampled ranking"}
PLOTTED = [("full", "ndcg@10"), ("full", "hr@10"), ("sampled", "hr@1")]


def _users_name(label: str, n_users: int) -> str:
    if label == COLD_ITEMS:
        return f"cold items: users whose target has at most {COLD_ITEM_MAX_INTERACTIONS} training interactions (n = {n_users})"
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


def _intro(metrics: pd.DataFrame, exclude_seen: bool, n_negatives: int) -> list[str]:
    seen = "removed from" if exclude_seen else "kept in"
    return [
        "Leave-one-out by time: the last interaction is the test target, the one before it the validation target.",
        f"**full ranking**: the target ranked against every item; the user's input items are {seen} the "
        f"ranking (`evaluation.exclude_seen: {str(exclude_seen).lower()}`).",
        f"**sampled ranking**: the target ranked against {n_negatives} seeded negatives, the same for every model.",
        "Ties count half. A model appears under every user set it scored completely; LLM models score a "
        "seeded user sample, on which every other model is reported too.",
        *_dtype_lines(metrics),
    ]


def _dtype_lines(metrics: pd.DataFrame) -> list[str]:
    """What the LLM rows were computed in: bf16 and float32 rank differently, so a reader must see which."""
    dtypes = metrics.get("backbone_dtype", pd.Series(dtype=str)).fillna("")
    by_dtype = metrics[dtypes != ""].groupby(dtypes[dtypes != ""], sort=True)["model"].unique()
    return [f"**Backbone in {dtype}**: " + ", ".join(f"`{m}`" for m in models) + "." for dtype, models in by_dtype.items()]


def _tables(metrics: pd.DataFrame):
    """(heading, models x metrics table) per dataset / protocol / split / user set, in reading order."""
    for (dataset, protocol, split, users), group in _groups(metrics):
        table = group.pivot_table(index="model", columns="metric", values="value", sort=False)
        table = table.loc[list(dict.fromkeys(group["model"])), list(dict.fromkeys(group["metric"]))]
        n_users = int(group["n_users"].iloc[0])
        yield f"{dataset} · {PROTOCOL_NAMES[protocol]} · {split} split · {_users_name(users, n_users)}", table


def metrics_markdown(metrics: pd.DataFrame, cost: pd.DataFrame, exclude_seen: bool, n_negatives: int) -> str:
    """One table per dataset / protocol / split / user set (models as rows, metrics as columns), then
    the training cost per data set."""
    intro = _intro(metrics, exclude_seen, n_negatives)
    lines = ["# Evaluation", "", intro[0], *(f"- {line}" for line in intro[1:])]
    for heading, table in _tables(metrics):
        lines += [
            "",
            f"## {heading}",
            "",
            "| model | " + " | ".join(table.columns) + " |",
            "|---|" + "---:|" * len(table.columns),
        ]
        lines += [f"| {model} | " + " | ".join(f"{v:.4f}" for v in row) + " |" for model, row in table.iterrows()]
    for dataset, table in _cost_tables(cost):
        lines += ["", f"## {dataset}: training cost", "", COST_NOTE, "",
                  "| model | " + " | ".join(table.columns) + " |", "|---|" + "---:|" * len(table.columns)]
        lines += [f"| {model} | " + " | ".join(_cost_cell(c, v) for c, v in row.items()) + " |"
                  for model, row in table.iterrows()]
    return "\n".join(lines) + "\n"


COST_COLUMNS = ["dataset", "model", "trainable_parameters", "epochs", "stopped_by", "minutes", "peak_rss_mb",
                "peak_cuda_mb", "backbone_dtype"]
COST_NOTE = ("Training only (scoring excluded); minutes sum every epoch, validation included, across resumed "
             "runs; peak memory is this process's resident set (and CUDA's allocation) while the model trained. "
             "`stopped_by`: what ended the last training stage: patience (early stopping: converged), the epoch "
             "cap, or the time budget (`max_minutes`), which cut a model still improving on validation. "
             "`dmpo` and `sdpo` start from `sft`'s adapter; a few-shot `dmpo_u<n>` from `sft_u<n>`.")
# How the report shows each reason; a time-budget cut is marked, since the model was still improving.
STOPPED_BY = {"patience": "patience", "epoch_cap": "epoch cap", "time_budget": "TIME BUDGET (still improving)"}


def training_cost(dataset: str, training_logs: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per trained model: trainable parameters, epochs, minutes and peak memory, from the training logs
    (a log with several models, as the few-shot sweep's, gives a row for each)."""
    rows = []
    for log in training_logs.values():
        # A log written before the cost columns existed reports them as unknown.
        log = log.reindex(columns=TRAINING_LOG_COLUMNS)
        for model, epochs in log.groupby("model", sort=False):
            rows.append({
                "dataset": dataset,
                "model": model,
                "trainable_parameters": epochs["trainable_parameters"].max(),
                "epochs": len(epochs),
                "stopped_by": epochs["stopped_by"].dropna().iloc[-1] if epochs["stopped_by"].notna().any() else None,
                "minutes": float(epochs["seconds"].sum() / 60),
                "peak_rss_mb": float(epochs["peak_rss_mb"].max()),
                "peak_cuda_mb": float(epochs["peak_cuda_mb"].max()),
                "backbone_dtype": ",".join(sorted(set(epochs["backbone_dtype"].dropna()))) or None,
            })
    return pd.DataFrame(rows, columns=COST_COLUMNS).astype({"trainable_parameters": "Int64", "stopped_by": "object"})


def _cost_tables(cost: pd.DataFrame):
    """(dataset, table) per data set: models as rows, in the order trained."""
    for dataset, table in cost.groupby("dataset", sort=False):
        table = table.set_index("model")[COST_COLUMNS[2:]]
        yield dataset, table.dropna(axis=1, how="all")


def _cost_cell(column: str, value) -> str:
    if pd.isna(value):
        return "?"
    if column == "stopped_by":
        return STOPPED_BY.get(value, str(value))
    if column == "backbone_dtype":
        return str(value)
    if column in ("trainable_parameters", "epochs"):
        return f"{int(value):,}"
    return f"{value:.1f}" if column == "minutes" else f"{value:,.0f}"


def _inline_html(markdown: str) -> str:
    """Escape, then the two inline markdown marks the intro uses: **bold** and `code`."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(markdown))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def metrics_html(metrics: pd.DataFrame, cost: pd.DataFrame, exclude_seen: bool, n_negatives: int) -> str:
    """The tables of :func:`metrics_markdown` as one self-contained HTML page, each column's best in bold."""
    intro = _intro(metrics, exclude_seen, n_negatives)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>llm_seqrec evaluation</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th:first-child,td:first-child{text-align:left}"
        "</style></head><body><h1>Evaluation</h1>",
        f"<p>{_inline_html(intro[0])}</p><ul>" + "".join(f"<li>{_inline_html(line)}</li>" for line in intro[1:]) + "</ul>",
    ]
    for heading, table in _tables(metrics):
        best = table.max()
        rows = "".join(
            f"<tr><td>{html.escape(str(model))}</td>"
            + "".join(f"<td>{'<b>' if v == best[m] else ''}{v:.4f}{'</b>' if v == best[m] else ''}</td>"
                      for m, v in row.items())
            + "</tr>"
            for model, row in table.iterrows()
        )
        header = "<tr><th>model</th>" + "".join(f"<th>{html.escape(str(m))}</th>" for m in table.columns) + "</tr>"
        parts.append(f"<h2>{html.escape(heading)}</h2><table>{header}{rows}</table>")
    for dataset, table in _cost_tables(cost):
        header = "<tr><th>model</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in table.columns) + "</tr>"
        rows = "".join(f"<tr><td>{html.escape(str(model))}</td>"
                       + "".join(f"<td>{_cost_cell(c, v)}</td>" for c, v in row.items()) + "</tr>"
                       for model, row in table.iterrows())
        parts.append(f"<h2>{html.escape(dataset)}: training cost</h2><p>{_inline_html(COST_NOTE)}</p>"
                     f"<table>{header}{rows}</table>")
    return "".join(parts) + "</body></html>\n"


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
            labels = [ALL_USERS, *sorted(set(chosen["users"]) - {ALL_USERS, COLD_ITEMS})]
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
