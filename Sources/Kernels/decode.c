// Decoding kernels: what generation needs beyond the training forward.
//
// The matmul of a few rows (decode: one new token per sequence) and attention of those rows over a KV cache.
// Both compute every output element in an order fixed by the element alone: the same arithmetic whether the
// row is decoded alone or among 31 others, on one thread or several. That is what makes a sample independent of
// the batch it was decoded in. sgemm gives no such promise (its kernels and blockings change with the shape),
// and at one row it repacks the whole weight matrix, which doubles the bytes a memory-bound decode moves.
#include "lm_kernels.h"

#include <math.h>
#include <string.h>

#include "fastmath.h"

// MARK: - The matmul of a few rows over packed weights
//
// Decode reads every weight once per token, so the weights are packed for that read: panels of 64 output
// channels, each as four quarters of 16 channels stored (in, 16) row-major, so one token's pass over a panel is
// four sequential streams, a block of rows shares each weight vector it loads, and a quarter's block of inputs
// is contiguous (a strided one would fall into a quarter of L1's sets and not stay there). Every output
// element is one fused multiply-add chain over the inputs in order, starting from zero: its bits depend on neither the rows beside it, nor the channel block, nor
// the vector width (AVX-512 and AVX2 give the same answer), nor how panels are split over threads.

#define PANEL 64
#define QUARTER 16

size_t lm_panels_values(int C, int OC) { return (size_t)((OC + PANEL - 1) / PANEL) * PANEL * (size_t)C; }

static void pack_panels(float *dst_f32, uint16_t *dst_bf16, const float *weight, int C, int OC, int first_panel,
                        int end_panel) {
    for (int p = first_panel; p < end_panel; p++) {
        for (int c = 0; c < C; c++) {
            for (int q = 0; q < PANEL / QUARTER; q++) {
                const size_t at = (size_t)p * C * PANEL + ((size_t)q * C + c) * QUARTER;
                float column[QUARTER];
                for (int j = 0; j < QUARTER; j++) {
                    const int o = p * PANEL + q * QUARTER + j;
                    column[j] = o < OC ? weight[(size_t)o * C + c] : 0.0f;
                }
                if (dst_f32) memcpy(dst_f32 + at, column, sizeof column);
                else lm_to_bf16(dst_bf16 + at, column, QUARTER);
            }
        }
    }
}

void lm_pack_panels(float *packed, const float *weight, int C, int OC, int first_panel, int end_panel) {
    pack_panels(packed, NULL, weight, C, OC, first_panel, end_panel);
}

void lm_pack_panels_bf16(uint16_t *packed, const float *weight, int C, int OC, int first_panel, int end_panel) {
    pack_panels(NULL, packed, weight, C, OC, first_panel, end_panel);
}

typedef float f32x8 __attribute__((vector_size(32), aligned(4)));
typedef float f32x16 __attribute__((vector_size(64), aligned(4)));
typedef uint16_t u16x8 __attribute__((vector_size(16), aligned(2)));
typedef uint16_t u16x16 __attribute__((vector_size(32), aligned(2)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));

// Weight loads: fp32 as it is; bf16 widened exactly (its bits are fp32's upper half), so the sum stays fp32.
#define LOAD_F32(VEC, p) \
    ({                       \
        VEC v_;              \
        memcpy(&v_, (p), sizeof v_); \
        v_;                  \
    })
#define LOAD_BF16(VEC, U16, U32, p)                                 \
    ({                                                              \
        U16 h_;                                                     \
        memcpy(&h_, (p), sizeof h_);                                \
        (VEC)(__builtin_convertvector(h_, U32) << 16);              \
    })

// Rows are taken ROW_CHUNK at a time into a tile of fp32 accumulators, and the inputs KBLOCK at a time, so the
// panel's rows for one block of inputs (KBLOCK · 256 bytes) stay in cache while every group of rows reads them;
// an accumulator is stored and reloaded between blocks, which leaves its chain exactly as it was.
#define ROW_CHUNK 48
#define KBLOCK 256

