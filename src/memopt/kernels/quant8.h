/*
 * Nearest-code search for memopt's 8-bit dynamic maps (memopt.state.quantization), computed from the value
 * instead of walked through a lookup table; included by the kernels that requantize 8-bit state.
 *
 * Written by hand: no maintained library quantizes to these maps on the CPU with the same codes.
 *
 * The positive code values of both maps come in decades d = 0..6: n_d values
 *     v(d, k) = (0.1 + 0.9 (k + 1/2) / n_d) 10^(d-6),   k = 0 .. n_d - 1,
 * (signed map: n_d = 2^d; unsigned map: n_d = 2^(d+1)), between a zero code and the code +1.0 (the signed
 * map mirrors the positive values below zero, without -1.0). For a magnitude a in decade d's range
 * [10^(d-7), 10^(d-6)), the position t = (a 10^(6-d) - 0.1) n_d / 0.9 - 1/2 is k exactly at v(d, k), so
 * c = (first code of decade d) + clamp(floor(t), -1, n_d - 1) is the code at or just below a: the code
 * values are linear in t within a decade, and the midpoints that separate codes lie at least 0.25 from
 * every integer t (at k + 1/2 inside a decade, at -0.3 between decades, at n - 3/4 below +1.0), so the
 * float32 rounding of t (about 1e-5) and a decade chosen on the wrong side of a power of ten (t is then
 * within 1e-5 of -1/2 or n_d - 1/2, where both decades give the same c) never move c by a code.
 * One comparison with the exact float32 midpoint then gives the nearest code with the reference's tie rule
 * (a tie goes to the lower code), mid being the table memopt.state.quantization._midpoints, passed in:
 *     y >= 0:           code = c + (y > mid[c])
 *     y < 0 (signed):   c' = max(0, 253 - c), code = c' + (y > mid[c'])   (the mirror image of c + 1 is the
 *                       code just below y; the signed map has no -1.0, hence the 0)
 *     y < 0 (unsigned): c' = 0, code = c' + (y > mid[0]) = 0               (every midpoint is positive)
 * The decade is the number of powers of ten 1e-6 .. 1e-1 at or below a (six integer comparisons of bit
 * patterns), its constants come from 8-entry tables (one in-register permute each with AVX2) and mid[c']
 * is one gather: no data-dependent branch and no 16 KiB table. A NaN gets the same (meaningless) code on
 * both paths. tests/kernels/test_quant8.py compares every code with the torch reference
 * (quantization.nearest_codes) over all float32 exponents, every midpoint and its neighbours.
 */
#ifndef MEMOPT_QUANT8_H
#define MEMOPT_QUANT8_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define Q8_DECADES 7

typedef struct {
    const float *mid;     /* the 255 midpoints between consecutive codes (then +inf): the reference's */
    int is_signed;
    int32_t below[6];     /* the bit patterns of 1e-6 .. 1e-1, less one: a magnitude's decade is how many of
                             these its bit pattern exceeds (non-negative floats order like their bits) */
    float slope[8];       /* n_d 10^(6-d) / 0.9 */
    float shift[8];       /* 0.1 n_d / 0.9 - 1/2: the position plus one, u = t + 1 >= 0 after clamping */
    float top[8];         /* n_d: the largest position plus one */
    int32_t first[8];     /* the code index of v(d, 0), less one */
    float low[8];         /* the position u (below) of the midpoint under v(d, 0); inside a decade the
                             midpoint above position j (1 <= j < n_d) is at j + 1/2 */
    float high[8];        /* the position of the midpoint above v(d, n_d - 1) (+inf where it is beyond the
                             decade's range) */
    int fast;             /* whether the thresholds were verified against mid (else only the gather path) */
} Q8Map;

/* the constants of the signed or unsigned map (computed here: c's exactness does not depend on them being
   correctly rounded, only on them being within 1e-6 relative of the exact values) */
