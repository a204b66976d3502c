#!/usr/bin/env bash
# Installs Debian's wordnet-base (WordNet 3.0) for the test that regenerates the committed
# ImageNet hypernym table from it. Without root or apt the test is skipped, not failed.
set -euo pipefail
[[ -f /usr/share/wordnet/data.noun ]] && exit 0
[[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null || exit 1
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq wordnet-base >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null && apt-get install -y -qq wordnet-base >/dev/null
}
