"""The report's figures: the metric comparison (with standard errors) and the learning curves."""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from llm_seqrec.data.schema import TRAINING_LOG_COLUMNS
from llm_seqrec.evaluation.protocol import ALL_USERS, COLD_ITEMS
from llm_seqrec.evaluation.report import PROTOCOL_NAMES, STOPPED_BY, epoch_ends, users_name

PLOTTED = [("full", "ndcg@10"), ("full", "hr@10"), ("sampled", "hr@1")]


def metrics_figure(metrics: pd.DataFrame, split: str = "test") -> Figure:
    """Horizontal bars of NDCG@10 and HR@10 (full ranking) and HR@1 (sampled), one bar per model with
    its standard error over users (``std_error``, where the table has it) as an error bar and in its
    label, one row of panels per dataset, on ``split``; each panel on one user set, named in its title."""
    datasets = list(dict.fromkeys(metrics["dataset"]))
    most = max([metrics.loc[metrics["dataset"] == d, "model"].nunique() for d in datasets] or [1])
    figure = Figure(figsize=(5.0 * len(PLOTTED), (1.2 + 0.32 * most) * max(1, len(datasets))), layout="constrained")
    axes = figure.subplots(max(1, len(datasets)), len(PLOTTED), squeeze=False)
    for row, dataset in enumerate(datasets):
        for col, (protocol, metric) in enumerate(PLOTTED):
            ax = axes[row][col]
            chosen = metrics[
                (metrics["dataset"] == dataset)
                & (metrics["protocol"] == protocol)
                & (metrics["split"] == split)
                & (metrics["metric"] == metric)
                & (metrics["users"] != COLD_ITEMS)  # a slice, not a user set every model is reported on
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
            errors = chosen["std_error"].fillna(0).to_numpy() if "std_error" in chosen else np.zeros(len(chosen))
            values = chosen["value"].to_numpy()
            ax.barh(chosen["model"], values, xerr=errors, color="tab:blue", error_kw={"ecolor": "black", "capsize": 2})
            for y, (value, error) in enumerate(zip(values, errors, strict=True)):
                ax.text(value + error, y, f" {value:.3f}" + (f" ± {error:.3f}" if error else ""), va="center", fontsize=7)
            ax.set_xlim(0, max(1e-3, float((values + errors).max())) * 1.45)
            ax.invert_yaxis()  # the first model on top
            ax.tick_params(axis="y", labelsize=8)
            ax.set_xlabel(metric.upper() + " (± standard error over users)")
            ax.set_title(
                f"{dataset}: {metric} · {PROTOCOL_NAMES[protocol]}\n{split} split · "
                f"{users_name(users, int(chosen['n_users'].iloc[0]))}",
                fontsize=9,
            )
    return figure


def learning_curves_figure(dataset: str, training_logs: Mapping[str, pd.DataFrame]) -> Figure:
    """One panel per trained model of ``dataset``'s training logs: its early-stopping validation metric
    against the training examples seen (a log written before they were counted: against epochs), the
    stages of a model one after another (a dotted line where one starts), epoch ends as dots, points
    inside an epoch smaller, the best point starred and the end marked with what stopped training;
    the training loss in grey on a second axis."""
    logs = [log.reindex(columns=TRAINING_LOG_COLUMNS) for log in training_logs.values() if not log.empty]
    models = [(model, rows) for log in logs for model, rows in log.groupby("model", sort=False)]
    cols = max(1, min(4, len(models)))
    n_rows = max(1, -(-len(models) // cols))
    figure = Figure(figsize=(4.2 * cols, 3.2 * n_rows + 0.4), layout="constrained")
    figure.suptitle(f"{dataset}: learning curves (validation metric: each trainer's early-stopping NDCG)", fontsize=10)
    axes = figure.subplots(n_rows, cols, squeeze=False).ravel()
    for ax in axes[len(models):]:
        ax.set_axis_off()
    if not models:
        axes[0].text(0.5, 0.5, "no training logs", ha="center", va="center", transform=axes[0].transAxes)
    for ax, (model, rows) in zip(axes, models, strict=False):
        _curve(ax, model, rows)
    return figure


def _curve(ax, model: str, rows: pd.DataFrame) -> None:
    rows = rows.reset_index(drop=True).assign(epoch_end=epoch_ends(rows).to_numpy(), stage=rows["stage"].fillna(1).to_numpy())
    by_examples = rows["examples_seen"].notna().all()
    x, offset = [], 0.0
    for stage, stage_rows in rows.groupby("stage", sort=False):
        if offset:
            ax.axvline(offset, color="grey", linestyle=":", linewidth=1)
            ax.text(offset, 1.0, f" stage {stage}", transform=ax.get_xaxis_transform(), fontsize=7, va="top", color="grey")
        own = stage_rows["examples_seen"].astype(float) if by_examples else stage_rows["epoch_end"].cumsum().astype(float)
        x += (own + offset).tolist()
        offset += float(own.max())
    rows = rows.assign(x=x)
    validated = rows[rows["metric"].notna()]
    if validated.empty:
        ax.text(0.5, 0.5, "no validation", ha="center", va="center", transform=ax.transAxes, color="grey")
    else:
        ax.plot(validated["x"], validated["metric"], color="tab:blue", linewidth=1.2, label="validation")
        within = validated[~validated["epoch_end"]]
        ends = validated[validated["epoch_end"]]
        ax.plot(within["x"], within["metric"], ".", color="tab:blue", markersize=4)
        ax.plot(ends["x"], ends["metric"], "o", color="tab:blue", markersize=4)
        best = validated.loc[validated["metric"].idxmax()]
        ax.plot([best["x"]], [best["metric"]], "*", color="tab:orange", markersize=11, label=f"best {best['metric']:.4f}")
        ax.legend(fontsize=7, loc="lower right")
    stopped = rows["stopped_by"].dropna()
    reason = STOPPED_BY.get(stopped.iloc[-1], str(stopped.iloc[-1])) if not stopped.empty else "not recorded"
    ax.axvline(rows["x"].iloc[-1], color="tab:red" if reason.startswith("TIME") else "black", linewidth=1)
    ax.set_title(f"{model}: stopped by {reason}", fontsize=9)
    ax.set_xlabel("training examples seen" if by_examples else "epochs (log without example counts)", fontsize=8)
    ax.set_ylabel("validation NDCG", fontsize=8)
    ax.tick_params(labelsize=7)
    loss = rows[rows["loss"].notna()]
    if not loss.empty:
        twin = ax.twinx()
        twin.plot(loss["x"], loss["loss"], "x--", color="grey", linewidth=0.9, markersize=3)
        twin.set_ylabel("training loss (grey)", fontsize=7, color="grey")
        twin.tick_params(labelsize=6, colors="grey")


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """``figure`` as PNG bytes (for a page that embeds it)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()
