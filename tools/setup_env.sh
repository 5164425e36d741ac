#!/usr/bin/env bash
# Creates (or refreshes) the project-local virtual environment .venv with the pinned stack:
# torch 2.14.1 / torchvision 0.29.1 / torchaudio 2.11.0, detectron2 v0.6 (pure Python, from PyPI's
# pb1-detectron2 sdist with the C++ extension removed), and every other dependency of aqformer_d2.
# Idempotent: a stamp file records the requirements it was built from; a second call is a no-op.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${AQFORMER_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
stamp="$venv/.aqformer-stamp"
want="$(cat "$root/tools/setup_env.sh" "$root/requirements.txt" "$root/setup.py" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup_env] building $venv (first run takes a few minutes)" >&2
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "torch==2.14.1" "torchvision==0.29.1"
# torchaudio 2.11 declares no torch requirement; --no-deps keeps pip from touching torch.
"${pip[@]}" install --no-deps "torchaudio==2.11.0"
"${pip[@]}" install -r "$root/requirements.txt"
if ! "$venv/bin/python" -c "import detectron2" 2>/dev/null; then
  tmp="$(mktemp -d)"
  "${pip[@]}" download --no-deps --no-binary :all: --no-build-isolation -d "$tmp" "pb1-detectron2==0.6"
  tar -xzf "$tmp"/pb1-detectron2-0.6.tar.gz -C "$tmp"
  src="$(find "$tmp" -maxdepth 1 -mindepth 1 -type d | head -n 1)"
  # The sdist lacks detectron2/layers/csrc: build it as pure Python (no C++ extension).
  "$venv/bin/python" - "$src/setup.py" <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
s2 = re.sub(r"ext_modules\s*=\s*get_extensions\(\)", "ext_modules=[]", s)
if s2 == s:
    sys.exit(f"setup_env: could not find ext_modules=get_extensions() in {p}")
open(p, "w").write(s2)
PY
  "${pip[@]}" install --no-build-isolation --no-deps "$src"
  rm -rf "$tmp"
fi
"${pip[@]}" install --no-deps --no-build-isolation -e "$root"
echo "$want" > "$stamp"
echo "[setup_env] ready: $venv" >&2
