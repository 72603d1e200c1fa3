#!/usr/bin/env bash
# The GPU check of lesson 11, in one go: see README.md beside this file.
#
#   OUT=/some/folder bash benchmarks/gpu/run.sh           # on a CUDA machine
#   OUT=/some/folder bash benchmarks/gpu/run.sh --tiny    # the CPU dry run, seconds
#
# Needs python3 with torch and numpy (matplotlib for the lesson's plots); no Jupyter,
# no install: the package is used from this checkout. Writes into $OUT:
#   environment.txt  python, torch, CUDA, the GPU (nvidia-smi when present)
#   bench.json       `bench gpt --preset gpu --json` (--tiny: preset test, on the CPU)
#   bench.log        the benchmark's progress and messages
#   lesson11.ipynb   lesson 11 run top to bottom (full mode; --tiny: test mode), with outputs
#   lesson11.log     what the lesson printed, cell by cell
#   pytest_gpu.log   the GPU-marked tests (`pytest -m gpu`; on a CPU they skip)
#   summary.json     each step's exit status and seconds
# Exit status: 0 when every step passed, 1 when one failed, 2 when --tiny was not
# given and there is no CUDA GPU.
set -uo pipefail
cd "$(dirname "$0")/../.."

tiny=0
[[ "${1:-}" == "--tiny" || "${GPU_CHECK_TINY:-0}" == "1" ]] && tiny=1
OUT="${OUT:-benchmarks/gpu/out}"
PY="${PYTHON:-python3}"
NOTEBOOK="${GPU_CHECK_NOTEBOOK:-notebooks/11_gpt_on_gpu.ipynb}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
BACKPROP_COURSE_HOME="$(mktemp -d)"  # a throwaway progress store
export BACKPROP_COURSE_HOME
if [[ $tiny == 1 ]]; then
    bench_args=(--preset test --device cpu)
    export BACKPROP_COURSE_TEST_MODE=1
else
    bench_args=(--preset gpu --device cuda)
    unset BACKPROP_COURSE_TEST_MODE
fi

# One python start for the environment and the CUDA check (each start imports torch).
"$PY" - "$tiny" >"$OUT/environment.txt" 2>&1 <<'PYTHON'
import datetime, platform, sys, torch, numpy
print("date:", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "| tiny:", sys.argv[1])
print("python", platform.python_version(), "| torch", torch.__version__, "| numpy", numpy.__version__)
print("cuda available:", torch.cuda.is_available(), "| cuda", torch.version.cuda)
if torch.cuda.is_available():
    print("gpu:", torch.cuda.get_device_name(0), "| bf16:", torch.cuda.is_bf16_supported())
elif sys.argv[1] != "1":
    print("no CUDA GPU here: run with --tiny for the CPU dry run")
    sys.exit(2)
PYTHON
rc=$?
command -v nvidia-smi >/dev/null && nvidia-smi >>"$OUT/environment.txt" 2>&1
if [[ $rc != 0 ]]; then
    cat "$OUT/environment.txt"
    exit 2
fi

steps=()
failed=0
step() {  # step NAME TIMEOUT_S COMMAND...: run it, note its exit status and time
    local name=$1 limit=$2 start rc
    shift 2
    echo "=== $name" >&2
    start=$(date +%s)
    timeout "$limit" "$@"
    rc=$?
    steps+=("\"$name\": {\"rc\": $rc, \"seconds\": $(($(date +%s) - start))}")
    [[ $rc == 0 ]] || failed=1
    echo "=== $name: exit $rc" >&2
}

step bench "${GPU_CHECK_BENCH_TIMEOUT:-300}" \
    bash -c '"$0" -m backprop_course.cli bench gpt "${@:3}" --json >"$1" 2>"$2"' \
    "$PY" "$OUT/bench.json" "$OUT/bench.log" "${bench_args[@]}"
step lesson11 "${GPU_CHECK_LESSON_TIMEOUT:-420}" \
    bash -c '"$0" benchmarks/gpu/run_notebook.py "$1" --out "$2" >"$3" 2>&1' \
    "$PY" "$NOTEBOOK" "$OUT/lesson11.ipynb" "$OUT/lesson11.log"
# pyproject's addopts name nbval, which the GPU machine lacks: replace them.
step gpu_tests "${GPU_CHECK_TESTS_TIMEOUT:-180}" \
    bash -c '"$0" -m pytest -q -p no:cacheprovider -o addopts="-ra --strict-markers" -m gpu \
        tests/test_gpt.py >"$1" 2>&1' "$PY" "$OUT/pytest_gpu.log"

{
    echo "{\"tiny\": $([[ $tiny == 1 ]] && echo true || echo false), \"steps\": {"
    (IFS=,; echo "${steps[*]}")
    echo "}}"
} >"$OUT/summary.json"
cat "$OUT/summary.json"
exit $failed
