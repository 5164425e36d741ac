"""SynthAVS: layout, determinism, clip design rules (silent objects, MS3 mixtures), masks, sounds.

Every generation here is tiny (a few clips per split, 64x64 or smaller frames).
"""
import csv
import filecmp
import importlib.util
import json
import os
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from aqformer_d2.audio.logmel import waveform_to_examples
from aqformer_d2.data.synthavs import (
    CLIPS_METADATA_NAME,
    MANIFEST_NAME,
    MAX_CATEGORIES,
    category_names,
    generate_synthavs,
    synthesize_clip,
)
from aqformer_d2.utils.safe_pickle import load_pickle_restricted
from aqformer_d2.data.synthavs.sounds import NUM_SAMPLES, SAMPLE_RATE, SEGMENT_SAMPLES, background_noise, category_sound

SIZE = 64
N = 4  # clips per split
SPLITS = ("train", "val", "test")
TINY = dict(variant="both", seed=0, n_train=N, n_val=N, n_test=N, image_size=SIZE, num_categories=MAX_CATEGORIES, snr_db=10.0)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthavs") / "SynthAVS"
    manifest = generate_synthavs(root, **TINY)
    assert manifest["complete"] is True and manifest["skipped"] is False
    return str(root)


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _records(root, variant):
    sub = "Single-source" if variant == "s4" else "Multi-sources"
    with open(os.path.join(root, sub, CLIPS_METADATA_NAME), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _all_files(root):
    out = set()
    for dirpath, _, files in os.walk(root):
        for f in files:
            out.add(os.path.relpath(os.path.join(dirpath, f), root))
    return out


def _expected_files(root):
    """Every file the AVSBench layout requires for the clips listed in the CSVs."""
    expected = {MANIFEST_NAME, f"Single-source/{CLIPS_METADATA_NAME}", f"Multi-sources/{CLIPS_METADATA_NAME}"}
    expected |= {"Single-source/s4_meta_data.csv", "Multi-sources/ms3_meta_data.csv"}
    _, s4_rows = _read_csv(os.path.join(root, "Single-source", "s4_meta_data.csv"))
    for name, _, cat, split in s4_rows:
        base = "Single-source/s4_data"
        expected |= {f"{base}/visual_frames/{split}/{cat}/{name}/{name}_{i}.png" for i in range(1, 6)}
        masks = [1] if split == "train" else range(1, 6)
        expected |= {f"{base}/gt_masks/{split}/{cat}/{name}/{name}_{i}.png" for i in masks}
        expected |= {f"{base}/audio_wav/{split}/{cat}/{name}.wav", f"{base}/audio_log_mel/{split}/{cat}/{name}.pkl"}
    header, ms3_rows = _read_csv(os.path.join(root, "Multi-sources", "ms3_meta_data.csv"))
    split_col = header.index("split")
    for row in ms3_rows:
        name, split = row[0], row[split_col]
        base = "Multi-sources/ms3_data"
        expected |= {f"{base}/visual_frames/{name}/{name}.mp4_{i}.png" for i in range(1, 6)}
        expected |= {f"{base}/gt_masks/{split}/{name}/{name}_{i}.png" for i in range(1, 6)}
        expected |= {f"{base}/audio_wav/{split}/{name}.wav", f"{base}/audio_log_mel/{split}/{name}.pkl"}
    return {p.replace("/", os.sep) for p in expected}


def test_csvs_have_avsbench_columns_and_splits(tiny_root):
    header, rows = _read_csv(os.path.join(tiny_root, "Single-source", "s4_meta_data.csv"))
    assert header == ["name", "start", "category", "split"]
    assert [r[3] for r in rows] == ["train"] * N + ["val"] * N + ["test"] * N
    assert all(r[1] == "0" and r[2] in category_names() for r in rows)
    assert len({r[0] for r in rows}) == 3 * N
    header, rows = _read_csv(os.path.join(tiny_root, "Multi-sources", "ms3_meta_data.csv"))
    assert header[0] == "name" and "split" in header
    assert [r[header.index("split")] for r in rows] == ["train"] * N + ["val"] * N + ["test"] * N
    assert len({r[0] for r in rows}) == 3 * N


def test_layout_has_exactly_the_avsbench_files(tiny_root):
    expected = _expected_files(tiny_root)
    # 5 index files; S4: 5 frames + wav + pkl per clip, masks 1 (train) or 5; MS3: 5 frames + 5 masks + wav + pkl.
    assert len(expected) == 5 + 3 * N * 7 + N * 1 + 2 * N * 5 + 3 * N * 12
    assert _all_files(tiny_root) == expected  # S4 train: mask 1 only; no stray files


def test_file_formats(tiny_root):
    for rel in sorted(_expected_files(tiny_root)):
        path = os.path.join(tiny_root, rel)
        if "visual_frames" in rel:
            with Image.open(path) as im:
                assert im.format == "PNG" and im.mode == "RGB" and im.size == (SIZE, SIZE)
        elif "gt_masks" in rel:
            with Image.open(path) as im:
                assert im.size == (SIZE, SIZE)
                values = set(np.unique(np.asarray(im)).tolist())
                if rel.startswith("Single-source"):
                    assert im.mode == "L" and values <= {0, 255}
                else:
                    assert im.mode == "P" and values <= {0, 1}
        elif rel.endswith(".wav"):
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.frames, info.subtype) == (SAMPLE_RATE, 1, NUM_SAMPLES, "PCM_16")
        elif rel.endswith(".pkl"):
            with open(path, "rb") as fh:
                examples = pickle.load(fh)
            assert isinstance(examples, torch.Tensor)
            assert examples.shape == (5, 1, 96, 64) and examples.dtype == torch.float32
            torch.testing.assert_close(load_pickle_restricted(path), examples, rtol=0, atol=0)
            # The pickle is the project's VGGish front end applied to the WAV next to it.
            wav, sr = sf.read(path.replace("audio_log_mel", "audio_wav")[:-4] + ".wav", dtype="int16")
            expected = waveform_to_examples(wav.astype(np.float32) / 32768.0, sr, num_examples=5)
            torch.testing.assert_close(examples, expected)


