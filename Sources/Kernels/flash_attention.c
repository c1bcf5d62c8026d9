// Causal grouped-query attention without a T×T buffer: FlashAttention-2's schedule on a CPU.
//
// Forward, per work unit (batch b, query head h, query block i of `bq` rows): walk the key blocks j ≤ i of
// `bk` keys, compute the tile S = Q_i·K_jᵀ·scale, and keep an online softmax per row (running max m, running
// sum l, the output accumulated in place and rescaled when m grows). Only the output and one logsumexp per
// row (lse = m + log l) are kept. Tiles wholly above the diagonal are never touched: half the flops of the
// materialised kernel.
// Backward, per work unit (batch b, key/value head g): for every query head of the group and every query
// block, recompute each tile's probabilities P = exp(S − lse) and form dV += Pᵀ·dO, dP = dO·Vᵀ,
// dS = P∘(dP − rowsum(dO∘O)), dQ += dS·K·scale, dK += dSᵀ·Q·scale. A unit owns its K/V head's dK and dV
// and its query heads' dQ, so units never write the same memory and may run on any threads, in any order,
// with bitwise the same result.
//
// The caller (Swift) spreads units over its threads; these functions take a unit range and allocate
// nothing (tiles live on the stack: at most LM_FLASH_MAX_TILE² floats, 64 KiB).
#include "lm_kernels.h"

#include <math.h>
#include <string.h>

#include "fastmath.h"

static inline int min_int(int a, int b) { return a < b ? a : b; }

size_t lm_flash_attention_forward_units(int B, int T, int H, int bq) {
    return (size_t)B * (size_t)H * (size_t)((T + bq - 1) / bq);
}

size_t lm_flash_attention_backward_units(int B, int G) { return (size_t)B * (size_t)G; }

// s (nr,nc) = a (nr rows, stride as) · b (nc rows, stride bs)ᵀ over D, times scale. Four rows of a at a time
// share each row of b.
static void tile_dots(float *s, int ldS, const float *a, size_t as, const float *b, size_t bs, int nr, int nc, int D,
                      float scale) {
    int r = 0;
    for (; r + 4 <= nr; r += 4) {
        const float *a0 = a + r * as, *a1 = a0 + as, *a2 = a1 + as, *a3 = a2 + as;
        for (int c = 0; c < nc; c++) {
            const float *bc = b + c * bs;
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
            for (int d = 0; d < D; d++) {
                s0 += a0[d] * bc[d];
                s1 += a1[d] * bc[d];
                s2 += a2[d] * bc[d];
                s3 += a3[d] * bc[d];
            }
            s[(r + 0) * ldS + c] = s0 * scale;
            s[(r + 1) * ldS + c] = s1 * scale;
            s[(r + 2) * ldS + c] = s2 * scale;
            s[(r + 3) * ldS + c] = s3 * scale;
        }
    }
    for (; r < nr; r++) {
        const float *ar = a + r * as;
        for (int c = 0; c < nc; c++) {
            const float *bc = b + c * bs;
            float acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int d = 0; d < D; d++) acc += ar[d] * bc[d];
            s[r * ldS + c] = acc * scale;
        }
    }
}

// out rows (nr, stride os) += p (nr,nc) · x (nc rows, stride xs) · alpha: each x row is read once per four rows.
static void tile_accumulate(float *out, size_t os, const float *p, int ldP, const float *x, size_t xs, int nr, int nc,
                            int D, float alpha) {
    int r = 0;
    for (; r + 4 <= nr; r += 4) {
        float *o0 = out + r * os, *o1 = o0 + os, *o2 = o1 + os, *o3 = o2 + os;
        for (int c = 0; c < nc; c++) {
            const float p0 = p[(r + 0) * ldP + c] * alpha, p1 = p[(r + 1) * ldP + c] * alpha;
            const float p2 = p[(r + 2) * ldP + c] * alpha, p3 = p[(r + 3) * ldP + c] * alpha;
            const float *xc = x + c * xs;
#pragma omp simd
            for (int d = 0; d < D; d++) {
                o0[d] += p0 * xc[d];
                o1[d] += p1 * xc[d];
                o2[d] += p2 * xc[d];
                o3[d] += p3 * xc[d];
            }
        }
    }
    for (; r < nr; r++) {
        float *o = out + r * os;
        for (int c = 0; c < nc; c++) {
            const float pc = p[r * ldP + c] * alpha;
            const float *xc = x + c * xs;
#pragma omp simd
            for (int d = 0; d < D; d++) o[d] += pc * xc[d];
        }
    }
}

