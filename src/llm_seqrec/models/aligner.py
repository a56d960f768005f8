"""RA-Rec (Yu et al., 2024): a frozen ID model's item embeddings aligned into a frozen LLM as soft prompts.

Two passes of the frozen decoder over a user's recent history h_1..h_n (rows right-padded; the
token layout is ``models.aligner_prompt``):

    hybrid     [c_1 .. c_K]   [ID h_1] text(h_1)  [ID h_2] text(h_2) ... [ID h_n] text(h_n)  readout
    text-only  instruction    text(h_1) text(h_2) ... text(h_n)  readout

Per-layer soft prompts. Before every decoder layer l the hidden states at the soft positions are
replaced: the ID position of item i gets p^(l)(i) = W^(l) ê_i + b^(l), where ê_i is the frozen ID
embedding standardised over items, and prefix position k gets the learnable contextual-instruction
vector c^(l)_k. Every layer therefore reads the ID and the instruction as its own input (the depth of
prefix tuning), while text positions flow through the frozen LLM untouched. Forward pre-hooks on the
decoder layers make the replacement, so the Hugging Face decoder (``model.model``: no vocabulary
logits) runs unchanged. The ID table enters as a plain tensor, so any ID model's item embeddings
(SASRec's or another's) can be aligned.

Initialisation. c^(l) starts as the frozen LLM's own layer-l states of the instruction text (K is its
token count), so training starts from the plain-text prompt; b^(l) starts at the mean and W^(l) at
the spread of those states, so soft tokens start in the distribution each layer expects.

User and item representations. The user is the final (normed) hidden state at the last readout token.
An item is its aligned embedding a_i = p^(0)(i), the ID embedding mapped into the LLM's input space
(the vector other stages reuse as the item's soft token). Scores are s(u, i) = <U h_u, V a_i>: item
keys depend on the ID table alone, so they are computed once, and ranking all items is one matmul per
batch of users, with no LLM pass per item.

Loss. BPR of the target against sampled negatives, plus a weighted layer-wise InfoNCE: at every layer,
the hybrid pass's readout state of each user must pick out the text-only pass's readout state of the
same user among the batch (cosine over temperature, both centred on the text-only batch mean, since
LLM states share a large common component that would make every pair look alike). The text-only pass
has no trainable part and runs without gradients: it anchors the hybrid pass in the LLM's own text
semantics. Only the aligner (W, b, c, U, V) trains; the LLM and the ID table stay frozen.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from llm_seqrec.data.fingerprint import scorer_fingerprint
from llm_seqrec.data.schema import PAD
from llm_seqrec.models.aligner_prompt import PromptLayout
from llm_seqrec.models.recommender import Queries


@dataclass(frozen=True)
class AlignerConfig:
    n_items: int  # items are 1..n_items; row 0 of the ID table is padding
    id_dim: int
    hidden_size: int  # the LLM's
    n_layers: int  # the LLM's decoder layers
    n_prefix: int  # contextual-instruction vectors per layer (the instruction's token count)
    score_dim: int = 64

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AlignerConfig":
        return cls(**data)


class IDAligner(nn.Module):
    """The trainable part of RA-Rec: per-layer reparameterisation of ID embeddings, per-layer
    contextual-instruction prefixes, and the user and item heads of the scoring space."""

    def __init__(self, config: AlignerConfig, id_table: torch.Tensor) -> None:
        super().__init__()
        if tuple(id_table.shape) != (config.n_items + 1, config.id_dim):
            raise ValueError(f"id_table has shape {tuple(id_table.shape)}, expected {(config.n_items + 1, config.id_dim)}")
        self.config = config
        table = id_table.detach().float().clone()
        self.register_buffer("id_table", table)
        # Standardising per dimension makes W's scale independent of how large the ID model's
        # embeddings happen to be (derived from the table, so not saved).
        self.register_buffer("id_mean", table[1:].mean(0), persistent=False)
        self.register_buffer("id_std", table[1:].std(0, unbiased=False).clamp_min(1e-6), persistent=False)
        L, H, d, K = config.n_layers, config.hidden_size, config.id_dim, config.n_prefix
        self.weight = nn.Parameter(torch.randn(L, H, d) / d**0.5)
        self.bias = nn.Parameter(torch.zeros(L, H))
        self.prefix = nn.Parameter(torch.zeros(L, K, H))
        self.user_head = nn.Linear(H, config.score_dim)
        self.item_head = nn.Linear(H, config.score_dim)

    @torch.no_grad()
    def init_from_states(self, instruction_states: torch.Tensor) -> None:
        """Start from the LLM's layer inputs ``[n_layers, K, hidden]`` for the instruction text:
        prefixes equal them; each layer's b is their mean and W's rows scale to their spread. The first
        position (the attention sink, with outsized activations) is left out of the statistics."""
        states = instruction_states.float()
        if tuple(states.shape) != tuple(self.prefix.shape):
            raise ValueError(f"instruction states have shape {tuple(states.shape)}, expected {tuple(self.prefix.shape)}")
        self.prefix.copy_(states)
        body = states[:, 1:] if states.shape[1] > 1 else states
        mean = body.mean(1)
        spread = (body - mean.unsqueeze(1)).pow(2).mean((1, 2)).sqrt()
        self.bias.copy_(mean)
        d = self.config.id_dim
        self.weight.copy_(torch.randn_like(self.weight) / d**0.5 * spread.view(-1, 1, 1))

    def soft_values(self, items: torch.Tensor) -> torch.Tensor:
        """p^(l)(i) for every layer: ``[n_layers, *items.shape, hidden]``."""
        e = (self.id_table[items] - self.id_mean) / self.id_std
        return torch.einsum("lhd,...d->l...h", self.weight, e) + self.bias.view(
            self.config.n_layers, *([1] * items.dim()), -1
        )

    def aligned_items(self) -> torch.Tensor:
        """Every item's aligned embedding a_i = p^(0)(i) in the LLM's input space ``[n_items + 1, hidden]``
        (row 0 belongs to padding)."""
        e = (self.id_table - self.id_mean) / self.id_std
        return e @ self.weight[0].T + self.bias[0]

    def item_keys(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """V a_i for ``items`` (any shape), or ``[n_items + 1, score_dim]`` for every item."""
        if items is None:
            return self.item_head(self.aligned_items())
        e = (self.id_table[items] - self.id_mean) / self.id_std
        return self.item_head(e @ self.weight[0].T + self.bias[0])

    def user_queries(self, user_states: torch.Tensor) -> torch.Tensor:
        """U h_u ``[B, score_dim]`` from the LLM's readout states ``[B, hidden]``."""
        return self.user_head(user_states.float())

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def to_artifact(self) -> dict:
        """``{"config", "state_dict"}`` for ``TorchWeightsDataset``; the ID table travels with the weights."""
        return {"config": self.config.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_artifact(cls, artifact: dict) -> "IDAligner":
        state = artifact["state_dict"]
        model = cls(AlignerConfig.from_dict(artifact["config"]), state["id_table"])
        model.load_state_dict(state)
        return model


def _replace_soft_positions(positions, values, module, args, kwargs):
    """Forward pre-hook: the layer's input at ``positions`` becomes ``values`` (out of place, so
    gradients reach ``values`` and the states it replaces get none)."""
    if args:
        hidden = args[0]
        return (hidden.index_put(positions, values.to(hidden.dtype)), *args[1:]), kwargs
    hidden = kwargs["hidden_states"]
    return args, {**kwargs, "hidden_states": hidden.index_put(positions, values.to(hidden.dtype))}


def _layer_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class RARec(nn.Module):
    """A frozen decoder (``LlamaModel``-like: ``.layers``, ``last_hidden_state``) with the aligner's soft
    prompts: user representations, scores over items (a full ranker), and the training loss. Only
    ``aligner`` trains. ``backbone_dtype`` and ``backbone_name`` name the decoder's dtype and weights
    (``Backbone``); ``query_batch_size`` users go through the LLM at a time (all when None)."""

    def __init__(self, decoder: nn.Module, aligner: IDAligner, layout: PromptLayout, backbone_dtype: str = "",
                 query_batch_size: int | None = None, progress: bool = False, backbone_name: str = "") -> None:
        super().__init__()
        if len(decoder.layers) != aligner.config.n_layers or len(layout.instruction) != aligner.config.n_prefix:
            raise ValueError("the aligner's layers and prefix length must match the decoder's layers and the instruction")
        self.decoder = decoder.requires_grad_(False).eval()
        self.aligner = aligner
        self.layout = layout
        self.backbone_dtype = backbone_dtype
        self.backbone_name = backbone_name
        self.query_batch_size = query_batch_size
        self.progress = progress

    def _run(self, ids, mask, last, soft=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Final readout states ``[B, hidden]`` and every layer's output at the readout ``[n_layers, B, hidden]``;
        ``soft`` = (positions, per-layer values ``[n_layers, n, hidden]``) replaces states before each layer."""
        rows = torch.arange(ids.shape[0], device=ids.device)
        captured: list[torch.Tensor] = []
        hooks = [
            layer.register_forward_hook(lambda _m, _a, out: captured.append(_layer_output(out)[rows, last]))
            for layer in self.decoder.layers
        ]
        if soft is not None:
            positions, values = soft
            hooks += [
                layer.register_forward_pre_hook(functools.partial(_replace_soft_positions, positions, values[i]), with_kwargs=True)
                for i, layer in enumerate(self.decoder.layers)
            ]
        try:
            out = self.decoder(input_ids=ids, attention_mask=mask, use_cache=False)
        finally:
            for hook in hooks:
                hook.remove()
        return out.last_hidden_state[rows, last].float(), torch.stack(captured).float()

    def _soft(self, batch: dict) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Positions and per-layer values of every soft token of the hybrid pass: prefixes, then IDs."""
        B, K = batch["ids"].shape[0], self.aligner.config.n_prefix
        device = batch["ids"].device
        rows = torch.cat([torch.arange(B, device=device).repeat_interleave(K), batch["id_rows"]])
        cols = torch.cat([torch.arange(K, device=device).repeat(B), batch["id_cols"]])
        values = torch.cat([self.aligner.prefix.repeat(1, B, 1), self.aligner.soft_values(batch["id_items"])], dim=1)
        return (rows, cols), values

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The hybrid pass: user readout states ``[B, hidden]`` and per-layer readout states."""
        return self._run(batch["ids"], batch["mask"], batch["last"], self._soft(batch))

    def text_forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The text-only pass (no trainable part): readout states and per-layer readout states."""
        return self._run(batch["text_ids"], batch["text_mask"], batch["text_last"])

    @torch.no_grad()
    def initialise(self) -> None:
        """Set the aligner's prefixes and reparameterisation scale from the LLM's states of the instruction."""
        device = self.aligner.prefix.device
        inputs: list[torch.Tensor] = []

        def record(_module, args, kwargs) -> None:
            inputs.append((args[0] if args else kwargs["hidden_states"])[0])

        hooks = [layer.register_forward_pre_hook(record, with_kwargs=True) for layer in self.decoder.layers]
        try:
            ids = torch.tensor([self.layout.instruction], dtype=torch.long, device=device)
            self.decoder(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        finally:
            for hook in hooks:
                hook.remove()
        self.aligner.init_from_states(torch.stack(inputs))

    def loss(self, batch: dict, infonce_weight: float, temperature: float) -> torch.Tensor:
        """BPR over ``batch["negatives"] [B, N]`` (a negative equal to the target is ignored) plus
        ``infonce_weight`` x the layer-wise InfoNCE between the hybrid and text-only passes."""
        user, hybrid_layers = self(batch)
        queries = self.aligner.user_queries(user)
        target, negatives = batch["target"], batch["negatives"]
        positive = (queries * self.aligner.item_keys(target)).sum(-1, keepdim=True)
        negative = torch.einsum("bs,bns->bn", queries, self.aligner.item_keys(negatives))
        keep = (negatives != target.unsqueeze(1)).float()
        bpr = -(F.logsigmoid(positive - negative) * keep).sum() / keep.sum().clamp_min(1)
        if infonce_weight == 0:
            return bpr
        with torch.no_grad():
            _, text_layers = self.text_forward(batch)
        return bpr + infonce_weight * layerwise_infonce(hybrid_layers, text_layers, temperature)

    def user_vectors(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """U h_u ``[B, score_dim]`` for a batch of histories (hybrid pass only)."""
        device = self.aligner.prefix.device
        batch = {k: v.to(device) for k, v in self.layout.batch(histories, with_text=False).items()}
        user, _ = self(batch)
        return self.aligner.user_queries(user)

    def score_items(self, user_vectors: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, n_items + 1]`` of every item (column = item_idx; column 0, padding, is -inf)."""
        scores = user_vectors @ self.aligner.item_keys().T
        scores[:, PAD] = float("-inf")
        return scores

    def fingerprint(self) -> str:
        """The decoder by name and dtype, the aligner's weights (with the ID table), the prompt layout and
        the LLM batch size (a batch's padding moves the last bits)."""
        return scorer_fingerprint("RARec", backbone=self.backbone_name, dtype=self.backbone_dtype,
                                  aligner=self.aligner.state_dict(), config=self.aligner.config.to_dict(),
                                  layout=repr(self.layout), query_batch_size=self.query_batch_size)

    def score_all(self, queries: Queries) -> torch.Tensor:
        """Every item's score for the queries' histories: the LLM passes ``query_batch_size`` users at a
        time, then one product with the item keys for all of them."""
        size = max(1, self.query_batch_size or len(queries))
        starts = range(0, len(queries), size)
        vectors = torch.cat([
            self.user_vectors(queries.histories[i : i + size]).cpu()
            for i in tqdm(starts, desc=f"ra_rec {queries.cutoff}", unit="batch", disable=not self.progress)
        ])
        return self.score_items(vectors.to(self.aligner.prefix.device))


def layerwise_infonce(hybrid: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over layers of InfoNCE between ``hybrid [L, B, H]`` and its targets ``text [L, B, H]``:
    row b of each layer is the positive of row b, the batch's other rows its negatives."""
    centre = text.mean(1, keepdim=True)
    h = F.normalize(hybrid - centre, dim=-1)
    t = F.normalize(text - centre, dim=-1)
    logits = h @ t.transpose(1, 2) / temperature  # [L, B, B]
    labels = torch.arange(hybrid.shape[1], device=hybrid.device).expand(hybrid.shape[0], -1)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())

