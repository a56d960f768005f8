"""Stand-ins for the three inputs the `laser` node takes but does not read, so `laser` alone can train
on a data set whose summarization, alignment and `sasrec_text` stages were never run (issue 22's
every-user run):

    python benchmarks/laser_standins.py --env amazon

A Kedro node's inputs must exist even when its parameters leave them unused: `laser` with
`id_model: sasrec`, `use_summary: false` and `prompts.aligned_id_tokens: false` (its defaults) never
reads `user_summaries`, `aligned_item_embeddings` or `sasrec_text_model`. This writes, through the
project's catalog, only those of the three that do not exist yet: an empty `user_summaries`, an empty
`aligned_item_embeddings` (a model that reads it refuses it: it must hold every item) and a
`sasrec_text_model` with no weights (the SASRecText model cannot be built from it), each marked as a
stand-in. Run the real stages instead for fusion, the ablations that read them, or sasrec_text.
Run it from the project root after `data_processing`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

STAND_IN = "stand-in written by benchmarks/laser_standins.py: no trained model, for a laser run that does not read it"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="amazon", help="the Kedro environment of the run (conf/<env>)")
    args = parser.parse_args()

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    project = Path.cwd()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=args.env) as session:
        catalog = session.load_context().catalog
    stand_ins = {
        "user_summaries": pd.DataFrame({"user_idx": pd.Series(dtype="int64"), "cutoff": pd.Series(dtype="str"),
                                        "method": pd.Series(dtype="str"), "summary": pd.Series(dtype="str"),
                                        "key": pd.Series(dtype="str")}),
        "aligned_item_embeddings": pd.DataFrame({"item_idx": pd.Series(dtype="int64"), "item_id": pd.Series(dtype="str"),
                                                 "title": pd.Series(dtype="str"), "embedding": pd.Series(dtype="object")}),
        "sasrec_text_model": {"config": {"stand_in": STAND_IN}, "state_dict": {}},
    }
    for name, data in stand_ins.items():
        if catalog.exists(name):
            print(f"{name}: exists, left as it is")
            continue
        catalog.save(name, data)
        print(f"{name}: stand-in written")


if __name__ == "__main__":
    main()
