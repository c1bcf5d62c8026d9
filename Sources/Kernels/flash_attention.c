// Causal grouped-query attention without a T×T buffer: FlashAttention-2's schedule on a CPU.
//
// Forward, per work unit (batch b, query head h, query block i of `bq` rows; consecutive units are the heads
// of one GQA group on the same query block, so they stream the same K/V tiles through the cache): walk the
// key blocks j ≤ i of
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
// nothing: tiles live on the stack (at most LM_FLASH_MAX_TILE² floats, 64 KiB each), and in bf16 the packed
// operands in the scratch the caller gives each thread (lm_flash_attention_bf16_scratch_bytes).
#include "lm_kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "fastmath.h"
#include "tile_bf16.h"

static inline int min_int(int a, int b) { return a < b ? a : b; }

size_t lm_flash_attention_forward_units(int B, int T, int H, int bq) {
    return (size_t)B * (size_t)H * (size_t)((T + bq - 1) / bq);
}

size_t lm_flash_attention_backward_units(int B, int G) { return (size_t)B * (size_t)G; }

// The tile products are single-threaded sgemm calls (the caller runs units on its own threads and holds
// OpenBLAS at one thread meanwhile): row-major, leading dimensions the tensors' strides.
// c (m,n) = alpha · a (m,k) · b (k,n) [+ c], with either operand transposed as its storage requires.
// A tile product: sgemm in fp32, or, in bf16, the micro-kernel on operands already packed (ap, bp) where
// they repeat over tiles, so each is rounded and packed once per unit or query block, not once per tile.
static inline void tile_gemm(int bf16, const uint32_t *ap, const uint32_t *bp, int trans_a, int trans_b, int m, int n, int k,
                             float alpha, const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    if (bf16) {
        lm_bf16_tile_run(m, n, k, alpha, ap, bp, beta, c, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha,
                a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

// bf16: the packed operands of one thread's units, carved from its scratch in a fixed order (a NULL base
// counts the bytes). Forward: Q of a query block (A), P of a tile (A), and the K/V blocks of the head the
// units are on (B operands of QKᵀ and PV). Backward adds V's blocks, K's blocks as B of dS·K, and Q and dO as
// B operands. `rows`: the packing's conversion rows.
typedef struct {
    uint32_t *qa, *da, *pa, *qb, *db, *kt, *vt, *kn, *vn;
    uint16_t *rows;
    size_t kt_stride, kn_stride;
} attention_scratch;

static size_t carve_attention(attention_scratch *s, char *base, int T, int D, int bq, int bk) {
    lm_bf16_carve carve = {base, 0};
    const int blocks = (T + bk - 1) / bk, tile = bq > bk ? bq : bk;
    s->kt_stride = lm_bf16_packed_b_count(D, bk);
    s->kn_stride = lm_bf16_packed_b_count(bk, D);
    const size_t query = 4 * lm_bf16_packed_a_count(bq, D), query_b = 4 * lm_bf16_packed_b_count(bq, D);
    s->qa = lm_bf16_take(&carve, query);
    s->da = lm_bf16_take(&carve, query);
    s->pa = lm_bf16_take(&carve, 4 * lm_bf16_packed_a_count(tile, tile));
    s->qb = lm_bf16_take(&carve, query_b);
    s->db = lm_bf16_take(&carve, query_b);
    s->kt = lm_bf16_take(&carve, 4 * s->kt_stride * (size_t)blocks);
    s->vt = lm_bf16_take(&carve, 4 * s->kt_stride * (size_t)blocks);
    s->kn = lm_bf16_take(&carve, 4 * s->kn_stride * (size_t)blocks);
    s->vn = s->kn;  // the forward's V blocks have the backward's K-block shape; the two never run together
    const int widest = tile > D ? tile : D;  // the longest row any pack of these operands converts
    s->rows = lm_bf16_take(&carve, 2 * lm_bf16_row_count(widest, widest, widest));
    return carve.used;
}

size_t lm_flash_attention_bf16_scratch_bytes(int T, int D, int bq, int bk) {
    attention_scratch s;
    return carve_attention(&s, NULL, T, D, bq, bk);
}

// In bf16, packs one operand into its place and returns it; NULL in fp32.
static inline uint32_t *packed_a(uint32_t *ap, uint16_t *rows, int trans, int m, int k, const float *a, size_t lda) {
    if (!ap) return NULL;
    lm_bf16_pack_a(ap, rows, trans, m, k, a, lda);
    return ap;
}

static inline uint32_t *packed_b(uint32_t *bp, uint16_t *rows, int trans, int k, int n, const float *b, size_t ldb) {
    if (!bp) return NULL;
    lm_bf16_pack_b(bp, rows, trans, k, n, b, ldb);
    return bp;
}

static void flash_forward(const attention_scratch *ws, float *out, float *lse, const float *q, const float *k, const float *v,
                          int B, int T, int H, int G, int D, int bq, int bk, size_t first_unit, size_t end_unit) {
    const int bf16 = ws != NULL;
    const size_t qs = (size_t)H * D, kvs = (size_t)G * D;
    const int group = H / G, blocks = (T + bq - 1) / bq;
    const float scale = 1.0f / sqrtf((float)D);
    float s[LM_FLASH_MAX_TILE * LM_FLASH_MAX_TILE];
    float m[LM_FLASH_MAX_TILE], l[LM_FLASH_MAX_TILE];
    // bf16: consecutive units share a key/value head and walk growing query blocks, so each K/V block is
    // packed once per head (as the B operand of QKᵀ and of PV) and kept while the units stay on that head.
    const size_t kt_stride = bf16 ? ws->kt_stride : 0, vn_stride = bf16 ? ws->kn_stride : 0;
    uint32_t *kt = bf16 ? ws->kt : NULL, *vn = bf16 ? ws->vn : NULL;
    uint16_t *rows = bf16 ? ws->rows : NULL;
    int cached_b = -1, cached_g = -1, cached_blocks = 0;
    for (size_t u = first_unit; u < end_unit; u++) {
        // u = ((b·G + g)·blocks + i)·group + (h − g·group)
        const int within = (int)(u % (size_t)group), i = (int)(u / (size_t)group % (size_t)blocks);
        const int g = (int)(u / ((size_t)group * blocks) % (size_t)G), b = (int)(u / ((size_t)group * blocks * G));
        const int h = g * group + within;
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
        const uint32_t *qa = packed_a(bf16 ? ws->qa : NULL, rows, 0, nr, D, Q, qs);
        if (bf16 && (b != cached_b || g != cached_g)) {
            cached_b = b;
            cached_g = g;
            cached_blocks = 0;
        }
        for (int c0 = 0; c0 < r0 + nr; c0 += bk) {
            const int nc = min_int(bk, T - c0), blk = c0 / bk;
            if (bf16 && blk == cached_blocks) {
                lm_bf16_pack_b(kt + blk * kt_stride, rows, 1, D, nc, K + (size_t)c0 * kvs, kvs);
                lm_bf16_pack_b(vn + blk * vn_stride, rows, 0, nc, D, V + (size_t)c0 * kvs, kvs);
                cached_blocks++;
            }
            // S (nr,nc) = Q_i (nr,D) · K_jᵀ · scale
            tile_gemm(bf16, qa, bf16 ? kt + blk * kt_stride : NULL, 0, 1, nr, nc, D, scale, Q, qs, K + (size_t)c0 * kvs, kvs,
                      0.0f, s, bk);
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
            // O_i (nr,D) += P (nr,nc) · V_j (nc,D)
            tile_gemm(bf16, packed_a(bf16 ? ws->pa : NULL, rows, 0, nr, nc, s, bk), bf16 ? vn + blk * vn_stride : NULL, 0, 0, nr, D, nc, 1.0f, s, bk,
                      V + (size_t)c0 * kvs, kvs, 1.0f, O, qs);
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

static void flash_backward(const attention_scratch *ws, float *dq, float *dk, float *dv, const float *dout, const float *out,
                           const float *lse, const float *q, const float *k, const float *v, int B, int T, int H, int G, int D,
                           int bq, int bk, size_t first_unit, size_t end_unit) {
    const int bf16 = ws != NULL;
    uint16_t *conv = bf16 ? ws->rows : NULL;
    uint32_t *pa = bf16 ? ws->pa : NULL;
    const size_t qs = (size_t)H * D, kvs = (size_t)G * D;
    const int group = H / G;
    const float scale = 1.0f / sqrtf((float)D);
    float p[LM_FLASH_MAX_TILE * LM_FLASH_MAX_TILE], dp[LM_FLASH_MAX_TILE * LM_FLASH_MAX_TILE];
    float rowdot[LM_FLASH_MAX_TILE];
    for (size_t u = first_unit; u < end_unit; u++) {
        const int g = (int)(u % (size_t)G), b = (int)(u / (size_t)G);
        const float *K = k + (size_t)b * T * kvs + (size_t)g * D, *V = v + (size_t)b * T * kvs + (size_t)g * D;
        float *dK = dk + (size_t)b * T * kvs + (size_t)g * D, *dV = dv + (size_t)b * T * kvs + (size_t)g * D;
        // bf16: this head's K and V packed once, every key block in the three forms the tiles read.
        const size_t kt_stride = bf16 ? ws->kt_stride : 0, kn_stride = bf16 ? ws->kn_stride : 0;
        uint32_t *kt = bf16 ? ws->kt : NULL, *vt = bf16 ? ws->vt : NULL, *kn = bf16 ? ws->kn : NULL;
        if (bf16) {
            const int blocks = (T + bk - 1) / bk;
            for (int blk = 0; blk < blocks; blk++) {
                const int c0 = blk * bk, nc = min_int(bk, T - c0);
                lm_bf16_pack_b(kt + blk * kt_stride, conv, 1, D, nc, K + (size_t)c0 * kvs, kvs);
                lm_bf16_pack_b(vt + blk * kt_stride, conv, 1, D, nc, V + (size_t)c0 * kvs, kvs);
                lm_bf16_pack_b(kn + blk * kn_stride, conv, 0, nc, D, K + (size_t)c0 * kvs, kvs);
            }
        }
        for (int h = g * group; h < (g + 1) * group; h++) {
            for (int r0 = 0; r0 < T; r0 += bq) {
                const int nr = min_int(bq, T - r0);
                const size_t rows = ((size_t)b * T + r0) * qs + (size_t)h * D;
                const float *Q = q + rows, *dO = dout + rows, *O = out + rows;
                float *dQ = dq + rows;
                const float *L = lse + ((size_t)b * H + h) * T + r0;
                // bf16: Q and dO of this query block, as the A and B operands they are in every key block.
                const uint32_t *qa = packed_a(bf16 ? ws->qa : NULL, conv, 0, nr, D, Q, qs);
                const uint32_t *da = packed_a(bf16 ? ws->da : NULL, conv, 0, nr, D, dO, qs);
                const uint32_t *qb = packed_b(bf16 ? ws->qb : NULL, conv, 0, nr, D, Q, qs);
                const uint32_t *db = packed_b(bf16 ? ws->db : NULL, conv, 0, nr, D, dO, qs);
                // forward: out = Σ P·V ⇒ dS = P∘(dP − Σ_c P·dP) and Σ_c P·dP = rowsum(dO∘O)
                for (int r = 0; r < nr; r++) {
                    float acc = 0;
#pragma omp simd reduction(+ : acc)
                    for (int d = 0; d < D; d++) acc += dO[r * qs + d] * O[r * qs + d];
                    rowdot[r] = acc;
                }
                for (int c0 = 0; c0 < r0 + nr; c0 += bk) {
                    const int nc = min_int(bk, T - c0), blk = c0 / bk;
                    const uint32_t *ktb = bf16 ? kt + blk * kt_stride : NULL, *vtb = bf16 ? vt + blk * kt_stride : NULL;
                    const uint32_t *knb = bf16 ? kn + blk * kn_stride : NULL;
                    // forward: S = Q·Kᵀ·scale, P = exp(S − lse), zero above the diagonal
                    tile_gemm(bf16, qa, ktb, 0, 1, nr, nc, D, scale, Q, qs, K + (size_t)c0 * kvs, kvs, 0.0f, p, bk);
                    for (int r = 0; r < nr; r++) {
                        const int visible = r0 + r < c0 ? 0 : min_int(nc, r0 + r - c0 + 1);
                        float *row = p + r * bk;
#pragma omp simd
                        for (int c = 0; c < visible; c++) row[c] = lm_expf(row[c] - L[r]);
                        for (int c = visible; c < nc; c++) row[c] = 0;
                    }
                    // forward: out = P·V ⇒ dV += Pᵀ·dO, dP = dO·Vᵀ
                    tile_gemm(bf16, packed_a(pa, conv, 1, nc, nr, p, bk), db, 1, 0, nc, D, nr, 1.0f, p, bk, dO, qs, 1.0f,
                              dV + (size_t)c0 * kvs, kvs);
                    tile_gemm(bf16, da, vtb, 0, 1, nr, nc, D, 1.0f, dO, qs, V + (size_t)c0 * kvs, kvs, 0.0f, dp, bk);
                    for (int r = 0; r < nr; r++) {
                        float *d = dp + r * bk;
                        const float *pr = p + r * bk;
#pragma omp simd
                        for (int c = 0; c < nc; c++) d[c] = pr[c] * (d[c] - rowdot[r]);
                    }
                    // forward: S = Q·Kᵀ·scale ⇒ dQ += dS·K·scale, dK += dSᵀ·Q·scale
                    tile_gemm(bf16, packed_a(pa, conv, 0, nr, nc, dp, bk), knb, 0, 0, nr, D, nc, scale, dp, bk, K + (size_t)c0 * kvs,
                              kvs, 1.0f, dQ, qs);
                    tile_gemm(bf16, packed_a(pa, conv, 1, nc, nr, dp, bk), qb, 1, 0, nc, D, nr, scale, dp, bk, Q, qs, 1.0f,
                              dK + (size_t)c0 * kvs, kvs);
                }
            }
        }
    }
}

void lm_flash_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                                int H, int G, int D, int bq, int bk, size_t first_unit, size_t end_unit) {
    flash_forward(NULL, out, lse, q, k, v, B, T, H, G, D, bq, bk, first_unit, end_unit);
}

void lm_flash_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                                 const float *q, const float *k, const float *v, int B, int T, int H, int G, int D,
                                 int bq, int bk, size_t first_unit, size_t end_unit) {
    flash_backward(NULL, dq, dk, dv, dout, out, lse, q, k, v, B, T, H, G, D, bq, bk, first_unit, end_unit);
}

// The bf16 kernels lay out their scratch, or report it too small (or bf16 tiles missing from this build).
static int bf16_scratch(attention_scratch *ws, void *scratch, size_t bytes, int T, int D, int bq, int bk) {
#if defined(__x86_64__)
    // The packed B operands are read with aligned loads: the scratch must start on 64 bytes.
    if (!scratch || (uintptr_t)scratch % 64 != 0) return LM_ERROR_SCRATCH;
    return carve_attention(ws, (char *)scratch, T, D, bq, bk) <= bytes ? LM_OK : LM_ERROR_SCRATCH;
#else
    (void)ws; (void)scratch; (void)bytes; (void)T; (void)D; (void)bq; (void)bk;
    return LM_ERROR_UNSUPPORTED;
#endif
}

int lm_flash_attention_forward_bf16(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                                    int H, int G, int D, int bq, int bk, size_t first_unit, size_t end_unit, void *scratch,
                                    size_t scratch_bytes) {
    attention_scratch ws;
    const int status = bf16_scratch(&ws, scratch, scratch_bytes, T, D, bq, bk);
    if (status == LM_OK) flash_forward(&ws, out, lse, q, k, v, B, T, H, G, D, bq, bk, first_unit, end_unit);
    return status;
}

int lm_flash_attention_backward_bf16(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                                     const float *q, const float *k, const float *v, int B, int T, int H, int G, int D,
                                     int bq, int bk, size_t first_unit, size_t end_unit, void *scratch, size_t scratch_bytes) {
    attention_scratch ws;
    const int status = bf16_scratch(&ws, scratch, scratch_bytes, T, D, bq, bk);
    if (status == LM_OK) flash_backward(&ws, dq, dk, dv, dout, out, lse, q, k, v, B, T, H, G, D, bq, bk, first_unit, end_unit);
    return status;
}
