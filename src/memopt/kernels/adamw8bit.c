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
 *   3. requantize:  absmax = max |x| over the block; code = nearest map value to x / absmax, found with
 *                   the same lookup table and one midpoint comparison as the torch implementation.
 * Every floating-point operation is the one the engine's reference path performs, in the same order and
 * precision, so the two agree to the last bit except where torch's vectorized kernels round differently.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* the bucket key of memopt.state.quantization.bucket_keys: sign, exponent from MIN_EXPONENT (smaller
   exponents share its first bucket), top MANTISSA_BITS mantissa bits */
#define MIN_EXPONENT (127 - 22)
#define MANTISSA_BITS 8
#define EXPONENT_BITS 5

static inline uint32_t bucket_key(uint32_t bits) {
    int32_t magnitude = (int32_t)(bits & 0x7fffffffu);
    int32_t floor = MIN_EXPONENT << 23;
    magnitude = magnitude > floor ? magnitude : floor; /* tiny values join the first bucket */
    uint32_t position = ((uint32_t)magnitude >> (23 - MANTISSA_BITS)) - ((uint32_t)MIN_EXPONENT << MANTISSA_BITS);
    return ((bits >> 31) << (EXPONENT_BITS + MANTISSA_BITS)) | position;
}

/* Loops are kept simple so that the compiler vectorizes them. */

/* map values of codes[0:len] (still to be multiplied by the block's absmax) */
static void lookup_block(const uint8_t *codes, const float *map, float *out, int64_t len) {
    for (int64_t i = 0; i < len; ++i) out[i] = map[codes[i]];
}

/* max |x| over x[0:len]: compared as integers, since the bit patterns of non-negative floats are ordered
   like the floats (a float max without -ffast-math does not vectorize) */
static float abs_max(const float *x, int64_t len) {
    const uint32_t *bits = (const uint32_t *)x;
    uint32_t best = 0;
    for (int64_t i = 0; i < len; ++i) {
        uint32_t magnitude = bits[i] & 0x7fffffffu;
        best = magnitude > best ? magnitude : best;
    }
    float result;
    memcpy(&result, &best, sizeof result);
    return result;
}

/* Quantize x[0:len] against absmax into codes, using normalized and keys (len elements each) as scratch.
   The first loop vectorizes; the second reads the 16 KiB table (in L1) and the midpoints element by element:
   the table gives the number of midpoints below y's bucket (a bucket holds at most one), one comparison
   settles the rest. Hardware gathers are slower than these scalar reads on the CPUs we measured. */
static void quantize_block(const float *x, uint8_t *codes, int64_t len, float absmax, const uint8_t *table,
                           const float *midpoints, float *normalized, uint32_t *keys) {
    float scale = (absmax > 0.0f ? absmax : 1.0f);
    for (int64_t i = 0; i < len; ++i) {
        float y = x[i] / scale;
        y = y < -1.0f ? -1.0f : y;
        y = y > 1.0f ? 1.0f : y;
        normalized[i] = y;
        uint32_t bits;
        memcpy(&bits, &y, sizeof bits);
        keys[i] = bucket_key(bits);
    }
    for (int64_t i = 0; i < len; ++i) {
        uint8_t below = table[keys[i]];
        codes[i] = (uint8_t)(below + (normalized[i] > midpoints[below]));
    }
}

int memopt_adamw8bit_step(float *param, const float *grad, uint8_t *m_code, float *m_absmax, uint8_t *v_code,
                          float *v_absmax, int64_t n, int64_t block, const float *signed_map,
                          const float *unsigned_map, const uint8_t *signed_table, const float *signed_midpoints,
                          const uint8_t *unsigned_table, const float *unsigned_midpoints, float beta1_weight,
                          float beta2, float one_minus_beta2, float eps, float decay, float neg_step_size,
                          float root_correction, int threads) {
    int64_t blocks = (n + block - 1) / block;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        /* per-thread scratch: the new m and v of one block, and two buffers for requantization */
        float *scratch = malloc(sizeof(float) * 4 * (size_t)block);
        if (scratch == NULL) {
#pragma omp atomic write
            failed = 1;
        } else {
            float *m = scratch, *v = scratch + block, *normalized = scratch + 2 * block;
            uint32_t *keys = (uint32_t *)(scratch + 3 * block);
#pragma omp for schedule(static)
            for (int64_t b = 0; b < blocks; ++b) {
                int64_t start = b * block;
                int64_t len = n - start < block ? n - start : block;
                float *p = param + start;
                const float *g = grad + start;
                float m_scale = m_absmax[b], v_scale = v_absmax[b];
                lookup_block(m_code + start, signed_map, m, len);
                lookup_block(v_code + start, unsigned_map, v, len);
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
                float m_max = abs_max(m, len), v_max = abs_max(v, len);
                m_absmax[b] = m_max;
                v_absmax[b] = v_max;
                quantize_block(m, m_code + start, len, m_max, signed_table, signed_midpoints, normalized, keys);
                quantize_block(v, v_code + start, len, v_max, unsigned_table, unsigned_midpoints, normalized, keys);
            }
        }
        free(scratch);
    }
    return failed;
}