def test_same_seed_is_byte_identical_and_other_seed_differs(tiny_root, tmp_path):
    again = tmp_path / "again"
    generate_synthavs(again, **TINY)
    files = sorted(_all_files(tiny_root))
    assert files == sorted(_all_files(str(again)))
    _, mismatch, errors = filecmp.cmpfiles(tiny_root, str(again), files, shallow=False)
    assert mismatch == [] and errors == []

    other = tmp_path / "other"
    generate_synthavs(other, **dict(TINY, seed=1))
    a = os.path.join(tiny_root, "Multi-sources", "ms3_data", "visual_frames", "synth_ms3_train_00000", "synth_ms3_train_00000.mp4_1.png")
    b = os.path.join(str(other), os.path.relpath(a, tiny_root))
    assert not filecmp.cmp(a, b, shallow=False)
    wa = os.path.join(tiny_root, "Multi-sources", "ms3_data", "audio_wav", "train", "synth_ms3_train_00000.wav")
    wb = os.path.join(str(other), os.path.relpath(wa, tiny_root))
    assert not filecmp.cmp(wa, wb, shallow=False)


def test_workers_write_byte_identical_files_in_the_same_order(tiny_root, tmp_path):
    """Clips made in two worker processes: the same files, byte for byte, and the same csv/jsonl row order."""
    parallel = tmp_path / "parallel"
    manifest = generate_synthavs(parallel, workers=2, **TINY)
    assert manifest["complete"] is True and manifest["skipped"] is False
    files = sorted(_all_files(tiny_root))
    assert files == sorted(_all_files(str(parallel)))
    _, mismatch, errors = filecmp.cmpfiles(tiny_root, str(parallel), files, shallow=False)
    assert mismatch == [] and errors == []


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_bad_worker_counts_are_refused(tmp_path, workers):
    with pytest.raises(ValueError, match="workers"):
        generate_synthavs(tmp_path / "x", variant="s4", n_train=1, n_val=0, n_test=0, image_size=32, workers=workers)
    assert not os.path.exists(tmp_path / "x" / MANIFEST_NAME)


