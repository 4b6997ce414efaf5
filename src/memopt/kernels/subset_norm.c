/*
 * One Subset-Norm step (Adam-, RMSProp- and AdaGrad-SN) over a float32 parameter with float32 state, in as
 * few passes over memory as the math allows.
 *
 * Nguyen & Nguyen, "Lean and Mean Adaptive Optimization via Subset-Norm and Subspace-Momentum with
 * Convergence Guarantees", ICML 2025 (arXiv 2411.07120). Written by hand: no maintained library ships a CPU
 * kernel for this update (torch runs it as several foreach passes).
 *
 * The parameter is viewed as a row-major (rows x cols) matrix. Each subset is a row (one accumulator per
 * row, `acc[rows]`) or a column (`acc[cols]`). With N the numerator (the momentum m, or g itself when
 * there is none):
 *
 *   m   = m + beta1_weight (g - m)                          (torch's lerp; its large-weight form when
 *                                                            beta1_weight >= 0.5)
 *   S   = sum over the subset of g^2                         (in double, then rounded to float32)
 *   acc = beta2 acc + (1 - beta2) S    (ema)  or  acc + S    (beta2 = 1, AdaGrad)
 *   D   = sqrt(acc) / root_correction + eps
 *   p   = decay p  (before the update)  ;  p = p - step_size N / D  ;  p = decay p  (after the update)
 *
 * Every float32 operation is the one the engine's reference path performs, in the same order, with the same
 * fused multiply-adds as torch's vectorized CPU kernels (lerp, add with alpha); only S differs, by the
 * rounding of torch's float32 summation order.
 *
 * Rows: one pass. One loop computes a row's momentum and sum of squares, a second its update while the row is
 * still in cache. Threads take rows in chunks as they come free (dynamic scheduling: on a busy machine a thread
 * that was descheduled does not hold the others up).
 * Columns: two passes. The first reads g only, summing squares per column in double (threads take blocks of
 * columns; each column is summed over all rows by one thread, so the result does not depend on the thread
 * count); the second updates m and p row by row (threads take chunks of rows).
 * 8-bit momentum (memopt_subset_norm_step_8bit): the subsets' denominators first, then block by block of the
 * codes, see there.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quant8.h"

#ifdef _OPENMP
#include <omp.h>
#define thread_index() omp_get_thread_num()
#else
#define thread_index() 0
#endif

#define LANES 8        /* independent double accumulators, so that the sum of squares vectorizes */
#define PARALLEL_MIN 32768 /* fewer elements than this run on one thread (the fork costs more) */
#define CHUNK 16384        /* about this many elements per piece of work handed to a thread */
#define COLUMN_BLOCK 128   /* columns per piece of work in the column sums */

typedef struct {
    float beta1_weight; /* 1 - beta1; unused without momentum */
    float beta2;
    float one_minus_beta2;
    int ema;            /* beta2 < 1: EMA accumulation; else a running sum */
    float root_correction;
    float eps;
    float decay;        /* 1 - lr wd (1 without decoupled decay) */
    int decay_after;    /* apply the decay after the update rather than before */
    float neg_step_size;
} Options;

/* The lanes' sums of g[0:whole]^2 in double (each product is exact), with the momentum m <- LERP(m, g) when
   m is not NULL: one loop over LANES independent sums, so that it vectorizes. */
#define SQUARES_LOOP(LERP)                                                                                    \
    for (int64_t i = 0; i < whole; i += LANES)                                                                \
        for (int k = 0; k < LANES; ++k) {                                                                     \
            float gi = g[i + k];                                                                              \
            m[i + k] = LERP(m[i + k], gi);                                                                    \
            lane[k] += (double)gi * (double)gi;                                                               \
        }
/* torch's lerp as its vectorized kernel computes it: fma(w, g - m, m) for w < 0.5, else fma(w - 1, g - m, g) */
#define LERP_SMALL(mi, gi) fmaf(w, (gi) - (mi), (mi))
#define LERP_LARGE(mi, gi) fmaf(coeff, (gi) - (mi), (gi))

