#!/usr/bin/env bash
# The GPU machine's one script: build fastmlp with CUDA, run the cuda tests, run the GPU
# benchmark beside PyTorch, all in about 8 minutes, every output in one flat folder.
#
#   OUT=gpu_out bash benchmarks/gpu_check.sh        (from anywhere; it cds to the repository root)
#
# Stages, each under `timeout` and each run whatever the one before did (a stage that needs the
# build is skipped when the build failed):
#   env      nvidia-smi, nvcc, Python, PyTorch, CMake           -> $OUT/summary.txt
#   build    pip install --target (no venv) with FASTMLP_CUDA=ON  -> $OUT/build.log
#   info     fastmlp info and fastmlp._core.cuda_info()          -> $OUT/summary.txt
#   kernels  pytest -m cuda tests/test_cuda_kernels.py           -> $OUT/kernels.log, kernels.xml
#   api      pytest -m cuda tests/test_cuda_api.py               -> $OUT/api.log, api.xml
#   bench    benchmarks/bench_gpu.py --json                      -> $OUT/bench.log, bench.json
# The last lines printed are the tests' summaries, the benchmark's tables and a table of every
# stage's status (also at the end of summary.txt): the caller may see only the tail.
#
# Environment: OUT (default gpu_out), PYTHON (default python3), GPU_CHECK_SECONDS (the whole
# run, default 450: the build may take 3/5 of it, each test file 1/4, the benchmark the rest),
# BENCH_ARGS (more options for bench_gpu.py, e.g. "--quick"), FASTMLP_CUBLAS (else set here
# when a libcublas.so.13/.12 exists that the dynamic loader would not find).
# At most 8 files land in $OUT, named as above.
set -u

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 2
OUT="${OUT:-gpu_out}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)" || exit 2
PY="${PYTHON:-python3}"
total="${GPU_CHECK_SECONDS:-450}"
work="/tmp/fastmlp-gpu-check-$(printf '%s' "$root" | cksum | cut -d' ' -f1)"  # a build folder per source tree
site="$work/site"
summary="$OUT/summary.txt"
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
: >"$summary"

names=() results=() seconds=() files=() details=()

# One line on what a stage's log says: pytest's counts, the benchmark's verdict line.
detail_of() {
    local logfile=$1
    case $(basename "$logfile") in
        kernels.log | api.log)
            tail -n 3 "$logfile" | grep -Eo '[0-9]+ (passed|failed|skipped|errors?|deselected|xfailed|xpassed)' |
                paste -sd, - | sed 's/,/, /g' ;;
        bench.log)
            grep -E '^targets: ' "$logfile" | tail -1 | cut -d';' -f1 ;;
    esac
}

# Seconds left for a stage: at most `cap`, and leave `reserve` for the stages after it.
limit_for() {
    local cap=$1 reserve=$2 left
    left=$((total - SECONDS - reserve))
    ((left > cap)) && left=$cap
    ((left < 10)) && left=10
    echo "$left"
}

# run_stage NAME LIMIT LOGFILE COMMAND...: the command under timeout, its output to LOGFILE.
run_stage() {
    local name=$1 limit=$2 logfile=$3 start=$SECONDS rc status
    shift 3
    echo "== $name: started at +${SECONDS}s, limit ${limit}s, output $(basename "$logfile")"
    timeout -k 10 "$limit" "$@" >>"$logfile" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        5) status="NO TESTS RAN (exit 5)" ;;
        124 | 137) status="TIMEOUT (${limit}s)" ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    echo "== $name: $status after $((SECONDS - start))s"
    names+=("$name") results+=("$status") seconds+=("$((SECONDS - start))") files+=("$(basename "$logfile")")
    details+=("$(detail_of "$logfile")")
    return $rc
}

skip_stage() {
    echo "== $1: skipped ($2)"
    names+=("$1") results+=("skipped") seconds+=(0) files+=("-") details+=("$2")
}

# ---- env -------------------------------------------------------------------------------------
if ! command -v nvcc >/dev/null 2>&1; then
    for dir in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
        [ -x "$dir/nvcc" ] && export PATH="$dir:$PATH" && break
    done
