"""bench.audio_health: dead ReLU channels and the spread over examples, on a small VGGish whose later layer is
killed on purpose (its output is then the same for every input) and on the same encoder alive."""
import torch

from aqformer_d2.modeling.audio_encoder.vggish import VGGish
from bench import audio_health


def _encoder():
    torch.manual_seed(0)
    return VGGish(conv_channels=[4, 8, 8, 8], fc_dims=[16], out_dim=8).eval()


def test_alive_encoder_varies_and_counts_match_a_direct_computation():
    enc = _encoder()
    x = torch.randn(6, 1, 96, 64)
    report = audio_health.audio_encoder_health(enc, x)
    relus = [m for m in enc.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(report["layers"]) == len(relus) == 8 and report["num_examples"] == 6
    first = torch.relu(enc.features[0](x))  # [6, 4, 96, 64]
    assert report["layers"][0]["dead"] == int((first.amax(dim=(0, 2, 3)) <= 0).sum())
    assert abs(report["layers"][0]["spread"] - float(first.reshape(6, -1).std(0).mean())) < 1e-6
    assert report["output_spread"] > 1e-4 * report["output_magnitude"] > 0


def test_a_dead_layer_makes_the_output_constant():
    enc = _encoder()
    with torch.no_grad():
        enc.features[11].bias.fill_(-1e4)  # the fifth conv's ReLU never fires: every later activation is constant
    report = audio_health.audio_encoder_health(enc, torch.randn(6, 1, 96, 64))
    fifth = report["layers"][4]
    assert fifth["dead"] == fifth["channels"] == 8 and fifth["spread"] == 0.0
    assert report["output_spread"] == 0.0 and report["output_magnitude"] > 0  # the same vector for every input
    # the hooks are removed: a second call reports the same number of layers
    assert len(audio_health.audio_encoder_health(enc, torch.randn(2, 1, 96, 64))["layers"]) == 8


def test_at_init_reports_the_seeded_initialisation_of_the_config(tiny_model, tmp_path):
    """--at-init builds the model under the seed: same seed, same report; He init keeps the output's spread
    over real examples within ~an order of magnitude of the first layer's, PyTorch's defaults do not."""
    import json
    from .conftest import S4_TINY_CONFIG

    common, _ = tiny_model
    base = ["--config-file", S4_TINY_CONFIG, "--at-init", "--clips", "3", "--dataset", "synthavs_s4_test"]
    he = audio_health.main(base + ["--output", str(tmp_path / "he.json")] + common + ["MODEL.AUDIO_ENCODER.INIT", "he"])
    again = audio_health.main(base + common + ["MODEL.AUDIO_ENCODER.INIT", "he"])
    default = audio_health.main(base + ["--seed", "1"] + common + ["MODEL.AUDIO_ENCODER.INIT", "pytorch"])
    assert he["layers"] == again["layers"] and he["output_spread"] == again["output_spread"]
    assert "MODEL.AUDIO_ENCODER.INIT he, seed 0" in json.load(open(tmp_path / "he.json"))["weights"]
    assert he["output_spread"] / he["layers"][0]["spread"] > 0.1
    assert default["output_spread"] / default["layers"][0]["spread"] < 0.01