/* The momentum update of m[0:len] (m NULL: none) and the sum of g^2 over g[0:len], in one loop. */
static double momentum_and_squares(float *restrict m, const float *restrict g, int64_t len, float w) {
    double lane[LANES] = {0}, total = 0.0;
    int64_t whole = len - len % LANES;
    float coeff = w - 1.0f;
    if (m == NULL) {
        for (int64_t i = 0; i < whole; i += LANES)
            for (int k = 0; k < LANES; ++k) lane[k] += (double)g[i + k] * (double)g[i + k];
    } else if (w < 0.5f) {
        SQUARES_LOOP(LERP_SMALL)
        for (int64_t i = whole; i < len; ++i) m[i] = LERP_SMALL(m[i], g[i]);
    } else {
        SQUARES_LOOP(LERP_LARGE)
        for (int64_t i = whole; i < len; ++i) m[i] = LERP_LARGE(m[i], g[i]);
    }
    for (int64_t i = whole; i < len; ++i) total += (double)g[i] * (double)g[i];
    for (int k = 0; k < LANES; ++k) total += lane[k];
    return total;
}

/* the momentum update of m[0:len] alone */
static void momentum_only(float *restrict m, const float *restrict g, int64_t len, float w) {
    float coeff = w - 1.0f;
    if (w < 0.5f)
        for (int64_t i = 0; i < len; ++i) m[i] = LERP_SMALL(m[i], g[i]);
    else
        for (int64_t i = 0; i < len; ++i) m[i] = LERP_LARGE(m[i], g[i]);
}

/* the accumulator after this step's statistic, and the denominator it gives */
static float accumulate(float *acc, double sum, const Options *o) {
    float stat = (float)sum;
    float value = o->ema ? fmaf(stat, o->one_minus_beta2, *acc * o->beta2) : *acc + stat;
    *acc = value;
    return sqrtf(value) / o->root_correction + o->eps;
}

/* p <- p - step_size N / D for one row: `denom` is one value (row subsets) or one per column */
static void apply_row(float *p, const float *num, int64_t len, const float *denom, int per_column,
                      const Options *o) {
    float decay_before = o->decay_after ? 1.0f : o->decay, decay_after = o->decay_after ? o->decay : 1.0f;
    if (per_column) {
        for (int64_t i = 0; i < len; ++i)
            p[i] = fmaf(num[i] / denom[i], o->neg_step_size, p[i] * decay_before) * decay_after;
    } else {
        float d = *denom;
        for (int64_t i = 0; i < len; ++i) p[i] = fmaf(num[i] / d, o->neg_step_size, p[i] * decay_before) * decay_after;
    }
}

static void row_subsets(float *param, const float *grad, float *m, float *acc, int64_t rows, int64_t cols,
                        const Options *o, int threads) {
    int64_t chunk = CHUNK / cols > 1 ? CHUNK / cols : 1;
#pragma omp parallel for schedule(dynamic, chunk) num_threads(threads) if (rows * cols >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; ++r) {
        const float *g = grad + r * cols;
        float *mr = m ? m + r * cols : NULL;
        float denom = accumulate(acc + r, momentum_and_squares(mr, g, cols, o->beta1_weight), o);
        apply_row(param + r * cols, mr ? mr : g, cols, &denom, 0, o);
    }
}

/* The denominators of column subsets: the column sums of g^2 (in double, by blocks of columns each summed over
   all rows by one thread, so the result does not depend on the thread count), accumulated into acc. */
static void column_denominators(const float *grad, float *acc, float *denom, double *sums, int64_t rows,
                                int64_t cols, const Options *o, int use) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(use)
    for (int64_t lo = 0; lo < cols; lo += COLUMN_BLOCK) {
        int64_t hi = lo + COLUMN_BLOCK < cols ? lo + COLUMN_BLOCK : cols;
        for (int64_t r = 0; r < rows; ++r) {
            const float *g = grad + r * cols;
            for (int64_t j = lo; j < hi; ++j) sums[j] += (double)g[j] * (double)g[j];
        }
    }
    for (int64_t j = 0; j < cols; ++j) denom[j] = accumulate(acc + j, sums[j], o);
}