static void q8_init(Q8Map *map, const float *mid, int is_signed) {
    map->mid = mid;
    map->is_signed = is_signed;
    int32_t first = is_signed ? 128 : 1;
    for (int d = 0; d < 8; ++d) {
        int dd = d < Q8_DECADES ? d : Q8_DECADES - 1; /* entry 7 is never selected; keep it valid */
        double n = is_signed ? (double)(1 << dd) : (double)(2 << dd);
        map->slope[d] = (float)(n * pow(10.0, 6 - dd) / 0.9);
        map->shift[d] = (float)(0.1 * n / 0.9 - 0.5);
        map->top[d] = (float)n;
        map->first[d] = d < Q8_DECADES ? first - 1 : map->first[d - 1];
        if (d < Q8_DECADES) first += (int32_t)n;
    }
    for (int j = 0; j < 6; ++j) {
        float power = (float)pow(10.0, j - 6);
        memcpy(&map->below[j], &power, sizeof power);
        map->below[j] -= 1;
    }
    /* The fast decision compares positions u = a slope - shift (exact here, in double, from the same float
       constants) instead of values: a > mid[c] exactly when u(a) > u(mid[c]), u being increasing. Inside a
       decade u(mid) must be j + 1/2 up to 2^-12 (the map is linear there); the signed map's midpoints must be
       mirror images (mid[253 - c] = -mid[c]), which the negative branch relies on. Otherwise fast = 0. */
    map->fast = 1;
    for (int d = 0; d < 8; ++d) {
        int dd = d < Q8_DECADES ? d : Q8_DECADES - 1;
        int32_t n = (int32_t)map->top[dd], base = map->first[dd];
        double slope = map->slope[dd], shift = map->shift[dd];
        map->low[d] = (float)((double)mid[base] * slope - shift);
        map->high[d] = base + n < 255 ? (float)((double)mid[base + n] * slope - shift) : INFINITY;
        for (int32_t j = 1; j < n; ++j)
            if (fabs((double)mid[base + j] * slope - shift - (j + 0.5)) > 0x1p-12) map->fast = 0;
    }
    if (is_signed)
        for (int c = 0; c <= 253; ++c)
            if (mid[253 - c] != -mid[c]) map->fast = 0;
    for (int d = 0; d < Q8_DECADES; ++d) { /* the closed forms q8_code8_fast uses for top and first */
        int32_t count = (is_signed ? 1 : 2) << d;
        if (map->top[d] != (float)count || map->first[d] != count + (is_signed ? 126 : -2)) map->fast = 0;
    }
}

/* the nearest code of y in [-1, 1] (a NaN gets the zero code), one element at a time */
static inline uint8_t q8_code(float y, const Q8Map *map) {
    uint32_t bits;
    memcpy(&bits, &y, sizeof bits);
    float a = fabsf(y);
    int32_t magnitude = (int32_t)(bits & 0x7fffffffu);
    int d = 0;
    for (int j = 0; j < 6; ++j) d += magnitude > map->below[j];
    float u = a * map->slope[d] - map->shift[d];
    u = u > 0.0f ? u : 0.0f; /* NaN -> 0 */
    u = u < map->top[d] ? u : map->top[d];
    int32_t c = map->first[d] + (int32_t)u; /* truncation: the floor of u >= 0 */
    if (bits >> 31) c = map->is_signed ? (c < 253 ? 253 - c : 0) : 0; /* the mirror image: the code below y */
    return (uint8_t)(c + (y > map->mid[c]));
}

#ifdef __AVX2__
/* a map's constants in registers (loaded once per block: the byte stores of codes could alias the map's
   fields, so the compiler would reload them for every 8 values) */
typedef struct {
    __m256i below[6];
    __m256 slope, shift, top, low, high;
    __m256i first;
    const float *mid;
    int is_signed, fast;
} Q8Vec;

static inline Q8Vec q8_vec(const Q8Map *map) {
    Q8Vec v;
    for (int j = 0; j < 6; ++j) v.below[j] = _mm256_set1_epi32(map->below[j]);
    v.slope = _mm256_loadu_ps(map->slope);
    v.shift = _mm256_loadu_ps(map->shift);
    v.top = _mm256_loadu_ps(map->top);
    v.low = _mm256_loadu_ps(map->low);
    v.high = _mm256_loadu_ps(map->high);
    v.first = _mm256_loadu_si256((const __m256i *)map->first);
    v.mid = map->mid;
    v.is_signed = map->is_signed;
    v.fast = map->fast;
    return v;
}