# Objects per clip and the fewest silent (never sounding) ones: S4 2-4 / 1, MS3 4-5 / 2.
_OBJECTS_AND_SILENT = {"s4": ((2, 4), 1), "ms3": ((4, 5), 2)}


@pytest.mark.parametrize("variant", ["s4", "ms3"])
def test_every_clip_has_visible_objects_and_silent_distractors(tiny_root, variant):
    records = _records(tiny_root, variant)
    assert len(records) == 3 * N
    (lo, hi), min_silent = _OBJECTS_AND_SILENT[variant]
    categories_seen_silent, categories_seen_sounding = set(), set()
    for rec in records:
        objects = rec["objects"]
        assert lo <= len(objects) <= hi
        cats = [o["category"] for o in objects]
        assert len(set(cats)) == len(cats), "two objects of the same category in one clip"
        for o in objects:
            assert all(v > 0 for v in o["visible_pixels"]), "an object is fully hidden in some frame"
            assert all(v >= 0.5 * f for v, f in zip(o["visible_pixels"], o["full_pixels"]))
        silent = [o for o in objects if not any(o["sounding"])]
        assert len(silent) >= min_silent
        categories_seen_silent |= {o["category"] for o in silent}
        categories_seen_sounding |= {o["category"] for o in objects if any(o["sounding"])}
    # The pool is shared: categories appear sounding in one clip and silent in another.
    assert categories_seen_silent & categories_seen_sounding


def test_s4_has_one_object_sounding_all_the_time(tiny_root):
    _, rows = _read_csv(os.path.join(tiny_root, "Single-source", "s4_meta_data.csv"))
    csv_category = {r[0]: r[2] for r in rows}
    for rec in _records(tiny_root, "s4"):
        sounding = [o for o in rec["objects"] if any(o["sounding"])]
        assert len(sounding) == 1 and all(sounding[0]["sounding"])
        assert rec["category"] == sounding[0]["category"] == csv_category[rec["name"]]
        assert all(s == [rec["category"]] for s in rec["sounding_categories"])


def test_ms3_sounding_set_changes_every_second_with_mixtures_and_rare_silence(tiny_root):
    for rec in _records(tiny_root, "ms3"):
        sets = [tuple(s) for s in rec["sounding_categories"]]
        assert all(a != b for a, b in zip(sets, sets[1:])), f"{rec['name']}: the sounding set repeats: {sets}"
    # Statistics over more clips (in memory, tiny frames).
    counts, foreground_share = [], []
    for i in range(40):
        clip = synthesize_clip(3, "ms3", "train", i, image_size=32)
        assert (clip.sounding[1:] != clip.sounding[:-1]).any(axis=1).all()
        counts.extend(clip.sounding.sum(axis=1).tolist())
        assert (~clip.sounding.any(axis=0)).sum() >= 2  # two silent distractors
        # Share of the clip's visible object pixels that are ground truth.
        foreground_share.append(clip.gt_masks.sum() / clip.visible_masks.sum())
    counts = np.array(counts)
    assert (counts >= 2).mean() > 0.2, "too few seconds with two objects sounding at once"
    assert (counts == 1).mean() > 0.5, "one source per second must be the common case"
    assert 0 < (counts == 0).mean() < 0.15, "silent seconds must exist but stay rare"
    # An audio-blind model sees every object and cannot tell which ones sound: segmenting all of them
    # puts most of its foreground on silent objects (here ~28% of object pixels are ground truth).
    assert np.mean(foreground_share) < 0.4 and np.max(foreground_share) < 0.6


