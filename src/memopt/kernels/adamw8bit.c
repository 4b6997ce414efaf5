/*
 * One AdamW step over float32 parameters whose two moments are stored as 8-bit block-wise dynamic codes
 * (memopt.state.quantization), fused into a single pass over memory.
 *
 * Written by hand because no maintained library ships a fused CPU kernel for this update that is
 * competitive: torch has fused kernels only for float32 state, and the 8-bit peers run several passes.
 *
 * For each block of `block` consecutive elements (blocks are independent, so threads split them):
 *   1. dequantize:  m = signed_map[m_code] * m_absmax[b],  v = unsigned_map[v_code] * v_absmax[b]
 *   2. update:      m = m + (1 - beta1) (g - m)            (torch's lerp, with one fused multiply-add)
 *                   v = beta2 v + (1 - beta2) g^2
 *                   p = decay * p - step_size * m / (sqrt(v) / root_correction + eps)
 *   3. requantize:  absmax = max |x| over the block (tracked during step 2); code = nearest map value to
 *                   x / absmax, decided from the value's position in its decade (quant8.h).
 * Every floating-point operation is the one the engine's reference path performs, in the same order and
 * precision, so the two agree to the last bit except where torch's vectorized kernels round differently.
 *
 * The loop is bound by the vector units, not by memory (on a 2-core AMD EPYC at 2 threads it runs at about
 * 1.5 ns per element without step 3 and 2.8 ns with it, where streaming its 16 bytes per element takes 0.65
 * ns): the nearest-code search of two moments is most of the cost, see docs/benchmarks.md.
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

#ifdef __AVX2__
/* One block with AVX2: both moments dequantized, updated, their new maxima tracked in the same loop (as
   integers: non-negative floats order like their bits), and requantized. The same floating-point operations
   as block_scalar, lane by lane. */
static void block_avx2(float *p, const float *g, uint8_t *mc, float *m_absmax, uint8_t *vc, float *v_absmax,
                       int64_t len, float *m, float *v, const float *signed_map, const float *unsigned_map,
                       const Q8Map *signed_q, const Q8Map *unsigned_q, float beta1_weight, float beta2,
                       float one_minus_beta2, float eps, float decay, float neg_step_size, float root_correction) {
    __m256 m_scale = _mm256_set1_ps(*m_absmax), v_scale = _mm256_set1_ps(*v_absmax);
    __m256 w = _mm256_set1_ps(beta1_weight), b2 = _mm256_set1_ps(beta2), omb2 = _mm256_set1_ps(one_minus_beta2);
    __m256 rc = _mm256_set1_ps(root_correction), ep = _mm256_set1_ps(eps), dc = _mm256_set1_ps(decay);
    __m256 step = _mm256_set1_ps(neg_step_size);
    __m256i magnitude = _mm256_set1_epi32(0x7fffffff), m_top = _mm256_setzero_si256(), v_top = m_top;
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        /* the map values by eight scalar loads each: the load ports are idle while the vector units, which a
           gather or an arithmetic decoding would also occupy, are the bottleneck of this loop */
        const uint8_t *a = mc + i, *b = vc + i;
        __m256 m_old = _mm256_setr_ps(signed_map[a[0]], signed_map[a[1]], signed_map[a[2]], signed_map[a[3]],
                                      signed_map[a[4]], signed_map[a[5]], signed_map[a[6]], signed_map[a[7]]);
        __m256 v_old = _mm256_setr_ps(unsigned_map[b[0]], unsigned_map[b[1]], unsigned_map[b[2]], unsigned_map[b[3]],
                                      unsigned_map[b[4]], unsigned_map[b[5]], unsigned_map[b[6]], unsigned_map[b[7]]);
        m_old = _mm256_mul_ps(m_old, m_scale);
        v_old = _mm256_mul_ps(v_old, v_scale);
        __m256 gi = _mm256_loadu_ps(g + i);
        __m256 mi = _mm256_fmadd_ps(w, _mm256_sub_ps(gi, m_old), m_old);
        __m256 vi = _mm256_fmadd_ps(_mm256_mul_ps(gi, gi), omb2, _mm256_mul_ps(v_old, b2));
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), rc), ep);
        __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), dc);
        _mm256_storeu_ps(p + i, _mm256_fmadd_ps(_mm256_div_ps(mi, denom), step, pi));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        m_top = _mm256_max_epu32(m_top, _mm256_and_si256(_mm256_castps_si256(mi), magnitude));
        v_top = _mm256_max_epu32(v_top, _mm256_and_si256(_mm256_castps_si256(vi), magnitude));
    }
    uint32_t lanes[8], m_best = 0, v_best = 0;
    _mm256_storeu_si256((__m256i *)lanes, m_top);
    for (int k = 0; k < 8; ++k) m_best = lanes[k] > m_best ? lanes[k] : m_best;
    _mm256_storeu_si256((__m256i *)lanes, v_top);
    for (int k = 0; k < 8; ++k) v_best = lanes[k] > v_best ? lanes[k] : v_best;
    for (; i < len; ++i) { /* the tail of a last, partial block */
        float gi = g[i], m_old = signed_map[mc[i]] * *m_absmax, v_old = unsigned_map[vc[i]] * *v_absmax;
        float mi = fmaf(beta1_weight, gi - m_old, m_old);
        float vi = fmaf(gi * gi, one_minus_beta2, v_old * beta2);
        p[i] = fmaf(mi / (sqrtf(vi) / root_correction + eps), neg_step_size, p[i] * decay);
        m[i] = mi;
        v[i] = vi;
        uint32_t mb, vb;
        memcpy(&mb, &mi, 4);
        memcpy(&vb, &vi, 4);
        m_best = (mb & 0x7fffffffu) > m_best ? (mb & 0x7fffffffu) : m_best;
        v_best = (vb & 0x7fffffffu) > v_best ? (vb & 0x7fffffffu) : v_best;
    }
    memcpy(m_absmax, &m_best, 4);
    memcpy(v_absmax, &v_best, 4);
    q8_quantize_block(m, mc, len, *m_absmax, signed_q);
    q8_quantize_block(v, vc, len, *v_absmax, unsigned_q);
}
#else
/* One block, one element at a time (CPUs without AVX2). */
static void block_scalar(float *p, const float *g, uint8_t *mc, float *m_absmax, uint8_t *vc, float *v_absmax,
                         int64_t len, float *m, float *v, const float *signed_map, const float *unsigned_map,
                         const Q8Map *signed_q, const Q8Map *unsigned_q, float beta1_weight, float beta2,
                         float one_minus_beta2, float eps, float decay, float neg_step_size, float root_correction) {
    float m_scale = *m_absmax, v_scale = *v_absmax;
    q8_lookup_block(mc, signed_map, m, len);
    q8_lookup_block(vc, unsigned_map, v, len);
    for (int64_t i = 0; i < len; ++i) {
        float gi = g[i];
        float m_old = m[i] * m_scale, v_old = v[i] * v_scale;
        float mi = fmaf(beta1_weight, gi - m_old, m_old);
        float vi = fmaf(gi * gi, one_minus_beta2, v_old * beta2);
        p[i] = fmaf(mi / (sqrtf(vi) / root_correction + eps), neg_step_size, p[i] * decay);
        m[i] = mi;
        v[i] = vi;
    }
    *m_absmax = q8_abs_max(m, len);
    *v_absmax = q8_abs_max(v, len);
    q8_quantize_block(m, mc, len, *m_absmax, signed_q);
    q8_quantize_block(v, vc, len, *v_absmax, unsigned_q);
}
#endif

