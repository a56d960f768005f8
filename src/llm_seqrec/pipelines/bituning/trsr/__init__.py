"""The ``trsr`` variant (LLM-TRSR): a LoRA adapter answers "Will the user choose this item? Yes/No"
after the user's summary and recent items; the score is p(Yes). Trained at the ``train`` cutoff
(input ``train_items[:-1]``, target ``train_items[-1]``, that cutoff's summary) with fresh random
negatives 1:1, early-stopped on sampled NDCG@5 of the validation split, scored on the shared candidates
of the LLM user sample. The same model without the summary (recent items only, TALLRec-style) is
``trsr_no_summary``, trained on the same users, so the report shows what the summary adds.
"""

from .pipeline import create_variant_pipeline

__all__ = ["create_variant_pipeline"]
