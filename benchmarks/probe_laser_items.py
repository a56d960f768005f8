"""Did Laser's item side collapse? A diagnosis for a Laser that trains but ranks near chance (issue 22).

    python benchmarks/probe_laser_items.py --env amazon --layers 8 --users 200

Stage 1 trains the item side (item suffix and projection) against a catalogue encoded at the epoch's
start (and at each validation): a batch's targets are encoded fresh, with gradients, every other item
comes from that no-grad cache. The item side's only repulsive gradient is then the batch's few other
targets; the loss can also fall by moving every item toward where the users are, which a re-encoded
catalogue shows as items that all look alike. This measures it on the project's trained `laser_adapter`
(the latest version) against the same model at its seeded initial weights (what `train_bituning` builds
before training): the mean resultant length of the unit item vectors (|mean|: 0 = spread evenly, 1 = all
one vector), their mean pairwise cosine, the same for ``--users`` seeded validation users, and the mean
user-item cosine with its spread over items (a user's scores are its cosines: a small spread is a
ranking decided by little). Run it from the project root after the laser node has trained.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from llm_seqrec.llm.backbone import load_backbone
from llm_seqrec.models.bituning_prompts import _user_batches  # the scorer's own length-bucketed batches
from llm_seqrec.params import BackboneParams, LaserParams
from llm_seqrec.training.bituning_data import build, restore, validation_users
from llm_seqrec.training.state import seed_everything


def spread(vectors: torch.Tensor) -> dict[str, float]:
    """|mean| and mean pairwise cosine of unit row vectors."""
    n, mean = len(vectors), vectors.mean(0)
    resultant = float(mean.norm())
    return {"|mean|": resultant, "pairwise cos": (n * resultant**2 - 1) / (n - 1)}


def measure(net, valid, batch_size: int, item_batch_size: int) -> dict[str, float]:
    net.eval()
    with torch.no_grad():
        items = net.refresh_items(item_batch_size)[1:].cpu()
        users = user_vectors(net, valid, batch_size)
    cosines = users @ items.T  # [users, items]
    return {**{f"items {k}": v for k, v in spread(items).items()}, **{f"users {k}": v for k, v in spread(users).items()},
            "user-item cos mean": float(cosines.mean()), "user-item cos std over items": float(cosines.std(1).mean())}


def user_vectors(net, valid, batch_size: int) -> torch.Tensor:
    """The validation users' unit vectors (cosine with an item = its score before the temperature)."""
    out = torch.zeros(len(valid), net.config.rec_size)
    for rows, batch in _user_batches(net, valid.prompts, valid.histories, batch_size):
        out[rows] = net.encode_users(**batch).vectors.cpu()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="amazon")
    parser.add_argument("--layers", type=int, help="the depth the adapter was trained at (default: the laser section's)")
    parser.add_argument("--users", type=int, default=200, help="seeded validation users")
    args = parser.parse_args()

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    bootstrap_project(Path.cwd())
    with KedroSession.create(project_path=Path.cwd(), env=args.env) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
    laser = LaserParams.model_validate(params["laser"]).model("laser")
    layers = args.layers if args.layers is not None else laser.layers
    llm = load_backbone(**BackboneParams.model_validate(params["backbone"]).loader_kwargs(layers))
    sequences, items, sasrec = (catalog.load(name) for name in ("user_sequences", "item_catalog", "sasrec_model"))
    adapter = catalog.load("laser_adapter")

    seed_everything(laser.training.seed)  # as train_bituning: the seeded initial weights
    initial, prompts, _ = build(llm, items, sasrec, None, prompts=laser.prompts,
                                mformer=laser.mformer if laser.prefix else None, rec_size=laser.rec_size,
                                n_suffix_tokens=laser.n_suffix_tokens, temperature=laser.temperature,
                                balance_weight=laser.balance_weight)
    valid = validation_users(sequences, prompts, None, args.users, laser.training.seed)
    rows = {"initial": measure(initial, valid, laser.score_batch_size, laser.item_batch_size)}
    trained = restore(adapter, llm, items, sasrec, None, batch_size=laser.score_batch_size,
                      item_batch_size=laser.item_batch_size)
    rows["trained"] = measure(trained.net, valid, laser.score_batch_size, laser.item_batch_size)
    print(f"laser_adapter, {llm.name} ({llm.n_layers} layers, {llm.dtype_name}), {prompts.n_items} items, "
          f"{len(valid)} validation users")
    for key in rows["initial"]:
        print(f"{key:30s} initial {rows['initial'][key]:8.4f}   trained {rows['trained'][key]:8.4f}")


if __name__ == "__main__":
    main()
