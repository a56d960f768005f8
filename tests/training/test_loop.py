import logging
import time
from dataclasses import replace
from types import SimpleNamespace

import psutil
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llm_seqrec.training import (
    TRAINING_LOG_COLUMNS,
    PeakMemory,
    TrainingConfig,
    fit,
    loop,
    seed_everything,
    training_dtype,
    training_log,
)

FEATURES = 4


def training_params(**overrides) -> TrainingConfig:
    return TrainingConfig(**{"epochs": 6, "batch_size": 8, "lr": 0.05, "patience": 3, "device": "cpu",
                             "progress": False, **overrides})


def mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x).squeeze(-1), y)


def regression_data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, FEATURES, generator=torch.Generator().manual_seed(1))
    return x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1


def shuffled_batches(batch_size: int):
    x, y = regression_data()

    def make_batches(epoch: int, generator: torch.Generator):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            yield x[rows], y[rows]

    return make_batches


def negative_mse(model: nn.Module) -> float:
    return -mse(model, regression_data(16)).item()


def dropout_model() -> nn.Module:
    """Dropout makes the trajectory depend on torch's global RNG, which a resume must restore."""
    seed_everything(42)
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))


MEASURED = {"seconds", "peak_rss_mb", "peak_cuda_mb"}  # differ between runs


def unmeasured(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in MEASURED} for record in history]


def assert_same_result(actual, expected) -> None:
    assert unmeasured(actual.history) == unmeasured(expected.history)
    assert (actual.best_metric, actual.best_epoch) == (expected.best_metric, expected.best_epoch)
    assert actual.best_state_dict.keys() == expected.best_state_dict.keys()
    for key, value in expected.best_state_dict.items():
        assert torch.equal(actual.best_state_dict[key], value), key


def test_early_stopping_keeps_the_best_weights():
    metrics = iter([0.1, 0.5, 0.4, 0.3, 0.2, 0.9, 0.9])
    weights_by_epoch = {}
    model = nn.Linear(FEATURES, 1)

    def remember(record: dict) -> None:
        weights_by_epoch[record["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    result = fit(model, mse, shuffled_batches(8), lambda m: next(metrics), training_params(epochs=10, patience=3),
                 "early", on_epoch_end=remember)

    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]
    assert (result.best_epoch, result.best_metric) == (2, 0.5)
    for key, value in weights_by_epoch[2].items():
        assert torch.equal(result.best_state_dict[key], value)
        assert torch.equal(model.state_dict()[key], value)


def test_early_stopping_waits_for_a_validation():
    metrics = iter([0.5, 0.4, 0.3, 0.2])
    result = fit(nn.Linear(FEATURES, 1), mse, shuffled_batches(8), lambda m: next(metrics),
                 training_params(epochs=20, eval_every=2, patience=3), "judged")
    assert [r["metric"] for r in result.history] == [None, 0.5, None, 0.4, None, 0.3]
    assert (result.best_epoch, result.best_metric) == (2, 0.5)


def test_validation_only_every_eval_every_epochs():
    calls = []
    result = fit(nn.Linear(FEATURES, 1), mse, shuffled_batches(8), lambda m: calls.append(1) or float(len(calls)),
                 training_params(epochs=6, eval_every=2), "every")
    assert [r["metric"] for r in result.history] == [None, 1.0, None, 2.0, None, 3.0]
    assert result.best_epoch == 6


def test_without_validation_the_last_weights_win():
    model = nn.Linear(FEATURES, 1)
    result = fit(model, mse, shuffled_batches(8), None, training_params(epochs=3), "last")
    assert result.best_metric is None and result.best_epoch == 3
    assert all(r["metric"] is None for r in result.history)


def test_gradient_accumulation_equals_one_big_batch():
    x, y = regression_data(16)

    def run(batch_size: int, accumulation: int) -> nn.Module:
        seed_everything(0)
        model = nn.Linear(FEATURES, 1)
        batches = lambda epoch, generator: [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, 16, batch_size)]
        fit(model, mse, batches, None, training_params(epochs=1, grad_accumulation=accumulation), "accumulate")
        return model

    accumulated, whole = run(8, 2), run(16, 1)
    untrained = (seed_everything(0), nn.Linear(FEATURES, 1))[1]
    assert not torch.allclose(whole.weight, untrained.weight)
    torch.testing.assert_close(accumulated.weight, whole.weight)
    torch.testing.assert_close(accumulated.bias, whole.bias)


class Interrupt(Exception):
    pass


def interrupt_after(epoch: int):
    def callback(record: dict) -> None:
        if record["epoch"] == epoch:
            raise Interrupt

    return callback


