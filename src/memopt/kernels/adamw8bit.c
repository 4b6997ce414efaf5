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
 *   3. requantize:  absmax = max |x| over the block; code = nearest map value to x / absmax, computed from
 *                   the value and settled by one comparison with the exact midpoint (quant8.h).
 * Every floating-point operation is the one the engine's reference path performs, in the same order and
 * precision, so the two agree to the last bit except where torch's vectorized kernels round differently.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "quant8.h"

int memopt_adamw8bit_step(float *param, const float *grad, uint8_t *m_code, float *m_absmax, uint8_t *v_code,
                          float *v_absmax, int64_t n, int64_t block, const float *signed_map,
                          const float *unsigned_map, const float *signed_midpoints, const float *unsigned_midpoints,
                          float beta1_weight,
                          float beta2, float one_minus_beta2, float eps, float decay, float neg_step_size,
                          float root_correction, int threads) {
    int64_t blocks = (n + block - 1) / block;
    int failed = 0;
    Q8Map signed_q, unsigned_q;
    q8_init(&signed_q, signed_midpoints, 1);
    q8_init(&unsigned_q, unsigned_midpoints, 0);
#pragma omp parallel num_threads(threads)
    {
        /* per-thread scratch: the new m and v of one block */
        float *scratch = malloc(sizeof(float) * 2 * (size_t)block);
        if (scratch == NULL) {
#pragma omp atomic write
            failed = 1;
        } else {
            float *m = scratch, *v = scratch + block;
#pragma omp for schedule(static)
            for (int64_t b = 0; b < blocks; ++b) {
                int64_t start = b * block;
                int64_t len = n - start < block ? n - start : block;
                float *p = param + start;
                const float *g = grad + start;
                float m_scale = m_absmax[b], v_scale = v_absmax[b];
                q8_lookup_block(m_code + start, signed_map, m, len);
                q8_lookup_block(v_code + start, unsigned_map, v, len);
                for (int64_t i = 0; i < len; ++i) {
                    float gi = g[i];
                    float m_old = m[i] * m_scale, v_old = v[i] * v_scale;
                    float mi = fmaf(beta1_weight, gi - m_old, m_old);
                    float g2 = gi * gi;
                    float vb = v_old * beta2;
                    float vi = fmaf(g2, one_minus_beta2, vb);
                    float denom = sqrtf(vi) / root_correction + eps;
                    float update = mi / denom;
                    p[i] = fmaf(update, neg_step_size, p[i] * decay);
                    m[i] = mi;
                    v[i] = vi;
                }
                float m_max = q8_abs_max(m, len), v_max = q8_abs_max(v, len);
                m_absmax[b] = m_max;
                v_absmax[b] = v_max;
                q8_quantize_block(m, m_code + start, len, m_max, &signed_q);
                q8_quantize_block(v, v_code + start, len, v_max, &unsigned_q);
            }
        }
        free(scratch);
    }
    return failed;
}