/* Q8_MARGIN: a position closer than this to its threshold is settled by the exact comparison. The position
   computed here is within 2e-5 of the exact u of the value (one rounding of u < 256), and within 6e-5 when the
   value itself is x * (1 / scale) instead of x / scale (1.5 ulp apart); thresholds are within 1e-5. */
#define Q8_MARGIN 0x1p-10f

/* The nearest codes of 8 values in [-1, 1] decided from their positions alone, without reading mid: the
   lanes whose position lies within Q8_MARGIN of their threshold (and NaN lanes) are flagged in *unsure,
   and only for those does the result need the exact comparison of q8_code8. c is q8_code8's (or one away from
   it where the position is within rounding of an integer, which gives the same code, the threshold then being
   half a position away), then
     y >= 0:           code = c + up,   up = u > threshold (j = 0: low; 0 < j < n: j + 1/2; j = n: high)
     y < 0 (signed):   code = max(0, 253 - c + 1 - up)    (y > mid[253 - c] = -mid[c] exactly when not up)
     y < 0 (unsigned): code = 0 */
static inline __m256i q8_code8_fast(__m256 y, const Q8Vec *map, int *unsure) {
    __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), y);
    __m256i magnitude = _mm256_castps_si256(a), d = _mm256_setzero_si256();
    for (int j = 0; j < 6; ++j) d = _mm256_sub_epi32(d, _mm256_cmpgt_epi32(magnitude, map->below[j]));
    __m256 slope = _mm256_permutevar8x32_ps(map->slope, d);
    __m256 shift = _mm256_permutevar8x32_ps(map->shift, d);
    __m256 low = _mm256_permutevar8x32_ps(map->low, d);
    __m256 high = _mm256_permutevar8x32_ps(map->high, d);
    /* n_d = 2^d (signed) or 2^(d+1) (unsigned), and the decade's first code less one, n_d + 126 or n_d - 2
       (q8_init checks both against its tables), by shifts and adds rather than two more permutes */
    __m256i count = _mm256_sllv_epi32(_mm256_set1_epi32(map->is_signed ? 1 : 2), d);
    __m256 top = _mm256_cvtepi32_ps(count);
    __m256i first = _mm256_add_epi32(count, _mm256_set1_epi32(map->is_signed ? 126 : -2));
    __m256 u = _mm256_max_ps(_mm256_fmsub_ps(a, slope, shift), _mm256_setzero_ps()); /* NaN -> 0 */
    __m256 j = _mm256_floor_ps(_mm256_min_ps(u, top));
    __m256 threshold = _mm256_add_ps(j, _mm256_set1_ps(0.5f));
    threshold = _mm256_blendv_ps(threshold, low, _mm256_cmp_ps(j, _mm256_setzero_ps(), _CMP_EQ_OQ));
    threshold = _mm256_blendv_ps(threshold, high, _mm256_cmp_ps(j, top, _CMP_EQ_OQ));
    __m256 distance = _mm256_sub_ps(u, threshold);
    __m256 near = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), distance), _mm256_set1_ps(Q8_MARGIN),
                                _CMP_LT_OQ);
    near = _mm256_or_ps(near, _mm256_cmp_ps(y, y, _CMP_UNORD_Q));
    *unsure = _mm256_movemask_ps(near);
    __m256i up = _mm256_castps_si256(_mm256_cmp_ps(distance, _mm256_setzero_ps(), _CMP_GT_OQ)); /* -1 or 0 */
    __m256i c = _mm256_add_epi32(first, _mm256_cvttps_epi32(j));
    __m256i positive = _mm256_sub_epi32(c, up);
    __m256i negative = map->is_signed
        ? _mm256_max_epi32(_mm256_add_epi32(_mm256_sub_epi32(_mm256_set1_epi32(254), c), up), _mm256_setzero_si256())
        : _mm256_setzero_si256();
    return _mm256_blendv_epi8(positive, negative, _mm256_srai_epi32(_mm256_castps_si256(y), 31));
}

