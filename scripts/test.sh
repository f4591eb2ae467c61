#!/usr/bin/env bash
# Set up .venv with the test extras (transformers, peft, trl: the reference implementations) and
# run the whole test suite, real-model tests included (they pull the catalog models once).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh test
bash scripts/install_chromium.sh  # the web UI's end-to-end tests drive Debian's Chromium
python -m pytest -q -ra "$@"
