"""Record what the S4/MS3 AQFormer computes, from a given copy of the package, for
tests/modeling/meta_arch/test_s4_ms3_unchanged.py.

The committed file ``reference_s4_ms3.pt`` was produced from the package WITHOUT the AVSS model: a checkout of
main at the merge of the operator seam (8f9e6b6) with the AVSS-model merge reverted
(``git worktree add --detach ../pre_avss 8f9e6b6 && git -C ../pre_avss revert --no-edit -m 1 eb3c5a2``), with
(run from this repository's root)::

    OMP_NUM_THREADS=1 .venv/bin/python tests/modeling/meta_arch/make_s4_ms3_reference.py \
        --package-root ../pre_avss --out tests/modeling/meta_arch/reference_s4_ms3.pt

``--package-root`` is put first on ``sys.path``, so ``aqformer_d2`` and the configs come from that checkout.

For every case it stores:
* "cfg": the merged config as YAML (the test merges it into the current code's config);
* "trace_eval", "trace_train": zlib-compressed JSON of the aten ops of one inference forward and of one training forward + backward,
  each op with the shapes, strides and dtypes of its tensor arguments (the computation itself, independent of
  the machine's vector ISA and thread count: kernels run below the dispatcher and are not recorded);
* tiny cases only ("values" True): the weights, the clip, the inference output, the losses and the gradients.
  The R50 cases (the paper's S4/MS3 configs) store traces only: their weights would be ~100 MB.
"""
import argparse
import os
import json
import sys
import zlib

CASES = {
    # name: (config file, extra overrides, store values)
    # The tiny SynthAVS configs, narrowed further so that their weights stay small in the repository; the
    # code paths are those of the tiny configs (same modules, same options), only widths differ.
    "tiny_s4": ("configs/synthavs/aqformer_tiny_s4.yaml", "narrow", True),
    # The tiny MS3 config builds the same model as the tiny S4 one (the test checks their MODEL sections are
    # equal), so its values would repeat tiny_s4's: its trace is stored, its values are not.
    "tiny_ms3": ("configs/synthavs/aqformer_tiny_ms3.yaml", "narrow", False),
    "r50_s4": ("configs/avsbench/s4/aqformer_R50.yaml", "none", False),
    "r50_ms3": ("configs/avsbench/ms3/aqformer_R50.yaml", "none", False),
}
NARROW = [
    "MODEL.TINY_CONVNET.STEM_CHANNELS", 8, "MODEL.TINY_CONVNET.CHANNELS", [8, 16, 32, 32],
    "MODEL.AQ_PIXEL_DECODER.CONVS_DIM", 32, "MODEL.AQ_PIXEL_DECODER.AV_ATTN_DIM", 32,
    "MODEL.AQ_PIXEL_DECODER.ABTI_DIM", 32, "MODEL.AQ_PIXEL_DECODER.ENC_DIM_FEEDFORWARD", 64,
    "MODEL.AQ_TRANSFORMER_DECODER.DIM_FEEDFORWARD", 64,
    "MODEL.AUDIO_ENCODER.CONV_CHANNELS", [8, 16, 16, 16], "MODEL.AUDIO_ENCODER.FC_DIMS", [32],
    "MODEL.AUDIO_ENCODER.OUT_DIM", 32,
]
FRAMES, SIZE, SEED = 5, 64, 0


def make_clips(torch, valid):
    """Two clips of FRAMES frames (SIZE x SIZE), drawn from a fixed generator; the first has unlabelled frames."""
    g = torch.Generator().manual_seed(SEED)
    clips = []
    for c in range(2):
        masks = (torch.rand(FRAMES, SIZE, SIZE, generator=g) > 0.6).to(torch.uint8)
        clips.append({
            "images": torch.randint(0, 256, (FRAMES, 3, SIZE, SIZE), generator=g, dtype=torch.uint8),
            "audio": torch.randn(FRAMES, 1, 96, 64, generator=g),
            "masks": masks,
            "mask_valid": torch.tensor(valid if c == 0 else [True] * FRAMES),
            "height": SIZE, "width": SIZE, "video_id": f"ref{c}",
        })
    return clips


