"""An off-screen condition of a SynthAVS listening record (``offscreen.json`` or ``offscreen_scene.json``),
split by the category whose sound the clips heard (docs/listening.md, "Which off-screen sounds draw masks").

    .venv/bin/python -m bench.listening_offscreen_split --config-file CONFIG --record DIR/offscreen_scene.json \\
        [KEY VALUE ...]

Each clip of an off-screen condition hears one category that has no object in it, drawn from the clip's
negative-audio spec (:func:`aqformer_d2.data.negative_audio.offscreen_category_of`, the same draw the
waveform is made from), so the split needs only the record: its dataset, condition and seed. Per category:
clips, share of frames with predicted foreground, mean predicted area.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Dict, List

from bench.common import frame_group_line, frame_group_summary


def split_offscreen(records: List[Dict], negative_dicts: List[Dict]) -> Dict[str, Dict]:
    """``records``: the ``clips`` of an off-screen record (``video_id``, ``any_fg`` ``[T]``, ``area`` ``[T]``);
    ``negative_dicts``: the condition's dataset dicts (each with its off-screen spec as ``"negative_audio"``,
    or, for a condition by pathway, in ``"pathway_negative_audio"``). Returns,
    per off-screen category name in category order, the category's sound name, the number of clips, the share
    of frames with foreground and the mean area (categories no clip heard are left out).

    Raises:
        ValueError: a record's clip is not in ``negative_dicts``.
    """
    from aqformer_d2.data.negative_audio import offscreen_category_of
    from aqformer_d2.data.synthavs.clip import category_names
    from aqformer_d2.data.synthavs.sounds import CATEGORY_SOUNDS

    by_id = {d["video_id"]: d for d in negative_dicts}
    groups: Dict[int, list] = {}
    for rec in records:
        d = by_id.get(rec["video_id"])
        if d is None:
            raise ValueError(f"clip {rec['video_id']!r} of the record is not in the condition's dataset")
        # a condition by pathway (bench.listening --by-pathway) plays the sound in some pathways only
        spec = next(iter(d["pathway_negative_audio"].values())) if "pathway_negative_audio" in d else d["negative_audio"]
        groups.setdefault(offscreen_category_of(spec, d), []).append(rec)
    out = {}
    for category in sorted(groups):
        recs = groups[category]
        num_categories = by_id[recs[0]["video_id"]]["synthavs_num_categories"]
        out[category_names(num_categories)[category]] = {"sound": CATEGORY_SOUNDS[category][0],
                                                         **frame_group_summary(recs)}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--record", required=True, help="offscreen.json or offscreen_scene.json written by bench.listening "
                                                   "(or one of its --by-pathway records, e.g. offscreen_scene@query.json)")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    from aqformer_d2.data.negative_audio import OFFSCREEN_KINDS
    from aqformer_d2.engine import build_cfg
    from aqformer_d2.engine.listening import condition_dataset
    from detectron2.data import DatasetCatalog

    with open(args.record) as f:
        record = json.load(f)
    condition = record["condition"]
    if condition["kind"] not in OFFSCREEN_KINDS or not condition["negative"]:
        raise SystemExit(f"{args.record}: condition {condition['name']!r} is not an off-screen negative "
                         f"({OFFSCREEN_KINDS}, heard by every pathway or by some with silence in the others)")
    build_cfg(args.config_file, list(args.opts))  # registers the datasets under the configured roots
    name = condition_dataset(record["dataset"], condition, record["seed"])
    result = split_offscreen(record["clips"], DatasetCatalog.get(name))
    argv_shown = sys.argv[1:] if argv is None else list(argv)
    print(f"# `python -m bench.listening_offscreen_split {shlex.join(argv_shown)}`")
    print(f"# {condition['name']}, {len(record['clips'])} clips, condition seed {record['seed']}")
    for category, row in result.items():
        print(f"{category} ({row['sound']}): {frame_group_line(row)}")
    return result


if __name__ == "__main__":
    main()
