#!/usr/bin/env bash
# Build fastloss's extension instrumented, in a temporary copy of this checkout (the checkout's
# own build is left alone), and run the test suite against it.
#
#   scripts/sanitize.sh asan    AddressSanitizer + UndefinedBehaviorSanitizer
#   scripts/sanitize.sh debug   FASTLOSS_DEBUG=1: Cython bounds checks on, -O0 -g
#   scripts/sanitize.sh         both, one after the other
#
# Arguments after the mode go to pytest (default: the whole tests/ directory), e.g.
#   scripts/sanitize.sh asan tests/test_properties.py -x
# Set KEEP=1 to keep the temporary copy (its path is printed). Linux + gcc (or clang).
# Exit status: 0 only if every mode's tests passed and no sanitizer report was printed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
mode="${1:-all}"
[[ $# -gt 0 ]] && shift
pytest_args=("$@")

copy_tree() {  # the checkout's sources, tracked or new, never its build outputs
    local dest="$1"
    if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$repo" && git ls-files -z --cached --others --exclude-standard) |
            (cd "$repo" && xargs -0 cp --parents -t "$dest" 2>/dev/null || true)
    else
        tar -C "$repo" --exclude=build --exclude='*.so' --exclude='fastloss/_kernels.c' -cf - . |
            tar -C "$dest" -xf -
    fi
}

run_mode() {
    local mode="$1"
    local work
    work="$(mktemp -d "${TMPDIR:-/tmp}/fastloss-$mode.XXXXXX")"
    [[ "${KEEP:-0}" == "1" ]] || trap "rm -rf '$work'" RETURN
    copy_tree "$work"
    echo "=== $mode: building in $work"
    local log="$work/pytest.log"
    local -a env_vars=("PYTHONPATH=$work" "PYTHONDONTWRITEBYTECODE=1")
    # tests that measure the process's own memory or wall time are not what a sanitizer run
    # is for (ASan keeps freed blocks in quarantine and replaces malloc, so RSS grows and
    # mallinfo sees nothing); everything else runs
    local -a deselect=()
    case "$mode" in
        asan)
            (cd "$work" && FASTLOSS_SANITIZE=address,undefined CFLAGS="-fno-sanitize-recover=undefined" \
                "$python" setup.py build_ext --inplace -q 2>&1 | grep -Ev "^(copying|running|creating|gcc|g\+\+|x86_64)" || true)
            local libasan
            libasan="$("${CC:-gcc}" -print-file-name=libasan.so)"
            [[ -f "$libasan" ]] || { echo "no libasan.so next to ${CC:-gcc}"; return 2; }
            env_vars+=("LD_PRELOAD=$libasan"
                       # CPython keeps objects alive to the end: leak reports would be noise
                       "ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0:strict_init_order=1:detect_stack_use_after_return=1"
                       "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1"
                       # every Python object from malloc, so overruns into them are seen
                       "PYTHONMALLOC=malloc")
            # and the benchmark tests that load other projects' C++ extensions (matplotlib's
            # ft2font for the plot; scikit-learn and jaxlib for the peer checks) cannot run
            # under a preloaded ASan: a C++ exception thrown in their uninstrumented code makes
            # ASan's __cxa_throw interceptor fail a CHECK and kill the process (seen with
            # gcc 12's libasan.so.8). fastloss's own bench code runs in the other tests.
            deselect=(--deselect "tests/test_memory.py::test_ten_thousand_calls_leave_memory_flat"
                      --deselect "tests/test_memory.py::test_out_calls_allocate_nothing_proportional_to_the_input"
                      --deselect "tests/test_bench.py::test_plot_is_written"
                      --deselect "tests/test_bench.py::test_peer_entries_compute_the_same_quantity_as_torch")
            ;;
        debug)
            (cd "$work" && FASTLOSS_DEBUG=1 "$python" setup.py build_ext --inplace -q 2>&1 |
                grep -Ev "^(copying|running|creating|gcc|g\+\+|x86_64)" || true)
            ;;
        *) echo "unknown mode $mode (asan, debug or all)"; return 2 ;;
    esac
    local so
    so="$(ls "$work"/fastloss/_kernels*.so 2>/dev/null | head -1)"
    [[ -n "$so" ]] || { echo "=== $mode: build failed"; return 2; }
    (cd "$work" && env "${env_vars[@]}" "$python" -c \
        "from fastloss import _kernels; print('compile flags:', _kernels.build_info()['compile_flags'])") || true
    if [[ "$mode" == asan ]]; then  # the extension really is instrumented
        ldd "$so" | grep -E "libasan|libubsan" || { echo "=== asan: not linked to libasan"; return 2; }
        echo "ASan report hooks imported: $(nm -D "$so" | grep -c "__asan_report")," \
             "UBSan (aborting) handlers imported: $(nm -D "$so" | grep -c "__ubsan_handle.*_abort")"
    fi
    local status
    set +e
    (cd "$work" && env "${env_vars[@]}" "$python" -m pytest -q -p no:cacheprovider \
        "${deselect[@]}" "${pytest_args[@]:-tests}") 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    local reports
    reports="$(grep -cE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer|out of bounds" "$log" || true)"
    echo "=== $mode: $reports sanitizer/bounds-check report(s); pytest exit status $status" \
         "($(tail -1 "$log" | tr -d '='))"
    [[ "$reports" == 0 && "$status" == 0 ]]
}

overall=0
case "$mode" in
    all) run_mode asan || overall=1; run_mode debug || overall=1 ;;
    asan|debug) run_mode "$mode" || overall=1 ;;
    *) echo "usage: $0 [asan|debug|all] [pytest arguments]"; exit 2 ;;
esac
exit "$overall"
