"""bench.listening_swap_split: swapped-audio clips grouped by whether the donor's sounding category is on screen."""
from aqformer_d2.data.datasets.audio_controls import swap_audio
from aqformer_d2.data.synthavs.clip import category_names
from bench import listening_swap_split


def _clip(i, category, on_screen):
    names = category_names(8)
    return {"video_id": f"c{i}", "category": category, "synthavs_num_categories": 8,
            "synthavs_category_ids": [names.index(c) for c in on_screen],
            "audio_wav_file": f"c{i}.wav", "audio_logmel_file": f"c{i}.pkl", "frame_files": ["f"] * 5}


def test_groups_follow_the_donor_category():
    names = category_names(8)
    clips = [_clip(0, names[0], [names[0], names[1]]), _clip(1, names[1], [names[1], names[2]]),
             _clip(2, names[2], [names[2], names[3]]), _clip(3, names[3], [names[3], names[0]])]
    swapped = {d["video_id"]: d for d in swap_audio(clips, 0)}
    by_id = {c["video_id"]: c for c in clips}
    records = [{"video_id": c["video_id"], "any_fg": [i % 2 == 0] * 5, "area": [0.1 * i] * 5}
               for i, c in enumerate(clips)]
    out = listening_swap_split.split_swap(records, clips, seed=0)
    expect_on = [c["video_id"] for c in clips
                 if names.index(by_id[swapped[c["video_id"]]["audio_from_video_id"]]["category"])
                 in c["synthavs_category_ids"]]
    assert out["donor_on_screen"]["clips"] == len(expect_on)
    assert out["donor_on_screen"]["clips"] + out["donor_off_screen"]["clips"] == 4
    on = [r for r in records if r["video_id"] in expect_on]
    if on:
        assert out["donor_on_screen"]["foreground_frames"] == sum(r["any_fg"][0] for r in on) / len(on)
