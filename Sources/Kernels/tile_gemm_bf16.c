// Attention's tile products in bf16 (QKᵀ, PV and the backward's four): too small for oneDNN's per-call
// overhead, so a micro-kernel of our own on AVX-512 BF16's VDPBF16PS, which multiplies pairs of bf16 and
// accumulates in fp32. Each call packs its operands into pair-interleaved bf16 (A by rows, B by columns in
// blocks of 16; vector conversions where the pairs are contiguous, 32-bit stores where they are not), then
// keeps 4 rows × 64 columns of fp32 accumulators in registers over all of k. The packed operands and the
// conversion rows live in scratch the caller provides (lm_bf16_take carves it); nothing is allocated here.
#include "lm_kernels.h"
#include "tile_bf16.h"

#include <string.h>

// Carving: 64-byte aligned pieces in order; with a NULL base it only counts.
void *lm_bf16_take(lm_bf16_carve *carve, size_t bytes) {
    const size_t offset = (carve->used + 63) / 64 * 64;
    carve->used = offset + bytes;
    return carve->base ? (void *)(carve->base + offset) : NULL;
}

size_t lm_bf16_packed_a_count(int m, int k) { return (size_t)m * (size_t)((k + 1) / 2); }
size_t lm_bf16_packed_b_count(int k, int n) { return (size_t)((k + 1) / 2) * (size_t)((n + 15) / 16 * 16); }

size_t lm_bf16_row_count(int m, int n, int k) {
    int longest = m > n ? m : n;
    if (k > longest) longest = k;
    return 2 * ((size_t)(longest + 15) / 16 * 16 + 32);  // two rows, each padded for the masked 16-wide stores
}

#if defined(__x86_64__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))


// 16 floats to 16 bf16, round to nearest even.
TARGET static inline __m256i convert16(const float *x) { return (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x)); }
TARGET static inline __m256i convert_masked(const float *x, int n) {
    return (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), x));
}

// n floats to bf16 (n ≤ row_size).
TARGET static void convert_row(uint16_t *out, const float *x, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(out + i), convert16(x + i));
    if (i < n) _mm256_mask_storeu_epi16(out + i, (__mmask16)((1u << (n - i)) - 1u), convert_masked(x + i, n - i));
}

// ROWS × BLOCKS·16 of C from ap's rows i0.. and bp's column blocks j0..; constant sizes keep the
// accumulators in registers.
#define MICRO(ROWS, BLOCKS)                                                                                         \
    TARGET static inline void micro_##ROWS##_##BLOCKS(int i0, int j0, int n, int kp, float alpha, const uint32_t *ap,  \
                                                      const uint32_t *bp, int nb, float beta, float *c, size_t ldc) { \
        __m512 acc[ROWS][BLOCKS];                                                                                   \
        for (int r = 0; r < ROWS; r++)                                                                              \
            for (int q = 0; q < BLOCKS; q++) acc[r][q] = _mm512_setzero_ps();                                      \
        for (int p = 0; p < kp; p++) {                                                                              \
            __m512bh b[BLOCKS];                                                                                     \
            for (int q = 0; q < BLOCKS; q++) b[q] = (__m512bh)_mm512_load_si512((const void *)(bp + ((size_t)p * nb + j0 + q) * 16)); \
            for (int r = 0; r < ROWS; r++) {                                                                        \
                const __m512bh a = (__m512bh)_mm512_set1_epi32((int)ap[(size_t)(i0 + r) * kp + p]);                 \
                for (int q = 0; q < BLOCKS; q++) acc[r][q] = _mm512_dpbf16_ps(acc[r][q], a, b[q]);                   \
            }                                                                                                       \
        }                                                                                                           \
        for (int r = 0; r < ROWS; r++) {                                                                            \
            float *row = c + (size_t)(i0 + r) * ldc;                                                                \
            for (int q = 0; q < BLOCKS; q++) {                                                                      \
                const int col = (j0 + q) * 16, width = n - col < 16 ? n - col : 16;                                \
                const __mmask16 mask = (__mmask16)((1u << width) - 1u);                                            \
                __m512 value = _mm512_mul_ps(acc[r][q], _mm512_set1_ps(alpha));                                     \
                if (beta != 0.0f) value = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, row + col), _mm512_set1_ps(beta), value); \
                _mm512_mask_storeu_ps(row + col, mask, value);                                                      \
            }                                                                                                       \
        }                                                                                                           \
    }
