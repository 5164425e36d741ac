"""All configuration keys added by AQFormer, in one function: :func:`add_aqformer_config`; and
:func:`register_config_extension`, through which a user module or plugin adds its own keys.

Symbols follow the paper (Huang et al., IJCAI 2023, §3): T frames, C_f (decoder feature width),
C_m (eq. 1 attention width), C_b (ABTI width), N decoder stages.
"""
from typing import Callable, List

from detectron2.config import CfgNode as CN

__all__ = ["add_aqformer_config", "register_config_extension"]

# Functions adding the config keys of user modules and plugins, called by add_aqformer_config in order.
_CONFIG_EXTENSIONS: List[Callable[[CN], None]] = []


def register_config_extension(fn: Callable[[CN], None]) -> Callable[[CN], None]:
    """Decorator: ``fn(cfg)`` adds a user module's or plugin's own config keys (as detectron2's
    ``add_*_config`` functions do); :func:`add_aqformer_config` calls it after AQFormer's keys. Modules named
    in ``IMPORTS`` are imported before the config is built, so the same YAML file can set these keys.
    Registering the same function twice has no further effect."""
    if fn not in _CONFIG_EXTENSIONS:
        _CONFIG_EXTENSIONS.append(fn)
    return fn


def add_aqformer_config(cfg: CN) -> None:
    """Add every AQFormer key (with its default) to a detectron2 config, then the keys of every registered
    config extension (:func:`register_config_extension`). Call once, before merging a yaml."""
    # ---------------------------------------------------------------- user components
    # Modules imported before anything is built, so that the components they register (backbones, audio
    # encoders, decoders, dataset mappers, datasets) can be named in this config. Each must be importable
    # (an installed package or a folder on PYTHONPATH). See aqformer_d2/plugins.py and README "Add your own
    # backbone".
    cfg.IMPORTS = []

    # ---------------------------------------------------------------- model: AQFormer as a whole
    cfg.MODEL.AQFORMER = CN()
    # T: frames per clip (AVSBench: 5, one frame per second).
    cfg.MODEL.AQFORMER.NUM_FRAMES = 5
    # Registered name (AQ_PIXEL_DECODER_REGISTRY) of the pixel decoder, §3.2.
    cfg.MODEL.AQFORMER.PIXEL_DECODER_NAME = "AQPixelDecoder"
    # Registered name (AQ_TRANSFORMER_DECODER_REGISTRY) of the audio-queried transformer decoder, §3.3.
    cfg.MODEL.AQFORMER.TRANSFORMER_DECODER_NAME = "AudioQueriedTransformerDecoder"
    # Loss weights of eq. (13)-(14). SIM_WEIGHT = 0 switches the AVSim loss off (ablation, Table 2b).
    cfg.MODEL.AQFORMER.BCE_WEIGHT = 1.0
    cfg.MODEL.AQFORMER.DICE_WEIGHT = 1.0
    cfg.MODEL.AQFORMER.SIM_WEIGHT = 1.0
    # Reduction of the AVSim loss, eq. (7): "sum" over layers and frame pairs as printed (then the mean over
    # clips), or "mean" (divided by L * T^2). See docs/paper_choices.md.
    cfg.MODEL.AQFORMER.SIM_REDUCTION = "sum"
    # Eq. (8): True stops the gradient through the predicted mask Ŷ (it only selects pixels; not printed);
    # False lets the AVSim loss train the mask too, as the equation written without a stop-gradient reads.
    cfg.MODEL.AQFORMER.SIM_DETACH_MASK = True
    # Mask losses on the output of every decoder layer (§3.5: "each decoder layer"); False: last layer only.
    cfg.MODEL.AQFORMER.DEEP_SUPERVISION = True
    # Foreground threshold on the sigmoid probability used when masks are binarised (demo, PNG export).
    cfg.MODEL.AQFORMER.MASK_THRESHOLD = 0.5
    # Frames are zero-padded to a multiple of this before the backbone (0: the backbone's own value).
    cfg.MODEL.AQFORMER.SIZE_DIVISIBILITY = 32
    # DistributedDataParallel(find_unused_parameters=...): needed when an ablation leaves parameters
    # unused (e.g. vanilla queries never use the audio-query projection).
    cfg.MODEL.AQFORMER.FIND_UNUSED_PARAMETERS = False
    # Memory layout of the model's 4-D weights and activations: "channels_last" (NHWC), "contiguous"
    # (NCHW) or "auto" = channels_last when MODEL.DEVICE is "cpu" (oneDNN's convolutions and max pooling
    # run several times faster on NHWC there, and the pixel decoder's token views need no copies; see
    # bench/README.md), NCHW elsewhere (the GPU path is left as it was). The layout changes only the
    # order of float32 additions, not the result beyond round-off (tests/modeling/meta_arch/test_memory_format.py).
    cfg.MODEL.AQFORMER.MEMORY_FORMAT = "auto"

    # MODEL.WEIGHTS ending in .pkl is read with a restricted unpickler (tensors/arrays only). Set True only for
    # a legacy pickle you trust: it is then read with plain pickle, which can execute code.
    cfg.MODEL.WEIGHTS_TRUST_PICKLE = False

    # ---------------------------------------------------------------- pixel decoder, §3.2 and §3.4
    cfg.MODEL.AQ_PIXEL_DECODER = CN()
    # Backbone features, largest stride first is NOT required; they are sorted by stride internally.
    cfg.MODEL.AQ_PIXEL_DECODER.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    # C_f: channel width of every pixel-decoder output and of the decoder queries.
    cfg.MODEL.AQ_PIXEL_DECODER.CONVS_DIM = 256
    # C_m of eq. (1): width of f_q / f_k in the audio-visual cross-attention.
    cfg.MODEL.AQ_PIXEL_DECODER.AV_ATTN_DIM = 256
    # Eq. (1) as printed takes a softmax over ONE audio key, so every weight is 1 ("printed").
    # "sigmoid": per-pixel gate sigmoid(q.k / sqrt(C_m)) instead, see docs/paper_choices.md.
    cfg.MODEL.AQ_PIXEL_DECODER.AV_ATTN_MODE = "printed"
    # Multi-scale deformable attention encoder (Deformable DETR / Mask2Former) on the 3 smaller scales.
    cfg.MODEL.AQ_PIXEL_DECODER.ENC_LAYERS = 6
    cfg.MODEL.AQ_PIXEL_DECODER.ENC_HEADS = 8
    cfg.MODEL.AQ_PIXEL_DECODER.ENC_POINTS = 4
    cfg.MODEL.AQ_PIXEL_DECODER.ENC_DIM_FEEDFORWARD = 1024
    cfg.MODEL.AQ_PIXEL_DECODER.ENC_DROPOUT = 0.0
    # Normalisation of f_w (eq. 2) and of the lateral / output convolutions ("GN", "BN", "" ...), detectron2's
    # get_norm.
    cfg.MODEL.AQ_PIXEL_DECODER.NORM = "GN"
    # Eq. (2): True follows f_w by NORM (Mask2Former's input projection, which eq. 2 replaces); False keeps f_w
    # the plain linear map the paper prints. The stride-4 path's convolutions keep NORM either way.
    cfg.MODEL.AQ_PIXEL_DECODER.FW_NORM = True
    # ABTI (§3.4) insertion positions, 1-based over the 4 scales from the smallest (1: stride 32)
    # to the largest (4: stride 4, the mask feature). Paper default: all four. [] switches ABTI off.
    cfg.MODEL.AQ_PIXEL_DECODER.ABTI_POSITIONS = [1, 2, 3, 4]
    # C_b: width of f_a, f_m, f_n in eq. (9)-(10).
    cfg.MODEL.AQ_PIXEL_DECODER.ABTI_DIM = 256
    # Heads of the self-attention over the T x T compact features in ABTI.
    cfg.MODEL.AQ_PIXEL_DECODER.ABTI_HEADS = 8
    # Temperature of eq. (9): "sqrt_dim" divides the logits by sqrt(C_b) (scaled dot-product attention, not
    # printed); "none" is eq. (9) as printed. See docs/paper_choices.md.
    cfg.MODEL.AQ_PIXEL_DECODER.ABTI_LOGIT_SCALE = "sqrt_dim"

    # ---------------------------------------------------------------- transformer decoder, §3.3
    cfg.MODEL.AQ_TRANSFORMER_DECODER = CN()
    # N: decoder stages; each stage visits the 3 smaller scales (lowest resolution first): 3N layers.
    cfg.MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES = 3
    cfg.MODEL.AQ_TRANSFORMER_DECODER.NHEADS = 8
    cfg.MODEL.AQ_TRANSFORMER_DECODER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.AQ_TRANSFORMER_DECODER.DROPOUT = 0.0
    # "audio": queries A^0 = Linear(A) (the paper); "vanilla": T learned queries, audio unused by the
    # decoder (Table 2a "Vanilla Object Query").
    cfg.MODEL.AQ_TRANSFORMER_DECODER.QUERY_TYPE = "audio"
    # "all": each query attends to all T frames (the paper); "own": only its own frame (Table 2a "Audio Query†").
    cfg.MODEL.AQ_TRANSFORMER_DECODER.CROSS_ATTN_SCOPE = "all"
    # Eq. (6) multiplies M̂^4 by "plain": the query A^l (as printed), or "norm_mlp": MLP(LN(A^l)) (Mask2Former's
    # practice, which the paper says it follows; the printed form starts with saturated sigmoids, see
    # docs/paper_choices.md).
    cfg.MODEL.AQ_TRANSFORMER_DECODER.MASK_EMBED = "norm_mlp"

    # ---------------------------------------------------------------- AVSS head (beyond the paper)
    # Read by the "AQFormerSemantic" meta-architecture and the "AudioQueriedSemanticDecoder" only; see
    # docs/paper_choices.md, "Beyond the paper: AVSS". Defaults: COMBO-AVS's AVSS settings (Mask2Former's).
    cfg.MODEL.AQ_SEMANTIC = CN()
    # K: classes including background (AVSBench-semantic: 71, background = 0); the class head has K + 1 outputs.
    cfg.MODEL.AQ_SEMANTIC.NUM_CLASSES = 71
    # N: queries per frame.
    cfg.MODEL.AQ_SEMANTIC.NUM_QUERIES = 100
    # How the N queries of frame t depend on its audio A_t: "add" (learned embedding + Linear(A_t)),
    # "audio_only" (N separate linear maps of A_t), "vanilla" (learned embeddings only, no audio).
    cfg.MODEL.AQ_SEMANTIC.QUERY_CONDITIONING = "add"
    # Loss weights: cross-entropy over K + 1 classes, BCE and Dice of the matched masks, "no object" class weight.
    cfg.MODEL.AQ_SEMANTIC.CLASS_WEIGHT = 2.0
    cfg.MODEL.AQ_SEMANTIC.MASK_WEIGHT = 5.0
    cfg.MODEL.AQ_SEMANTIC.DICE_WEIGHT = 5.0
    cfg.MODEL.AQ_SEMANTIC.NO_OBJECT_WEIGHT = 0.1
    # Hungarian matching costs per frame: class probability, mask BCE, mask Dice.
    cfg.MODEL.AQ_SEMANTIC.COST_CLASS = 2.0
    cfg.MODEL.AQ_SEMANTIC.COST_MASK = 5.0
    cfg.MODEL.AQ_SEMANTIC.COST_DICE = 5.0
    # Generalised AVSim loss, eq. (7)-(8): weight (0 = off) and its items, "matched" (the queries matched to a
    # ground-truth class mask) or "frame_mean" (per real frame: the mean of its queries and its foreground).
    cfg.MODEL.AQ_SEMANTIC.SIM_WEIGHT = 1.0
    cfg.MODEL.AQ_SEMANTIC.SIM_QUERIES = "matched"
    # Label of pixels without supervision (AVSBench-semantic's loaders: 255).
    cfg.MODEL.AQ_SEMANTIC.IGNORE_VALUE = 255

    # ---------------------------------------------------------------- audio encoder, §3.1
    cfg.MODEL.AUDIO_ENCODER = CN()
    # Registered name in AUDIO_ENCODER_REGISTRY.
    cfg.MODEL.AUDIO_ENCODER.NAME = "VGGish"
    # C_a: audio feature width (VGGish embedding: 128).
    cfg.MODEL.AUDIO_ENCODER.OUT_DIM = 128
    # torchvggish's vggish-10086976.pth: a local path or torchvggish://vggish (downloaded once into the verified
    # cache, see aqformer_d2/checkpoint/url_schemes.py); "" = random initialisation.
    cfg.MODEL.AUDIO_ENCODER.WEIGHTS = ""
    # torchvggish's vggish_pca_params-970ea276.pth, a local path or torchvggish://vggish_pca ("" = no PCA
    # post-processing). With PCA the embedding is quantised to 0..255 as torchvggish does, so no gradient
    # flows through the encoder.
    cfg.MODEL.AUDIO_ENCODER.PCA_WEIGHTS = ""
    # Freeze the audio encoder's parameters (and keep it in eval mode).
    cfg.MODEL.AUDIO_ENCODER.FREEZE = False
    # Channel widths of the VGGish conv blocks and of its fully connected layers. Defaults = VGGish.
    cfg.MODEL.AUDIO_ENCODER.CONV_CHANNELS = [64, 128, 256, 512]
    cfg.MODEL.AUDIO_ENCODER.FC_DIMS = [4096, 4096]
    # Random initialisation of the encoder's layers when WEIGHTS = "": "pytorch" (PyTorch's layer defaults) or
    # "he" (He normal, zero biases). See docs/paper_choices.md, "VGGish from scratch".
    cfg.MODEL.AUDIO_ENCODER.INIT = "pytorch"

    # ---------------------------------------------------------------- audio input
    cfg.INPUT.AUDIO = CN()
    # "logmel": read precomputed [T, 1, 96, 64] examples (.pkl, AVSBench's audio_log_mel);
    # "wav": read the WAV and compute the same examples with aqformer_d2.audio.logmel.
    cfg.INPUT.AUDIO.SOURCE = "logmel"
    # Control experiment: replace every clip's audio examples by zeros (audio-blind training/evaluation).
    cfg.INPUT.AUDIO.ZERO_INPUT = False
    # Training with negative audio (docs/listening.md): with probability PROB a training clip's audio is
    # replaced by a negative of one of KINDS (weighted by KIND_WEIGHTS, empty = uniformly: "silence",
    # "white_noise", "pink_noise", "brown_noise", "offscreen" = the sound of a SynthAVS category absent from
    # the clip, "offscreen_scene" = that sound over the dataset's background noise; the two off-screen kinds
    # are SynthAVS only) and its masks by empty ones (same labelled frames). Noise is set to one of LEVELS_DB (uniformly), in dB relative to the
    # RMS of the clip's own soundtrack; an off-screen sound is as loud as the soundtrack. Drawn per clip from
    # the resumable sample stream. 0 = off (the paper trains without negatives).
    cfg.INPUT.NEGATIVE_AUDIO = CN()
    cfg.INPUT.NEGATIVE_AUDIO.PROB = 0.0
    cfg.INPUT.NEGATIVE_AUDIO.KINDS = ["silence", "white_noise", "pink_noise", "offscreen_scene"]
    cfg.INPUT.NEGATIVE_AUDIO.LEVELS_DB = [0.0, -20.0]
    # Relative weights of KINDS, one per kind (e.g. [1, 1, 1, 4]: offscreen_scene drawn 4x as often as each
    # other kind); empty = uniformly.
    cfg.INPUT.NEGATIVE_AUDIO.KIND_WEIGHTS = []

    # ---------------------------------------------------------------- timm backbone adapter
    cfg.MODEL.TIMM_BACKBONE = CN()
    # Any timm model name that supports features_only=True (PVT-v2-b5 in the paper: "pvt_v2_b5").
    cfg.MODEL.TIMM_BACKBONE.NAME = "pvt_v2_b5"
    # Which feature levels of timm's features_only model to return, by index.
    cfg.MODEL.TIMM_BACKBONE.OUT_INDICES = [0, 1, 2, 3]
    # detectron2-style names given to those levels (matched to MODEL.AQ_PIXEL_DECODER.IN_FEATURES).
    cfg.MODEL.TIMM_BACKBONE.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # timm checkpoint (.pth / .bin / .safetensors) for the backbone alone: a local path or timm://<model> (timm's
    # pretrained file, e.g. timm://pvt_v2_b5); "" = none. Whole-model checkpoints go to MODEL.WEIGHTS as usual.
    cfg.MODEL.TIMM_BACKBONE.WEIGHTS = ""
    # Number of leading feature stages to freeze (0 = train everything).
    cfg.MODEL.TIMM_BACKBONE.FREEZE_AT = 0

    # ---------------------------------------------------------------- tiny CPU backbone (build_aq_tiny_convnet)
    cfg.MODEL.TINY_CONVNET = CN()
    cfg.MODEL.TINY_CONVNET.STEM_CHANNELS = 16
    # Widths of the 4 stages (strides 4, 8, 16, 32).
    cfg.MODEL.TINY_CONVNET.CHANNELS = [24, 48, 96, 160]
    # Residual blocks per stage.
    cfg.MODEL.TINY_CONVNET.BLOCKS = 1
    cfg.MODEL.TINY_CONVNET.NORM = "BN"
    cfg.MODEL.TINY_CONVNET.OUT_FEATURES = ["res2", "res3", "res4", "res5"]

    # ---------------------------------------------------------------- data
    # Registered name (AQ_DATASET_MAPPER_REGISTRY) of the dataset mapper used by the trainer.
    cfg.INPUT.DATASET_MAPPER_NAME = "AVSClipMapper"
    # Frames are resized to IMAGE_SIZE x IMAGE_SIZE (AVSBench: 224).
    cfg.INPUT.IMAGE_SIZE = 224
    # Random horizontal flip of the whole clip (frames and masks together) during training.
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    # Root of AVSBench-layout datasets; "" = $DETECTRON2_DATASETS (default "datasets").
    cfg.DATASETS.AVS_ROOT = ""
    # Root of the generated SynthAVS benchmark (datasets/prepare_synthavs.py); "" = $DETECTRON2_DATASETS/SynthAVS.
    cfg.DATASETS.SYNTHAVS_ROOT = ""
    # Folder holding AVSBench-semantic's metadata.csv; "" = $DETECTRON2_DATASETS/AVSBench_semantic.
    cfg.DATASETS.AVSS_ROOT = ""
    # Root of the generated SynthAVS-semantic benchmark (datasets/prepare_synthavs.py --avss);
    # "" = $DETECTRON2_DATASETS/SynthAVS_semantic.
    cfg.DATASETS.SYNTHAVS_AVSS_ROOT = ""
    # AVSS clips (AVSSClipMapper): every clip is padded to PAD_FRAMES frames (mean-colour frames, zero
    # audio, no label), as AVSBench's loader pads v1s / v1m clips to 10; must be >= the longest subset
    # (v2: 10). With 10, 5- and 10-frame clips share one batch. See docs/avss.md.
    cfg.INPUT.AVSS = CN()
    cfg.INPUT.AVSS.PAD_FRAMES = 10

    # ---------------------------------------------------------------- solver
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # Weight decay of embedding parameters (level / query embeddings), as Mask2Former.
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # Learning rate multiplier for backbone parameters.
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    # Poly schedule: lr = base_lr * (1 - iter / max_iter) ** POLY_LR_POWER (after warm-up). The trainer
    # builds only this schedule (the paper's); any other LR_SCHEDULER_NAME is refused, and detectron2's
    # multi-step keys (STEPS, GAMMA) are unused.
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    cfg.SOLVER.POLY_LR_POWER = 0.9

    # ---------------------------------------------------------------- evaluation
    # Save predicted masks as PNGs in the AVSBench layout under OUTPUT_DIR/avs_predictions.
    cfg.TEST.AVS_SAVE_PNG = False
    # Frames the AVSS metric scores: "official" (labelled real frames + padded frames, whose ground truth
    # is background, as AVSBench's test.py) or "real_frames" (labelled real frames only, as COMBO-AVS).
    cfg.TEST.AVSS_PROTOCOL = "official"

    for extend in _CONFIG_EXTENSIONS:
        extend(cfg)
