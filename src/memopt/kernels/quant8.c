/*
 * Block-wise 8-bit load and store of optimizer state (memopt.state.formats.Blockwise8bit) over float32
 * CPU tensors: the same codes and maxima as the torch path (memopt.state.quantization), in one pass per
 * block, threads splitting the blocks.
 *
 * Written by hand because torch has no kernel for these maps: its path runs a dozen passes over memory
 * (padding, absolute value, maxima, division, clamp, bucket keys, two index lookups, comparison, casts).
 *
 *   quantize:   absmax[b] = max |x| over block b;  code[i] = nearest map value to clamp(x[i] / absmax, -1, 1)
 *               (quant8.h: computed from the value, then one comparison with the exact midpoint)
 *   dequantize: x[i] = map[code[i]] * absmax[b]
 */
#include <stdint.h>

#include "quant8.h"

/* the nearest codes of values already in [-1, 1] by one path: 0 the one-element search, 1 the 8-lane one with
   the exact comparison (q8_code8), 2 the 8-lane decision from positions (q8_code8_fast, with q8_code8 for the
   vectors it is unsure of), as the quantize kernels run it; the tests compare each with the torch search */
void memopt_q8_codes(const float *y, uint8_t *codes, int64_t n, const float *mid, int is_signed, int path) {
    Q8Map map;
    q8_init(&map, mid, is_signed);
    int64_t i = 0;
#ifdef __AVX2__
    Q8Vec vec = q8_vec(&map);
    if (path == 2 && !vec.fast) return; /* leaves the codes unwritten: the test sees the failure */
    if (path != 0)
        for (; i + 8 <= n; i += 8) {
            __m256 yi = _mm256_loadu_ps(y + i);
            int unsure = 1;
            __m256i code = path == 2 ? q8_code8_fast(yi, &vec, &unsure) : _mm256_setzero_si256();
            if (unsure) code = q8_code8(yi, &vec);
            q8_store8(codes + i, code);
        }
#else
    (void)path;
#endif
    for (; i < n; ++i) codes[i] = q8_code(y[i], &map);
}

void memopt_q8_quantize(const float *x, uint8_t *codes, float *absmax, int64_t n, int64_t block, const float *mid,
                        int is_signed, int threads) {
    Q8Map map;
    q8_init(&map, mid, is_signed);
    int64_t blocks = (n + block - 1) / block;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t b = 0; b < blocks; ++b) {
        int64_t start = b * block;
        int64_t len = n - start < block ? n - start : block;
        float top = q8_abs_max(x + start, len);
        absmax[b] = top;
        q8_quantize_block(x + start, codes + start, len, top, &map);
    }
}

void memopt_q8_dequantize(const uint8_t *codes, const float *absmax, float *out, int64_t n, int64_t block,
                          const float *values, int threads) {
    int64_t blocks = (n + block - 1) / block;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t b = 0; b < blocks; ++b) {
        int64_t start = b * block;
        int64_t len = n - start < block ? n - start : block;
        float scale = absmax[b];
        q8_lookup_block(codes + start, values, out + start, len);
        for (int64_t i = start; i < start + len; ++i) out[i] *= scale;
    }
}