MICRO(4, 4)
MICRO(4, 3)
MICRO(4, 2)
MICRO(4, 1)
MICRO(1, 4)
MICRO(1, 1)

TARGET static void kernel(int m, int n, int kp, float alpha, const uint32_t *ap, const uint32_t *bp, int nb, float beta, float *c,
                          size_t ldc) {
    const int m4 = m / 4 * 4, nb4 = nb / 4 * 4;
    for (int i0 = 0; i0 < m4; i0 += 4) {
        for (int j0 = 0; j0 < nb4; j0 += 4) micro_4_4(i0, j0, n, kp, alpha, ap, bp, nb, beta, c, ldc);
        switch (nb - nb4) {  // the last 1–3 column blocks together (head_dim 48 is 3 blocks)
        case 3: micro_4_3(i0, nb4, n, kp, alpha, ap, bp, nb, beta, c, ldc); break;
        case 2: micro_4_2(i0, nb4, n, kp, alpha, ap, bp, nb, beta, c, ldc); break;
        case 1: micro_4_1(i0, nb4, n, kp, alpha, ap, bp, nb, beta, c, ldc); break;
        default: break;
        }
    }
    for (int i0 = m4; i0 < m; i0++) {
        for (int j0 = 0; j0 < nb4; j0 += 4) micro_1_4(i0, j0, n, kp, alpha, ap, bp, nb, beta, c, ldc);
        for (int j0 = nb4; j0 < nb; j0++) micro_1_1(i0, j0, n, kp, alpha, ap, bp, nb, beta, c, ldc);
    }
}


// A (m,k) as m rows of kp pairs; rows holds lm_bf16_row_count(m, 0, k) values.
TARGET void lm_bf16_pack_a(uint32_t *ap, uint16_t *rows, int trans_a, int m, int k, const float *a, size_t lda) {
    const int kp = (k + 1) / 2;
    uint16_t *row_a = rows, *row_b = rows + lm_bf16_row_count(m, 0, k) / 2;
    if (!trans_a) {  // stored by rows: a row's pairs are its bf16 values in order
        for (int i = 0; i < m; i++) {
            uint16_t *dst = (uint16_t *)(ap + (size_t)i * kp);
            convert_row(dst, a + (size_t)i * lda, k);
            if (k & 1) dst[k] = 0;
        }
    } else {  // stored as (k,m): pair p of row i is (a[2p][i], a[2p+1][i])
        for (int p = 0; p < kp; p++) {
            convert_row(row_a, a + (size_t)(2 * p) * lda, m);
            if (2 * p + 1 < k) convert_row(row_b, a + (size_t)(2 * p + 1) * lda, m); else memset(row_b, 0, (size_t)m * 2);
            for (int i = 0; i < m; i++) ap[(size_t)i * kp + p] = (uint32_t)row_a[i] | ((uint32_t)row_b[i] << 16);
        }
    }
}

// B (k,n) as kp rows of `width` pairs (columns padded with zeros); bp 64-byte aligned; rows holds
// lm_bf16_row_count(0, n, k) values.
TARGET void lm_bf16_pack_b(uint32_t *bp, uint16_t *rows, int trans_b, int k, int n, const float *b, size_t ldb) {
    const int kp = (k + 1) / 2, width = (n + 15) / 16 * 16;
    uint16_t *row_a = rows, *row_b = rows + lm_bf16_row_count(0, n, k) / 2;
    if (!trans_b) {  // pair p of column j is (b[2p][j], b[2p+1][j]): two rows interleaved
        for (int p = 0; p < kp; p++) {
            convert_row(row_a, b + (size_t)(2 * p) * ldb, n);
            if (2 * p + 1 < k) convert_row(row_b, b + (size_t)(2 * p + 1) * ldb, n); else memset(row_b, 0, (size_t)n * 2);
            memset(row_a + n, 0, (size_t)(width - n) * 2);
            memset(row_b + n, 0, (size_t)(width - n) * 2);
            uint32_t *dst = bp + (size_t)p * width;
            for (int j = 0; j < width; j += 16) {
                const __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(row_a + j)));
                const __m512i hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(row_b + j)));
                _mm512_store_si512((void *)(dst + j), _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
            }
        }
    } else {  // stored as (n,k): column j's pairs are row j's bf16 values in order
        memset(bp, 0, (size_t)kp * width * 4);
        for (int j = 0; j < n; j++) {
            convert_row(row_a, b + (size_t)j * ldb, k);
            if (k & 1) row_a[k] = 0;
            const uint32_t *pairs = (const uint32_t *)row_a;
            for (int p = 0; p < kp; p++) bp[(size_t)p * width + j] = pairs[p];
        }
    }
}