/* the nearest codes of 8 values in [-1, 1], as int32 lanes */
static inline __m256i q8_code8(__m256 y, const Q8Vec *map) {
    __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), y);
    __m256i magnitude = _mm256_castps_si256(a), d = _mm256_setzero_si256();
    for (int j = 0; j < 6; ++j) /* integer comparisons (more ports than float ones); true is -1 */
        d = _mm256_sub_epi32(d, _mm256_cmpgt_epi32(magnitude, map->below[j]));
    __m256 slope = _mm256_permutevar8x32_ps(map->slope, d);
    __m256 shift = _mm256_permutevar8x32_ps(map->shift, d);
    __m256 top = _mm256_permutevar8x32_ps(map->top, d);
    __m256i first = _mm256_permutevar8x32_epi32(map->first, d);
    __m256 u = _mm256_sub_ps(_mm256_mul_ps(a, slope), shift);
    u = _mm256_max_ps(u, _mm256_setzero_ps()); /* the second operand when u is NaN */
    u = _mm256_min_ps(u, top);
    __m256i c = _mm256_add_epi32(first, _mm256_cvttps_epi32(u));
    __m256i negative = _mm256_srai_epi32(_mm256_castps_si256(y), 31);
    __m256i mirrored = map->is_signed ? _mm256_max_epi32(_mm256_sub_epi32(_mm256_set1_epi32(253), c), _mm256_setzero_si256())
                                      : _mm256_setzero_si256();
    c = _mm256_blendv_epi8(c, mirrored, negative);
    __m256 m = _mm256_i32gather_ps(map->mid, c, 4);
    return _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(y, m, _CMP_GT_OQ)));
}

/* 8 int32 codes (0..255) stored as 8 bytes */
static inline void q8_store8(uint8_t *out, __m256i codes) {
    __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(codes), _mm256_extracti128_si256(codes, 1));
    _mm_storel_epi64((__m128i *)out, _mm_packus_epi16(words, words));
}
#endif

/* codes[i] = nearest code of clamp(x[i] / scale, -1, 1), scale = absmax (1 where absmax is 0): the
   reference's normalization (a division, as torch divides) and its nearest code. The vector loop multiplies by
   1 / scale and decides from positions (q8_code8_fast); a vector with a lane near its threshold is redone with
   the division and the exact comparison, so the codes are the reference's. A scale below FLT_MIN (whose
   reciprocal may overflow) takes the exact path throughout. */
static void q8_quantize_block(const float *x, uint8_t *codes, int64_t len, float absmax, const Q8Map *map) {
    float scale = absmax > 0.0f ? absmax : 1.0f;
    int64_t i = 0;
#ifdef __AVX2__
    __m256 s = _mm256_set1_ps(scale), lo = _mm256_set1_ps(-1.0f), hi = _mm256_set1_ps(1.0f);
    Q8Vec vec = q8_vec(map);
    if (vec.fast && scale >= 0x1p-126f) {
        __m256 r = _mm256_set1_ps(1.0f / scale);
        for (; i + 8 <= len; i += 8) {
            __m256 xi = _mm256_loadu_ps(x + i);
            /* no clamp: a value beyond +-1 (here at most 2 ulp beyond, |x| <= scale) lies in the top decade at a
               position past its last midpoint, so it decides as +-1 does */
            __m256 y = _mm256_mul_ps(xi, r);
            int unsure;
            __m256i code = q8_code8_fast(y, &vec, &unsure);
            if (__builtin_expect(unsure != 0, 0))
                code = q8_code8(_mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_div_ps(xi, s))), &vec);
            q8_store8(codes + i, code);
        }
    }
    for (; i + 8 <= len; i += 8) {
        __m256 y = _mm256_div_ps(_mm256_loadu_ps(x + i), s);
        y = _mm256_min_ps(hi, _mm256_max_ps(lo, y)); /* the second operand when one is NaN: NaN stays NaN */
        q8_store8(codes + i, q8_code8(y, &vec));
    }
#endif
    for (; i < len; ++i) {
        float y = x[i] / scale;
        y = y < -1.0f ? -1.0f : y;
        y = y > 1.0f ? 1.0f : y;
        codes[i] = q8_code(y, map);
    }
}

/* max |x| over x[0:len]: compared as integers, since the bit patterns of non-negative floats are ordered
   like the floats (a float max without -ffast-math does not vectorize) */
static inline float q8_abs_max(const float *x, int64_t len) {
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

/* the map values of codes[0:len] (still to be multiplied by the block's absmax) */
static inline void q8_lookup_block(const uint8_t *codes, const float *values, float *out, int64_t len) {
    for (int64_t i = 0; i < len; ++i) out[i] = values[codes[i]];
}

#endif
