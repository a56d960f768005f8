"""LLM-TRSR's history summaries: blocks, prompts from versioned templates, hierarchical and recurrent drivers.

A user's history (already cut before the target) is split into blocks of ``block_size`` items counted
from its start, and the last ``max_blocks`` are kept. Counting from the start means a history that
grows (validation -> test cutoff, or new interactions) keeps its complete blocks and their cache keys;
only the last, partial block changes.

- hierarchical: every block is summarised on its own (level 0), then the block summaries are merged
  (level 1); a single block's summary is final as it is.
- recurrent: step 1 summarises the first kept block, step t updates summary t-1 with block t.

Every summary has a key: a hash of what determines its text (method, template, item ids and lines,
model, generation settings, and the keys of the summaries it reads). The driver generates only keys
it does not know, each once however many users share it, one round at a time (all blocks, then all
merges; or step t of every user), in chunks handed to ``on_chunk`` as they finish, so a caller that
persists chunks loses at most the chunk in progress when interrupted.

No Kedro and no torch here: the model comes in as ``generate_fn`` (see ``llm.generation``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import pandas as pd
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from llm_seqrec.llm.generation import Generation

METHODS = ("hierarchical", "recurrent")
# One row per summary. level_or_step: hierarchical 0 = a block, 1 = the merge of the block summaries;
# recurrent t = 1.. (the t-th kept block). item_ids: the items shown in that call's prompt (a merge shows
# none: its input_keys name the block summaries it read).
CACHE_COLUMNS = [
    "key", "user_idx", "cutoff", "method", "level_or_step", "input_keys", "item_ids",
    "prompt_version", "model", "summary", "tokens_in", "tokens_out", "seconds",
]
SUMMARY_COLUMNS = ["user_idx", "cutoff", "method", "summary", "key"]


class GenerateFn(Protocol):
    def __call__(self, messages: list[str]) -> list[Generation]: ...


@dataclass(frozen=True)
class Templates:
    """The user turns sent to the LLM; ``version`` names the wording in the cache."""

    version: str
    system: str
    block: str  # {items}
    merge: str  # {summaries}
    update: str  # {summary} {items}


@dataclass(frozen=True)
class Request:
    """One final summary wanted: a user's history at a cutoff, as blocks (see ``history_blocks``)."""

    user_idx: int
    cutoff: str
    blocks: tuple[tuple[int, ...], ...]


@dataclass
class _Task:
    key: str
    user_idx: int
    cutoff: str
    level_or_step: int
    template: str  # "block" | "merge" | "update"
    item_ids: tuple[int, ...]
    input_keys: tuple[str, ...] = field(default=())


def history_blocks(items: Sequence[int], block_size: int, max_blocks: int) -> list[list[int]]:
    """Blocks of ``block_size`` items counted from the start of ``items``; the last ``max_blocks`` of them."""
    blocks = [list(items[i : i + block_size]) for i in range(0, len(items), block_size)]
    return blocks[-max_blocks:]