// out rows (nc, stride os) += pᵀ (nc,nr) · x (nr rows, stride xs) · alpha, for dV += Pᵀ·dO and dK += dSᵀ·Q.
static void tile_accumulate_transposed(float *out, size_t os, const float *p, int ldP, const float *x, size_t xs,
                                       int nr, int nc, int D, float alpha) {
    for (int r = 0; r < nr; r++) {
        const float *xr = x + r * xs;
        int c = 0;
        for (; c + 4 <= nc; c += 4) {
            float *o0 = out + c * os, *o1 = o0 + os, *o2 = o1 + os, *o3 = o2 + os;
            const float p0 = p[r * ldP + c] * alpha, p1 = p[r * ldP + c + 1] * alpha;
            const float p2 = p[r * ldP + c + 2] * alpha, p3 = p[r * ldP + c + 3] * alpha;
#pragma omp simd
            for (int d = 0; d < D; d++) {
                o0[d] += p0 * xr[d];
                o1[d] += p1 * xr[d];
                o2[d] += p2 * xr[d];
                o3[d] += p3 * xr[d];
            }
        }
        for (; c < nc; c++) {
            float *o = out + c * os;
            const float pc = p[r * ldP + c] * alpha;
#pragma omp simd
            for (int d = 0; d < D; d++) o[d] += pc * xr[d];
        }
    }
}

void lm_flash_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                                int H, int G, int D, int bq, int bk, size_t first_unit, size_t end_unit) {
    const size_t qs = (size_t)H * D, kvs = (size_t)G * D;
    const int group = H / G, blocks = (T + bq - 1) / bq;
    const float scale = 1.0f / sqrtf((float)D);
    float s[LM_FLASH_MAX_TILE * LM_FLASH_MAX_TILE];
    float m[LM_FLASH_MAX_TILE], l[LM_FLASH_MAX_TILE];
    for (size_t u = first_unit; u < end_unit; u++) {
        const int i = (int)(u % (size_t)blocks), h = (int)(u / (size_t)blocks % (size_t)H), b = (int)(u / ((size_t)blocks * H));
        const int r0 = i * bq, nr = min_int(bq, T - r0);
        const float *Q = q + ((size_t)b * T + r0) * qs + (size_t)h * D;
        const float *K = k + (size_t)b * T * kvs + (size_t)(h / group) * D;
        const float *V = v + (size_t)b * T * kvs + (size_t)(h / group) * D;
        float *O = out + ((size_t)b * T + r0) * qs + (size_t)h * D;
        for (int r = 0; r < nr; r++) {
            memset(O + r * qs, 0, sizeof(float) * (size_t)D);
            m[r] = -INFINITY;
            l[r] = 0;
        }
        for (int c0 = 0; c0 < r0 + nr; c0 += bk) {
            const int nc = min_int(bk, T - c0);
            tile_dots(s, bk, Q, qs, K + (size_t)c0 * kvs, kvs, nr, nc, D, scale);
            for (int r = 0; r < nr; r++) {
                float *row = s + r * bk;
                // Causal: key c0 + c is visible to query r0 + r when c0 + c ≤ r0 + r (none, for rows above the tile).
                const int visible = r0 + r < c0 ? 0 : min_int(nc, r0 + r - c0 + 1);
                if (visible == 0) {
                    memset(row, 0, sizeof(float) * (size_t)nc);
                    continue;
                }
                float mx = m[r];
                for (int c = 0; c < visible; c++) mx = fmaxf(mx, row[c]);
                const float alpha = lm_expf(m[r] - mx);  // 0 on the first tile (m = −inf)
                float sum = 0;
#pragma omp simd reduction(+ : sum)
                for (int c = 0; c < visible; c++) {
                    const float e = lm_expf(row[c] - mx);
                    row[c] = e;
                    sum += e;
                }
                for (int c = visible; c < nc; c++) row[c] = 0;
                l[r] = l[r] * alpha + sum;
                m[r] = mx;
                if (alpha != 1.0f) {
                    float *o = O + r * qs;
#pragma omp simd
                    for (int d = 0; d < D; d++) o[d] *= alpha;
                }
            }
            tile_accumulate(O, qs, s, bk, V + (size_t)c0 * kvs, kvs, nr, nc, D, 1.0f);
        }
        float *L = lse + ((size_t)b * H + h) * T + r0;
        for (int r = 0; r < nr; r++) {
            const float inv = 1.0f / l[r];
            float *o = O + r * qs;
#pragma omp simd
            for (int d = 0; d < D; d++) o[d] *= inv;
            L[r] = m[r] + logf(l[r]);
        }
    }
}

