// Cross-entropy over the vocabulary, and the flat loops of the optimizer step (norms, scaling, AdamW).
// They share a file because each is one pass over a large flat buffer.
#include "lm_kernels.h"

#include <math.h>

#include "fastmath.h"

// MARK: - Cross-entropy

static float row_max(const float *x, int V) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int i = 0; i < V; i++) m = fmaxf(m, x[i]);
    return m;
}

void lm_cross_entropy_forward(float *losses, const float *logits, const int32_t *targets, int N, int V) {
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0) {
            losses[n] = 0.0f;
            continue;
        }
        const float *x = logits + (size_t)n * V;
        float m = row_max(x, V);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i < V; i++) sum += lm_expf(x[i] - m);
        losses[n] = logf(sum) + m - x[targets[n]];
    }
}

// forward: loss = logsumexp(x) − x[target] ⇒ dx = (softmax(x) − onehot(target)) · dloss
void lm_cross_entropy_backward(float *dlogits, const float *logits, const int32_t *targets, float dloss,
                               int N, int V) {
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * V;
        float *dx = dlogits + (size_t)n * V;
        if (targets[n] < 0) {
            for (int i = 0; i < V; i++) dx[i] = 0.0f;
            continue;
        }
        float m = row_max(x, V);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i < V; i++) {
            float e = lm_expf(x[i] - m);
            dx[i] = e;
            sum += e;
        }
        float s = dloss / sum;
        for (int i = 0; i < V; i++) dx[i] *= s;
        dx[targets[n]] -= dloss;
    }
}

// MARK: - Flat loops

double lm_sum_squares(const float *x, size_t n) {
    // Blocks of float partial sums keep the loop vectorised; the blocks add up in double.
    double total = 0.0;
    for (size_t start = 0; start < n; start += 4096) {
        size_t end = start + 4096 < n ? start + 4096 : n;
        float partial = 0.0f;
#pragma omp simd reduction(+ : partial)
        for (size_t i = start; i < end; i++) partial += x[i] * x[i];
        total += partial;
    }
    return total;
}

void lm_scale(float *x, size_t n, float s) {
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

void lm_add(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

void lm_adamw_update(float *params, const float *grads, float *m, float *v, size_t n, float lr, float beta1,
                     float beta2, float eps, float weight_decay, float bias_correction1, float bias_correction2) {
    const float decay = 1.0f - lr * weight_decay;
    const float step_size = lr / bias_correction1;
    const float inv_sqrt_bc2 = 1.0f / sqrtf(bias_correction2);
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        float mi = m[i] + (1.0f - beta1) * (g - m[i]);
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] = params[i] * decay - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    }
}

size_t lm_count_nonfinite(const float *x, size_t n) {
    size_t count = 0;
    for (size_t i = 0; i < n; i++) count += !isfinite(x[i]);
    return count;
}
