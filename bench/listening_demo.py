"""What a demo user sees with and without sound: SynthAVS test clips written as videos, run through
demo/demo.py with their soundtrack and with ``--mute``, for one or more trained models (docs/listening.md).

    .venv/bin/python -m bench.listening_demo --config-file configs/synthavs/aqformer_tiny_s4.yaml \
        --model without_negatives=OUT_A/model_final.pth --model with_negatives=OUT_B/model_final.pth \
        --clips 20 --output docs/measurements/listening/demo_s4 [KEY VALUE ...]

For the first ``--clips`` clips of the test dataset (default: the config's first DATASETS.TEST): the clip's
frames and WAV become an MP4 at 1 frame per second (the frames' own size, the WAV re-encoded as AAC:
:func:`aqformer_d2.audio.video.write_video`), and ``demo/demo.py`` runs on it exactly as a user would run it,
once with the sound and once with ``--mute``, per model. Per model and condition: frames flagged "no sounding
object" (``summary.json``) out of all frames, and the mean foreground share of a frame. Writes
``{output}/listening_demo.json`` (figures, commands, per-clip flags), ``{output}/listening_demo.md`` and
``{output}/listening_demo.png`` (the first clip: each model's overlay frames with the sound and muted).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from fractions import Fraction
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "demo", "demo.py")
CONDITIONS = (("sound", []), ("muted", ["--mute"]))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the models' config (e.g. configs/synthavs/aqformer_tiny_s4.yaml)")
    p.add_argument("--model", action="append", required=True, metavar="NAME=WEIGHTS",
                   help="a trained model, named (repeat for several)")
    p.add_argument("--dataset", default=None, help="test dataset (default: the config's first DATASETS.TEST)")
    p.add_argument("--clips", type=int, default=20, help="the first N clips of the test dataset")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", required=True)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (e.g. DATASETS.SYNTHAVS_ROOT)")
    return p.parse_args(argv)


def parse_models(specs: Sequence[str]) -> Dict[str, str]:
    """``["name=path", ...]`` -> ``{name: path}``; a missing ``=``, a repeated name or a missing file is an error."""
    models: Dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--model {spec!r}: expected NAME=WEIGHTS")
        if name in models:
            raise SystemExit(f"--model {spec!r}: the name {name!r} is given twice")
        if not os.path.isfile(path):
            raise SystemExit(f"--model {spec!r}: {path} does not exist")
        models[name] = path
    return models


def write_clip_video(record: Dict, path: str) -> None:
    """One dataset clip (``frame_files`` [T], ``audio_wav_file``) as an MP4 at 1 frame per second with its sound."""
    from aqformer_d2.audio.video import write_video

    frames = [np.asarray(Image.open(f).convert("RGB")) for f in record["frame_files"]]
    height, width = frames[0].shape[:2]
    write_video(path, frames, width, height, Fraction(1), audio_path=record["audio_wav_file"])


def run_demo(config_file: str, weights: str, video: str, out_dir: str, flags: List[str], opts: List[str],
             threads: int) -> Dict:
    """demo/demo.py on one video (the user's command line); returns its summary.json."""
    cmd = [sys.executable, DEMO, "--config-file", config_file, "--input", video, "--output", out_dir,
           "--device", "cpu", "--no-progress", *flags, "--opts", "MODEL.WEIGHTS", weights, *opts]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"demo failed on {video} ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    with open(os.path.join(out_dir, "summary.json")) as f:
        return json.load(f)


def summarise(summaries: Sequence[Dict]) -> Dict:
    """Flagged frames, all frames and the mean foreground share over the clips' summaries."""
    flags = [flag for s in summaries for clip in s["clips"] for flag in clip["no_sounding_object"]]
    areas = [a for s in summaries for clip in s["clips"] for a in clip["foreground_fraction"]]
    return {"frames_flagged": int(sum(flags)), "frames": len(flags), "share_flagged": float(np.mean(flags)),
            "mean_foreground": float(np.mean(areas))}


def figure(rows: Sequence[tuple], path: str, cell: int = 112) -> None:
    """One row per (label, overlay.mp4): its frames side by side, the label above."""
    from PIL import ImageDraw

    from aqformer_d2.audio.video import iter_video_frames

    strips = [(label, [np.asarray(Image.fromarray(f).resize((cell, cell))) for _, f in iter_video_frames(video)])
              for label, video in rows]
    cols = max(len(frames) for _, frames in strips)
    label_h = 14
    canvas = Image.new("RGB", (cols * cell, len(strips) * (cell + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (label, frames) in enumerate(strips):
        top = r * (cell + label_h)
        draw.text((2, top + 1), label, fill=(0, 0, 0))
        for c, frame in enumerate(frames):
            canvas.paste(Image.fromarray(frame), (c * cell, top + label_h))
    canvas.save(path)


def main(argv=None):
    args = parse_args(argv)
    models = parse_models(args.model)
    from aqformer_d2.engine import build_cfg
    from detectron2.data import DatasetCatalog

    cfg = build_cfg(args.config_file, list(args.opts))
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    records = DatasetCatalog.get(dataset)[: args.clips]
    os.makedirs(args.output, exist_ok=True)
    videos = []
    for rec in records:
        video = os.path.join(args.output, "videos", f"{rec['video_id']}.mp4")
        os.makedirs(os.path.dirname(video), exist_ok=True)
        write_clip_video(rec, video)
        videos.append(video)
    results, per_clip, fig_rows = {}, {}, []
    for name, weights in models.items():
        for cond, flags in CONDITIONS:
            summaries = []
            for rec, video in zip(records, videos):
                out_dir = os.path.join(args.output, "demo", name, cond, rec["video_id"])
                summaries.append(run_demo(args.config_file, weights, video, out_dir, flags, list(args.opts),
                                          args.threads))
            results[f"{name}/{cond}"] = summarise(summaries)
            per_clip[f"{name}/{cond}"] = {rec["video_id"]: s["num_frames_without_sounding_object"]
                                          for rec, s in zip(records, summaries)}
            fig_rows.append((f"{name}, {cond}",
                             os.path.join(args.output, "demo", name, cond, records[0]["video_id"], "overlay.mp4")))
    report = {
        "command": ".venv/bin/python -m bench.listening_demo " + " ".join(argv if argv is not None else sys.argv[1:]),
        "dataset": dataset, "clips": [r["video_id"] for r in records], "models": models,
        "results": results, "flagged_frames_per_clip": per_clip,
    }
    with open(os.path.join(args.output, "listening_demo.json"), "w") as f:
        json.dump(report, f, indent=2)
    lines = [f"demo/demo.py on {len(records)} clips of `{dataset}` written as videos (1 fps, their WAV as AAC)", "",
             "| model | audio | frames flagged \"no sounding object\" | mean foreground share |", "|---|---|---:|---:|"]
    for key, r in results.items():
        name, cond = key.split("/")
        lines.append(f"| {name} | {cond} | {r['frames_flagged']} / {r['frames']} ({100 * r['share_flagged']:.1f} %) "
                     f"| {r['mean_foreground']:.3f} |")
    with open(os.path.join(args.output, "listening_demo.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    figure(fig_rows, os.path.join(args.output, "listening_demo.png"))
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
