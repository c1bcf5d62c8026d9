// fastmath.h (private to the kernels): an exp that vectorises.
//
// glibc's expf is a scalar call; inside softmax over a 32k vocabulary it would cost more than the loops
// around it. This is Cephes' expf (Cody–Waite range reduction, degree-6 minimax polynomial): about 2 ulp
// on the range softmax and SiLU use, the same result on every machine, and branch-free so clang
// vectorises every loop that calls it. Inputs below -87.3 return ~1e-38 rather than 0, which no sum notices.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float lm_expf(float x) {
    x = fminf(fmaxf(x, -87.3f), 88.7f);
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float lm_sigmoidf(float x) { return 1.0f / (1.0f + lm_expf(-x)); }
