/* ab_softmax_plain.c's kernels for one ISA (FL_ISA, FL_TARGET, FL_VEC_BYTES defined by the
 * includer): fl_softmax_ce.inc in float32 and in float64 */
#define T float
#define FL_IT int32_t
#define FL_SFX f32
#include "fl_softmax_ce.inc"
#undef T
#undef FL_IT
#undef FL_SFX
#define T double
#define FL_IT int64_t
#define FL_SFX f64
#include "fl_softmax_ce.inc"
#undef T
#undef FL_IT
#undef FL_SFX