def test_masks_are_union_of_visible_sounding_pixels(tiny_root):
    for variant in ("s4", "ms3"):
        for rec in _records(tiny_root, variant):
            clip = synthesize_clip(0, variant, rec["split"], rec["index"], image_size=SIZE, num_categories=MAX_CATEGORIES)
            assert clip.name == rec["name"]
            vis, full = clip.visible_masks, clip.full_masks  # [5, K, H, W]
            K = vis.shape[1]
            # Visible pixels: the object's shape minus every object drawn above it.
            for k in range(K):
                above = full[:, k + 1 :].any(axis=1)
                np.testing.assert_array_equal(vis[:, k], full[:, k] & ~above)
            assert vis.sum(axis=1).max() <= 1  # visible masks are disjoint
            assert [o["visible_pixels"] for o in rec["objects"]] == vis.sum(axis=(2, 3)).T.tolist()
            if variant == "s4":
                cat = rec["category"]
                frame_dir = os.path.join(tiny_root, "Single-source", "s4_data", "visual_frames", rec["split"], cat, rec["name"])
                mask_dir = frame_dir.replace("visual_frames", "gt_masks")
                frame_files = [os.path.join(frame_dir, f"{rec['name']}_{i}.png") for i in range(1, 6)]
            else:
                frame_dir = os.path.join(tiny_root, "Multi-sources", "ms3_data", "visual_frames", rec["name"])
                mask_dir = os.path.join(tiny_root, "Multi-sources", "ms3_data", "gt_masks", rec["split"], rec["name"])
                frame_files = [os.path.join(frame_dir, f"{rec['name']}.mp4_{i}.png") for i in range(1, 6)]
            for t in range(5):
                np.testing.assert_array_equal(np.asarray(Image.open(frame_files[t])), clip.frames[t])
                mask_file = os.path.join(mask_dir, f"{rec['name']}_{t + 1}.png")
                if not os.path.exists(mask_file):
                    assert variant == "s4" and rec["split"] == "train" and t > 0
                    continue
                written = np.asarray(Image.open(mask_file)) > 0
                union = vis[t][clip.sounding[t]].any(axis=0) if clip.sounding[t].any() else np.zeros((SIZE, SIZE), bool)
                np.testing.assert_array_equal(written, union)
            # The sounding objects' pixels actually differ from the silent objects' (mask is not all objects).
            silent = ~clip.sounding.any(axis=0)
            assert not (np.asarray(Image.open(os.path.join(mask_dir, f"{rec['name']}_1.png"))) > 0)[vis[0][silent].any(axis=0)].any()


def test_category_sounds_are_distinguishable_in_logmel():
    """Time-pooled log-mel of 0.96 s examples: categories are far apart, instances of one category close."""
    rng = np.random.default_rng(123)
    feats = []  # [C, n_examples, 128]
    for c in range(MAX_CATEGORIES):
        per_cat = []
        for _ in range(3):
            x = 0.1 * category_sound(c, rng) + 0.1 * 10 ** (-10 / 20) * background_noise(rng)
            ex = waveform_to_examples(x.astype(np.float32), SAMPLE_RATE, num_examples=5)[:, 0]  # [5, 96, 64]
            per_cat.append(torch.cat([ex.mean(dim=1), ex.amax(dim=1)], dim=-1).numpy())
        feats.append(np.concatenate(per_cat))
    feats = np.stack(feats)
    centroids = feats.mean(axis=1)
    within = np.linalg.norm(feats - centroids[:, None], axis=-1)  # [C, n]
    between = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1)
    between[np.diag_indices(MAX_CATEGORIES)] = np.inf
    assert between.min() > 2.0 * within.mean()
    assert between.min() > within.max()
    nearest = np.linalg.norm(feats[:, :, None] - centroids[None, None], axis=-1).argmin(axis=-1)
    assert (nearest == np.arange(MAX_CATEGORIES)[:, None]).all()


def test_ms3_audio_follows_the_schedule():
    """Each VGGish example window (0.96 s) carries exactly its frame's sources: silent seconds hold only noise."""
    for i in range(60):
        clip = synthesize_clip(0, "ms3", "val", i, image_size=32)
        active = clip.sounding.any(axis=1)
        if not active.all():
            break
    else:
        pytest.fail("no MS3 clip with a silent second among 60")
    x = clip.waveform.astype(np.float64) / 32768.0
    seg = SEGMENT_SAMPLES
    rms = np.array([np.sqrt(np.mean(x[t * seg + 200 : (t + 1) * seg - 200] ** 2)) for t in range(5)])
    # Noise is 10 dB below one source: a silent window is at least ~2x quieter than any sounding one.
    assert rms[~active].max() < 0.5 * rms[active].min()
    # A window with two sources is louder than the quietest single-source window of the same clip (on average).
    counts = clip.sounding.sum(axis=1)
    if (counts == 2).any() and (counts == 1).any():
        assert rms[counts == 2].mean() > rms[counts == 1].min()


