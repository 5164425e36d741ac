"""The verified download cache: hash prefix / recorded hash, atomic downloads, offline errors (local HTTP server)."""
import hashlib
import os
import traceback

import pytest

from aqformer_d2.checkpoint.weight_cache import (
    WeightDownloadError,
    WeightHashError,
    fetch_verified,
    hash_prefix_from_name,
    hash_record_path,
    read_hash_record,
    verify_cached_file,
    weights_cache_dir,
)

from .conftest import closed_port_url

pytestmark = pytest.mark.timeout(120)

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: more than one read chunk
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _leftovers(folder):
    """Files under ``folder`` other than (empty) lock files."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            if not name.endswith(".lock"):
                found.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(found)


def test_cache_dir_from_env_or_torch_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("AQFORMER_CACHE", str(tmp_path / "mine"))
    assert weights_cache_dir() == str(tmp_path / "mine")
    monkeypatch.delenv("AQFORMER_CACHE")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    assert weights_cache_dir() == str(tmp_path / "torch_home" / "hub" / "aqformer")


@pytest.mark.parametrize(
    "name, prefix",
    [
        ("resnet50-0676ba61.pth", "0676ba61"),
        ("vggish-10086976.pth", "10086976"),
        ("vggish_pca_params-970ea276.pth", "970ea276"),
        ("R-50.pkl", None),  # detectron2's ImageNet file: "50" is no hash
        ("model_final_f10217.pkl", None),  # detectron2's model zoo: a commit id, not "-<hex>."
        ("model.safetensors", None),
    ],
)
def test_hash_prefix_from_name(name, prefix):
    assert hash_prefix_from_name(name) == prefix


def test_prefix_checked_download_then_cache_hit_without_network(weight_server, tmp_path):
    name = f"w-{PAYLOAD_SHA[:8]}.pth"
    weight_server.files["/" + name] = PAYLOAD
    dest = str(tmp_path / "cache" / name)
    url = f"{weight_server.url}/{name}"

    assert fetch_verified(url, dest, hash_prefix=PAYLOAD_SHA[:8]) == dest
    with open(dest, "rb") as f:
        assert f.read() == PAYLOAD
    assert read_hash_record(dest) == PAYLOAD_SHA
    assert _leftovers(tmp_path / "cache") == sorted([name, name + ".sha256"])
    assert weight_server.requests == ["/" + name]

    # second use: served from the cache, even with the server unreachable
    assert fetch_verified(f"{closed_port_url()}/{name}", dest, hash_prefix=PAYLOAD_SHA[:8]) == dest
    assert weight_server.requests == ["/" + name]


def test_prefix_mismatch_is_refused_and_leaves_nothing(weight_server, tmp_path):
    name = "w-00000000.pth"
    weight_server.files["/" + name] = PAYLOAD
    dest = str(tmp_path / "cache" / name)
    with pytest.raises(WeightHashError, match=rf"SHA-256 {PAYLOAD_SHA} does not start with 00000000.*nothing was kept"):
        fetch_verified(f"{weight_server.url}/{name}", dest, hash_prefix="00000000")
    assert _leftovers(tmp_path / "cache") == []


def test_cut_off_download_is_refused_and_leaves_nothing(weight_server, tmp_path):
    weight_server.files["/w.bin"] = PAYLOAD
    weight_server.cut_off.add("/w.bin")
    dest = str(tmp_path / "cache" / "w.bin")
    with pytest.raises(WeightDownloadError, match=rf"cut off after {len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes"):
        fetch_verified(f"{weight_server.url}/w.bin", dest, what="test://w")
    assert _leftovers(tmp_path / "cache") == []

    # a later, complete download succeeds and is what gets recorded
    weight_server.cut_off.clear()
    fetch_verified(f"{weight_server.url}/w.bin", dest)
    assert read_hash_record(dest) == PAYLOAD_SHA


def test_unreachable_server_names_url_path_and_hint_without_urllib_trace(tmp_path):
    url = f"{closed_port_url()}/w-12345678.pth"
    dest = str(tmp_path / "cache" / "w-12345678.pth")
    with pytest.raises(WeightDownloadError) as info:
        fetch_verified(url, dest, hash_prefix="12345678", what="test://w", hint="Copy it there by hand.")
    message = str(info.value)
    assert message.startswith(f"test://w: could not download {url} (ConnectionRefusedError")
    assert f"The file is expected at {dest}. Copy it there by hand." in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    shown = "".join(traceback.format_exception(info.value))
    assert "urllib/" not in shown and "URLError" not in shown and "During handling" not in shown
    assert _leftovers(tmp_path / "cache") == []


def test_http_error_is_a_download_error(weight_server, tmp_path):
    with pytest.raises(WeightDownloadError, match=r"HTTP 404"):
        fetch_verified(f"{weight_server.url}/absent.pth", str(tmp_path / "c" / "absent.pth"))
    assert _leftovers(tmp_path / "c") == []


def test_hash_recorded_at_first_download_is_enforced(weight_server, tmp_path):
    weight_server.files["/model.safetensors"] = PAYLOAD
    dest = str(tmp_path / "cache" / "model.safetensors")
    url = f"{weight_server.url}/model.safetensors"
    fetch_verified(url, dest)
    assert read_hash_record(dest) == PAYLOAD_SHA

    # the server's file changes: a forced re-download is refused, the verified copy stays
    weight_server.files["/model.safetensors"] = PAYLOAD[::-1]
    with pytest.raises(WeightHashError, match=rf"differs from {PAYLOAD_SHA}, recorded when"):
        fetch_verified(url, dest, force=True)
    with open(dest, "rb") as f:
        assert f.read() == PAYLOAD
    assert _leftovers(tmp_path / "cache") == sorted(["model.safetensors", "model.safetensors.sha256"])

    # the cached copy is corrupted on disk: refused on the next use, with what to do
    with open(dest, "r+b") as f:
        f.write(b"\xff")
    pattern = r"recorded when the file was first downloaded.*Delete .*model.safetensors"
    with pytest.raises(WeightHashError, match=pattern):
        fetch_verified(url, dest)


def test_file_copied_in_by_hand_is_checked_then_recorded(tmp_path):
    good = tmp_path / f"w-{PAYLOAD_SHA[:8]}.pth"
    good.write_bytes(PAYLOAD)
    assert verify_cached_file(str(good), hash_prefix=PAYLOAD_SHA[:8]) == PAYLOAD_SHA
    assert read_hash_record(str(good)) == PAYLOAD_SHA

    bad = tmp_path / "w-abcdef01.pth"
    bad.write_bytes(PAYLOAD)
    with pytest.raises(WeightHashError, match=r"does not start with abcdef01"):
        verify_cached_file(str(bad), hash_prefix="abcdef01")
    assert not os.path.exists(hash_record_path(str(bad)))


def test_malformed_hash_record_is_an_error(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"x")
    (tmp_path / "w.bin.sha256").write_text("not a hash\n")
    with pytest.raises(WeightHashError, match=r"w.bin.sha256: not a SHA-256 record"):
        verify_cached_file(str(path))
