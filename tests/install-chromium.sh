#!/usr/bin/env bash
# Installs Debian's chromium for the atlas's browser tests (tests/test_atlas.py and the
# workflow test of the atlas). Without root or apt the tests are skipped, not failed.
set -euo pipefail
command -v chromium >/dev/null && exit 0
[[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null || exit 1
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends chromium >/dev/null
}
