#!/usr/bin/env bash
# Create .venv (once) and install lmstack into it. torch goes first: `torch==2.13.0` takes the
# CPU wheel that is on the machine, so nothing pulls gigabytes of CUDA packages.
# Usage: source scripts/env.sh [extra]   (extra: "test", "bench", or empty)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LMSTACK_VENV:-$ROOT/.venv}"
EXTRA="${1:-}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install --quiet torch==2.13.0
SPEC="$ROOT"
[ -n "$EXTRA" ] && SPEC="$ROOT[$EXTRA]"
"$VENV/bin/python" -m pip install --quiet -e "$SPEC"
export PATH="$VENV/bin:$PATH"