def interrupted_and_resumed(params: TrainingConfig, name: str, checkpoint_dir) -> tuple:
    """An uninterrupted fit, and the same fit interrupted after its 2nd epoch then resumed from its checkpoint."""
    expected = fit(dropout_model(), mse, shuffled_batches(8), negative_mse, params, name)
    checkpointed = replace(params, checkpoint_dir=checkpoint_dir)
    with pytest.raises(Interrupt):
        fit(dropout_model(), mse, shuffled_batches(8), negative_mse, checkpointed, name, on_epoch_end=interrupt_after(2))
    return fit(dropout_model(), mse, shuffled_batches(8), negative_mse, checkpointed, name), expected


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path):
    resumed, expected = interrupted_and_resumed(training_params(epochs=6, patience=10), "resume", tmp_path)
    assert_same_result(resumed, expected)


def test_more_epochs_continue_a_finished_run(tmp_path, caplog):
    params = training_params(epochs=6, patience=10)
    expected = fit(dropout_model(), mse, shuffled_batches(8), negative_mse, params, "longer")

    checkpointed = replace(params, checkpoint_dir=tmp_path)
    fit(dropout_model(), mse, shuffled_batches(8), negative_mse, replace(checkpointed, epochs=3), "longer")
    with caplog.at_level(logging.INFO, logger="llm_seqrec.training.loop"):
        resumed = fit(dropout_model(), mse, shuffled_batches(8), negative_mse, checkpointed, "longer")
    assert "resuming" in caplog.text and "after epoch 3" in caplog.text
    assert_same_result(resumed, expected)


def test_a_finished_run_returns_at_once(tmp_path):
    params = training_params(epochs=4, checkpoint_dir=tmp_path)
    first = fit(dropout_model(), mse, shuffled_batches(8), negative_mse, params, "finished")

    def no_batches(epoch, generator):
        raise AssertionError("a finished run must not train again")

    model = dropout_model()
    again = fit(model, mse, no_batches, negative_mse, params, "finished")
    assert_same_result(again, first)
    for key, value in first.best_state_dict.items():
        assert torch.equal(model.state_dict()[key], value)


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path, caplog):
    params = training_params(epochs=2, checkpoint_dir=tmp_path)
    fit(dropout_model(), mse, shuffled_batches(8), negative_mse, params, "changed", run_config={"hidden": 16})
    with caplog.at_level(logging.WARNING, logger="llm_seqrec.training.loop"):
        result = fit(dropout_model(), mse, shuffled_batches(8), negative_mse, replace(params, lr=0.01),
                     "changed", run_config={"hidden": 16})
    assert "different configuration" in caplog.text
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert not list(tmp_path.glob(".changed.pt.*")), "no temporary checkpoint file is left behind"


def test_frozen_parameters_are_neither_trained_nor_stored(tmp_path):
    def partly_frozen() -> nn.Module:
        seed_everything(0)
        model = nn.Sequential(nn.Linear(FEATURES, 8), nn.Linear(8, 1))
        model[0].requires_grad_(False)
        return model

    params = training_params(epochs=2, checkpoint_dir=tmp_path)
    model = partly_frozen()
    frozen = model[0].weight.clone()
    result = fit(model, mse, shuffled_batches(8), negative_mse, params, "frozen")
    assert torch.equal(model[0].weight, frozen)
    assert set(result.best_state_dict) == {"1.weight", "1.bias"}
    saved = torch.load(tmp_path / "frozen.pt", weights_only=True)
    assert set(saved["model"]) == set(saved["best_state"]) == {"1.weight", "1.bias"}

    resumed_model = partly_frozen()
    resumed = fit(resumed_model, mse, shuffled_batches(8), negative_mse, replace(params, epochs=3), "frozen")
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert torch.equal(resumed_model[0].weight, frozen)


def test_every_epoch_records_its_cost_and_the_log_has_the_shared_columns(tmp_path):
    model = nn.Sequential(nn.Linear(FEATURES, 8), nn.Linear(8, 1))
    model[0].requires_grad_(False)
    result = fit(model, mse, shuffled_batches(8), negative_mse, training_params(epochs=2), "cost")
    assert [r["trainable_parameters"] for r in result.history] == [9, 9]  # 8 weights + 1 bias, not the frozen layer
    assert all(r["peak_rss_mb"] > 10 and r["peak_cuda_mb"] is None for r in result.history)
    log = training_log("cost", result.history)
    assert list(log.columns) == TRAINING_LOG_COLUMNS and log["model"].tolist() == ["cost", "cost"]
    assert log["stage"].tolist() == [1, 1] and log["epoch"].tolist() == [1, 2]


