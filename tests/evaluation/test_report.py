import html

import pandas as pd

from llm_seqrec.evaluation.example_users import example_users_markdown
from llm_seqrec.evaluation.figures import metrics_figure
from llm_seqrec.evaluation.protocol import METRIC_COLUMNS
from llm_seqrec.evaluation.report import COST_COLUMNS, metrics_html, metrics_markdown, training_cost
from llm_seqrec.training import training_log

NO_COST = pd.DataFrame(columns=COST_COLUMNS)


def metrics() -> pd.DataFrame:
    rows = []
    for users, n in (("all", 300), ("sample8", 8)):
        for model in ("pop", "sasrec"):
            for split in ("valid", "test"):
                rows += [("ml-1m", model, "full", split, m, 0.1, users, n) for m in ("hr@10", "ndcg@10", "mrr")]
                sampled = ("hr@1", "ndcg@5", "mrr", "auc")
                rows += [("ml-1m", model, "sampled", split, m, 0.2, users, n) for m in sampled]
    for split in ("valid", "test"):
        rows += [("ml-1m", "llm_zeroshot", "sampled", split, m, 0.3, "sample8", 8) for m in ("hr@1", "auc")]
    return pd.DataFrame(rows, columns=METRIC_COLUMNS[:-2]).assign(backbone_dtype=lambda m: m["model"].map({"llm_zeroshot": "bfloat16"}).fillna(""))


def test_markdown_names_dataset_protocol_split_and_users_of_every_table():
    text = metrics_markdown(metrics(), NO_COST, exclude_seen=False, n_negatives=20)
    headings = [line for line in text.splitlines() if line.startswith("## ml-1m · ")]
    assert len(headings) == 8  # 2 protocols x 2 splits x 2 user sets
    assert all("ml-1m" in h and " split" in h and "ranking" in h and "n = " in h for h in headings)
    assert headings[0] == "## ml-1m · full ranking · valid split · all users (n = 300)"
    assert "kept in the ranking" in text and "20 seeded negatives" in text
    heading = "## ml-1m · sampled ranking · test split · seeded user sample 'sample8' (n = 8)"
    table = text.split(heading)[1].split("\n## ")[0]
    assert "| model | hr@1 | ndcg@5 | mrr | auc |" in table
    assert "| llm_zeroshot | 0.3000 |" in table and "| pop | 0.2000 |" in table


def test_a_model_scored_on_the_test_split_only_is_named_and_left_out_of_the_valid_tables():
    table = metrics()
    table = table[~((table["model"] == "llm_zeroshot") & (table["split"] == "valid"))]  # evaluation.llm_splits: [test]
    text = metrics_markdown(table, NO_COST, exclude_seen=False, n_negatives=20)
    assert "**Scored on the test split only** (`evaluation.llm_splits`), so absent from the other's tables: `llm_zeroshot`." in text
    sections = {h.split("\n")[0]: h for h in text.split("\n## ")[1:]}
    valid = sections["ml-1m · sampled ranking · valid split · seeded user sample 'sample8' (n = 8)"]
    test = sections["ml-1m · sampled ranking · test split · seeded user sample 'sample8' (n = 8)"]
    assert "| llm_zeroshot |" not in valid and "| llm_zeroshot | 0.3000 |" in test and "| pop |" in valid
    assert "split only" not in metrics_markdown(metrics(), NO_COST, exclude_seen=False, n_negatives=20)
    assert "Scored on the test split only" in metrics_html(table, NO_COST, exclude_seen=False, n_negatives=20)


def test_figure_panels_use_the_largest_user_set_every_model_is_reported_on():
    figure = metrics_figure(metrics())
    axes = figure.get_axes()
    assert len(axes) == 3
    assert all("test split" in ax.get_title() for ax in axes)
    # Full ranking: only pop and sasrec, both on all users. Sampled: the LLM model joins on its sample.
    assert "all users (n = 300)" in axes[0].get_title() and "all users" in axes[1].get_title()
    assert "'sample8' (n = 8)" in axes[2].get_title()
    assert [t.get_text() for t in axes[2].get_yticklabels()] == ["pop", "sasrec", "llm_zeroshot"]


