// Causal grouped-query attention with the scores materialised (B,H,T,T), one (batch, head) at a time, with
// sgemm for the four products, as llm.c does. The naive twin of flash_attention.c: simple enough to trust,
// kept for the tests that hold the flash kernels against it; the model never runs it (its T×T buffers are
// 2 GiB per layer at 4096 tokens).
#include "lm_kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "fastmath.h"

// Softmax of row t over keys 0...t; keys after t get probability 0.
static void causal_softmax_rows(float *att, int T) {
    for (int t = 0; t < T; t++) {
        float *row = att + (size_t)t * T;
        float maxval = -INFINITY;
        for (int j = 0; j <= t; j++) maxval = fmaxf(maxval, row[j]);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j <= t; j++) {
            float e = lm_expf(row[j] - maxval);
            row[j] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
        for (int j = 0; j <= t; j++) row[j] *= inv;
        memset(row + t + 1, 0, sizeof(float) * (size_t)(T - t - 1));
    }
}

void lm_attention_naive_forward(float *out, float *att, const float *q, const float *k, const float *v,
                          int B, int T, int H, int G, int D) {
    const int qstride = H * D, kvstride = G * D, group = H / G;
    const float scale = 1.0f / sqrtf((float)D);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const float *qh = q + (size_t)b * T * qstride + (size_t)h * D;
            const float *kh = k + (size_t)b * T * kvstride + (size_t)(h / group) * D;
            const float *vh = v + (size_t)b * T * kvstride + (size_t)(h / group) * D;
            float *outh = out + (size_t)b * T * qstride + (size_t)h * D;
            float *atth = att + ((size_t)b * H + h) * T * T;
            // scores (T,T) = q (T,D) · kᵀ / sqrt(D)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, scale, qh, qstride, kh, kvstride,
                        0.0f, atth, T);
            causal_softmax_rows(atth, T);
            // out (T,D) = att (T,T) · v (T,D)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, 1.0f, atth, T, vh, kvstride,
                        0.0f, outh, qstride);
        }
    }
}

void lm_attention_naive_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *att,
                           const float *q, const float *k, const float *v, int B, int T, int H, int G, int D) {
    const int qstride = H * D, kvstride = G * D, group = H / G;
    const float scale = 1.0f / sqrtf((float)D);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            size_t qoff = (size_t)b * T * qstride + (size_t)h * D;
            size_t kvoff = (size_t)b * T * kvstride + (size_t)(h / group) * D;
            const float *atth = att + ((size_t)b * H + h) * T * T;
            float *datt = scratch;
            // forward: out = att · v
            // datt (T,T) = dout (T,D) · vᵀ;  dv (T,D) += attᵀ · dout
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, 1.0f, dout + qoff, qstride, v + kvoff,
                        kvstride, 0.0f, datt, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, 1.0f, atth, T, dout + qoff, qstride,
                        1.0f, dv + kvoff, kvstride);
            // forward: att = softmax(scores) ⇒ dscores = att · (datt − Σⱼ att · datt), in place in datt
            for (int t = 0; t < T; t++) {
                const float *p = atth + (size_t)t * T;
                float *d = datt + (size_t)t * T;
                float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                for (int j = 0; j <= t; j++) dot += p[j] * d[j];
                for (int j = 0; j <= t; j++) d[j] = p[j] * (d[j] - dot);
                memset(d + t + 1, 0, sizeof(float) * (size_t)(T - t - 1));
            }
            // forward: scores = q · kᵀ · scale
            // dq (T,D) += dscores · k · scale;  dk (T,D) += dscoresᵀ · q · scale
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, scale, datt, T, k + kvoff, kvstride,
                        1.0f, dq + qoff, qstride);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, scale, datt, T, q + qoff, qstride,
                        1.0f, dk + kvoff, kvstride);
        }
    }
}
