"""The swapped-audio condition of a SynthAVS-S4 listening record, split by whether the donor clip's sounding
category is on screen in the clip that hears it (docs/listening.md, "What the negatives teach").

    .venv/bin/python -m bench.listening_swap_split --config-file CONFIG --record DIR/swap.json [--seed 0] [KEY VALUE ...]

A donor category that no object of the clip has is an off-screen sound *with* SynthAVS's background noise,
unlike the ``offscreen`` negative (a lone source without that noise); a donor category that is on screen makes
one of the clip's objects sound. Per group: clips, share of frames with predicted foreground, mean area.
``--seed`` must be the listening run's (the swap derangement's seed).
"""
from __future__ import annotations

import argparse
import json
from typing import Dict

from bench.common import frame_group_line, frame_group_summary


def split_swap(records: Dict, clips, seed: int) -> Dict[str, Dict]:
    """``records``: the ``clips`` of ``swap.json``; ``clips``: the test dataset's dicts (SynthAVS, with
    "category" and "synthavs_category_ids"). Returns per group ("donor_on_screen", "donor_off_screen") the
    number of clips, the share of frames with foreground and the mean area."""
    from aqformer_d2.data.datasets.audio_controls import swap_audio
    from aqformer_d2.data.synthavs.clip import category_names

    swapped = {d["video_id"]: d for d in swap_audio(clips, seed)}
    by_id = {d["video_id"]: d for d in clips}
    groups: Dict[str, list] = {"donor_on_screen": [], "donor_off_screen": []}
    for rec in records:
        clip = swapped[rec["video_id"]]
        donor = by_id[clip["audio_from_video_id"]]
        names = category_names(clip["synthavs_num_categories"])
        donor_id = names.index(donor["category"])
        key = "donor_on_screen" if donor_id in clip["synthavs_category_ids"] else "donor_off_screen"
        groups[key].append(rec)
    return {key: frame_group_summary(recs) for key, recs in groups.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--record", required=True, help="swap.json written by bench.listening")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    from aqformer_d2.engine import build_cfg
    from detectron2.data import DatasetCatalog

    with open(args.record) as f:
        record = json.load(f)
    build_cfg(args.config_file, list(args.opts))  # registers the datasets under the configured roots
    dataset = record["dataset"].removesuffix("_audioswap")
    result = split_swap(record["clips"], DatasetCatalog.get(dataset), args.seed)
    for key, row in result.items():
        print(f"{key}: {frame_group_line(row)}")
    return result


if __name__ == "__main__":
    main()
