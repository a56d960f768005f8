"""The human-readable views of ``metrics``: markdown and HTML tables (metrics with their standard errors,
paired tests, training cost, the learning curves). Figures: ``figures.py``; example users: ``example_users.py``."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from llm_seqrec.data.schema import PROTOCOLS, SPLITS, TRAINING_LOG_COLUMNS
from llm_seqrec.evaluation.protocol import ALL_USERS, COLD_ITEM_MAX_INTERACTIONS, COLD_ITEMS

PROTOCOL_NAMES = {"full": "full ranking", "sampled": "sampled ranking"}


def users_name(label: str, n_users: int) -> str:
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
        *_split_lines(metrics),
        *_dtype_lines(metrics),
    ]


def one_split_models(metrics: pd.DataFrame) -> dict[str, list[str]]:
    """Split -> the models with metrics on that split alone (``evaluation.llm_splits`` scored them there only)."""
    splits = metrics.groupby("model", sort=True)["split"].agg(lambda s: sorted(set(s), key=SPLITS.index))
    return {split: [m for m, scored in splits.items() if scored == [split]] for split in SPLITS
            if any(scored == [split] for scored in splits)}


def _split_lines(metrics: pd.DataFrame) -> list[str]:
    """Which models have no rows on a split (scored on the other only, for time): a missing row is not a bad model."""
    return [f"**Scored on the {split} split only** (`evaluation.llm_splits`), so absent from the other's tables: "
            + ", ".join(f"`{m}`" for m in models) + "." for split, models in one_split_models(metrics).items()]


def _dtype_lines(metrics: pd.DataFrame) -> list[str]:
    """What the LLM rows were computed in: bf16 and float32 rank differently, so a reader must see which."""
    dtypes = metrics.get("backbone_dtype", pd.Series(dtype=str)).fillna("")
    by_dtype = metrics[dtypes != ""].groupby(dtypes[dtypes != ""], sort=True)["model"].unique()
    return [f"**Backbone in {dtype}**: " + ", ".join(f"`{m}`" for m in models) + "." for dtype, models in by_dtype.items()]


def _tables(metrics: pd.DataFrame):
    """(heading, models x metrics table of values, the same of standard errors: NaN where unknown) per
    dataset / protocol / split / user set, in reading order."""
    if "std_error" not in metrics:
        metrics = metrics.assign(std_error=np.nan)
    for (dataset, protocol, split, users), group in _groups(metrics):
        order = list(dict.fromkeys(group["model"])), list(dict.fromkeys(group["metric"]))
        table, errors = (group.pivot_table(index="model", columns="metric", values=column, sort=False, dropna=False)
                         .reindex(index=order[0], columns=order[1]) for column in ("value", "std_error"))
        n_users = int(group["n_users"].iloc[0])
        yield f"{dataset} · {PROTOCOL_NAMES[protocol]} · {split} split · {users_name(users, n_users)}", table, errors


def _value(value: float, error: float) -> str:
    return f"{value:.4f}" if pd.isna(error) else f"{value:.4f} ± {error:.4f}"


def metrics_markdown(metrics: pd.DataFrame, cost: pd.DataFrame, exclude_seen: bool, n_negatives: int,
                     paired: pd.DataFrame | None = None) -> str:
    """One table per dataset / protocol / split / user set (models as rows, metrics as columns, each
    value ± its standard error), the paired tests (``paired.paired_tests``) of the test split, then per
    data set its learning curves (``<dataset>/learning_curves.png``) and training cost."""
    intro = _intro(metrics, exclude_seen, n_negatives)
    lines = ["# Evaluation", "", intro[0], *(f"- {line}" for line in intro[1:])]
    for heading, table, errors in _tables(metrics):
        lines += [
            "",
            f"## {heading}",
            "",
            "| model | " + " | ".join(table.columns) + " |",
            "|---|" + "---:|" * len(table.columns),
        ]
        lines += [f"| {model} | " + " | ".join(_value(v, e) for v, e in zip(row, errors.loc[model], strict=True)) + " |"
                  for model, row in table.iterrows()]
    for heading, table in paired_tables(paired):
        lines += ["", f"## {heading}", "", PAIRED_NOTE, "", "| " + " | ".join(table.columns) + " |",
                  "|---|---|---|" + "---:|" * (len(table.columns) - 3)]
        lines += ["| " + " | ".join(row) + " |" for row in table.itertuples(index=False)]
    for dataset in dict.fromkeys(metrics["dataset"]):
        lines += ["", f"## {dataset}: learning curves", "", CURVES_NOTE, "",
                  f"![{dataset} learning curves]({dataset}/learning_curves.png)"]
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


def epoch_ends(log: pd.DataFrame) -> pd.Series:
    """Which rows of a training log end an epoch (all of a log written before ``epoch_end`` existed)."""
    return log["epoch_end"].astype("boolean").fillna(True).astype(bool)


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
                "epochs": int(epoch_ends(epochs).sum()),  # not the points inside epochs
                "stopped_by": epochs["stopped_by"].dropna().iloc[-1] if epochs["stopped_by"].notna().any() else None,
                "minutes": float(epochs["seconds"].sum() / 60),
                "peak_rss_mb": float(epochs["peak_rss_mb"].max()),
                "peak_cuda_mb": float(epochs["peak_cuda_mb"].max()),
                "backbone_dtype": ",".join(sorted(set(epochs["backbone_dtype"].dropna()))) or None,
            })
    return pd.DataFrame(rows, columns=COST_COLUMNS).astype({"trainable_parameters": "Int64", "stopped_by": "object"})


PAIRED_NOTE = ("Each method against SASRec, DMPO and S-DPO against SFT, each ablation against its full model, on "
               "the same users, protocol and candidates: difference (method - baseline) ± its paired standard error, "
               "and the two-sided p-value of a seeded paired bootstrap over users (`paired_tests.csv` has every "
               "metric, both splits and the 95% interval); * marks p < 0.05.")
CURVES_NOTE = ("Each trained model's early-stopping validation metric against the training examples it has seen "
               "(stages one after another), the training loss in grey; the title says what stopped training.")
PAIRED_SHOWN = {"full": ("ndcg@10", "hr@10", "hr@100"), "sampled": ("hr@1", "ndcg@5", "auc")}


def paired_tables(paired: pd.DataFrame | None, split: str = "test"):
    """(heading, table of strings) per dataset / protocol / user set of ``paired``'s ``split``: a row per
    pair, for each shown metric the difference ± its standard error and the p-value."""
    if paired is None or paired.empty:
        return
    paired = paired[paired["split"] == split]
    for (dataset, protocol, users), group in paired.groupby(["dataset", "protocol", "users"], sort=False):
        shown = [m for m in PAIRED_SHOWN.get(protocol, ()) if m in set(group["metric"])]
        if not shown:
            continue
        rows = []
        for (model, baseline, comparison), pair in group.groupby(["model", "baseline", "comparison"], sort=False):
            by_metric = pair.set_index("metric")
            rows.append([model, baseline, comparison] + [
                f"{r.difference:+.4f} ± {r.std_error:.4f} (p {r.p_value:.3g}){' *' if r.p_value < 0.05 else ''}"
                for r in (by_metric.loc[m] for m in shown)])
        heading = (f"{dataset} · paired tests · {PROTOCOL_NAMES[protocol]} · {split} split · "
                   f"{users_name(users, int(group['n_users'].iloc[0]))}")
        yield heading, pd.DataFrame(rows, columns=["model", "baseline", "comparison", *shown])


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


def metrics_html(metrics: pd.DataFrame, cost: pd.DataFrame, exclude_seen: bool, n_negatives: int,
                 paired: pd.DataFrame | None = None, curves: Mapping[str, bytes] | None = None) -> str:
    """The tables of :func:`metrics_markdown` as one HTML page, each column's best in bold; the learning
    curves of the data sets in ``curves`` (PNG bytes) embedded, the others' linked."""
    intro = _intro(metrics, exclude_seen, n_negatives)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>llm_seqrec evaluation</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th:first-child,td:first-child{text-align:left}"
        "</style></head><body><h1>Evaluation</h1>",
        f"<p>{_inline_html(intro[0])}</p><ul>" + "".join(f"<li>{_inline_html(line)}</li>" for line in intro[1:]) + "</ul>",
    ]
    for heading, table, errors in _tables(metrics):
        best = table.max()
        rows = "".join(
            f"<tr><td>{html.escape(str(model))}</td>"
            + "".join(f"<td>{'<b>' if v == best[m] else ''}{_value(v, errors.loc[model, m])}{'</b>' if v == best[m] else ''}</td>"
                      for m, v in row.items())
            + "</tr>"
            for model, row in table.iterrows()
        )
        header = "<tr><th>model</th>" + "".join(f"<th>{html.escape(str(m))}</th>" for m in table.columns) + "</tr>"
        parts.append(f"<h2>{html.escape(heading)}</h2><table>{header}{rows}</table>")
    for heading, table in paired_tables(paired):
        header = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in table.columns) + "</tr>"
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                       for row in table.itertuples(index=False))
        parts.append(f"<h2>{html.escape(heading)}</h2><p>{_inline_html(PAIRED_NOTE)}</p><table>{header}{rows}</table>")
    for dataset in dict.fromkeys(metrics["dataset"]):
        source = (f"data:image/png;base64,{base64.b64encode(curves[dataset]).decode()}" if dataset in (curves or {})
                  else f"{html.escape(dataset)}/learning_curves.png")
        parts.append(f"<h2>{html.escape(dataset)}: learning curves</h2><p>{_inline_html(CURVES_NOTE)}</p>"
                     f"<img src='{source}' alt='{html.escape(dataset)} learning curves' style='max-width:100%'>")
    for dataset, table in _cost_tables(cost):
        header = "<tr><th>model</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in table.columns) + "</tr>"
        rows = "".join(f"<tr><td>{html.escape(str(model))}</td>"
                       + "".join(f"<td>{_cost_cell(c, v)}</td>" for c, v in row.items()) + "</tr>"
                       for model, row in table.iterrows())
        parts.append(f"<h2>{html.escape(dataset)}: training cost</h2><p>{_inline_html(COST_NOTE)}</p>"
                     f"<table>{header}{rows}</table>")
    return "".join(parts) + "</body></html>\n"