fi
command -v nvcc >/dev/null 2>&1 && export CUDACXX="${CUDACXX:-$(command -v nvcc)}"
env_report() {
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); host $(hostname); $(nproc) cores; $(free -g | awk '/Mem:/ {print $2 " GiB"}')"
    echo "git: $(git log -1 --format='%h %s' 2>/dev/null | cut -c1-100)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv 2>&1
    nvidia-smi 2>&1
    echo "nvcc: $(nvcc --version 2>&1 | tail -2 | tr '\n' ' ')"
    echo "cmake: $(cmake --version 2>&1 | head -1); ninja: $(ninja --version 2>&1)"
    "$PY" - <<'EOF' 2>&1
import platform, sys
print("python:", sys.executable, platform.python_version())
for name in ("numpy", "pybind11", "scikit_build_core", "pytest", "torch", "triton"):
    try:
        module = __import__(name)
        print(f"{name}: {getattr(module, '__version__', '?')}")
    except Exception as error:
        print(f"{name}: not importable ({error})")
try:
    import torch
    print("torch cuda:", torch.version.cuda, "available:", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as error:
    print("torch cuda: ?", error)
EOF
    # cuBLAS: fastmlp loads libcublas.so.13 / .12 at run time; name one the loader would miss.
    if [ -z "${FASTMLP_CUBLAS:-}" ] && ! ldconfig -p 2>/dev/null | grep -Eq 'libcublas\.so\.1[23] '; then
        local found=""
        for dir in ${LD_LIBRARY_PATH:+${LD_LIBRARY_PATH//:/ }}; do
            ls "$dir"/libcublas.so.1[23] >/dev/null 2>&1 && found="(on LD_LIBRARY_PATH)" && break
        done
        if [ -z "$found" ]; then
            found=$(find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib \
                $("$PY" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) \
                -maxdepth 5 -name 'libcublas.so.1[23]' 2>/dev/null | head -1)
            [ -n "$found" ] && echo "FASTMLP_CUBLAS=$found" >"$work/cublas.env"
        fi
        echo "cublas: not in the loader's cache; found: ${found:-none}"
    else
        local cached
        cached=$(ldconfig -p 2>/dev/null | grep -Eo 'libcublas\.so\.1[23] .*' | head -1)
        echo "cublas: ${FASTMLP_CUBLAS:-in the cache of the loader: $cached}"
    fi
}
mkdir -p "$work"
rm -f "$work/cublas.env"
export PY work
export -f env_report
run_stage env 30 "$summary" bash -c env_report
if [ -f "$work/cublas.env" ]; then
    export "$(cat "$work/cublas.env")"
    echo "== env: exported $(cat "$work/cublas.env")"
fi
grep -E '^(nvcc|torch|cublas):|NVIDIA|^name' "$summary" | head -8

# ---- build -----------------------------------------------------------------------------------
rm -rf "$site"
export SKBUILD_BUILD_DIR="$work/build" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
built=0
if run_stage build "$(limit_for $((total * 3 / 5)) 170)" "$OUT/build.log" \
    "$PY" -m pip install -v --no-index --no-build-isolation --no-deps --target "$site" . \
    -Ccmake.define.FASTMLP_CUDA=ON "-Cbuild.tool-args=-j$(nproc)"; then
    built=1
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"

# ---- info ------------------------------------------------------------------------------------
info_report() {
    echo
    echo "== fastmlp info"
    "$PY" -m fastmlp info
    local rc=$?
    "$PY" -c 'import fastmlp, fastmlp._core as c; print("fastmlp from", fastmlp.__file__); print("cuda_info:", c.cuda_info() if hasattr(c, "cuda_info") else "no fastmlp._core.cuda_info"); print("cuda kernels module:", hasattr(c, "cuda") and c.cuda.available())'
    return $((rc | $?))
}
if ((built)); then
    export -f info_report
    run_stage info 30 "$summary" bash -c info_report
    sed -n '/^== fastmlp info/,$p' "$summary" | head -25
else
    skip_stage info "build failed"
fi

# ---- tests -----------------------------------------------------------------------------------
pytest_options=(-p no:cacheprovider -v -ra --durations=8)
has_timeout_plugin=0
"$PY" -c 'import pytest_timeout' >/dev/null 2>&1 && has_timeout_plugin=1
# -m cuda needs the marker registered (tests/conftest.py, pyproject.toml); without it, every test.
if "$PY" -m pytest -p no:cacheprovider --markers 2>/dev/null | grep -q '^@pytest.mark.cuda'; then
    pytest_options+=(-m cuda)
else
    echo "== tests: the cuda marker is not registered: running every test of the two files"
fi
for suite in kernels api; do
    file="tests/test_cuda_$suite.py"
    if ((!built)); then
        skip_stage "$suite" "build failed"
    elif [ ! -f "$file" ]; then
        skip_stage "$suite" "$file missing"
    else
        reserve=$([ "$suite" = kernels ] && echo 160 || echo 110)
        limit=$(limit_for $((total / 4)) "$reserve")
        # A test that hangs: its stacks are dumped (faulthandler), and pytest-timeout, where
        # installed, fails it and goes on, before the stage's own timeout ends everything.
        per_test=(-o "faulthandler_timeout=$((limit > 40 ? limit - 25 : 15))")
        ((has_timeout_plugin)) && per_test+=("--timeout=$((limit > 40 ? limit - 15 : 25))")
        run_stage "$suite" "$limit" "$OUT/$suite.log" \
            "$PY" -m pytest "${pytest_options[@]}" "${per_test[@]}" --junitxml="$OUT/$suite.xml" "$file"
    fi
done

# ---- bench -----------------------------------------------------------------------------------
if ((built)); then
    limit=$(limit_for 400 5)
    bench_budget=$((limit - 50))  # bench_gpu.py stops itself by then (its last guard: budget + 45 s)
    quick=()
    ((limit < 160)) && quick=(--quick)
    ((bench_budget < 30)) && bench_budget=30
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
    run_stage bench "$limit" "$OUT/bench.log" "$PY" benchmarks/bench_gpu.py "${quick[@]}" \
        --time-budget "$bench_budget" --json "$OUT/bench.json" ${BENCH_ARGS:-}
    rm -f "$OUT"/*.tmp
else
    skip_stage bench "build failed"
fi

# ---- results: the tail is what the caller sees -------------------------------------------------
echo
echo "================================ results ================================"
if ((!built)) && [ -f "$OUT/build.log" ]; then
    echo "-- build.log: first errors, then the tail"
    grep -E -m 15 'error|Error|ERROR' "$OUT/build.log" | cut -c1-300
    tail -n 25 "$OUT/build.log" | cut -c1-300
fi
for suite in kernels api; do
    if [ -f "$OUT/$suite.log" ]; then
        echo "-- $suite.log: failures and the last lines"
        grep -E '^(FAILED|ERROR) ' "$OUT/$suite.log" | awk '!seen[$0]++' | head -12 | cut -c1-200
        tail -n 1 "$OUT/$suite.log" | cut -c1-200
    fi
done
if [ -f "$OUT/bench.log" ]; then
    echo "-- bench.log: the report"
    # From the header's first line to the end, without the progress and worker lines (they begin
    # with [) and tracebacks.
    sed -n '/^GPU benchmark/,$p' "$OUT/bench.log" | grep -v '^\[' | grep -v '^Traceback\|^  File\|^    ' |
        tail -n 45 | cut -c1-260
fi
{
    echo
    echo "stage    | status                 | seconds | output       | detail"
    echo "---------|------------------------|---------|--------------|-------"
    for i in "${!names[@]}"; do
        printf '%-8s | %-22s | %7s | %-12s | %s\n' "${names[$i]}" "${results[$i]}" "${seconds[$i]}" \
            "${files[$i]}" "${details[$i]}"
    done
    echo "total ${SECONDS}s of ${total}s; outputs in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
} | tee -a "$summary"
failed=0
for r in "${results[@]}"; do
    [ "$r" = ok ] || failed=1
done
exit $failed
