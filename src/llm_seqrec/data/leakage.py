"""The leakage guard: no model input for a cutoff may hold that cutoff's target or anything after it.

Every stage that shows a model a user's items (summaries, alignment samples, LoRA training examples,
candidate prompts, Laser and RA-Rec queries) passes what it is about to show through
:func:`check_inputs_precede_targets`, which compares it by position with the user's full chronological
sequence ``train_items + [valid_target, test_target]``. The check is independent of how the inputs were
built, so a wrong slice anywhere fails the run instead of inflating a metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

CUTOFF_OFFSETS = {"train": -1, "valid": 0, "test": 1}  # the target's position relative to len(train_items)


class LeakageError(ValueError):
    """A model input holds its cutoff's target or a later interaction."""


def target_position(n_train_items: int, cutoff: str | int) -> int:
    """Position in the full sequence of the item predicted at ``cutoff``: ``train`` (the last training
    item, the LoRA recommenders' training target), ``valid``, ``test``, or an explicit position."""
    if isinstance(cutoff, str):
        if cutoff not in CUTOFF_OFFSETS:
            raise ValueError(f"cutoff must be one of {sorted(CUTOFF_OFFSETS)} or a position, got {cutoff!r}")
        return n_train_items + CUTOFF_OFFSETS[cutoff]
    return int(cutoff)


def check_inputs_precede_targets(
    user_sequences: pd.DataFrame,
    users: Iterable[int],
    cutoffs: str | int | Iterable[str | int],
    histories: Iterable[Sequence[int]],
    *,
    what: str,
    targets: Iterable[int] | None = None,
) -> None:
    """Raise :class:`LeakageError` unless every history is exactly the items just before its cutoff's
    target (a suffix of the sequence up to it; any length) and, where given, every target is the item at
    that cutoff. ``cutoffs`` is one per input, or a single cutoff for all of them. Checked by position,
    so an item the user chose twice is no false alarm."""
    users, histories = list(users), list(histories)
    cutoffs = [cutoffs] * len(users) if isinstance(cutoffs, str | int) else list(cutoffs)
    targets = [None] * len(users) if targets is None else list(targets)
    sequences = user_sequences.set_index("user_idx")
    train_items = sequences["train_items"].to_dict()
    valid, test = sequences["valid_target"].to_dict(), sequences["test_target"].to_dict()
    leaks = []
    for user, cutoff, history, target in zip(users, cutoffs, histories, targets, strict=True):
        user = int(user)
        if user not in train_items:
            leaks.append(f"user {user} at {cutoff}: not in user_sequences")
            continue
        full = [*(int(i) for i in train_items[user]), int(valid[user]), int(test[user])]
        position = target_position(len(train_items[user]), cutoff)
        shown = [int(i) for i in history]
        before = full[max(position - len(shown), 0) : position] if position >= 0 else []
        if len(shown) > position or shown != before:
            leaks.append(f"user {user} at {cutoff}: input {shown}, but the items before the target are {full[:position]}")
        elif target is not None and int(target) != full[position]:
            leaks.append(f"user {user} at {cutoff}: target {int(target)}, but the item there is {full[position]}")
    if leaks:
        raise LeakageError(
            f"leakage check failed for {what}: {len(leaks)} of {len(users)} inputs are not the items just before "
            "their target:\n  " + "\n  ".join(leaks[:10])
        )