def test_peak_memory_sees_a_peak_gone_before_the_block_ends(monkeypatch):
    # The allocator may reuse pages freed earlier, so a real allocation need not raise the RSS:
    # a process whose resident memory rises and falls while the block runs stands in for one.
    samples = iter([100, 100, 900, 300] + [120] * 10_000)

    class Process:
        def memory_info(self):
            return SimpleNamespace(rss=next(samples, 120) * 2**20)

    monkeypatch.setattr(psutil, "Process", Process)
    with PeakMemory(torch.device("cpu"), interval=0.001) as memory:
        time.sleep(0.1)
    assert memory.peak_rss_mb == 900 and memory.peak_cuda_mb is None


def test_every_result_says_what_stopped_it():
    metrics = iter([0.1, 0.5, 0.4, 0.3, 0.2])
    by_patience = fit(nn.Linear(FEATURES, 1), mse, shuffled_batches(8), lambda m: next(metrics),
                      training_params(epochs=10, patience=3), "patience")
    by_cap = fit(nn.Linear(FEATURES, 1), mse, shuffled_batches(8), negative_mse, training_params(epochs=2), "cap")
    assert (by_patience.stopped_by, by_cap.stopped_by) == ("patience", "epoch_cap")
    assert [r["stopped_by"] for r in by_patience.history] == [None] * 4 + ["patience"]
    log = training_log("cap", by_cap.history)
    assert log["stopped_by"].iloc[-1] == "epoch_cap" and log["stopped_by"].iloc[:-1].isna().all()


def fake_clock(monkeypatch, seconds_per_call: float) -> None:
    """Every reading of the loop's clock is ``seconds_per_call`` later: each epoch lasts that long."""
    now = iter(range(0, 10**6))
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: seconds_per_call * next(now)))


def test_the_time_budget_stops_before_an_epoch_group_that_would_not_fit_and_says_so(monkeypatch, caplog, tmp_path):
    fake_clock(monkeypatch, 30.0)  # 30 s an epoch
    rising = iter(range(1, 100))
    params = training_params(epochs=50, patience=3, eval_every=2, max_minutes=2.5, checkpoint_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="llm_seqrec.training.loop"):
        result = fit(nn.Linear(FEATURES, 1), mse, shuffled_batches(8), lambda m: float(next(rising)), params, "budget")
    # After 4 epochs (2 min) the next pair would end at 3 min > 2.5: stopped while validation still rises.
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert result.stopped_by == "time_budget" and result.history[-1]["stopped_by"] == "time_budget"
    assert result.best_epoch == 4
    assert "stopped by the time budget (2.5 min) at epoch 4" in caplog.text and "validation still rising" in caplog.text

    # A larger budget continues the run (max_minutes does not change the epochs already done).
    longer = fit(nn.Linear(FEATURES, 1), mse, shuffled_batches(8), lambda m: float(next(rising)),
                 replace(params, max_minutes=3.5), "budget")
    assert [r["epoch"] for r in longer.history] == [1, 2, 3, 4, 5, 6] and longer.stopped_by == "time_budget"


def test_bf16_autocast_trains_in_bf16_and_validates_in_float32():
    seen = []

    def loss_fn(model, batch):
        x, y = batch
        out = model(x).squeeze(-1)
        seen.append(out.dtype)
        return F.mse_loss(out.float(), y)

    def validate(model):
        seen.append(model(regression_data(4)[0]).dtype)
        return 0.0

    fit(nn.Linear(FEATURES, 1), loss_fn, shuffled_batches(16), validate, training_params(epochs=1, precision="bfloat16"), "bf16")
    assert seen == [torch.bfloat16, torch.bfloat16, torch.float32]


def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(monkeypatch):
    def capability(native: torch.dtype):
        return lambda device, requested="auto": native if requested == "auto" else getattr(torch, requested)

    monkeypatch.setattr(loop, "choose_dtype", capability(torch.float32))
    assert training_dtype(torch.device("cpu"), "auto") == torch.float32
    assert training_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16  # forced
    monkeypatch.setattr(loop, "choose_dtype", capability(torch.bfloat16))
    assert training_dtype(torch.device("cpu"), "auto") == torch.bfloat16
    assert training_dtype(torch.device("cpu"), "float32") == torch.float32
    monkeypatch.setattr(loop, "choose_dtype", capability(torch.float16))  # a GPU without bf16: no fp16 autocast
    assert training_dtype(torch.device("cuda"), "auto") == torch.float32


def test_batch_examples_counts_rows_users_and_prompts():
    assert loop.batch_examples((torch.zeros(5, 3), torch.zeros(5))) == 5  # aligned tensors
    assert loop.batch_examples({"item_seq": torch.zeros(7, 50), "negatives": torch.zeros(100)}) == 7  # SASRec: users
    assert loop.batch_examples([{"prompt": [1, 2]}, {"prompt": [3]}]) == 2  # LoRA trainers: prompts
    with pytest.raises(TypeError, match="cannot count"):
        loop.batch_examples("not a batch")


