"""Load the frozen backbone: the shipped SmolLM2 GGUF by default, any local HF folder or GGUF file.

A GGUF file is de-quantised once (about 20 s for SmolLM2-135M) and the result kept as safetensors
under ``$LLM_SEQREC_CACHE`` (default ``~/.cache/llm_seqrec``), keyed by the file's path, size and
modification time, so later loads take about a second. Within a process the first load of a backbone is
kept and every call gets its own deep copy (a quarter of a second): the LoRA and soft-prompt models edit
the modules in place, and a `kedro run` loads the backbone in some twenty nodes.

``backbone.layers: N`` keeps the first N decoder layers (SLMRec, Xu et al. 2024: the upper layers of an
LLM recommender are mostly redundant), cut from the copy, so the kept pristine model serves every depth.
A truncated backbone's name ends in ``-layersN``: everything that records the name (adapters, checkpoints,
the summary cache) then records the depth, and ``check_backbone`` refuses an adapter of another depth.
Each LLM parameter section may set its own depth (``<section>.layers``, ``SectionDepth``), which wins over
``backbone.layers`` for that section's nodes (``section_layers``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
from annotated_types import Ge
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from llm_seqrec.data.files import atomic_write_dir
from llm_seqrec.llm.device import choose_device, choose_dtype, dtype_name
from llm_seqrec.llm.model_files import check_gguf, default_model_location, resolve_model_files

logger = logging.getLogger(__name__)

_DEPTH = re.compile(r"^(?P<base>.*)-layers(?P<layers>\d+)$")

# A section's depth (``<section>.layers``): its nodes keep the first N decoder layers, ``all`` of them,
# or (None) what ``backbone.layers`` says.
SectionDepth = Annotated[int, Ge(1)] | Literal["all"] | None


def section_layers(section: SectionDepth, default: int | None) -> int | None:
    """The ``layers`` argument of ``load_backbone`` for a section of depth ``section`` when
    ``backbone.layers`` is ``default`` (None = every layer)."""
    if section is None:
        return default
    return None if section == "all" else section


@dataclass
class Backbone:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str  # identity of the weights and the depth, used in cache keys (summaries) and adapters
    device: torch.device
    dtype: torch.dtype

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def dtype_name(self) -> str:
        """``bfloat16``, ``float32``, ...: recorded beside everything the backbone computed (scores,
        training logs, summary cache keys), since its outputs differ between dtypes."""
        return dtype_name(self.dtype)

    @property
    def n_layers(self) -> int:
        """The decoder layers this backbone runs (``backbone.layers``, or all of them)."""
        return len(self.model.get_decoder().layers)


def check_backbone(trained_on: str, name: str, n_layers: int, what: str = "the adapter") -> None:
    """Refuse to put ``what``, trained on backbone ``trained_on`` (a ``Backbone.name``), on the backbone
    ``name`` running ``n_layers`` layers; when only the depth differs, say which ``backbone.layers`` fits."""
    if trained_on == name:
        return
    trained, current = _DEPTH.match(trained_on), _DEPTH.match(name)
    trained_base = trained["base"] if trained else trained_on
    if trained_base != (current["base"] if current else name):
        raise ValueError(f"{what} was trained on backbone {trained_on!r}, not {name!r}")
    depth, section, default = ((f"depth {trained['layers']}", trained["layers"], trained["layers"]) if trained
                               else ("full depth", "all", "null"))
    raise ValueError(
        f"{what} was trained at {depth} of backbone {trained_base!r}, the backbone has {n_layers} layers: "
        f"set its section's layers={section} (or backbone.layers={default}) or retrain"
    )


def _cache_root() -> Path:
    return Path(os.environ.get("LLM_SEQREC_CACHE", Path.home() / ".cache" / "llm_seqrec"))


def _load_gguf(folder: Path, gguf_file: str, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    file = folder / gguf_file
    check_gguf(file)
    stat = file.stat()
    key = hashlib.sha256(f"{file.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    name = f"{file.stem}-{key}"
    cache = _cache_root() / "backbones" / name
    if not (cache / "model.safetensors").is_file():
        logger.info("De-quantising %s once into %s", file, cache)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)

        def write(folder: Path) -> None:
            model.config.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            save_file(state, str(folder / "model.safetensors"))

        atomic_write_dir(cache, write)
    config = AutoConfig.from_pretrained(cache)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(load_file(str(cache / "model.safetensors")), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"backbone cache {cache} does not match its config: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(cache)
    return model, tokenizer, name


def load_backbone(
    path: str | Path | None = None,
    gguf_file: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    layers: int | None = None,
) -> Backbone:
    """The frozen causal LM and its tokenizer, in eval mode with gradients off, on the chosen device
    (``device.choose_device``, ``device.choose_dtype``): a copy of its own, which the caller may change.
    ``layers``: keep the first ``layers`` decoder layers (the final norm and the head stay); None = all."""
    torch_device = choose_device(device)
    torch_dtype = choose_dtype(torch_device, dtype)
    pristine = _load_pristine(None if path is None else str(path), gguf_file, dtype_name(torch_dtype),
                              str(torch_device), str(_cache_root()))
    backbone = dataclasses.replace(pristine, model=copy.deepcopy(pristine.model), tokenizer=copy.deepcopy(pristine.tokenizer))
    return backbone if layers is None else truncate(backbone, layers)


def truncate(backbone: Backbone, layers: int) -> Backbone:
    """``backbone`` with its first ``layers`` decoder layers only, changed in place (the config's layer
    count too, which the KV cache of generation reads); its name records the depth unless all are kept."""
    total = backbone.n_layers
    if not 1 <= layers <= total:
        raise ValueError(f"backbone.layers={layers}: backbone {backbone.name!r} has {total} decoder layers, give 1..{total}")
    if layers == total:
        return backbone
    decoder, config = backbone.model.get_decoder(), backbone.model.config
    decoder.layers = decoder.layers[:layers]
    for holder in {id(config): config, id(decoder.config): decoder.config}.values():
        holder.num_hidden_layers = layers
        if getattr(holder, "layer_types", None) is not None:
            holder.layer_types = holder.layer_types[:layers]
    return dataclasses.replace(backbone, name=f"{backbone.name}-layers{layers}")


@functools.lru_cache(maxsize=2)
def _load_pristine(path: str | None, gguf_file: str | None, dtype: str, device: str, cache_root: str) -> Backbone:
    """``load_backbone``'s reading of the weights, once per process and arguments (``dtype`` and
    ``device`` resolved; ``cache_root`` is in the key so that a changed ``$LLM_SEQREC_CACHE`` loads afresh)."""
    torch_device, torch_dtype = torch.device(device), getattr(torch, dtype)
    if path is None:
        folder, gguf_file = default_model_location()
        model, tokenizer, name = _load_gguf(folder, gguf_file, torch_dtype)
    else:
        resolved, gguf_file = resolve_model_files(Path(path), gguf_file)
        if gguf_file is not None:
            model, tokenizer, name = _load_gguf(resolved, gguf_file, torch_dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch_dtype)
            tokenizer = AutoTokenizer.from_pretrained(resolved)
            name = resolved.resolve().name
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(torch_device).eval()
    model.requires_grad_(False)
    logger.info("Backbone %s on %s in %s", name, torch_device, dtype)
    return Backbone(model=model, tokenizer=tokenizer, name=name, device=torch_device, dtype=torch_dtype)


def check_training_device(llm: Backbone, training_device: str) -> Backbone:
    """The one policy for a model that trains parts around the frozen backbone: both sit on one
    device, and a configuration that asks for two is refused rather than silently moved."""
    wanted = choose_device(training_device)
    if llm.device != wanted:
        raise ValueError(
            f"backbone.device puts the LLM on {llm.device} but the model's training.device asks for {wanted}: "
            "set both to the same device"
        )
    return llm
