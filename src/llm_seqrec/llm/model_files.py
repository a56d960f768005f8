"""Where a backbone's weights are, checked before anything loads: a GGUF file or a Hugging Face folder.

Kept free of torch and transformers, so typed parameters can refuse a bad path before a run starts.
"""

from __future__ import annotations

from pathlib import Path


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
