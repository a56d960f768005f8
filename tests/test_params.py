"""Bad configuration is refused by the typed parameters before any work starts, naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from conftest import REPO, csv_params, kedro_run
from kedro.config import OmegaConfigLoader

from llm_seqrec.hooks import ParameterError, validate_parameters
from llm_seqrec.settings import CONFIG_LOADER_ARGS


def conf_parameters(env: str) -> dict:
    loader = OmegaConfigLoader(conf_source=str(REPO / "conf"), **{**CONFIG_LOADER_ARGS, "default_run_env": env})
    return copy.deepcopy(dict(loader["parameters"]))


def with_value(parameters: dict, dotted_key: str, value) -> dict:
    changed = copy.deepcopy(parameters)
    *parents, leaf = dotted_key.split(".")
    section = changed
    for key in parents:
        section = section.setdefault(key, {})
    section[leaf] = value
    return changed


@pytest.mark.parametrize("env", ["base", "quick", "amazon", "gpu"])
def test_every_shipped_environment_validates(env, amazon_dir):
    parameters = conf_parameters(env)
    if env == "amazon":  # its files go under data/01_raw/, which a checkout lacks: the shared copy stands in
        assert parameters["dataset"]["items"] == "data/01_raw/amazon-scientific/items.csv"
        parameters["dataset"] |= csv_params(amazon_dir)["dataset"]
    validate_parameters(parameters)


def test_training_processes_sets_every_training_section_and_gpu_has_the_papers_epochs():
    loader = OmegaConfigLoader(conf_source=str(REPO / "conf"), **{**CONFIG_LOADER_ARGS, "default_run_env": "quick"},
                               runtime_params={"training": {"processes": 2}})
    p = validate_parameters(copy.deepcopy(dict(loader["parameters"])))
    sections = [p.sasrec.training, p.alignment.training, p.laser.training, p.fusion.training, p.fusion.preference.training,
                p.trsr.training, p.dmpo.sft, p.dmpo.preference, p.dmpo_transfer.sft, p.dmpo_transfer.preference]
    assert p.training.processes == 2 and [t.processes for t in sections] == [2] * len(sections)
    assert {t.processes for t in (validate_parameters(conf_parameters("base")).trsr.training,)} == {1}
    with pytest.raises(ParameterError, match=r"training\.processes: Input should be greater than or equal to 1"):
        validate_parameters(with_value(conf_parameters("base"), "training.processes", 0))
    gpu = validate_parameters(conf_parameters("gpu"))
    assert (gpu.laser.stage1_epochs, gpu.laser.training.epochs, gpu.trsr.training.epochs) == (15, 20, 5)
    assert (gpu.dmpo.sft.epochs, gpu.dmpo.preference.epochs, gpu.evaluation.llm_user_sample) == (5, 3, None)


def not_a_gguf(tmp_path: Path) -> str:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"<html>not found</html>")
    return str(fake)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("summarization.block_sise", 3, r"summarization\.block_sise: Extra inputs are not permitted"),
        ("sasrecc", {}, r"sasrecc: Extra inputs are not permitted"),
        ("sasrec.training.epochs", "many", r"sasrec\.training\.epochs: Input should be a valid integer"),
        ("sasrec.dropout", 1.0, r"sasrec\.dropout\.constrained-float: Input should be less than 1"),
        ("sasrec.dropout", -0.1, r"sasrec\.dropout\.constrained-float: Input should be greater than or equal to 0"),
        ("sasrec_text.dropout", "sparse", r"sasrec_text\.dropout\.literal\['auto'\]: Input should be 'auto'"),
        ("laser.temperature", [0.05], r"laser\.temperature: Input should be a valid number"),
        ("summarization.block_size", 0, r"summarization\.block_size: Input should be greater than or equal to 1"),
        ("backbone.path", "/no/such/model", r"backbone\.path='/no/such/model' does not exist"),
        ("backbone.path", not_a_gguf, r"is not a GGUF file \(it starts with b'<htm'"),
        ("backbone.path", lambda tmp: str(tmp), r"has no config\.json"),
        ("backbone.gguf_file", "model.gguf", r"backbone\.gguf_file needs backbone\.path"),
        ("backbone.layers", 0, r"backbone\.layers: Input should be greater than or equal to 1"),
        ("backbone.layers", 31, r"backbone\.layers=31: the backbone has 30 decoder layers, give 1\.\.30"),
        ("trsr.layers", 0, r"trsr\.layers\.constrained-int: Input should be greater than or equal to 1"),
        ("laser.layers", "half", r"laser\.layers\.literal\['all'\]: Input should be 'all'"),
        ("fusion.layers", 31, r"fusion\.layers=31: the backbone has 30 decoder layers, give 1\.\.30, all, or null"),
        ("laser.ablations", {"laser_no_moe": {"layers": 40}, "laser_no_prefix": {}, "laser_no_stage1": {}},
         r"laser\.ablations\.laser_no_moe\.layers=40: the backbone has 30"),
        ("evaluation.zeroshot_layers", 31, r"evaluation\.zeroshot_layers=31: the backbone has 30"),
        ("evaluation.llm_splits", [], r"evaluation\.llm_splits: .*must name at least one split"),
        ("evaluation.llm_splits", ["train"], r"evaluation\.llm_splits\.0: Input should be 'valid' or 'test'"),
        ("evaluation.n_negatives", 5000, r"evaluation\.n_negatives=5000 distinct negatives .* at most 3883 items"),
        ("dmpo.negatives", 3883, r"dmpo\.negatives=3883 .* 'ml-1m'"),
        ("dmpo.train_dataset", {"format": "movielens", "name": "ml-100k"}, r"dmpo\.train_dataset is for dmpo_transfer"),
        ("dmpo_transfer.few_shot_users", [64], r"dmpo_transfer\.few_shot_users must be \[\]"),
        ("dataset.format", "amazon2014", r"dataset\.format: Input should be 'movielens', 'csv', 'amazon2018' or 'amazon2023'"),
        ("dataset.format", "amazon2023", r"dataset\.format=amazon2023 needs dataset\.interactions and dataset\.items"),
        ("dataset.k_core", 0, r"dataset\.k_core: Input should be greater than or equal to 1"),
    ],
)
def test_bad_configuration_is_refused_naming_the_key(key, value, message, tmp_path):
    value = value(tmp_path) if callable(value) else value
    with pytest.raises(ParameterError, match=message):
        validate_parameters(with_value(conf_parameters("base"), key, value))


def test_sasrec_dropout_is_auto_by_default_and_a_number_is_kept():
    parameters = conf_parameters("base")
    p = validate_parameters(parameters)
    assert p.sasrec.dropout == p.sasrec_text.dropout == "auto"  # sasrec_text shares the section (YAML anchor)
    assert validate_parameters(with_value(parameters, "sasrec.dropout", 0.5)).sasrec.dropout == 0.5


def test_more_negatives_than_a_csv_catalogue_holds(amazon_sample):
    parameters = conf_parameters("base")
    parameters["dataset"] = csv_params(amazon_sample)["dataset"]
    n_items = sum(1 for _ in (amazon_sample / "items.csv").open("rb")) - 1
    validate_parameters(with_value(parameters, "evaluation.n_negatives", n_items - 1))
    with pytest.raises(ParameterError, match=rf"at most {n_items} items"):
        validate_parameters(with_value(parameters, "evaluation.n_negatives", n_items))


def test_kedro_run_refuses_bad_parameters_before_writing_anything(kedro_project, amazon_sample):
    process = kedro_run(kedro_project, "data_processing", csv_params(amazon_sample),
                        ["summarization.block_size=0", "dataset.k_core=0"])
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "summarization.block_size" in output and "dataset.k_core" in output  # every offending key at once
    assert not [path for path in (kedro_project / "data").rglob("*") if path.is_file()]


def test_a_sections_depth_wins_over_backbone_layers_and_summarization_keeps_every_layer():
    from llm_seqrec.params import BackboneParams, ProjectParams

    assert BackboneParams().loader_kwargs()["layers"] is None  # every layer
    cut = BackboneParams(layers=16)
    assert [cut.loader_kwargs(depth)["layers"] for depth in (None, 8, "all")] == [16, 8, None]
    for env in ("base", "quick", "amazon"):
        params = ProjectParams.model_validate(with_value(conf_parameters(env), "backbone.layers", 4))
        assert params.summarization.layers == "all"  # generation: never truncated by backbone.layers
        assert params.backbone.loader_kwargs(params.summarization.layers)["layers"] is None


def test_the_default_budget_cuts_depth_and_splits_where_measured_and_amazon_gpu_quick_keep_them():
    from llm_seqrec.params import ProjectParams

    full = {"summarization.layers": "all"}  # generation keeps every layer; every other section None = backbone.layers
    # amazon's laser is its research budget at 8 layers (README "Laser on every user"); its ablations keep full depth
    for env, cut in (("amazon", {"laser.layers": 8}), ("gpu", {}), ("quick", {})):
        params = ProjectParams.model_validate(conf_parameters(env))
        assert {key: n for key, n in params.section_depths().items() if n is not None} == full | cut, env
        assert params.evaluation.llm_splits == ["valid", "test"], env
    base = ProjectParams.model_validate(conf_parameters("base"))
    assert base.evaluation.llm_splits == ["test"]  # the LLM models scored on test only in the default run
    assert ProjectParams.model_validate(with_value(conf_parameters("base"), "evaluation.llm_splits", ["test", "valid", "test"])
                                        ).evaluation.llm_splits == ["valid", "test"]
    depths = base.section_depths()
    cut = {key for key, n in depths.items() if n == 8}
    assert cut == {"alignment.layers", "laser.layers", "fusion.layers", "laser.ablations.laser_no_moe.layers",
                   "laser.ablations.laser_no_prefix.layers", "laser.ablations.laser_no_stage1.layers",
                   "fusion.ablations.fusion_no_summary.layers", "fusion.ablations.fusion_no_aligned_ids.layers",
                   "fusion.ablations.fusion_no_prefix.layers"}
    assert {key: n for key, n in depths.items() if key not in cut} == {
        "summarization.layers": "all", "trsr.layers": None, "dmpo.layers": None, "dmpo_transfer.layers": None,
        "evaluation.zeroshot_layers": None}  # trsr lost 0.17 sampled NDCG@5 at 8 layers: the LoRA models keep all 30
