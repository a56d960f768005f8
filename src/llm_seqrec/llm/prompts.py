"""Prompt text and token ids for item-text prompts, through the tokenizer's own chat template."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from transformers import PreTrainedTokenizerBase

SYSTEM = "You are a recommender system. You predict the next item a user will choose."


def truncate(text: str, max_chars: int) -> str:
    """At most ``max_chars`` characters, cut at a word boundary where one is near the end."""
    text = " ".join(str(text).split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip(" ,;:-")


def item_titles(item_catalog: pd.DataFrame, max_chars: int) -> dict[int, str]:
    """item_idx -> title as shown in prompts (truncated to ``max_chars``)."""
    return {
        int(idx): truncate(title, max_chars)
        for idx, title in zip(item_catalog["item_idx"], item_catalog["title"], strict=True)
    }


def recent_items_message(titles: Sequence[str]) -> str:
    """The user turn: the recent items, oldest first, and the question the answer continues."""
    listing = "\n".join(f"{i}. {title}" for i, title in enumerate(titles, start=1))
    return (
        f"These are the items I chose most recently, oldest first:\n{listing}\n"
        "Which item will I choose next? Answer with its title only."
    )


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, user_message: str, system: str = SYSTEM) -> list[int]:
    """Token ids of system + user turn, ending where the assistant's answer starts."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user_message}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # The template already holds the special tokens; adding them again would double the BOS.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def text_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` as a continuation (no special tokens)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]