// One block: rows [0, R) of the tile (row stride PANEL, `tile` at channel `at` already) against NV vectors of
// LANES channels from the panel's channel `at`, over inputs [c0, c1).
#define BLOCK(NAME, ATTR, VEC, LANES, WT, LOAD, R, NV)                                                              \
    static ATTR void NAME(float *tile, const float *x, const WT *panel, int at, int C, int c0, int c1) {         \
        VEC acc[R][NV];                                                                                          \
        const WT *wq[NV];                                                                                        \
        for (int v = 0; v < NV; v++) {                                                                           \
            const int ch = at + v * LANES;                                                                       \
            wq[v] = panel + (size_t)(ch / QUARTER) * C * QUARTER + ch % QUARTER;                                 \
        }                                                                                                        \
        for (int r = 0; r < R; r++)                                                                              \
            for (int v = 0; v < NV; v++) acc[r][v] = LOAD_F32(VEC, tile + r * PANEL + v * LANES);                \
        for (int c = c0; c < c1; c++) {                                                                          \
            VEC wv[NV];                                                                                          \
            for (int v = 0; v < NV; v++) wv[v] = LOAD(wq[v] + (size_t)c * QUARTER);                              \
            for (int r = 0; r < R; r++) {                                                                        \
                const float b = x[(size_t)r * C + c];                                                            \
                for (int v = 0; v < NV; v++) acc[r][v] += b * wv[v];                                             \
            }                                                                                                    \
        }                                                                                                        \
        for (int r = 0; r < R; r++)                                                                              \
            for (int v = 0; v < NV; v++) memcpy(tile + r * PANEL + v * LANES, &acc[r][v], sizeof(VEC));          \
    }

// The tile's rows out to `out`, channels past OC left alone.
static void store_tile(float *out, const float *tile, int rows, int OC, int first, int accumulate) {
    const int n = OC - first < PANEL ? OC - first : PANEL;
    for (int r = 0; r < rows; r++) {
        float *dst = out + (size_t)r * OC + first;
        const float *src = tile + (size_t)r * PANEL;
        if (accumulate)
            for (int j = 0; j < n; j++) dst[j] += src[j];
        else
            memcpy(dst, src, sizeof(float) * (size_t)n);
    }
}

// A panel's driver: row chunks, input blocks, then groups of rows, each through the widest block that fits.
#define PANEL_DRIVER(NAME, ATTR, WT, GROUP, DISPATCH)                                                              \
    static ATTR void NAME(float *out, const float *x, const WT *panel, int N, int C, int OC, int first,           \
                          int accumulate) {                                                                      \
        float tile[ROW_CHUNK * PANEL];                                                                           \
        for (int r0 = 0; r0 < N; r0 += ROW_CHUNK) {                                                              \
            const int chunk = N - r0 < ROW_CHUNK ? N - r0 : ROW_CHUNK;                                           \
            memset(tile, 0, sizeof(float) * (size_t)chunk * PANEL);                                              \
            for (int c0 = 0; c0 < C; c0 += KBLOCK) {                                                             \
                const int c1 = C - c0 < KBLOCK ? C : c0 + KBLOCK;                                                \
                for (int r = 0; r < chunk;) {                                                                    \
                    const int rows = chunk - r >= GROUP ? GROUP : chunk - r;                                     \
                    float *t = tile + (size_t)r * PANEL;                                                         \
                    const float *xr = x + (size_t)(r0 + r) * C;                                                  \
                    DISPATCH                                                                                     \
                    r += rows;                                                                                   \
                }                                                                                                \
            }                                                                                                    \
            store_tile(out + (size_t)r0 * OC, tile, chunk, OC, first, accumulate);                               \
        }                                                                                                        \
    }

