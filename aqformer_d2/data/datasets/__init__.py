"""AVSBench-layout dataset registration.

Importing this package registers ``avsbench_{s4,ms3}_{train,val,test}``, ``avss_*`` (AVSBench-semantic),
``synthavs_*`` and ``synthavs_avss_*`` lazily under their default roots ($DETECTRON2_DATASETS, default
"datasets"), like detectron2's builtin datasets. Training code
re-registers with ``cfg.DATASETS.AVS_ROOT`` through :func:`register_all_avsbench_from_cfg`.
"""
from .register_avsbench import (
    AVS_NUM_FRAMES,
    AVS_SPLITS,
    AVS_TASKS,
    AVSLayoutError,
    avs_layout_paths,
    get_avs_root,
    load_avs_layout_split,
    read_avs_mask,
    register_all_avsbench,
    register_all_avsbench_from_cfg,
    register_avs_layout,
    register_avsbench_ms3,
    register_avsbench_s4,
)
from .audio_controls import (
    AUDIO_PATHWAYS, PATHWAY_ELSEWHERE, negative_dataset_name, pathway_negative_dataset_name, register_audio_swapped,
    register_negative_audio, register_pathway_negative_audio, swap_audio, with_negative_audio,
    with_pathway_negative_audio,
)
from .register_avss import (
    AVSS_NUM_CLASSES,
    AVSS_SUBSETS,
    AVSSLayoutError,
    avss_palette,
    get_avss_root,
    load_avss_split,
    load_label2idx,
    read_avss_label,
    register_all_avss,
    register_all_avss_from_cfg,
    register_avss_layout,
)
from .register_synthavs import (
    get_synthavs_avss_root,
    get_synthavs_root,
    register_all_synthavs,
    register_all_synthavs_avss,
    register_all_synthavs_from_cfg,
)

register_all_avsbench()
register_all_synthavs()
register_all_avss()
register_all_synthavs_avss()

__all__ = [
    "AVSS_NUM_CLASSES",
    "AVSS_SUBSETS",
    "AVSSLayoutError",
    "avss_palette",
    "get_avss_root",
    "get_synthavs_avss_root",
    "load_avss_split",
    "load_label2idx",
    "read_avss_label",
    "register_all_avss",
    "register_all_avss_from_cfg",
    "register_all_synthavs_avss",
    "register_avss_layout",
    "AVS_NUM_FRAMES",
    "AVS_SPLITS",
    "AVS_TASKS",
    "AVSLayoutError",
    "avs_layout_paths",
    "get_avs_root",
    "load_avs_layout_split",
    "read_avs_mask",
    "register_all_avsbench",
    "register_all_avsbench_from_cfg",
    "register_avs_layout",
    "register_avsbench_ms3",
    "register_avsbench_s4",
    "get_synthavs_root",
    "register_audio_swapped",
    "AUDIO_PATHWAYS",
    "swap_audio",
    "negative_dataset_name",
    "register_negative_audio",
    "with_negative_audio",
    "PATHWAY_ELSEWHERE",
    "pathway_negative_dataset_name",
    "register_pathway_negative_audio",
    "with_pathway_negative_audio",
    "register_all_synthavs",
    "register_all_synthavs_from_cfg",
]
