#!/usr/bin/env bash
# Idempotent bootstrap: system packages (when root + apt), .venv, editable install.
# Quick when everything is already there (a stamp file records the pyproject hash).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
skipped=()

# 1. System packages: gfortran (so escnn's py3nj builds) and Fashion-MNIST.
need_apt=()
command -v gfortran >/dev/null 2>&1 || need_apt+=(gfortran)
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] apt-get install ${need_apt[*]}"
    if ! { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null; }; then
      skipped+=("apt install of ${need_apt[*]} failed")
    fi
  else
    skipped+=("system packages ${need_apt[*]} (need root + apt)")
  fi
fi

# 2. Virtual environment and the package (editable).
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.symclone-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing symclone and dependencies into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first, pinned to the builds served on this kind of machine when available;
  # elsewhere any torch >= 2.1 satisfies pyproject.
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" \
      || .venv/bin/python -m pip install -q torch torchvision
  fi
  if ! command -v gfortran >/dev/null 2>&1; then
    # escnn works without py3nj (slower SO(3) Clebsch-Gordan only): install it without deps.
    skipped+=("py3nj (no Fortran compiler): escnn runs without it")
    .venv/bin/python -m pip install -q --no-deps escnn
    .venv/bin/python -m pip install -q lie_learn joblib pymanopt autograd "numpy<2" e3nn scipy \
      matplotlib tqdm "safetensors>=0.4" pytest "mkdocs>=1.6" "mkdocstrings-python>=1.10"
    .venv/bin/python -m pip install -q --no-deps -e .
  else
    .venv/bin/python -m pip install -q -e ".[test,docs,download]"
  fi
  echo "$want" > "$stamp"
fi
[ -d /usr/share/datasets/fashion-mnist ] || skipped+=("Fashion-MNIST (tests and demo use Gaussian/synthetic data)")
if [ ${#skipped[@]} -gt 0 ]; then
  echo "[setup] skipped: $(IFS='; '; echo "${skipped[*]}")"
fi
exit 0
