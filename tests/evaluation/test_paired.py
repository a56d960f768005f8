import numpy as np
import pandas as pd
import pytest

from llm_seqrec.evaluation.paired import PAIRED_COLUMNS, bootstrap_means, comparison_pairs, paired_tests
from llm_seqrec.evaluation.protocol import score_frame

USERS = np.arange(1, 301)


def full_scores(ranks: np.ndarray) -> pd.DataFrame:
    return score_frame(USERS, "test", "full", ranks, [1000] * len(USERS))


def test_pairs_follow_the_name_rules_for_any_model():
    models = ["pop", "sasrec", "laser", "laser_no_prefix", "trsr", "trsr_no_summary", "sft", "dmpo", "sdpo",
              "sft_u2", "dmpo_u2", "fusion_dmpo", "new_thing_no_part"]
    pairs = comparison_pairs(models)
    assert ("pop", "sasrec", "vs sasrec") in pairs and not any(m == "sasrec" for m, _, _ in pairs)
    assert {(m, b) for m, b, c in pairs if c == "preference vs sft"} == {("dmpo", "sft"), ("sdpo", "sft"), ("dmpo_u2", "sft_u2")}
    assert {(m, b) for m, b, c in pairs if c == "ablation vs full"} == {("laser_no_prefix", "laser"), ("trsr_no_summary", "trsr")}
    assert len([p for p in pairs if p[0] == "new_thing_no_part"]) == 1  # its base is not there: only vs sasrec
    assert comparison_pairs(["pop", "laser"]) == []  # no reference, no base: nothing to compare


def test_a_real_difference_is_detected_and_a_null_one_is_not():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 40, len(USERS)).astype(float)
    better = np.where(rng.random(len(USERS)) < 0.3, 0.0, base)  # 30% of the users move to rank 0
    null = rng.permutation(base)  # the same distribution, unrelated to the baseline user by user
    tests = paired_tests({"sasrec": full_scores(base), "better": full_scores(better), "null": full_scores(null),
                          "same": full_scores(base)}, "ml-1m", [10], {"all": USERS}, n_bootstrap=2000, seed=3)
    assert list(tests.columns) == PAIRED_COLUMNS and set(tests["model"]) == {"better", "null", "same"}
    row = tests.set_index(["model", "metric"])
    hr = row.loc[("better", "hr@10")]
    assert hr["difference"] == pytest.approx(np.mean(better < 10) - np.mean(base < 10)) and hr["difference"] > 0
    assert hr["p_value"] < 0.001 and hr["ci_low"] > 0
    assert (row.loc["better", "p_value"] < 0.001).all()  # every metric improves
    assert (row.loc["null", "p_value"] > 0.05).all()
    assert (row.loc["same", "p_value"] == 1.0).all() and (row.loc["same", "difference"] == 0).all()
    again = paired_tests({"sasrec": full_scores(base), "null": full_scores(null)}, "ml-1m", [10], {"all": USERS},
                         n_bootstrap=2000, seed=3)
    pd.testing.assert_frame_equal(again, tests[tests["model"] == "null"].reset_index(drop=True))  # seeded


def test_bootstrap_spread_matches_the_paired_standard_error():
    differences = np.random.default_rng(1).normal(0.1, 1.0, (400, 2))
    means = bootstrap_means(differences, 4000, seed=0)
    analytic = differences.std(axis=0, ddof=1) / np.sqrt(len(differences))
    np.testing.assert_allclose(means.std(axis=0), analytic, rtol=0.08)
    np.testing.assert_allclose(means.mean(axis=0), differences.mean(axis=0), atol=analytic.max() / 5)


def test_models_are_paired_only_on_the_user_sets_both_scored():
    sample = USERS[:50]
    llm = score_frame(sample, "test", "sampled", np.zeros(50), [21] * 50)
    pop = pd.concat([full_scores(np.ones(len(USERS))), score_frame(USERS, "test", "sampled", np.ones(len(USERS)), [21] * len(USERS))])
    sets = {"all": USERS, "sample50": sample}
    tests = paired_tests({"sasrec": pop, "llm": llm}, "ml-1m", [10], sets, n_bootstrap=500)
    assert set(zip(tests["protocol"], tests["users"], tests["n_users"], strict=True)) == {("sampled", "sample50", 50)}
    assert (tests.loc[tests["metric"] == "hr@1", "difference"] == 1.0).all()