int memopt_adamw8bit_step(float *param, const float *grad, uint8_t *m_code, float *m_absmax, uint8_t *v_code,
                          float *v_absmax, int64_t n, int64_t block, const float *signed_map,
                          const float *unsigned_map, const float *signed_midpoints, const float *unsigned_midpoints,
                          float beta1_weight,
                          float beta2, float one_minus_beta2, float eps, float decay, float neg_step_size,
                          float root_correction, int threads) {
    int64_t blocks = (n + block - 1) / block;
    /* each thread's scratch: the new m and v of one block (allocated before anything is modified) */
    float *scratch = malloc(sizeof(float) * 2 * (size_t)block * (size_t)(threads > 0 ? threads : 1));
    if (scratch == NULL) return 1;
    Q8Map signed_q, unsigned_q;
    q8_init(&signed_q, signed_midpoints, 1);
    q8_init(&unsigned_q, unsigned_midpoints, 0);
#pragma omp parallel num_threads(threads)
    {
        float *m = scratch + 2 * (size_t)block * (size_t)thread_index(), *v = m + block;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
            int64_t start = b * block;
            int64_t len = n - start < block ? n - start : block;
#ifdef __AVX2__
            block_avx2(param + start, grad + start, m_code + start, m_absmax + b, v_code + start, v_absmax + b, len, m,
                       v, signed_map, unsigned_map, &signed_q, &unsigned_q, beta1_weight, beta2, one_minus_beta2, eps,
                       decay, neg_step_size, root_correction);
#else
            block_scalar(param + start, grad + start, m_code + start, m_absmax + b, v_code + start, v_absmax + b, len,
                         m, v, signed_map, unsigned_map, &signed_q, &unsigned_q, beta1_weight, beta2, one_minus_beta2,
                         eps, decay, neg_step_size, root_correction);
#endif
        }
    }
    free(scratch);
    return 0;
}
