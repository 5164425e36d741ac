#!/usr/bin/env python
"""Generate SynthAVS, the synthetic audio-visual segmentation benchmark, in the AVSBench layout.

Example::

    python datasets/prepare_synthavs.py --root datasets/SynthAVS --variant both --seed 0
    python datasets/prepare_synthavs.py --root datasets/SynthAVS_tiny --n-train 200 --n-val 20 --n-test 20 --image-size 128
    python datasets/prepare_synthavs.py --root datasets/SynthAVS_semantic --avss --image-size 96
    python datasets/prepare_synthavs.py --root datasets/SynthAVS --variant both --seed 0 --workers 8

--workers N synthesizes clips in N processes (SynthAVS-object only); the files are byte-identical to those
of one process.

--avss writes SynthAVS-semantic in the AVSBench-semantic layout instead (v1s / v1m / v2-like subsets, K = 9
classes; registered as synthavs_avss_*; --n-* count clips per subset; --variant and --num-categories do
not apply).

Re-running with the same parameters on a completed dataset does nothing; different parameters
are refused unless --overwrite is given. See docs/synthavs.md.
"""
import argparse
import logging
import sys
import time
from typing import List, Optional

from aqformer_d2.data.synthavs import (
    DEFAULT_SPLIT_SIZES,
    MAX_CATEGORIES,
    MIN_CATEGORIES,
    SEMANTIC_DEFAULT_SPLIT_SIZES,
    generate_synthavs,
    generate_synthavs_semantic,
)

logger = logging.getLogger("prepare_synthavs")


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from e
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a positive integer, got 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = ", ".join(f"{v.upper()} {s['train']}/{s['val']}/{s['test']}" for v, s in DEFAULT_SPLIT_SIZES.items())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="output folder (gets Single-source/ and Multi-sources/)")
    sem = ", ".join(f"{v} {s['train']}/{s['val']}/{s['test']}" for v, s in SEMANTIC_DEFAULT_SPLIT_SIZES.items())
    parser.add_argument("--avss", action="store_true",
                        help=f"write SynthAVS-semantic (AVSBench-semantic layout; default clips per subset: {sem})")
    parser.add_argument("--variant", choices=("s4", "ms3", "both"), default="both")
    parser.add_argument("--seed", type=_non_negative_int, default=0)
    parser.add_argument("--n-train", type=_non_negative_int, default=None, help=f"clips per variant (default: {defaults})")
    parser.add_argument("--n-val", type=_non_negative_int, default=None)
    parser.add_argument("--n-test", type=_non_negative_int, default=None)
    parser.add_argument("--image-size", type=int, default=224, help="square frame side in pixels (>= 32)")
    parser.add_argument(
        "--num-categories", type=int, default=MAX_CATEGORIES, help=f"category pool size, {MIN_CATEGORIES}..{MAX_CATEGORIES}"
    )
    parser.add_argument("--snr-db", type=float, default=10.0, help="source-to-background-noise ratio in dB")
    parser.add_argument("--no-noise", action="store_true", help="no background noise (ignores --snr-db)")
    parser.add_argument("--overwrite", action="store_true", help="replace a SynthAVS dataset made with other parameters")
    parser.add_argument("--workers", type=_positive_int, default=1,
                        help="processes that synthesize clips (SynthAVS-object only; same files for any number)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    start = time.perf_counter()
    common = dict(
        seed=args.seed,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        image_size=args.image_size,
        snr_db=None if args.no_noise else args.snr_db,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    if args.avss and args.workers != 1:
        logger.error("--workers applies to SynthAVS-object only; SynthAVS-semantic (--avss) is written by one process")
        return 2
    try:
        if args.avss:
            manifest = generate_synthavs_semantic(args.root, **common)
        else:
            manifest = generate_synthavs(
                args.root, variant=args.variant, num_categories=args.num_categories, workers=args.workers, **common
            )
    except (ValueError, FileExistsError) as e:
        logger.error("%s", e)
        return 2
    elapsed = time.perf_counter() - start
    if manifest["skipped"]:
        logger.info("%s already holds this SynthAVS dataset; nothing generated", args.root)
    else:
        n = sum(sum(s.values()) for s in manifest["params"]["splits"].values())
        logger.info("generated %d clips in %.1f s (%.2f clips/s) under %s", n, elapsed, n / max(elapsed, 1e-9), args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