def op_record(torch):
    """A TorchDispatchMode that records (op name, [(shape, stride, dtype) of each tensor argument]).

    The once-per-process probe of oneDNN's linear op (aqformer_d2.modeling.ops) runs first, outside the
    recording: otherwise a trace would hold the probe's ops or not depending on whether a model ran earlier in
    the same process."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from aqformer_d2.modeling.ops.linear_op import onednn_linear_available

    onednn_linear_available()

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            leaves = torch.utils._pytree.tree_leaves((args, kwargs or {}))
            tensors = [(tuple(t.shape), tuple(t.stride()), str(t.dtype)) for t in leaves if isinstance(t, torch.Tensor)]
            self.ops.append((str(func), tensors))
            return func(*args, **(kwargs or {}))

    return Recorder()


def cpu_capability() -> str:
    """The vector ISA torch's CPU kernels use here ("AVX2", "AVX512", ...): float round-off depends on it."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def pack(ops):
    """A trace as a uint8 tensor of zlib-compressed JSON (traces are long and repetitive; a tensor keeps the file
    loadable with ``torch.load(weights_only=True)``); ``unpack`` reverses it, giving lists for tuples."""
    import torch

    blob = zlib.compress(json.dumps(ops).encode(), 9)
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8)


def unpack(packed):
    return json.loads(zlib.decompress(packed.numpy().tobytes()).decode())


def record_case(config_file, overrides, values):
    """Build the model from ``config_file`` (seed SEED) and record one case (see the module docstring)."""
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import aqformer_d2.modeling  # noqa: F401  (registration)
    from aqformer_d2.config import add_aqformer_config

    cfg = get_cfg()
    add_aqformer_config(cfg)
    cfg.merge_from_file(config_file)
    if overrides == "narrow":
        cfg.merge_from_list(NARROW)
    cfg.MODEL.DEVICE = "cpu"
    torch.set_num_threads(1)  # one thread: reductions in a fixed order, so values are reproducible bit for bit
    torch.manual_seed(SEED)
    model = build_model(cfg)
    # the weights as built: the training forward below updates BatchNorm's running statistics
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}
    clips = make_clips(torch, [True, False, True, True, False])
    out = {"cfg": cfg.dump(), "values": values}

    model.eval()
    recorder = op_record(torch)
    with torch.no_grad(), recorder:
        probs = model(clips)
    out["trace_eval"] = pack(recorder.ops)

    model.train()
    recorder = op_record(torch)
    with recorder:
        losses = model(clips)
        sum(losses.values()).backward()
    out["trace_train"] = pack(recorder.ops)
    if values:
        out["state_dict"] = state_dict
        out["clips"] = clips
        out["sound_probs"] = [p["sound_probs"] for p in probs]
        out["losses"] = {k: v.detach() for k, v in losses.items()}
        out["grads"] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package-root", required=True, help="checkout whose aqformer_d2 and configs/ are recorded")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    root = os.path.abspath(args.package_root)
    out_path = os.path.abspath(args.out)
    sys.path.insert(0, root)
    os.chdir(root)
    import subprocess

    import torch

    import aqformer_d2
    if os.path.dirname(os.path.dirname(os.path.abspath(aqformer_d2.__file__))) != root:
        raise RuntimeError(f"aqformer_d2 was imported from {aqformer_d2.__file__}, not from {root}")
    commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {"commit": commit, "torch": str(torch.__version__), "cpu_capability": cpu_capability(), "cases": {}}
    for name, (config_file, overrides, values) in CASES.items():
        record["cases"][name] = record_case(config_file, overrides, values)
    tmp = out_path + ".partial"
    torch.save(record, tmp)
    os.replace(tmp, out_path)


if __name__ == "__main__":
    main()
