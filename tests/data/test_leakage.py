"""The leakage guard that every stage runs on what it shows a model."""

import re

import pandas as pd
import pytest

from llm_seqrec.data.leakage import LeakageError, check_inputs_precede_targets, target_position

# One user whose full sequence is 1..9 (train 1..7, valid target 8, test target 9), and one who chose
# item 5 twice, so a check by item identity instead of position would misfire.
SEQUENCES = pd.DataFrame(
    [(1, "a", [1, 2, 3, 4, 5, 6, 7], 8, 9), (2, "b", [5, 6, 5], 7, 5)],
    columns=["user_idx", "user_id", "train_items", "valid_target", "test_target"],
)


def check(users, cutoffs, histories, targets=None):
    check_inputs_precede_targets(SEQUENCES, users, cutoffs, histories, targets=targets, what="the inputs")


def test_target_positions():
    assert [target_position(7, c) for c in ("train", "valid", "test", 3)] == [6, 7, 8, 3]
    with pytest.raises(ValueError, match="cutoff must be one of"):
        target_position(7, "future")


def test_inputs_that_end_just_before_their_target_pass():
    check([1, 1, 1, 1], ["train", "valid", "test", 4], [[4, 5, 6], [1, 2, 3, 4, 5, 6, 7], [8], [3, 4]],
          targets=[7, 8, 9, 5])
    check([2, 2], ["test", "valid"], [[5, 6, 5, 7], [6, 5]], targets=[5, 7])  # the repeat is the test target
    check([1], ["valid"], [[]])  # an empty history shows nothing
    check([1, 2], "valid", [[5, 6, 7], [5, 6, 5]])  # one cutoff for every input


@pytest.mark.parametrize(
    ("cutoff", "history", "targets", "problem"),
    [
        ("valid", [6, 7, 8], None, "input [6, 7, 8]"),  # the target itself
        ("test", [7, 9], None, "input [7, 9]"),  # the test target, skipping the valid one
        ("valid", [5, 6], None, "input [5, 6]"),  # a gap: the last item before the target is missing
        ("train", [5, 6, 7], None, "input [5, 6, 7]"),  # the train cutoff's target is the last train item
        ("test", [8], [7], "target 7"),  # right input, wrong target
    ],
)
def test_a_leak_or_a_wrong_slice_names_the_user_and_the_cutoff(cutoff, history, targets, problem):
    with pytest.raises(LeakageError, match=f"(?s)leakage check failed for the inputs: 1 of 2 .*user 1 at {cutoff}: {re.escape(problem)}"):
        check([1, 1], ["valid", cutoff], [[7], history], targets=None if targets is None else [8, *targets])


def test_an_unknown_user_is_refused():
    with pytest.raises(LeakageError, match="user 3 at valid: not in user_sequences"):
        check([3], ["valid"], [[1]])
