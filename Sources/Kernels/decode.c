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

typedef float v8f __attribute__((vector_size(32), aligned(4)));

static inline v8f load8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

// The horizontal sum of one accumulator, always in this order.
static inline float hsum8(v8f v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

// One dot product's tail (C % 8 values), added after the vector part: the same for every caller.
static inline float tail_dot(const float *x, const float *w, int from, int C) {
    float s = 0;
    for (int c = from; c < C; c++) s += x[c] * w[c];
    return s;
}

// Rows x0 and x1 (when pair) against `channels` ≤ 4 consecutive weight rows: one accumulator per (row,
// channel), so each dot product is the same sum however many neighbours share its loads. Inlined with
// constant pair and channels, the accumulators stay in registers.
static inline __attribute__((always_inline)) void dot_block(float *out0, float *out1, const float *x0, const float *x1,
                                                            const float *w, int C, int pair, int channels) {
    const int whole = C & ~7;
    v8f a0[4] = {{0}}, a1[4] = {{0}};
    for (int c = 0; c < whole; c += 8) {
        const v8f p = load8(x0 + c);
        const v8f q = pair ? load8(x1 + c) : p;
        for (int j = 0; j < channels; j++) {
            const v8f wv = load8(w + (size_t)j * C + c);
            a0[j] += p * wv;
            if (pair) a1[j] += q * wv;
        }
    }
    for (int j = 0; j < channels; j++) {
        out0[j] = hsum8(a0[j]) + tail_dot(x0, w + (size_t)j * C, whole, C);
        if (pair) out1[j] = hsum8(a1[j]) + tail_dot(x1, w + (size_t)j * C, whole, C);
    }
}

void lm_matmul_rows(float *out, const float *inp, const float *weight, int N, int C, int OC, int first_channel,
                    int end_channel) {
    for (int o = first_channel; o < end_channel; o += 4) {
        const int channels = end_channel - o < 4 ? end_channel - o : 4;
        const float *w = weight + (size_t)o * C;
        for (int r = 0; r < N; r += 2) {
            float *o0 = out + (size_t)r * OC + o, *o1 = o0 + OC;
            const float *x0 = inp + (size_t)r * C, *x1 = x0 + C;
            if (r + 1 < N) {
                if (channels == 4) dot_block(o0, o1, x0, x1, w, C, 1, 4);
                else dot_block(o0, o1, x0, x1, w, C, 1, channels);
            } else if (channels == 4) {
                dot_block(o0, NULL, x0, NULL, w, C, 0, 4);
            } else {
                dot_block(o0, NULL, x0, NULL, w, C, 0, channels);
            }
        }
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

size_t lm_attention_cached_scratch_floats(int H, int G, int length) { return (size_t)(H / G) * (size_t)length; }

// Unit u = (row r, key/value head g): the group's H/G query heads read each cached K and V row once.
void lm_attention_cached(float *out, const float *q, const float *k_cache, const float *v_cache,
                         const size_t *cache_offsets, const int32_t *positions, int H, int G, int D, float *scratch,
                         size_t first_unit, size_t end_unit) {
    const int group = H / G;
    const size_t kvs = (size_t)G * D, qs = (size_t)H * D;
    const float scale = 1.0f / sqrtf((float)D);
    for (size_t u = first_unit; u < end_unit; u++) {
        const size_t r = u / (size_t)G;
        const int g = (int)(u % (size_t)G), length = positions[r] + 1;
        const float *K = k_cache + cache_offsets[r] + (size_t)g * D, *V = v_cache + cache_offsets[r] + (size_t)g * D;
        const float *Q = q + r * qs + (size_t)g * group * D;
        float *O = out + r * qs + (size_t)g * group * D;
        // scores (group, length) = Q · Kᵀ · scale
        for (int t = 0; t < length; t++) {
            const float *k = K + (size_t)t * kvs;
            for (int h = 0; h < group; h++) {
                const float *qh = Q + (size_t)h * D;
                float s = 0;
#pragma omp simd reduction(+ : s)
                for (int d = 0; d < D; d++) s += qh[d] * k[d];
                scratch[(size_t)h * length + t] = s * scale;
            }
        }
        for (int h = 0; h < group; h++) {
            float *row = scratch + (size_t)h * length, mx = -INFINITY, sum = 0;
            for (int t = 0; t < length; t++) mx = fmaxf(mx, row[t]);
#pragma omp simd reduction(+ : sum)
            for (int t = 0; t < length; t++) {
                row[t] = lm_expf(row[t] - mx);
                sum += row[t];
            }
            const float inv = 1.0f / sum;
            for (int t = 0; t < length; t++) row[t] *= inv;
            memset(O + (size_t)h * D, 0, sizeof(float) * (size_t)D);
        }
        // O (group, D) = P · V
        for (int t = 0; t < length; t++) {
            const float *v = V + (size_t)t * kvs;
            for (int h = 0; h < group; h++) {
                const float p = scratch[(size_t)h * length + t];
                float *o = O + (size_t)h * D;
#pragma omp simd
                for (int d = 0; d < D; d++) o[d] += p * v[d];
            }
        }
    }
}
