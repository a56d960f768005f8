"""The ``dmpo`` variant (DMPO, with S-DPO and SFT): a LoRA adapter that answers a user's recent items
(and summary, where the summary cache has one) with the next item's title.

1. ``make_training_examples``: the ``train`` cutoff of seeded training users (summarised users first,
   so smaller sets are prefixes of larger ones), each with k negatives sampled once from items outside
   the user's training items. In ``dmpo_transfer`` they come from ``train_dataset`` (cross-domain),
   whose users have no summaries, so then no prompt shows one.
2. ``train_sft``: supervised fine-tuning on the positive titles → model ``sft``.
3. ``compute_reference_logprobs``: πref is the SFT adapter. Its summed answer log-probabilities of
   every example's positive and negatives are computed once, in eval mode, and persisted with the
   SFT adapter's fingerprint; ``dmpo`` and ``sdpo`` both read them, so no frozen copy of the model
   runs during preference training.
4. ``train_preference``: from the SFT adapter, DMPO's loss → ``dmpo``; S-DPO's → ``sdpo``.
5. ``score_dmpo``: every shared candidate's title log-likelihood (per token) on the LLM user sample.
6. ``few_shot_sweep``: SFT + DMPO per size in ``dmpo.few_shot_users`` → ``dmpo_u<n>``.

Score tables carry a ``model`` column naming the row's model: ``dmpo_few_shot_scores`` holds several
(``dmpo_u64``, ...), and a cross-domain model is named after its training data set too
(``dmpo_from_ml-1m`` evaluated on the ``dataset.name`` data set).
"""

from .pipeline import create_variant_pipeline

__all__ = ["create_variant_pipeline"]