static int column_subsets(float *param, const float *grad, float *m, float *acc, int64_t rows, int64_t cols,
                          const Options *o, int threads) {
    double *sums = calloc((size_t)cols, sizeof(double));
    float *denom = malloc(sizeof(float) * (size_t)cols);
    if (sums == NULL || denom == NULL) {
        free(sums);
        free(denom);
        return 1;
    }
    int use = rows * cols >= PARALLEL_MIN ? threads : 1;
    int64_t chunk = CHUNK / cols > 1 ? CHUNK / cols : 1;
    /* pass 1: column sums of squares */
    column_denominators(grad, acc, denom, sums, rows, cols, o, use);
    /* pass 2: momentum and update, row by row */
#pragma omp parallel for schedule(dynamic, chunk) num_threads(use)
    for (int64_t r = 0; r < rows; ++r) {
        const float *g = grad + r * cols;
        float *mr = m ? m + r * cols : NULL;
        if (mr) momentum_only(mr, g, cols, o->beta1_weight);
        apply_row(param + r * cols, mr ? mr : g, cols, denom, 1, o);
    }
    free(sums);
    free(denom);
    return 0;
}

/* One step; `momentum` is NULL when the numerator is the gradient. Returns nonzero if scratch memory for
   column subsets could not be allocated (nothing is modified then). */
int memopt_subset_norm_step(float *param, const float *grad, float *momentum, float *acc, int64_t rows,
                            int64_t cols, int per_column, float beta1_weight, float beta2, float one_minus_beta2,
                            int ema, float root_correction, float eps, float decay, int decay_after,
                            float neg_step_size, int threads) {
    Options o = {beta1_weight, beta2, one_minus_beta2, ema, root_correction, eps, decay, decay_after, neg_step_size};
    if (rows <= 0 || cols <= 0) return 0;
    if (per_column) return column_subsets(param, grad, momentum, acc, rows, cols, &o, threads);
    row_subsets(param, grad, momentum, acc, rows, cols, &o, threads);
    return 0;
}

/* One block of the 8-bit step: m = map[code] * scale, m <- lerp(m, g), p <- the update with m and the
   elements' denominators d; the new m is left in m. Returns max |m|. The same float32 operations as
   momentum_only and apply_row on the dequantized momentum (multiplying by a decay of 1 is exact). */
static float block_update(float *p, const float *g, const uint8_t *codes, float scale, const float *map,
                          const float *d, float *m, int64_t len, const Options *o) {
    float w = o->beta1_weight, coeff = w < 0.5f ? w : w - 1.0f;
    int small = w < 0.5f;
    float before = o->decay_after ? 1.0f : o->decay, after = o->decay_after ? o->decay : 1.0f;
    uint32_t best = 0;
    int64_t i = 0;
#ifdef __AVX2__
    __m256 vscale = _mm256_set1_ps(scale), vcoeff = _mm256_set1_ps(coeff), step = _mm256_set1_ps(o->neg_step_size);
    __m256 vbefore = _mm256_set1_ps(before), vafter = _mm256_set1_ps(after);
    __m256i magnitude = _mm256_set1_epi32(0x7fffffff), top = _mm256_setzero_si256();
    for (; i + 8 <= len; i += 8) {
        const uint8_t *k = codes + i; /* eight scalar loads: see adamw8bit.c */
        __m256 mo = _mm256_mul_ps(_mm256_setr_ps(map[k[0]], map[k[1]], map[k[2]], map[k[3]], map[k[4]], map[k[5]],
                                                 map[k[6]], map[k[7]]), vscale);
        __m256 gi = _mm256_loadu_ps(g + i);
        __m256 mi = _mm256_fmadd_ps(vcoeff, _mm256_sub_ps(gi, mo), small ? mo : gi);
        __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), vbefore);
        pi = _mm256_fmadd_ps(_mm256_div_ps(mi, _mm256_loadu_ps(d + i)), step, pi);
        _mm256_storeu_ps(p + i, _mm256_mul_ps(pi, vafter));
        _mm256_storeu_ps(m + i, mi);
        top = _mm256_max_epu32(top, _mm256_and_si256(_mm256_castps_si256(mi), magnitude));
    }
    uint32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, top);
    for (int k = 0; k < 8; ++k) best = lanes[k] > best ? lanes[k] : best;
