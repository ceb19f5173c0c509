"""The fastloss benchmark report: ``python -m fastloss.bench`` (or ``fastloss-bench``).

Times every fused kernel of the installed fastloss against its NumPy reference
(``fastloss.reference``) and the memory floors, on synthetic data, and optionally against
other libraries (``--compare torch,jax,sklearn,numba,monai``). Every result is checked against the
reference before it is timed: a wrong result is reported as a failure and makes the command
exit with status 1.

How the table is built
----------------------
* **One entry of ``LOSSES`` per loss** (losses.py): the input maker, the loss parameters,
  and the peer implementations. Every row of the loss table (fastloss._table.ELEMENTWISE)
  is an entry, its inputs drawn from the row's input_kind and target_kind and its
  parameters the row's defaults; then the class-axis losses softmax_cross_entropy and
  softmax_focal, gaussian_kl (an element count becomes N x 64 rows) and the L1/L2
  penalties (strength 1e-3, against the copy floor: one array in, one out); then the
  second wave: multi_margin (p=1) and kl_divergence_with_logits (class-axis), dice,
  jaccard, tversky (sigmoid, (N, 4, H, W) logits and binary masks) and dice_softmax
  (``fastloss.dice`` with activation="softmax", (N, 21, H, W), one-hot targets), the pair
  and triplet losses (triplet_margin, contrastive, cosine_embedding on (N, 128) rows;
  margin_ranking on 1-D scores) and linear_cross_entropy ((N, D) hidden, (V, D) weight,
  (N,) targets, no bias). The fastloss kernel and the reference are
  ``fastloss.<name>`` and ``fastloss.reference.<name>`` (``<function>`` where an entry
  names another); a loss that the installed fastloss does not have is skipped with a
  message.
* **Rows**: ``fastloss`` writes the gradient into a preallocated ``out=`` array (the main
  row), ``fastloss-alloc`` allocates it on every call; ``reference`` is the NumPy oracle;
  ``copy-floor`` and ``add-floor`` are the memory floors below; then the peers.
* **Sizes** are counts of elements of the differentiated input: ``tiny`` (4096: per-call
  overhead), ``cache`` (131072: input + gradient are 1 MiB in float32, within a per-core
  L2 cache, and 2 MiB in float64, within any last-level cache) and ``large`` (at least
  2**24, and at least twice the last-level cache in float32), or any number, or an explicit
  shape (``NxC``; ``NxCxHxW`` for the overlap losses, ``NxDxV`` for
  linear_cross_entropy). The class-index losses use C = 1000 classes from 64000 elements
  on (C = max(2, isqrt(elements)) below that) and N = max(1, elements // C) rows, so 1
  element becomes 1x2; the other layouts' rules are in ``cases.layout_shape`` (a count is
  of the (N, V) logits for linear_cross_entropy), and the header lists the shape each size
  became. The second wave's entries count at most 2**22 elements at the named sizes
  (their NumPy references are slow; ``LossEntry.max_named``).
* **Time**: median of repeats (``time.perf_counter``, garbage collector off, calls batched
  so that one sample lasts at least 0.2 ms), with half the interquartile range as spread.
  Repeats fill a time budget per measurement (0.15 s; ``--quick`` 0.03 s), at least 5
  (``--quick`` 3), but a measurement stops after 2.5 s (``--quick`` 0.4 s): a slower call,
  such as a NumPy reference at the large size, is timed fewer times, down to once. The
  ``repeats`` column gives samples × calls per sample, and a note counts the measurements
  timed fewer than the minimum.
* **GB/s**: bytes that any implementation must move (input read + gradient written +
  targets read) divided by the median time; the same numerator for every row.
* **vs ref**: the reference's median time divided by the row's (>1: faster than NumPy).
* **/copy**: the row's time over the copy floor, ``np.copyto(dst, input)`` into a
  preallocated array (one read and one write stream); **/a+b**, for element-wise losses,
  over the three-stream floor ``np.add(input, target, out=dst)`` (gaussian_kl:
  ``np.add(mean, log_var, out=dst)``; the overlap losses and kl_divergence_with_logits
  too); **/io**, for the pair and triplet losses, over reading every input and writing
  every gradient once (triplet_margin: three copies); **/gemm**, for
  linear_cross_entropy, over the three GEMMs alone (H W^T, G W, G^T H, unchunked, with
  SciPy's BLAS as linear_cross_entropy) at the row's own thread count. 1.0 is at the
  floor. The memory floors run on one thread (one core draws most of the memory
  bandwidth).
* **Plot** (``--plot``): per loss and dtype, against the number of elements (log-log),
  either the speedup over the reference (``--plot-y speedup``, the default) or the time per
  element in nanoseconds (``--plot-y time``, the scaling plot: flat where a kernel is
  memory- or compute-bound, rising to the left where the per-call cost dominates).
* **Threads**: each loss runs at 1 thread and at all threads (``--threads``). fastloss
  gets ``n_threads``; threadpoolctl limits the OpenMP/BLAS pools of other libraries,
  ``torch.set_num_threads`` and ``numba.set_num_threads`` are set too. The reference and
  the floors are single-threaded NumPy and are timed once per case. The header gives the
  load average: other processes on the machine make the timings, multi-thread ones most of
  all, unreliable, and the report says so when it sees them.

The modules
-----------
``sizes`` (named sizes, counts, shapes), ``cases`` (inputs, ``LossEntry``, ``Case``, the
check against the reference), ``peers`` (torch, torch.compile, jax, sklearn, numba
and MONAI builders), ``numba_kernels``, ``losses`` (``LOSSES``, from the loss table, with each loss's
peers), ``timing`` (``measure``, thread limits), ``run`` (the rows of a loss, checked, then
timed), ``report`` (text, markdown, JSON), ``plot`` and ``cli`` (the command line).
See ``peers`` for how each peer computes the same quantity.
"""

from .cases import Case, Inputs, LossEntry, NotApplicable, check_result, make_case
from .cli import DEFAULT, QUICK, main, parse_settings
from .losses import LOSSES
from .peers import PEER_FAMILIES, PeerFamily, _installed
from .plot import PLOT_METRICS, plot_value, write_plot
from .report import Report, render_markdown, render_text
from .run import (ADD_FLOOR, COPY_FLOOR, FASTLOSS_IMPLS, GEMM_FLOOR, IO_FLOOR,
                  REFERENCE_IMPL, Implementation, Settings, implementations, run)
from .sizes import Size, named_sizes, parse_size
from .timing import Timing, _all_threads, measure, thread_limit

__all__ = ["LOSSES", "PEER_FAMILIES", "LossEntry", "Case", "Implementation", "main",
           "make_case", "implementations", "check_result", "measure", "parse_size",
           "write_plot", "plot_value"]