def item_lines(texts: Mapping[int, str], tokenizer, max_tokens: int) -> dict[int, str]:
    """Item text as shown in a prompt: whitespace collapsed, at most ``max_tokens`` tokens, cut at a word."""
    keys = list(texts)
    flat = [" ".join(str(texts[k]).split()) for k in keys]
    encoded = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    out = {}
    for k, text, ids in zip(keys, flat, encoded, strict=True):
        if len(ids) > max_tokens:
            cut = tokenizer.decode(ids[:max_tokens])
            space = cut.rfind(" ")
            text = (cut[:space] if space > len(cut) // 2 else cut).rstrip(" ,;:-") + " ..."
        out[int(k)] = text
    return out


def summary_key(**parts) -> str:
    """A content hash of everything that determines a summary's text."""
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _plan(
    requests: Sequence[Request], method: str, templates: Templates, lines: Mapping[int, str], identity: Mapping
) -> tuple[list[list[_Task]], list[str]]:
    """The rounds of tasks (each key once, attributed to its first requester) and each request's final key."""
    rounds: list[dict[str, _Task]] = []
    finals = []

    def add(round_no: int, request: Request, level_or_step: int, template: str, items=(), inputs=()) -> str:
        # The template's text is hashed with its version, so an edit that forgets the version bump
        # still invalidates; the item lines are hashed so a changed item text or budget does too.
        key = summary_key(
            **identity,
            method=method,
            template=template,
            template_text=getattr(templates, template),
            system=templates.system,
            item_ids=list(items),
            item_lines=[lines[i] for i in items],
            input_keys=list(inputs),
        )
        while len(rounds) <= round_no:
            rounds.append({})
        rounds[round_no].setdefault(
            key, _Task(key, request.user_idx, request.cutoff, level_or_step, template, tuple(items), tuple(inputs))
        )
        return key

    for request in requests:
        if not request.blocks:
            raise ValueError(f"user {request.user_idx} at cutoff {request.cutoff!r} has no history to summarise")
        if method == "hierarchical":
            block_keys = [add(0, request, 0, "block", block) for block in request.blocks]
            final = block_keys[0] if len(block_keys) == 1 else add(1, request, 1, "merge", inputs=block_keys)
        elif method == "recurrent":
            final = add(0, request, 1, "block", request.blocks[0])
            for t, block in enumerate(request.blocks[1:], start=2):
                final = add(t - 1, request, t, "update", block, inputs=[final])
        else:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        finals.append(final)
    return [list(r.values()) for r in rounds], finals


def _message(task: _Task, templates: Templates, lines: Mapping[int, str], known: Mapping[str, str]) -> str:
    items = "\n".join(f"{n}. {lines[i]}" for n, i in enumerate(task.item_ids, start=1))
    if task.template == "block":
        return templates.block.format(items=items)
    if task.template == "merge":
        parts = "\n".join(f"Part {n}: {known[k]}" for n, k in enumerate(task.input_keys, start=1))
        return templates.merge.format(summaries=parts)
    return templates.update.format(summary=known[task.input_keys[0]], items=items)


def summarize(
    requests: Sequence[Request],
    *,
    method: str,
    templates: Templates,
    lines: Mapping[int, str],
    generate_fn: GenerateFn,
    model: str,
    generation: Mapping,
    known: Mapping[str, str],
    on_chunk: Callable[[pd.DataFrame], None],
    chunk_size: int = 64,
    progress: bool = True,
) -> pd.DataFrame:
    """Each request's final summary (``SUMMARY_COLUMNS``), generating only keys absent from ``known``.

    ``lines`` maps item ids to the text shown for them; ``model`` names the weights and ``generation``
    holds the settings that change outputs (both go into the keys); ``known`` maps keys to summaries
    already made; ``on_chunk`` receives each finished chunk as ``CACHE_COLUMNS`` rows.
    """
    identity = {"model": model, "generation": dict(generation), "prompt_version": templates.version}
    rounds, finals = _plan(requests, method, templates, lines, identity)
    summaries = dict(known)
    total = sum(len(r) for r in rounds)
    bar = tqdm(total=total, initial=sum(t.key in summaries for r in rounds for t in r), unit="summary",
               desc=f"summaries ({method})", disable=not progress)
    with bar:
        for tasks in rounds:
            todo = [t for t in tasks if t.key not in summaries]
            messages = [_message(t, templates, lines, summaries) for t in todo]
            # Chunks of similar length let the generator's batches pad little.
            order = sorted(range(len(todo)), key=lambda i: len(messages[i]))
            for start in range(0, len(order), chunk_size):
                chunk = order[start : start + chunk_size]
                generations = generate_fn([messages[i] for i in chunk])
                rows = []
                for i, gen in zip(chunk, generations, strict=True):
                    task = todo[i]
                    summaries[task.key] = gen.text
                    rows.append({
                        "key": task.key, "user_idx": task.user_idx, "cutoff": task.cutoff, "method": method,
                        "level_or_step": task.level_or_step, "input_keys": list(task.input_keys),
                        "item_ids": list(task.item_ids), "prompt_version": templates.version,
                        "model": model, "summary": gen.text, "tokens_in": gen.tokens_in,
                        "tokens_out": gen.tokens_out, "seconds": gen.seconds,
                    })
                on_chunk(pd.DataFrame(rows, columns=CACHE_COLUMNS))
                bar.update(len(rows))
    return pd.DataFrame(
        [(r.user_idx, r.cutoff, method, summaries[k], k) for r, k in zip(requests, finals, strict=True)],
        columns=SUMMARY_COLUMNS,
    )


def covered_items(key: str, item_ids: Mapping[str, Sequence[int]], input_keys: Mapping[str, Sequence[str]]) -> list[int]:
    """Every item a summary was made from, in history order, following its inputs through the cache."""
    inputs = [i for k in input_keys[key] for i in covered_items(k, item_ids, input_keys)]
    return inputs + [int(i) for i in item_ids[key]]