def test_validation_inside_epochs_where_configured():
    # 32 examples in batches of 8: past 10 after the 2nd batch, past 20 after the 3rd; past 30 only after
    # the last, where the epoch end validates instead.
    calls = []
    result = fit(nn.Linear(FEATURES, 1), mse, shuffled_batches(8), lambda m: calls.append(1) or float(len(calls)),
                 training_params(epochs=2, validate_every_examples=10), "within")
    assert len(calls) == 6
    assert [r["examples_seen"] for r in result.history] == [32, 64]
    assert [[p["examples_seen"] for p in r["within_epoch"]] for r in result.history] == [[16, 24], [48, 56]]
    assert [[p["metric"] for p in r["within_epoch"]] for r in result.history] == [[1.0, 2.0], [4.0, 5.0]]
    assert [r["metric"] for r in result.history] == [3.0, 6.0]
    log = training_log("within", result.history)
    assert log["examples_seen"].tolist() == [16, 24, 32, 48, 56, 64]
    assert log["epoch_end"].tolist() == [False, False, True, False, False, True]
    assert log["epoch"].tolist() == [1, 1, 1, 2, 2, 2] and log["metric"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert log["seconds"].isna().tolist() == [True, True, False, True, True, False]


def test_default_validates_at_epoch_ends_only_and_counts_examples():
    calls = []
    result = fit(nn.Linear(FEATURES, 1), mse, shuffled_batches(8), lambda m: calls.append(1) or 0.0,
                 training_params(epochs=3), "default")
    assert len(calls) == 3 and all(r["within_epoch"] == [] for r in result.history)
    assert [r["examples_seen"] for r in result.history] == [32, 64, 96]
    assert training_log("default", result.history)["epoch_end"].all()


def test_a_best_point_inside_an_epoch_gives_the_weights_and_patience_counts_from_its_epoch():
    # Per epoch: points after 16 and 24 examples, then the epoch end; the best is epoch 1's second point.
    metrics = iter([0.1, 0.9, 0.2, 0.3, 0.4, 0.5, 0.6])
    model = nn.Linear(FEATURES, 1)
    weights = []

    def validate(m: nn.Module) -> float:
        weights.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(metrics)

    result = fit(model, mse, shuffled_batches(8), validate,
                 training_params(epochs=10, patience=1, validate_every_examples=10), "best_within")
    assert (result.best_metric, result.best_epoch) == (0.9, 1)
    assert [r["epoch"] for r in result.history] == [1, 2]  # epoch 2 ends 1 epoch after the best's epoch
    assert result.history[-1]["stopped_by"] == "patience"
    for key, value in weights[1].items():
        assert torch.equal(result.best_state_dict[key], value) and torch.equal(model.state_dict()[key], value)
    assert not torch.equal(weights[2]["weight"], weights[1]["weight"])


def test_resume_with_validation_inside_epochs_equals_an_uninterrupted_run(tmp_path):
    params = training_params(epochs=4, patience=10, validate_every_examples=12)
    resumed, expected = interrupted_and_resumed(params, "resume_within", tmp_path)
    assert_same_result(resumed, expected)
    assert [r["examples_seen"] for r in resumed.history] == [32, 64, 96, 128]


def test_an_unset_newer_setting_stays_out_of_the_checkpoint(tmp_path):
    # So checkpoints written before validate_every_examples and lr_decay existed still match and resume.
    fit(nn.Linear(FEATURES, 1), mse, shuffled_batches(8), negative_mse, training_params(epochs=1, checkpoint_dir=tmp_path),
        "older")
    saved = torch.load(tmp_path / "older.pt", weights_only=True)
    assert {"validate_every_examples", "lr_decay"}.isdisjoint(saved["config"]["training"])
    assert "eval_every" in saved["config"]["training"]


def test_lr_decay_gives_each_epoch_lr_times_decay_to_the_epoch():
    # AdamW's steps on a constant gradient (no weight decay) move a parameter by lr each: one step per epoch
    # shows that epoch's learning rate.
    def moved(**overrides) -> float:
        model = nn.Linear(1, 1, bias=False)
        nn.init.zeros_(model.weight)
        fit(model, lambda m, batch: m.weight.sum(), lambda epoch, generator: [torch.zeros(1)], None,
            training_params(epochs=3, lr=0.1, **overrides), "decay")
        return -model.weight.item()

    assert moved(lr_decay=0.5) == pytest.approx(0.1 + 0.05 + 0.025, rel=1e-6)
    assert moved() == pytest.approx(0.3, rel=1e-6)  # None: a constant lr


def test_resume_with_lr_decay_equals_an_uninterrupted_run(tmp_path):
    resumed, expected = interrupted_and_resumed(training_params(epochs=5, patience=10, lr_decay=0.5), "resume_decay",
                                                tmp_path)
    assert_same_result(resumed, expected)
