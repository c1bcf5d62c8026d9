// Matmuls as OpenBLAS sgemm, row-major, with PyTorch's Linear layout: weight is (out_features, in_features).
// Also the thread control for OpenBLAS, so Swift never needs OpenBLAS's own header.
#include "lm_kernels.h"

#include <cblas.h>

void lm_set_blas_threads(int threads) { openblas_set_num_threads(threads < 1 ? 1 : threads); }

int lm_blas_threads(void) { return openblas_get_num_threads(); }

// out (N,OC) = inp (N,C) · weight (OC,C)ᵀ [+ out]
void lm_matmul_forward(float *out, const float *inp, const float *weight, int N, int C, int OC, int accumulate) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, weight, C,
                accumulate ? 1.0f : 0.0f, out, OC);
}

// forward: out = inp · weightᵀ
void lm_matmul_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                        int N, int C, int OC) {
    if (dinp) {
        // dinp (N,C) += dout (N,OC) · weight (OC,C)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, weight, C, 1.0f, dinp, C);
    }
    // dweight (OC,C) += doutᵀ (OC,N) · inp (N,C)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
}