void lm_flash_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                                 const float *q, const float *k, const float *v, int B, int T, int H, int G, int D,
                                 int bq, int bk, size_t first_unit, size_t end_unit) {
    const size_t qs = (size_t)H * D, kvs = (size_t)G * D;
    const int group = H / G;
    const float scale = 1.0f / sqrtf((float)D);
    float p[LM_FLASH_MAX_TILE * LM_FLASH_MAX_TILE], dp[LM_FLASH_MAX_TILE * LM_FLASH_MAX_TILE];
    float rowdot[LM_FLASH_MAX_TILE];
    for (size_t u = first_unit; u < end_unit; u++) {
        const int g = (int)(u % (size_t)G), b = (int)(u / (size_t)G);
        const float *K = k + (size_t)b * T * kvs + (size_t)g * D, *V = v + (size_t)b * T * kvs + (size_t)g * D;
        float *dK = dk + (size_t)b * T * kvs + (size_t)g * D, *dV = dv + (size_t)b * T * kvs + (size_t)g * D;
        for (int h = g * group; h < (g + 1) * group; h++) {
            for (int r0 = 0; r0 < T; r0 += bq) {
                const int nr = min_int(bq, T - r0);
                const size_t rows = ((size_t)b * T + r0) * qs + (size_t)h * D;
                const float *Q = q + rows, *dO = dout + rows, *O = out + rows;
                float *dQ = dq + rows;
                const float *L = lse + ((size_t)b * H + h) * T + r0;
                // forward: out = Σ P·V ⇒ dS = P∘(dP − Σ_c P·dP) and Σ_c P·dP = rowsum(dO∘O)
                for (int r = 0; r < nr; r++) {
                    float acc = 0;
#pragma omp simd reduction(+ : acc)
                    for (int d = 0; d < D; d++) acc += dO[r * qs + d] * O[r * qs + d];
                    rowdot[r] = acc;
                }
                for (int c0 = 0; c0 < r0 + nr; c0 += bk) {
                    const int nc = min_int(bk, T - c0);
                    // forward: S = Q·Kᵀ·scale, P = exp(S − lse), zero above the diagonal
                    tile_dots(p, bk, Q, qs, K + (size_t)c0 * kvs, kvs, nr, nc, D, scale);
                    for (int r = 0; r < nr; r++) {
                        const int visible = r0 + r < c0 ? 0 : min_int(nc, r0 + r - c0 + 1);
                        float *row = p + r * bk;
#pragma omp simd
                        for (int c = 0; c < visible; c++) row[c] = lm_expf(row[c] - L[r]);
                        for (int c = visible; c < nc; c++) row[c] = 0;
                    }
                    // forward: out = P·V ⇒ dV += Pᵀ·dO, dP = dO·Vᵀ
                    tile_accumulate_transposed(dV + (size_t)c0 * kvs, kvs, p, bk, dO, qs, nr, nc, D, 1.0f);
                    tile_dots(dp, bk, dO, qs, V + (size_t)c0 * kvs, kvs, nr, nc, D, 1.0f);
                    for (int r = 0; r < nr; r++) {
                        float *d = dp + r * bk;
                        const float *pr = p + r * bk;
#pragma omp simd
                        for (int c = 0; c < nc; c++) d[c] = pr[c] * (d[c] - rowdot[r]);
                    }
                    // forward: S = Q·Kᵀ·scale ⇒ dQ += dS·K·scale, dK += dSᵀ·Q·scale
                    tile_accumulate(dQ, qs, dp, bk, K + (size_t)c0 * kvs, kvs, nr, nc, D, scale);
                    tile_accumulate_transposed(dK + (size_t)c0 * kvs, kvs, dp, bk, Q, qs, nr, nc, D, scale);
                }
            }
        }
    }
}