// AVX2 blocks: one row × the whole panel (8 accumulators of 16 registers), 2 rows × half, 3 to 6 × a quarter
// (6 × 2 = 12 accumulators, enough independent chains to cover the FMA's latency at two a cycle). Groups of 3
// to 6 rows go a quarter of the panel at a time, every group through that quarter before the next, so the
// quarter's block of weights (KBLOCK · 64 bytes, contiguous) stays in L1 while all the groups read it.
#define KERNELS(SUFFIX, WT, LOAD8)                                                                                 \
    BLOCK(b8_1_##SUFFIX, , f32x8, 8, WT, LOAD8, 1, 8)                                                             \
    BLOCK(b8_2_##SUFFIX, , f32x8, 8, WT, LOAD8, 2, 4)                                                             \
    BLOCK(b8_3_##SUFFIX, , f32x8, 8, WT, LOAD8, 3, 2)                                                             \
    BLOCK(b8_4_##SUFFIX, , f32x8, 8, WT, LOAD8, 4, 2)                                                             \
    BLOCK(b8_5_##SUFFIX, , f32x8, 8, WT, LOAD8, 5, 2)                                                             \
    BLOCK(b8_6_##SUFFIX, , f32x8, 8, WT, LOAD8, 6, 2)                                                             \
    static void panel8_##SUFFIX(float *out, const float *x, const WT *panel, int N, int C, int OC, int first,     \
                                int accumulate) {                                                                \
        float tile[ROW_CHUNK * PANEL];                                                                           \
        for (int r0 = 0; r0 < N; r0 += ROW_CHUNK) {                                                              \
            const int chunk = N - r0 < ROW_CHUNK ? N - r0 : ROW_CHUNK;                                           \
            /* Groups of 6 rows; the last one's remainder of 1 or 2 rows takes the wider blocks. */             \
            const int tail = chunk % 6 < 3 ? chunk % 6 : 0, grouped = chunk - tail;                              \
            memset(tile, 0, sizeof(float) * (size_t)chunk * PANEL);                                              \
            for (int c0 = 0; c0 < C; c0 += KBLOCK) {                                                             \
                const int c1 = C - c0 < KBLOCK ? C : c0 + KBLOCK;                                                \
                for (int at = 0; at < PANEL && grouped > 0; at += 16)                                            \
                    for (int r = 0; r < grouped; r += 6) {                                                       \
                        const int rows = grouped - r >= 6 ? 6 : grouped - r;                                     \
                        float *t = tile + (size_t)r * PANEL + at;                                                \
                        const float *xr = x + (size_t)(r0 + r) * C;                                              \
                        switch (rows) {                                                                          \
                        case 3: b8_3_##SUFFIX(t, xr, panel, at, C, c0, c1); break;                              \
                        case 4: b8_4_##SUFFIX(t, xr, panel, at, C, c0, c1); break;                              \
                        case 5: b8_5_##SUFFIX(t, xr, panel, at, C, c0, c1); break;                              \
                        default: b8_6_##SUFFIX(t, xr, panel, at, C, c0, c1); break;                             \
                        }                                                                                        \
                    }                                                                                            \
                float *t = tile + (size_t)grouped * PANEL;                                                       \
                const float *xr = x + (size_t)(r0 + grouped) * C;                                                \
                if (tail == 1) b8_1_##SUFFIX(t, xr, panel, 0, C, c0, c1);                                           \
                else if (tail == 2)                                                                              \
                    for (int at = 0; at < PANEL; at += 32) b8_2_##SUFFIX(t + at, xr, panel, at, C, c0, c1);     \
            }                                                                                                    \
            store_tile(out + (size_t)r0 * OC, tile, chunk, OC, first, accumulate);                               \
        }                                                                                                        \
    }

#define LOAD8_F32(p) LOAD_F32(f32x8, p)
#define LOAD8_BF16(p) LOAD_BF16(f32x8, u16x8, u32x8, p)
KERNELS(f32, float, LOAD8_F32)
KERNELS(bf16, uint16_t, LOAD8_BF16)

#if defined(__x86_64__)
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define LOAD16_F32(p) LOAD_F32(f32x16, p)
#define LOAD16_BF16(p) LOAD_BF16(f32x16, u16x16, u32x16, p)
// AVX-512 blocks: up to 6 rows × the whole panel (24 accumulators of 32 registers).
#define KERNELS512(SUFFIX, WT, LOAD)                                                                               \
    BLOCK(b16_1_##SUFFIX, AVX512, f32x16, 16, WT, LOAD, 1, 4)                                                     \
    BLOCK(b16_2_##SUFFIX, AVX512, f32x16, 16, WT, LOAD, 2, 4)                                                     \
    BLOCK(b16_3_##SUFFIX, AVX512, f32x16, 16, WT, LOAD, 3, 4)                                                     \
    BLOCK(b16_4_##SUFFIX, AVX512, f32x16, 16, WT, LOAD, 4, 4)                                                     \
    BLOCK(b16_5_##SUFFIX, AVX512, f32x16, 16, WT, LOAD, 5, 4)                                                     \
    BLOCK(b16_6_##SUFFIX, AVX512, f32x16, 16, WT, LOAD, 6, 4)                                                     \
    PANEL_DRIVER(panel16_##SUFFIX, AVX512, WT, 6, {                                                               \
        switch (rows) {                                                                                           \
        case 1: b16_1_##SUFFIX(t, xr, panel, 0, C, c0, c1); break;                                                   \
        case 2: b16_2_##SUFFIX(t, xr, panel, 0, C, c0, c1); break;                                                   \
        case 3: b16_3_##SUFFIX(t, xr, panel, 0, C, c0, c1); break;                                                   \
        case 4: b16_4_##SUFFIX(t, xr, panel, 0, C, c0, c1); break;                                                   \
        case 5: b16_5_##SUFFIX(t, xr, panel, 0, C, c0, c1); break;                                                   \
        default: b16_6_##SUFFIX(t, xr, panel, 0, C, c0, c1); break;                                                  \
        }                                                                                                         \
    })
KERNELS512(f32, float, LOAD16_F32)
KERNELS512(bf16, uint16_t, LOAD16_BF16)
static int wide(void) {
    static int known = -1;  // a benign race: every thread computes the same answer
    if (known < 0) known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    return known;
}
#else
static int wide(void) { return 0; }
#define panel16_f32 panel8_f32
#define panel16_bf16 panel8_bf16
#endif

void lm_matmul_panels(float *out, const float *inp, const float *packed, int N, int C, int OC, int first_panel,
                      int end_panel, int accumulate) {
    const int w = wide();
    for (int p = first_panel; p < end_panel; p++) {
        const float *panel = packed + (size_t)p * C * PANEL;
        if (w) panel16_f32(out, inp, panel, N, C, OC, p * PANEL, accumulate);
        else panel8_f32(out, inp, panel, N, C, OC, p * PANEL, accumulate);
    }
}

void lm_matmul_panels_bf16(float *out, const float *inp, const uint16_t *packed, int N, int C, int OC,
                           int first_panel, int end_panel, int accumulate) {
    const int w = wide();
    for (int p = first_panel; p < end_panel; p++) {
        const uint16_t *panel = packed + (size_t)p * C * PANEL;
        if (w) panel16_bf16(out, inp, panel, N, C, OC, p * PANEL, accumulate);
        else panel8_bf16(out, inp, panel, N, C, OC, p * PANEL, accumulate);
    }
}

void lm_rope_forward_at(float *x, const float *cos_table, const float *sin_table, const int32_t *positions, int N,
                        int heads, int D) {
    const int half = D / 2;
    for (int r = 0; r < N; r++) {
        const float *cs = cos_table + (size_t)positions[r] * half, *sn = sin_table + (size_t)positions[r] * half;
        for (int h = 0; h < heads; h++) {
            float *v = x + ((size_t)r * heads + h) * D;
            for (int i = 0; i < half; i++) {
                const float a = v[i], c = v[i + half];
                v[i] = a * cs[i] - c * sn[i];
                v[i + half] = c * cs[i] + a * sn[i];
            }
        }
    }
}

size_t lm_attention_cached_scratch_floats(int H, int G, int length) {
    (void)G;
    return (size_t)H * (size_t)length;
}

// Row r's key/value heads [g0, g1) (their query heads with them) over positions [0, length): each cached K and
// V row's span for those heads is read once, in position order, so a row's cache streams through in sequence.
// A head's arithmetic is its own (scores, softmax, weighted sum in position order) whatever heads share the call.
// A bf16 cache is widened exactly as it is read (its bits are fp32's upper half); the arithmetic is fp32.
static inline float widen_bf16(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
#define AS_F32(x) (x)
#define AS_BF16(x) widen_bf16(x)

#define ATTEND_ROW(NAME, CT, WIDEN)                                                                                \
    static void NAME(float *O, const float *Q, const CT *K, const CT *V, int length, int H, int G, int D, int g0,   \
                     int g1, float *scores) {                                                                     \
        const int group = H / G, heads = (g1 - g0) * group;                                                       \
        const size_t kvs = (size_t)G * D;                                                                         \
        const float scale = 1.0f / sqrtf((float)D);                                                               \
        /* scores (heads, length) = Q · Kᵀ · scale */                                                             \
        for (int t = 0; t < length; t++) {                                                                        \
            const CT *k = K + (size_t)t * kvs;                                                                    \
            for (int g = g0; g < g1; g++) {                                                                       \
                for (int j = 0; j < group; j++) {                                                                 \
                    const int h = g * group + j;                                                                  \
                    const float *qh = Q + (size_t)h * D;                                                          \
                    const CT *kg = k + (size_t)g * D;                                                             \
                    float s = 0;                                                                                  \
                    _Pragma("omp simd reduction(+ : s)") for (int d = 0; d < D; d++) s += qh[d] * WIDEN(kg[d]);   \
                    scores[(size_t)(h - g0 * group) * length + t] = s * scale;                                    \
                }                                                                                                 \
            }                                                                                                     \
        }                                                                                                         \
        for (int i = 0; i < heads; i++) {                                                                         \
            float *row = scores + (size_t)i * length, mx = -INFINITY, sum = 0;                                    \
            for (int t = 0; t < length; t++) mx = fmaxf(mx, row[t]);                                              \
            _Pragma("omp simd reduction(+ : sum)") for (int t = 0; t < length; t++) {                             \
                row[t] = lm_expf(row[t] - mx);                                                                    \
                sum += row[t];                                                                                    \
            }                                                                                                     \
            const float inv = 1.0f / sum;                                                                         \
            for (int t = 0; t < length; t++) row[t] *= inv;                                                       \
            memset(O + (size_t)(g0 * group + i) * D, 0, sizeof(float) * (size_t)D);                               \
        }                                                                                                         \
        /* O (heads, D) = P · V */                                                                                \
        for (int t = 0; t < length; t++) {                                                                        \
            const CT *v = V + (size_t)t * kvs;                                                                    \
            for (int g = g0; g < g1; g++) {                                                                       \
                for (int j = 0; j < group; j++) {                                                                 \
                    const int h = g * group + j;                                                                  \
                    const float p = scores[(size_t)(h - g0 * group) * length + t];                                \
                    const CT *vg = v + (size_t)g * D;                                                             \
                    float *o = O + (size_t)h * D;                                                                 \
                    _Pragma("omp simd") for (int d = 0; d < D; d++) o[d] += p * WIDEN(vg[d]);                     \
                }                                                                                                 \
            }                                                                                                     \
        }                                                                                                         \
    }

ATTEND_ROW(attend_row, float, AS_F32)
ATTEND_ROW(attend_row_bf16, uint16_t, AS_BF16)

// Units u = (row r, key/value head g), u = r·G + g; a range is cut into runs of one row each.
#define ATTENTION_CACHED(NAME, CT, ROW)                                                                            \
    void NAME(float *out, const float *q, const CT *k_cache, const CT *v_cache, const size_t *cache_offsets,        \
              const int32_t *positions, int H, int G, int D, float *scratch, size_t first_unit, size_t end_unit) { \
        const size_t qs = (size_t)H * D;                                                                          \
        for (size_t u = first_unit; u < end_unit;) {                                                              \
            const size_t r = u / (size_t)G;                                                                       \
            const int g0 = (int)(u % (size_t)G);                                                                  \
            const size_t row_end = (r + 1) * (size_t)G < end_unit ? (r + 1) * (size_t)G : end_unit;              \
            const int g1 = g0 + (int)(row_end - u);                                                               \
            ROW(out + r * qs, q + r * qs, k_cache + cache_offsets[r], v_cache + cache_offsets[r], positions[r] + 1, \
                H, G, D, g0, g1, scratch);                                                                        \
            u = row_end;                                                                                          \
        }                                                                                                         \
    }

ATTENTION_CACHED(lm_attention_cached, float, attend_row)
ATTENTION_CACHED(lm_attention_cached_bf16, uint16_t, attend_row_bf16)

// MARK: - The streaming read that bounds batch-1 decoding

#define STREAM_SUM(NAME, ATTR, VEC, LANES)                                                                         \
    static ATTR float NAME(const float *x, size_t n) {                                                          \
        VEC a[4];                                                                                                \
        memset(a, 0, sizeof a);                                                                                  \
        size_t i = 0;                                                                                            \
        for (; i + 4 * LANES <= n; i += 4 * LANES)                                                               \
            for (int j = 0; j < 4; j++) a[j] += LOAD_F32(VEC, x + i + j * LANES);                                \
        float s = 0;                                                                                             \
        for (int j = 0; j < 4; j++)                                                                              \
            for (int l = 0; l < LANES; l++) s += a[j][l];                                                        \
        for (; i < n; i++) s += x[i];                                                                            \
        return s;                                                                                                \
    }
STREAM_SUM(stream_sum8, , f32x8, 8)
#if defined(__x86_64__)
STREAM_SUM(stream_sum16, AVX512, f32x16, 16)
#else
#define stream_sum16 stream_sum8
#endif

float lm_stream_sum(const float *x, size_t n) { return wide() ? stream_sum16(x, n) : stream_sum8(x, n); }
