"""The layers of ``src/llm_seqrec`` import only downward, and only the Kedro layer imports Kedro.

data → llm → models → evaluation → training → params → pipelines (docs/architecture.md). ``datasets``
(the catalog's dataset classes) sits beside ``params``; the project files Kedro reads (settings, hooks,
the pipeline registry, ``__main__``) sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "llm_seqrec"
RANK = {"data": 0, "llm": 1, "models": 2, "evaluation": 3, "training": 4, "params": 5, "datasets": 5, "pipelines": 6,
        "hooks": 7, "settings": 7, "pipeline_registry": 7, "__main__": 7, "__init__": 7}
TOP = 7  # the project files Kedro reads may import one another
KEDRO_FREE = {"data", "llm", "models", "evaluation", "training", "params"}
MAX_LINES = 300


def layer(module: str) -> str:
    """``llm_seqrec.models.sasrec`` -> ``models``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(source: str, module: str, is_package: bool) -> list[str]:
    """Absolute names of what ``source`` (the module ``module``) imports, relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                found.append(".".join([*base, node.module] if node.module else base))
            else:
                found.append(node.module)
    return found


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Each import of ``source`` that points up the layers, or into Kedro from a Kedro-free layer."""
    own = layer(module)
    out = []
    for name in imported_modules(source, module, is_package):
        if name.split(".")[0] == "kedro" and own in KEDRO_FREE:
            out.append(f"{module} imports {name}: the {own} layer knows nothing of Kedro")
        if name.startswith("llm_seqrec.") or name == "llm_seqrec":
            target = layer(name)
            if target != own and RANK[target] >= RANK[own] and RANK[own] < TOP:
                out.append(f"{module} imports {name}: {own} may not import {target}")
    return out


def cross_stage_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Imports of one stage's pipeline package from another's: what stages share lives in the library."""
    parts = module.split(".")
    if len(parts) < 3 or parts[1] != "pipelines":
        return []
    return [f"{module} imports {name}: stage {parts[2]} may not import stage {name.split('.')[2]}"
            for name in imported_modules(source, module, is_package)
            if name.startswith("llm_seqrec.pipelines.") and name.split(".")[2] != parts[2]]


def modules() -> list[tuple[Path, str, bool]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("llm_seqrec", *path.relative_to(PACKAGE).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found.append((path, ".".join(parts[:-1] if is_package and len(parts) > 2 else parts), is_package))
    return found


def test_every_layer_imports_only_downward():
    problems = [v for path, module, is_package in modules() for v in violations(path.read_text(), module, is_package)]
    assert not problems, "\n".join(problems)


def test_no_stage_imports_another():
    problems = [v for path, module, is_package in modules() for v in cross_stage_imports(path.read_text(), module, is_package)]
    assert not problems, "\n".join(problems)
    assert cross_stage_imports("from llm_seqrec.pipelines.data_processing.nodes import x", "llm_seqrec.pipelines.bituning.dmpo")


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("from llm_seqrec.training import fit", "llm_seqrec.models.sasrec"),
        ("from llm_seqrec.params import TRSRParams", "llm_seqrec.models.llm_recommender"),
        ("import llm_seqrec.pipelines.bituning", "llm_seqrec.evaluation.scoring"),
        ("from ..evaluation.metrics import metrics_from_ranks", "llm_seqrec.models.sasrec"),
        ("from kedro.pipeline import Node", "llm_seqrec.training.lora"),
        ("from llm_seqrec.models.sasrec import SASRec", "llm_seqrec.data.negatives"),
    ],
)
def test_a_forbidden_import_is_caught(source, module):
    assert violations(source, module)


def test_allowed_imports_pass():
    assert not violations("from llm_seqrec.data.schema import PAD\nfrom .recommender import Queries", "llm_seqrec.models.sasrec")
    assert not violations("from kedro.pipeline import Node\nfrom llm_seqrec.training import fit", "llm_seqrec.pipelines.x")


def test_no_source_file_is_longer_than_the_limit():
    long = {str(path.relative_to(PACKAGE)): n for path, _, _ in modules() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"
