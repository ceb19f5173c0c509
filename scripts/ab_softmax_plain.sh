#!/bin/sh
# One-thread A/B of the plain softmax cross-entropy kernel (issue 16): builds
# scripts/ab_softmax_plain.c (-DAB_MINI: fl_softmax_ce.inc alone) against two source trees,
# checks that their results hash the same (3000 cases: every SIMD level, float32/float64,
# ignore_index, weights, wide ranges with -inf), then alternates the two binaries over
# ROUNDS rounds per shape and prints the median of the per-round medians (thread CPU time,
# float32, AVX-512 or the best level built).
#   scripts/ab_softmax_plain.sh OLD_TREE [NEW_TREE (default: this tree)] [ROUNDS (default 5)]
# ISA=0|1|2 (baseline, AVX2, AVX-512: default 2) and DTYPE=f32|f64 (default f32) in the
# environment choose the timed variant.
# OLD_TREE: e.g. `git worktree add --detach /tmp/old main && (cd /tmp/old && python setup.py
# build_ext --inplace)` (the build renders the generated headers fl_kernels.h includes).
set -e
OLD=$1
NEW=${2:-$(cd "$(dirname "$0")/.." && pwd)}
ROUNDS=${3:-5}
ISA=${ISA:-2}
DTYPE=${DTYPE:-f32}
HARNESS=$(cd "$(dirname "$0")" && pwd)/ab_softmax_plain.c
FLAGS="-O3 -DAB_MINI -fno-trapping-math -fno-math-errno -Wno-unused-function -fopenmp"
gcc $FLAGS -I "$OLD/fastloss/_src" "$HARNESS" -o /tmp/ab_softmax_plain_old -lm
gcc $FLAGS -I "$NEW/fastloss/_src" -I "$OLD/fastloss/_src" "$HARNESS" -o /tmp/ab_softmax_plain_new -lm
/tmp/ab_softmax_plain_old hash > /tmp/ab_softmax_plain_old.hash
/tmp/ab_softmax_plain_new hash > /tmp/ab_softmax_plain_new.hash
if cmp -s /tmp/ab_softmax_plain_old.hash /tmp/ab_softmax_plain_new.hash; then
    echo "hashes: all $(wc -l < /tmp/ab_softmax_plain_new.hash) cases bitwise equal"
else
    echo "hashes: $(diff /tmp/ab_softmax_plain_old.hash /tmp/ab_softmax_plain_new.hash | grep -c '^>') of $(wc -l < /tmp/ab_softmax_plain_new.hash) cases differ"
fi
echo "load: $(cut -d' ' -f1-3 /proc/loadavg); SIMD level $ISA, $DTYPE"
printf "%-12s %10s %10s %8s\n" shape "old us" "new us" "new/old"
for shape in "4096 100" "1024 1000" "65536 10" "2048 200" "16384 1000" "4096 32" "4096 40" \
             "4096 48" "4096 64" "4096 80" "4096 96" "256 100" "1024 100" "131072 100"; do
    set -- $shape
    reps=$((20000000 / ($1 * $2) + 20))
    [ $reps -gt 400 ] && reps=400
    o=""; n=""
    i=0
    while [ $i -lt "$ROUNDS" ]; do
        o="$o $(/tmp/ab_softmax_plain_old time $1 $2 $reps $ISA $DTYPE | awk '{print $5}')"
        n="$n $(/tmp/ab_softmax_plain_new time $1 $2 $reps $ISA $DTYPE | awk '{print $5}')"
        i=$((i + 1))
    done
    mo=$(echo $o | tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    mn=$(echo $n | tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf "%-12s %10s %10s %8.3f\n" "$1x$2" "$mo" "$mn" "$(echo "$mn / $mo" | bc -l)"
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
