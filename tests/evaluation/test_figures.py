import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer
from torch import nn

from llm_seqrec.evaluation.figures import learning_curves_figure, metrics_figure
from llm_seqrec.evaluation.paired import paired_tests
from llm_seqrec.evaluation.protocol import metrics_table, score_frame
from llm_seqrec.evaluation.report import COST_COLUMNS, metrics_html, metrics_markdown, training_cost
from llm_seqrec.training import TrainingConfig, fit, training_log

USERS = np.arange(1, 41)
MODELS = ["pop", "sasrec", "llm_zeroshot", "ra_rec", "laser", "laser_no_prefix", "fusion", "fusion_dmpo", "trsr",
          "sft", "dmpo", "sdpo"]


def scored() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    tables = {}
    for model in MODELS:
        full = score_frame(USERS, "test", "full", rng.integers(0, 30, len(USERS)), [500] * len(USERS))
        sampled = score_frame(USERS, "test", "sampled", rng.integers(0, 4, len(USERS)), [21] * len(USERS))
        tables[model] = pd.concat([full, sampled], ignore_index=True)
    return tables


def test_metric_bars_carry_error_bars_and_their_labels_do_not_overlap():
    metrics = metrics_table(scored(), "ml-1m", [1, 10], {"all": USERS})
    figure = metrics_figure(metrics)
    renderer = FigureCanvasAgg(figure).get_renderer()
    for ax in figure.get_axes():
        labels = [t for t in ax.texts if "±" in t.get_text()]
        assert len(labels) == len(MODELS)
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        inside = ax.get_window_extent(renderer)
        assert all(inside.x0 <= b.x0 and b.x1 <= inside.x1 for b in boxes), "a label runs off its panel"
        assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)  # the bars' error bars


def fitted_log(name: str, **overrides) -> pd.DataFrame:
    data = torch.from_numpy(np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32))
    target = data.sum(1)
    model = nn.Linear(3, 1)
    batches = lambda epoch, g: ((data[i : i + 8], target[i : i + 8]) for i in range(0, 32, 8))  # noqa: E731
    loss = lambda m, b: ((m(b[0]).squeeze(-1) - b[1]) ** 2).mean()  # noqa: E731
    params = TrainingConfig(**{"epochs": 3, "batch_size": 8, "lr": 0.05, "device": "cpu", "progress": False, **overrides})
    result = fit(model, loss, batches, lambda m: -float(loss(m, (data, target))), params, name)
    return training_log(name, result.history)


def test_learning_curves_have_a_panel_per_model_against_examples_and_say_what_stopped_each(tmp_path):
    old = pd.DataFrame({"model": ["old"], "epoch": [1], "loss": [2.0], "metric": [0.1], "seconds": [1.0]})
    logs = {"sasrec": fitted_log("sasrec", validate_every_examples=10), "laser": pd.concat(
        [fitted_log("laser"), fitted_log("laser").assign(stage=2)]), "old": old}
    figure = learning_curves_figure("ml-1m", logs)
    axes = [ax for ax in figure.get_axes() if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["sasrec: stopped by epoch cap", "laser: stopped by epoch cap",
                                               "old: stopped by not recorded"]
    assert axes[0].get_xlabel() == "training examples seen" and axes[2].get_xlabel().startswith("epochs")
    curve = lambda ax: np.asarray(next(li for li in ax.get_lines() if li.get_label() == "validation").get_xdata()).tolist()  # noqa: E731
    assert curve(axes[0]) == [16, 24, 32, 48, 56, 64, 80, 88, 96]  # 2 points inside each epoch
    assert curve(axes[1]) == [32, 64, 96, 128, 160, 192]  # stage 2 follows stage 1
    path = tmp_path / "learning_curves.png"
    figure.savefig(path)
    assert path.stat().st_size > 10_000
    cost = training_cost("ml-1m", logs).set_index("model")
    assert cost.loc["sasrec", "epochs"] == 3 and cost.loc["laser", "epochs"] == 6  # points inside epochs not counted


def test_report_shows_standard_errors_paired_tests_and_the_curves():
    tables = scored()
    metrics = metrics_table(tables, "ml-1m", [1, 10], {"all": USERS})
    paired = paired_tests(tables, "ml-1m", [1, 10], {"all": USERS}, n_bootstrap=500)
    markdown = metrics_markdown(metrics, pd.DataFrame(columns=COST_COLUMNS), exclude_seen=True, n_negatives=20, paired=paired)
    row = metrics[(metrics["model"] == "pop") & (metrics["metric"] == "hr@10") & (metrics["protocol"] == "full")].iloc[0]
    pop = next(line for line in markdown.split("## ml-1m · full ranking")[1].splitlines() if line.startswith("| pop |"))
    assert f" {row['value']:.4f} ± {row['std_error']:.4f} |" in pop
    section = markdown.split("## ml-1m · paired tests · full ranking · test split · all users (n = 40)")[1].split("\n## ")[0]
    assert "| model | baseline | comparison | ndcg@10 | hr@10 |" in section
    assert "| laser_no_prefix | laser | ablation vs full |" in section and "| dmpo | sft | preference vs sft |" in section
    assert "![ml-1m learning curves](ml-1m/learning_curves.png)" in markdown
    page = metrics_html(metrics, pd.DataFrame(columns=COST_COLUMNS), exclude_seen=True, n_negatives=20, paired=paired, curves={"ml-1m": b"png"})
    assert page.count("<h2>") == markdown.count("\n## ") and "src='data:image/png;base64,cG5n'" in page