def test_rerun_skips_and_changed_parameters_are_refused(tmp_path):
    root = tmp_path / "ds"
    small = dict(variant="s4", seed=0, n_train=1, n_val=1, n_test=0, image_size=32)
    assert generate_synthavs(root, **small)["skipped"] is False
    wav = next(p for p in _all_files(str(root)) if p.endswith(".wav"))
    mtime = os.path.getmtime(os.path.join(root, wav))
    assert generate_synthavs(root, **small)["skipped"] is True
    assert os.path.getmtime(os.path.join(root, wav)) == mtime
    with pytest.raises(FileExistsError, match="different parameters.*seed"):
        generate_synthavs(root, **dict(small, seed=5))
    manifest = generate_synthavs(root, **dict(small, seed=5, variant="ms3"), overwrite=True)
    assert manifest["skipped"] is False and manifest["params"]["seed"] == 5
    assert not os.path.exists(root / "Single-source")  # old variant removed
    # An interrupted run (complete: false) with the same parameters is regenerated.
    mpath = root / MANIFEST_NAME
    data = json.loads(mpath.read_text())
    data["complete"] = False
    mpath.write_text(json.dumps(data))
    assert generate_synthavs(root, **dict(small, seed=5, variant="ms3"))["skipped"] is False
    assert json.loads(mpath.read_text())["complete"] is True


def test_refuses_foreign_avsbench_folder(tmp_path):
    (tmp_path / "Single-source").mkdir()
    with pytest.raises(FileExistsError, match="not a SynthAVS dataset"):
        generate_synthavs(tmp_path, variant="s4", n_train=1, n_val=0, n_test=0, image_size=32, overwrite=True)
    assert os.listdir(tmp_path / "Single-source") == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(variant="s5"), "variant"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(image_size=16), "image_size"),
        (dict(num_categories=7), "num_categories"),
        (dict(num_categories=MAX_CATEGORIES + 1), "num_categories"),
        (dict(n_train=-2), "n_train"),
        (dict(n_val=2.0), "n_val"),
        (dict(n_train=0, n_val=0, n_test=0), "nothing to generate"),
        (dict(snr_db=float("nan")), "snr_db"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, kwargs, match):
    args = dict(variant="s4", n_train=1, n_val=0, n_test=0, image_size=32)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        generate_synthavs(tmp_path / "x", **args)
    assert not os.path.exists(tmp_path / "x" / MANIFEST_NAME)


def test_synthesize_clip_rejects_bad_split():
    with pytest.raises(ValueError, match="split"):
        synthesize_clip(0, "s4", "training", 0)


def test_command_line(tmp_path):
    path = os.path.join(os.path.dirname(__file__), "..", "..", "datasets", "prepare_synthavs.py")
    spec = importlib.util.spec_from_file_location("prepare_synthavs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = str(tmp_path / "cli")
    argv = ["--root", root, "--variant", "ms3", "--n-train", "1", "--n-val", "1", "--n-test", "1", "--image-size", "32", "--quiet"]
    assert module.main(argv) == 0
    manifest = json.loads((tmp_path / "cli" / MANIFEST_NAME).read_text())
    assert manifest["complete"] is True and manifest["params"]["image_size"] == 32
    assert module.main(argv) == 0  # skip
    assert module.main(argv[:-1] + ["--seed", "3", "--quiet"]) == 2  # refused: different parameters
    with pytest.raises(SystemExit):
        module.main(["--root", root, "--variant", "xyz"])
    with pytest.raises(SystemExit):
        module.main(["--root", root, "--workers", "0"])
    assert module.main(["--root", str(tmp_path / "sem"), "--avss", "--workers", "2", "--quiet"]) == 2
    assert not (tmp_path / "sem").exists()
