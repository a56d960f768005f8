"""Read a generated, gzipped Amazon dump as published and report lines per second and peak memory.

    python benchmarks/bench_readers.py                                  # 1,000,000 review lines, amazon2018
    python benchmarks/bench_readers.py --lines 20000 --format amazon2023

The dump is written first into a temporary folder, by a separate process, so that the peak memory
(this process's maximum resident set size) is the reader's alone: reviews with every field of the
release (review text included, ~8 per user, ~50 per item) and a metadata file that also lists a third
more items that no review names (the reader skips them). Figures: the lines read per second (the
gzipped bytes per second too), the peak RSS, the RSS before reading and the growth, and as the
baseline the memory the resulting tables take (pandas' deep ``memory_usage``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import random
import resource
import tempfile
import time
from pathlib import Path

import psutil

from llm_seqrec.data.amazon import read_amazon_dataset

WORDS = ("works fits great quality cheap sturdy broke returned exactly described small large tape glue "
         "screw drill bit blade metal plastic steel strong weak price shipping fast slow recommend").split()


def review(fmt: str, user: str, item: str, rng: random.Random) -> dict:
    text = " ".join(rng.choices(WORDS, k=rng.randint(10, 80)))
    seconds = 1_400_000_000 + 86_400 * rng.randrange(3_000)  # 2018 dates its reviews by the day, 2023 by the ms
    if fmt == "amazon2018":
        return {"overall": float(rng.randint(1, 5)), "verified": True, "reviewTime": "05 13, 2014",
                "reviewerID": user, "asin": item, "reviewerName": "A. Buyer", "reviewText": text,
                "summary": " ".join(rng.choices(WORDS, k=3)), "unixReviewTime": seconds}
    return {"rating": float(rng.randint(1, 5)), "title": " ".join(rng.choices(WORDS, k=3)), "text": text,
            "images": [], "asin": item, "parent_asin": item, "user_id": user,
            "timestamp": seconds * 1000 + rng.randrange(86_400_000),
            "helpful_vote": 0, "verified_purchase": True}


def metadata(fmt: str, item: str, rng: random.Random) -> dict:
    title = " ".join(rng.choices(WORDS, k=8)).title()
    description = [" ".join(rng.choices(WORDS, k=rng.randint(20, 120)))]
    categories = ["Industrial & Scientific", *rng.sample(WORDS, 2)]
    if fmt == "amazon2018":
        return {"category": categories, "description": description, "title": title, "also_buy": [],
                "brand": rng.choice(WORDS).title(), "rank": "1 in Industrial", "asin": item, "price": "$9.99"}
    return {"main_category": "Industrial & Scientific", "title": title, "average_rating": 4.5,
            "features": [" ".join(rng.choices(WORDS, k=10))], "description": description, "price": None,
            "categories": categories, "store": rng.choice(WORDS).title(), "parent_asin": item}


def generate(fmt: str, lines: int, folder: Path, seed: int) -> None:
    """``lines`` reviews (grouped by item, as the 2018 5-core files are) and the metadata, gzipped."""
    rng = random.Random(seed)
    n_users, n_items = max(lines // 8, 1), max(lines // 50, 1)
    items = [f"B{index:09d}" for index in range(n_items + n_items // 3)]  # the last third: never reviewed
    reviewed = sorted(rng.randrange(n_items) for _ in range(lines))
    with gzip.open(folder / "reviews.json.gz", "wt", compresslevel=6) as handle:
        for index in reviewed:
            user = f"A{rng.randrange(n_users):013d}"
            handle.write(json.dumps(review(fmt, user, items[index], rng)) + "\n")
    with gzip.open(folder / "meta.json.gz", "wt", compresslevel=6) as handle:
        for item in items:
            handle.write(json.dumps(metadata(fmt, item, rng)) + "\n")


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.1f} MiB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000, help="review lines to generate")
    parser.add_argument("--format", default="amazon2018", choices=["amazon2018", "amazon2023"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        writer = multiprocessing.get_context("fork").Process(target=generate, args=(args.format, args.lines, folder, args.seed))
        writer.start()
        writer.join()
        if writer.exitcode:
            raise SystemExit(f"generating the dump failed (exit {writer.exitcode})")
        reviews, meta = folder / "reviews.json.gz", folder / "meta.json.gz"
        n_meta = sum(1 for _ in gzip.open(meta, "rb"))
        gzipped = reviews.stat().st_size + meta.stat().st_size
        print(f"generated {args.format}: {args.lines:,} review lines ({mib(reviews.stat().st_size)} gzipped), "
              f"{n_meta:,} metadata lines ({mib(meta.stat().st_size)} gzipped) in {time.perf_counter() - start:.1f} s")

        before = psutil.Process().memory_info().rss
        start = time.perf_counter()
        interactions, items = read_amazon_dataset(args.format, reviews, meta)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB

    n_lines = args.lines + n_meta
    tables = sum(int(table.frame.memory_usage(deep=True).sum()) for table in (interactions, items))
    print(f"read {n_lines:,} lines in {seconds:.1f} s: {n_lines / seconds:,.0f} lines/s "
          f"({mib(gzipped / seconds)}/s of gzip)")
    print(f"rows: {len(interactions.frame):,} interactions, {len(items.frame):,} items "
          f"({items.unreviewed_rows:,} metadata lines of unreviewed items skipped)")
    print(f"peak RSS: {peak / 2**20:,.0f} MiB (before reading {before / 2**20:,.0f} MiB; reading added "
          f"{(peak - before) / 2**20:,.0f} MiB)")
    print(f"final tables: {tables / 2**20:,.1f} MiB (pandas deep memory usage; interactions "
          f"{mib(interactions.frame.memory_usage(deep=True).sum())}, items {mib(items.frame.memory_usage(deep=True).sum())}); "
          f"growth / tables = {(peak - before) / tables:.2f}x")


if __name__ == "__main__":
    main()
