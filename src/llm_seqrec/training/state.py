"""Seeding and what a checkpoint holds: the trained (not frozen) weights and every random state, so a
resumed run continues exactly where the interrupted one stopped."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llm_seqrec.data.files import atomic_write


def frozen_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def trained_state(model: nn.Module, copy: bool = False) -> dict[str, torch.Tensor]:
    """``state_dict`` without frozen parameters: a frozen LLM backbone is neither copied nor checkpointed."""
    frozen = frozen_names(model)
    return {k: v.detach().to("cpu", copy=True) if copy else v for k, v in model.state_dict().items() if k not in frozen}


def load_trained_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen = frozen_names(model)
    if unexpected or set(missing) - frozen:
        raise RuntimeError(f"state does not fit the model: missing {sorted(set(missing) - frozen)}, unexpected {sorted(unexpected)}")


def plain(value) -> Any:
    """The JSON view of ``value`` (tuples become lists, paths strings), so configs compare after a reload."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; call it before building a model so its initial weights repeat."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def save_checkpoint(path: Path, payload: dict) -> None:
    """Written atomically, so an interruption leaves the previous checkpoint whole."""
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
