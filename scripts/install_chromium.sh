#!/usr/bin/env bash
# Install Debian's Chromium for the web UI's end-to-end tests (Playwright drives the system
# browser; nothing downloads a browser build of its own). A no-op when it is already there.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
  echo "note: /usr/bin/chromium is missing and apt-get (as root) is not available; the UI tests will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
