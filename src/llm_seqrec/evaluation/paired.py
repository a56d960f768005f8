"""Paired comparisons: is a method's difference from its baseline larger than its users' noise?

The pairs are the README's, derived from the model names, so any model is covered: every model
against SASRec; a preference-tuned model (``dmpo*``, ``sdpo*``) against the SFT model it starts from
(``sft`` + the same suffix: ``dmpo_u64`` against ``sft_u64``); an ablation ``<base>_no_<part>``
against ``<base>``. Both models are compared on the same users (each user set of
``protocol.reported_rows`` they both cover), protocol, split and candidates.

The test is a paired bootstrap over users: the per-user differences are resampled with replacement
``n_bootstrap`` times (one seeded set of resamples per user set, shared by every pair and metric, so
a re-run repeats every number); the p-value is two-sided, twice the smaller share of resampled mean
differences at or beyond zero on either side ((count + 1) / (B + 1), so never 0), and the 95%
interval is the resamples' percentiles. A bootstrap rather than a sign test because it tests the
number the tables report (the mean difference, e.g. in NDCG@10) and weighs how much each user moved,
where a sign test counts only which model won each user; ``std_error`` is the analytic paired one,
sd(differences) / sqrt(n).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from llm_seqrec.evaluation.metrics import per_user_metrics, standard_error
from llm_seqrec.evaluation.protocol import reported_rows

REFERENCE = "sasrec"
PREFERENCE_PREFIXES = ("dmpo", "sdpo")  # each against "sft" + the same suffix
PAIRED_COLUMNS = ["dataset", "protocol", "split", "users", "n_users", "metric", "model", "baseline", "comparison",
                  "model_value", "baseline_value", "difference", "std_error", "ci_low", "ci_high", "p_value", "test"]
_RESAMPLE_CELLS = 2**22  # bootstrap weights held at once (resamples x users), 32 MiB of float64


def comparison_pairs(models: Iterable[str]) -> list[tuple[str, str, str]]:
    """(model, baseline, comparison) for every pair of ``models`` the rules above make, in ``models``' order."""
    models = list(dict.fromkeys(models))
    present = set(models)
    pairs = []
    for model in models:
        if model != REFERENCE and REFERENCE in present:
            pairs.append((model, REFERENCE, f"vs {REFERENCE}"))
        for prefix in PREFERENCE_PREFIXES:
            if model.startswith(prefix) and (base := "sft" + model[len(prefix):]) in present:
                pairs.append((model, base, "preference vs sft"))
        if "_no_" in model and (base := model.split("_no_")[0]) in present:
            pairs.append((model, base, "ablation vs full"))
    return list(dict.fromkeys(pairs))


def bootstrap_means(differences: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """``[n_bootstrap, columns]``: the mean of each column of ``differences`` ``[users, columns]`` over
    ``n_bootstrap`` seeded resamples of the users (with replacement; the same resamples for every column)."""
    n = differences.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, _RESAMPLE_CELLS // n)
    means = []
    for start in range(0, n_bootstrap, chunk):
        rows = min(chunk, n_bootstrap - start)
        drawn = rng.integers(0, n, size=(rows, n)) + n * np.arange(rows)[:, None]
        weights = np.bincount(drawn.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)
        means.append(weights @ differences / n)
    return np.concatenate(means)


def paired_tests(
    score_tables: Mapping[str, pd.DataFrame],
    dataset_name: str,
    ks: Sequence[int],
    user_samples: Mapping[str, Collection[int]],
    n_bootstrap: int = 10_000,
    seed: int = 42,
) -> pd.DataFrame:
    """``PAIRED_COLUMNS``: per user set, protocol, split, metric and pair of ``comparison_pairs`` that both
    scored, the two means, their difference (model - baseline), its paired standard error, bootstrap 95%
    interval and p-value."""
    per_user: dict[tuple, dict] = {}
    for model, _, protocol, split, label, rows in reported_rows(score_tables, user_samples):
        rows = rows.sort_values("user_idx")
        per_user.setdefault((protocol, split, label), {})[model] = (
            rows["user_idx"].to_numpy(), per_user_metrics(rows["rank"].to_numpy(), ks, protocol, rows["n_ranked"].to_numpy()))
    test = f"paired bootstrap over users, B = {n_bootstrap}, seed {seed}"
    out = []
    for (protocol, split, label), models in per_user.items():
        columns = []  # (model, baseline, comparison, metric, per-user differences)
        for model, baseline, comparison in comparison_pairs(models):
            (users, values), (base_users, base_values) = models[model], models[baseline]
            if not np.array_equal(users, base_users):
                raise ValueError(f"{model} and {baseline} ({protocol}/{split}, users {label!r}) are on different users")
            columns += [(model, baseline, comparison, metric, values[metric] - base_values[metric])
                        for metric in values if metric in base_values]
        if not columns:
            continue
        differences = np.stack([c[-1] for c in columns], axis=1)
        means = bootstrap_means(differences, n_bootstrap, seed)
        at_or_below, at_or_above = (means <= 0).sum(0), (means >= 0).sum(0)
        p_values = np.minimum(1.0, 2 * (np.minimum(at_or_below, at_or_above) + 1) / (n_bootstrap + 1))
        low, high = np.percentile(means, [2.5, 97.5], axis=0)
        for j, (model, baseline, comparison, metric, difference) in enumerate(columns):
            out.append((dataset_name, protocol, split, label, len(difference), metric, model, baseline, comparison,
                        float(models[model][1][metric].mean()), float(models[baseline][1][metric].mean()),
                        float(difference.mean()), standard_error(difference), float(low[j]), float(high[j]),
                        float(p_values[j]), test))
    return pd.DataFrame(out, columns=PAIRED_COLUMNS)