def test_example_users_show_history_target_and_each_models_top_items():
    sequences = pd.DataFrame(
        [(1, "u1", [1, 2, 3], 4, 5)], columns=["user_idx", "user_id", "train_items", "valid_target", "test_target"]
    )
    catalog = pd.DataFrame({"item_idx": range(1, 8), "title": ["A", "B", "C", "D", "E", "F|G", "H"]})
    candidates = pd.DataFrame({"user_idx": [1], "split": ["test"], "candidates": [[5, 6, 7]]})
    scored = {
        "sasrec": pd.DataFrame([
            (1, "test", "full", 1.0, 5, [6, 5, 7], None),
            (1, "test", "sampled", 0.5, 3, None, [0.9, 0.9, 0.1]),
            (1, "valid", "full", 0.0, 5, [4, 6], None),
        ], columns=["user_idx", "split", "protocol", "rank", "n_ranked", "top_items", "candidate_scores"]),
    }
    text = example_users_markdown(sequences, catalog, candidates, scored, [1], top_n=2, history_items=3)
    assert "## user 1 (u1)" in text
    assert "Last 3 of 4 items, oldest first: B; C; D" in text  # the test input ends with the valid target
    assert "Target: **E**" in text
    assert "| sasrec | full | 1 of 5 | F\\|G; **E** |" in text  # a pipe in a title is escaped
    assert "| sasrec | sampled | 0.5 of 3 | **E**; F\\|G |" in text  # a tie keeps the candidates' order
    assert "| sasrec | full | 0 of 5 |" not in text  # the valid split is not shown


def test_html_holds_the_markdown_tables_with_each_columns_best_in_bold():
    frame = metrics()
    frame.loc[(frame["model"] == "sasrec") & (frame["metric"] == "hr@10"), "value"] = 0.5
    page = metrics_html(frame, NO_COST, exclude_seen=True, n_negatives=20)
    markdown = metrics_markdown(frame, NO_COST, exclude_seen=True, n_negatives=20)
    headings = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    assert page.count("<h2>") == len(headings) and all(html.escape(h) in page for h in headings)
    assert "<td>sasrec</td><td><b>0.5000</b></td>" in page
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def epoch(seconds: float, rss: float, parameters: int = 1000) -> dict:
    return {"epoch": 1, "loss": 1.0, "metric": None, "seconds": seconds, "trainable_parameters": parameters,
            "peak_rss_mb": rss, "peak_cuda_mb": None}


def test_training_cost_sums_minutes_and_keeps_the_peak_memory_per_model():
    laser = pd.concat([training_log("laser", [epoch(60, 900), epoch(30, 1100)], stage=1),
                       training_log("laser", [epoch(90, 1000)], stage=2)])
    sweep = pd.concat([training_log("sft_u64", [epoch(6, 700, 50)]), training_log("dmpo_u64", [epoch(12, 800, 50)])])
    old_log = pd.DataFrame({"model": ["sasrec"], "epoch": [1], "loss": [2.0], "metric": [0.1], "seconds": [120.0]})
    cost = training_cost("ml-1m", {"laser": laser, "dmpo_few_shot": sweep, "sasrec": old_log}).set_index("model")
    assert list(cost.index) == ["laser", "sft_u64", "dmpo_u64", "sasrec"]
    assert cost.loc["laser", "minutes"] == 3.0 and cost.loc["laser", "epochs"] == 3
    assert cost.loc["laser", "peak_rss_mb"] == 1100 and cost.loc["laser", "trainable_parameters"] == 1000
    assert cost.loc["dmpo_u64", "trainable_parameters"] == 50 and cost.loc["dmpo_u64", "minutes"] == 0.2
    assert cost.loc["sasrec", "minutes"] == 2.0 and pd.isna(cost.loc["sasrec", "trainable_parameters"])  # written before the cost columns


def test_report_ends_with_each_data_sets_training_cost():
    cost = training_cost("ml-1m", {"laser": training_log("laser", [epoch(90, 1234.4, 728_136)])})
    markdown = metrics_markdown(metrics(), cost, exclude_seen=True, n_negatives=20)
    section = markdown.split("## ml-1m: training cost")[1]
    assert "| model | trainable_parameters | epochs | minutes | peak_rss_mb |" in section  # no CUDA column on CPU
    assert "| laser | 728,136 | 1 | 1.5 | 1,234 |" in section
    page = metrics_html(metrics(), cost, exclude_seen=True, n_negatives=20)
    assert "<h2>ml-1m: training cost</h2>" in page and "<td>laser</td><td>728,136</td>" in page


def test_the_cost_table_says_what_stopped_each_model_and_marks_a_time_budget_cut():
    converged = [epoch(10, 900), {**epoch(10, 900), "stopped_by": "patience"}]
    cut = [epoch(10, 900), {**epoch(10, 900), "stopped_by": "time_budget"}]
    cost = training_cost("ml-1m", {"sasrec": training_log("sasrec", converged), "other": training_log("other", cut),
                                   "old": training_log("old", [epoch(10, 900)])})
    stopped_by = cost.set_index("model")["stopped_by"]
    assert stopped_by[["sasrec", "other"]].tolist() == ["patience", "time_budget"] and pd.isna(stopped_by["old"])
    section = metrics_markdown(metrics(), cost, exclude_seen=True, n_negatives=20).split("## ml-1m: training cost")[1]
    assert "| model | trainable_parameters | epochs | stopped_by | minutes | peak_rss_mb |" in section
    assert "| sasrec | 1,000 | 2 | patience |" in section and "| other | 1,000 | 2 | TIME BUDGET (still improving) |" in section
    assert "| old | 1,000 | 1 | ? |" in section
