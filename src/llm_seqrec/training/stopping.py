"""When the one training loop stops, and why: ``stop_reason`` is asked before every epoch, ``log_stop`` says
what ended a fit (a time-budget cut as a warning, since the model was still improving).

Training ends for one of three reasons, recorded as ``stopped_by`` (``STOP_REASONS``) on the last
epoch of the history: ``patience`` (``patience`` epochs without a better validation metric),
``epoch_cap`` (``epochs`` reached) or ``time_budget`` (the next group of ``eval_every`` epochs would
not end within ``max_minutes``).
"""

from __future__ import annotations

import logging

from llm_seqrec.training.config import TrainingConfig

logger = logging.getLogger("llm_seqrec.training.loop")  # the loop's logger: its messages read as one log

STOP_REASONS = ("patience", "epoch_cap", "time_budget")


def stop_reason(state: dict, params: TrainingConfig) -> str | None:
    """Why training stops before the next epoch (one of ``STOP_REASONS``), or None to go on.

    Patience is judged at a validation, so no trained epoch goes unseen; so is the time budget, which
    lets a group of ``eval_every`` epochs start only if, at the mean epoch time so far, it ends within
    ``max_minutes``."""
    history = state["history"]
    validated = bool(history) and history[-1]["metric"] is not None
    if validated and state["epoch"] - state["best_epoch"] >= params.patience:
        return "patience"
    if state["epoch"] >= params.epochs:
        return "epoch_cap"
    if params.max_minutes is not None and history and state["epoch"] % params.eval_every == 0:
        spent = sum(record["seconds"] for record in history)
        if spent + params.eval_every * spent / len(history) > params.max_minutes * 60:
            return "time_budget"
    return None


def log_stop(name: str, stopped_by: str, state: dict, params: TrainingConfig) -> None:
    minutes = sum(record["seconds"] for record in state["history"]) / 60
    best = ("no validation" if state["best_metric"] is None
            else f"best validation {state['best_metric']:.4f} at epoch {state['best_epoch']}")
    if stopped_by == "time_budget":
        logger.warning("%s: stopped by the time budget (%g min) at epoch %d after %.1f min, validation still rising "
                       "(%s; patience %d not spent)", name, params.max_minutes, state["epoch"], minutes, best,
                       params.patience)
    else:
        reason = {"patience": f"by patience ({params.patience} epochs)", "epoch_cap": f"at the epoch cap ({params.epochs})"}
        logger.info("%s: stopped %s at epoch %d after %.1f min (%s)", name, reason[stopped_by], state["epoch"],
                    minutes, best)