#endif
    for (; i < len; ++i) {
        float mo = map[codes[i]] * scale, gi = g[i];
        float mi = small ? LERP_SMALL(mo, gi) : LERP_LARGE(mo, gi);
        p[i] = fmaf(mi / d[i], o->neg_step_size, p[i] * before) * after;
        m[i] = mi;
        uint32_t bits;
        memcpy(&bits, &mi, sizeof bits);
        bits &= 0x7fffffffu;
        best = bits > best ? bits : best;
    }
    float result;
    memcpy(&result, &best, sizeof result);
    return result;
}

/*
 * One step with the momentum stored as 8-bit block-wise codes (memopt.state.formats.Blockwise8bit, blocks of
 * `block` elements from the first): the same update as memopt_subset_norm_step on the dequantized momentum,
 * followed by its requantization, without a float32 copy of the momentum in memory.
 *   pass 1: every subset's sum of g^2 and its denominator (rows: one thread per row; columns: as above);
 *   pass 2: block by block (threads split the blocks), m = map[code] * absmax in a block-sized buffer,
 *           m <- lerp(m, g), p <- the update with m and its subset's denominator, absmax = max |m|, and the
 *           nearest codes of m / absmax (quant8.h).
 * Bytes per element: g twice, p read and written, one code read and written (18), where dequantizing into a
 * float32 tensor, the float32 step and requantizing move 30 and touch a fresh tensor's pages.
 * Returns nonzero if its buffers could not be allocated (nothing is modified then).
 */
int memopt_subset_norm_step_8bit(float *param, const float *grad, uint8_t *codes, float *absmax,
                                 const float *map, const float *midpoints, int is_signed, int64_t block,
                                 float *acc, int64_t rows, int64_t cols, int per_column, float beta1_weight,
                                 float beta2, float one_minus_beta2, int ema, float root_correction, float eps,
                                 float decay, int decay_after, float neg_step_size, int threads) {
    Options o = {beta1_weight, beta2, one_minus_beta2, ema, root_correction, eps, decay, decay_after, neg_step_size};
    if (rows <= 0 || cols <= 0) return 0;
    int64_t n = rows * cols, subsets = per_column ? cols : rows, blocks = (n + block - 1) / block;
    int use = n >= PARALLEL_MIN ? threads : 1;
    float *denom = malloc(sizeof(float) * (size_t)subsets);
    double *sums = per_column ? calloc((size_t)cols, sizeof(double)) : NULL;
    /* each thread's block buffers: the new momentum and the elements' denominators */
    float *buffers = malloc(sizeof(float) * 2 * (size_t)block * (size_t)use);
    if (denom == NULL || (per_column && sums == NULL) || buffers == NULL) {
        free(denom);
        free(sums);
        free(buffers);
        return 1;
    }
    if (per_column) {
        column_denominators(grad, acc, denom, sums, rows, cols, &o, use);
    } else {
        int64_t chunk = CHUNK / cols > 1 ? CHUNK / cols : 1;
#pragma omp parallel for schedule(dynamic, chunk) num_threads(use)
        for (int64_t r = 0; r < rows; ++r)
            denom[r] = accumulate(acc + r, momentum_and_squares(NULL, grad + r * cols, cols, 0.0f), &o);
    }
    Q8Map q;
    q8_init(&q, midpoints, is_signed);
#pragma omp parallel num_threads(use)
    {
        float *m = buffers + 2 * (size_t)block * (size_t)thread_index(), *d = m + block;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
            int64_t start = b * block, len = n - start < block ? n - start : block;
            /* each element's denominator, in runs that stay within one row (one value, or a run of the
               columns') */
            for (int64_t e = start; e < start + len;) {
                int64_t r = e / cols, c = e % cols;
                int64_t run = cols - c < start + len - e ? cols - c : start + len - e;
                float *out = d + (e - start);
                if (per_column)
                    memcpy(out, denom + c, sizeof(float) * (size_t)run);
                else
                    for (int64_t i = 0; i < run; ++i) out[i] = denom[r];
                e += run;
            }
            float top = block_update(param + start, grad + start, codes + start, absmax[b], map, d, m, len, &o);
            absmax[b] = top;
            q8_quantize_block(m, codes + start, len, top, &q);
        }
    }
    free(buffers);
    free(denom);
    free(sums);
    return 0;
}