TARGET void lm_bf16_tile_run(int m, int n, int k, float alpha, const uint32_t *ap, const uint32_t *bp, float beta, float *c,
                             size_t ldc) {
    kernel(m, n, (k + 1) / 2, alpha, ap, bp, (n + 15) / 16, beta, c, ldc);
}

// The pieces of one lm_tile_gemm_bf16 call, carved from its scratch.
static size_t carve_gemm(lm_bf16_carve *carve, uint32_t **ap, uint32_t **bp, uint16_t **rows, int m, int n, int k) {
    *ap = lm_bf16_take(carve, 4 * lm_bf16_packed_a_count(m, k));
    *bp = lm_bf16_take(carve, 4 * lm_bf16_packed_b_count(k, n));
    *rows = lm_bf16_take(carve, 2 * lm_bf16_row_count(m, n, k));
    return carve->used;
}

size_t lm_tile_gemm_bf16_scratch_bytes(int m, int n, int k) {
    lm_bf16_carve count = {NULL, 0};
    uint32_t *ap, *bp;
    uint16_t *rows;
    return carve_gemm(&count, &ap, &bp, &rows, m, n, k);
}

int lm_tile_gemm_bf16(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, size_t lda, const float *b,
                      size_t ldb, float beta, float *c, size_t ldc, void *scratch, size_t scratch_bytes) {
    lm_bf16_carve carve = {(char *)scratch, 0};
    uint32_t *ap, *bp;
    uint16_t *rows;
    if (carve_gemm(&carve, &ap, &bp, &rows, m, n, k) > scratch_bytes) return LM_ERROR_SCRATCH;
    lm_bf16_pack_a(ap, rows, trans_a, m, k, a, lda);
    lm_bf16_pack_b(bp, rows, trans_b, k, n, b, ldb);
    lm_bf16_tile_run(m, n, k, alpha, ap, bp, beta, c, ldc);
    return LM_OK;
}
#else
// Without AVX-512 BF16 in the build the bf16 tiles are never chosen (PrecisionChoice); they report it.
void lm_bf16_pack_a(uint32_t *ap, uint16_t *rows, int trans_a, int m, int k, const float *a, size_t lda) {
    (void)ap; (void)rows; (void)trans_a; (void)m; (void)k; (void)a; (void)lda;
}
void lm_bf16_pack_b(uint32_t *bp, uint16_t *rows, int trans_b, int k, int n, const float *b, size_t ldb) {
    (void)bp; (void)rows; (void)trans_b; (void)k; (void)n; (void)b; (void)ldb;
}
void lm_bf16_tile_run(int m, int n, int k, float alpha, const uint32_t *ap, const uint32_t *bp, float beta, float *c, size_t ldc) {
    (void)m; (void)n; (void)k; (void)alpha; (void)ap; (void)bp; (void)beta; (void)c; (void)ldc;
}
size_t lm_tile_gemm_bf16_scratch_bytes(int m, int n, int k) { (void)m; (void)n; (void)k; return 0; }
int lm_tile_gemm_bf16(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, size_t lda, const float *b,
                      size_t ldb, float beta, float *c, size_t ldc, void *scratch, size_t scratch_bytes) {
    (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)lda; (void)b; (void)ldb; (void)beta;
    (void)c; (void)ldc; (void)scratch; (void)scratch_bytes;
    return LM_ERROR_UNSUPPORTED;
}
#endif
