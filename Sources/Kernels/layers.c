// The elementwise and row-wise layers of a Llama block: embedding, RMSNorm, rotary embedding, SwiGLU.
// Each forward has its backward right after it; backward comments quote the forward line they reverse.
#include "lm_kernels.h"

#include <math.h>
#include <string.h>

#include "fastmath.h"

// MARK: - Embedding

void lm_embedding_forward(float *out, const int32_t *tokens, const float *table, int N, int C) {
    for (int n = 0; n < N; n++) {
        memcpy(out + (size_t)n * C, table + (size_t)tokens[n] * C, sizeof(float) * C);
    }
}

// forward: out[n] = table[tokens[n]]
void lm_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int N, int C) {
    for (int n = 0; n < N; n++) {
        float *row = dtable + (size_t)tokens[n] * C;
        const float *d = dout + (size_t)n * C;
        for (int c = 0; c < C; c++) row[c] += d[c];
    }
}

// MARK: - RMSNorm

void lm_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int c = 0; c < C; c++) sum += x[c] * x[c];
        float s = 1.0f / sqrtf(sum / C + eps);
        for (int c = 0; c < C; c++) y[c] = weight[c] * (x[c] * s);
        rstd[n] = s;
    }
}

// forward: out = weight · (inp · rstd)
// With x̂ = inp · rstd and g = dout · weight: dinp = rstd · (g − x̂ · mean(g · x̂)).
void lm_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                         const float *rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        const float *dy = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float s = rstd[n];
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int c = 0; c < C; c++) dot += dy[c] * weight[c] * x[c] * s;
        float mean = dot / C;
        for (int c = 0; c < C; c++) {
            float xhat = x[c] * s;
            dweight[c] += dy[c] * xhat;
            dx[c] += s * (dy[c] * weight[c] - xhat * mean);
        }
    }
}

// MARK: - Rotary position embedding

void lm_rope_tables(float *cos_table, float *sin_table, int T, int D, double theta) {
    int half = D / 2;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            double inv_freq = 1.0 / pow(theta, (double)(2 * i) / (double)D);
            double angle = (double)t * inv_freq;
            cos_table[(size_t)t * half + i] = (float)cos(angle);
            sin_table[(size_t)t * half + i] = (float)sin(angle);
        }
    }
}

// Rotating by +angle (sign = 1) is the forward; by −angle (sign = -1) its transpose, the backward.
static void rope_rotate(float *x, const float *cos_table, const float *sin_table, int B, int T, int heads, int D,
                        float sign) {
    int half = D / 2;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float *cs = cos_table + (size_t)t * half;
            const float *sn = sin_table + (size_t)t * half;
            for (int h = 0; h < heads; h++) {
                float *v = x + (((size_t)b * T + t) * heads + h) * D;
                for (int i = 0; i < half; i++) {
                    float a = v[i], c = v[i + half];
                    float s = sign * sn[i];
                    v[i] = a * cs[i] - c * s;
                    v[i + half] = c * cs[i] + a * s;
                }
            }
        }
    }
}

void lm_rope_forward(float *x, const float *cos_table, const float *sin_table, int B, int T, int heads, int D) {
    rope_rotate(x, cos_table, sin_table, B, T, heads, D, 1.0f);
}

// forward: x ← R(t) x, R orthogonal, so dx ← R(t)ᵀ dx = R(−t) dx
void lm_rope_backward(float *dx, const float *cos_table, const float *sin_table, int B, int T, int heads, int D) {
    rope_rotate(dx, cos_table, sin_table, B, T, heads, D, -1.0f);
}

// MARK: - SwiGLU

void lm_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = gate[i] * lm_sigmoidf(gate[i]) * up[i];
}

// forward: out = gate · σ(gate) · up;  d silu(g)/dg = σ(g) · (1 + g · (1 − σ(g)))
void lm_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float s = lm_sigmoidf(g);
        dup[i] += dout[i] * g * s;
        dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    }
}
