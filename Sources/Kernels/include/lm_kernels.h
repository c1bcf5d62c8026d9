// lm_kernels.h: the hot loops of a Llama 2 training step, forward and backward, in plain C.
//
// What this is: stateless kernels over caller-owned float32 buffers. Matmuls are OpenBLAS sgemm in fp32 and
// oneDNN in bf16; the rest are fused loops the compiler vectorises. What this is not: an allocator, a model,
// or anything that does I/O, keeps globals, exits or talks MPI. Swift owns every buffer (the scratch of the
// bf16 kernels and oneDNN's cache of primitives included) and decides what runs when; a kernel that can fail
// returns a status code (LM_OK and the LM_ERROR_ values below) and Swift throws.
//
// Legend: N = rows (batch × time), C = model width, OC = output channels, F = feed-forward width,
// V = vocabulary, B = batch, T = time, H = query heads, G = key/value heads, D = head dimension.
// Conventions (llm.c's): outputs first, then const inputs, then dimensions. Backward kernels ADD into their
// gradient outputs (so accumulation over micro-steps and over several consumers is free), except where a
// comment says "overwrites".
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Threads

/// Threads OpenBLAS may use inside one sgemm.
void lm_set_blas_threads(int threads);
int lm_blas_threads(void);

// MARK: - Matmul (no bias: Llama has none)

/// out (N,OC) = inp (N,C) · weight (OC,C)ᵀ, plus the old out when accumulate != 0.
void lm_matmul_forward(float *out, const float *inp, const float *weight, int N, int C, int OC, int accumulate);
/// Reverses out = inp · weightᵀ: dinp (N,C) += dout (N,OC) · weight; dweight (OC,C) += doutᵀ · inp.
/// dinp may be NULL when the input needs no gradient.
void lm_matmul_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                        int N, int C, int OC);

// MARK: - Status codes: the kernels that can fail return one, and the caller (Swift) throws on anything but
// LM_OK.

enum {
    LM_OK = 0,
    /// oneDNN refused a shape or failed to run (out of memory, or a CPU without bf16).
    LM_ERROR_ONEDNN = 1,
    /// The caller's scratch is smaller than the call needs (the needed size is reported where the call can).
    LM_ERROR_SCRATCH = 2,
    /// A bf16 kernel on a CPU or build without AVX-512 BF16.
    LM_ERROR_UNSUPPORTED = 3,
};

// MARK: - Matmul in bf16 (oneDNN): bf16 inputs, fp32 accumulation and outputs.

/// Whether oneDNN runs bf16 natively here (AVX-512 BF16 or AMX).
int lm_bf16_supported(void);
/// Threads oneDNN's OpenMP may use inside one product.
void lm_set_matmul_threads(int threads);
/// Round to nearest even; NaN stays NaN.
void lm_to_bf16(uint16_t *out, const float *in, size_t n);
void lm_from_bf16(float *out, const uint16_t *in, size_t n);
float lm_round_bf16(float x);
/// A cache of oneDNN primitives with its engine and stream, in `lm_bf16_matmuls_bytes(capacity)` bytes the
/// caller allocates: init before use, release before freeing. One per model, used from one thread at a time.
typedef struct lm_bf16_matmuls lm_bf16_matmuls;
size_t lm_bf16_matmuls_bytes(int capacity);
int lm_bf16_matmuls_init(lm_bf16_matmuls *cache, int capacity);
void lm_bf16_matmuls_release(lm_bf16_matmuls *cache);
/// c (m,n) = a (m,k) · b (k,n) [+ c]; a is stored as (k,m) when trans_a, b as (n,k) when trans_b. `scratch`
/// is oneDNN's scratchpad for the call: LM_ERROR_SCRATCH when smaller than *scratch_needed (set either way).
int lm_matmul_bf16(lm_bf16_matmuls *cache, float *c, const uint16_t *a, const uint16_t *b, int64_t m, int64_t n, int64_t k,
                   int trans_a, int trans_b, int accumulate, void *scratch, size_t scratch_bytes, size_t *scratch_needed);

// MARK: - Embedding

/// out (N,C) = table[tokens[n]]; tokens must lie in [0, V) (the caller checks).
void lm_embedding_forward(float *out, const int32_t *tokens, const float *table, int N, int C);
/// Reverses out = table[tokens]: dtable[tokens[n]] += dout[n].
void lm_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int N, int C);

// MARK: - RMSNorm

/// out (N,C) = inp · rstd · weight with rstd (N) = 1 / sqrt(mean(inp²) + eps); rstd is kept for backward.
void lm_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps);
/// Reverses out = inp · rstd · weight: dinp (N,C) += …, dweight (C) += Σₙ dout · inp · rstd.
void lm_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                         const float *rstd, int N, int C);

// MARK: - Rotary position embedding (Hugging Face convention: rotate_half, the head split in two halves)

/// cos, sin (T, D/2) for positions 0..<T: angle = t / theta^(2i/D), computed in double.
void lm_rope_tables(float *cos_table, float *sin_table, int T, int D, double theta);
/// Rotates x (B,T,heads,D) in place: x[i] ← x[i]·cos − x[i+D/2]·sin, x[i+D/2] ← x[i+D/2]·cos + x[i]·sin.
void lm_rope_forward(float *x, const float *cos_table, const float *sin_table, int B, int T, int heads, int D);
/// Reverses the rotation in place (rotates dx by the negative angle); overwrites dx.
void lm_rope_backward(float *dx, const float *cos_table, const float *sin_table, int B, int T, int heads, int D);

// MARK: - Causal grouped-query attention, flash (the only path the model runs)

/// Largest query or key tile (rows); tiles live on the stack.
#define LM_FLASH_MAX_TILE 128

/// Work units of the forward: (batch, query head, query block of bq rows), the heads of a GQA group adjacent.
size_t lm_flash_attention_forward_units(int B, int T, int H, int bq);
/// Work units of the backward: (batch, key/value head).
size_t lm_flash_attention_backward_units(int B, int G);
/// q, out (B,T,H,D); k, v (B,T,G,D), query head h reads key/value head h / (H/G); lse (B,H,T) receives each
/// row's logsumexp, kept for backward. Computes units [first_unit, end_unit); tiles bq × bk ≤ LM_FLASH_MAX_TILE.
void lm_flash_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                                int H, int G, int D, int bq, int bk, size_t first_unit, size_t end_unit);
/// Reverses the forward from its out and lse: dq (B,T,H,D), dk, dv (B,T,G,D) += …, for units [first, end).
void lm_flash_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                                 const float *q, const float *k, const float *v, int B, int T, int H, int G, int D,
                                 int bq, int bk, size_t first_unit, size_t end_unit);
/// The same with QKᵀ, PV and the backward's tile products on bf16 inputs with fp32 accumulation (AVX-512
/// BF16 only); softmax, its statistics and every output stay fp32. Each call (one thread's unit range) packs
/// its operands into `scratch`, 64-byte aligned and of lm_flash_attention_bf16_scratch_bytes(T, D, bq, bk)
/// bytes (LM_ERROR_SCRATCH when smaller).
size_t lm_flash_attention_bf16_scratch_bytes(int T, int D, int bq, int bk);
int lm_flash_attention_forward_bf16(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                                    int H, int G, int D, int bq, int bk, size_t first_unit, size_t end_unit, void *scratch,
                                    size_t scratch_bytes);
int lm_flash_attention_backward_bf16(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                                     const float *q, const float *k, const float *v, int B, int T, int H, int G, int D,
                                     int bq, int bk, size_t first_unit, size_t end_unit, void *scratch, size_t scratch_bytes);
/// c (m,n) = alpha · a (m,k) · b (k,n) + beta · c on bf16-rounded inputs, fp32 accumulation (AVX-512 BF16
/// only); a stored as (k,m) when trans_a, b as (n,k) when trans_b; row-major with the given strides; the
/// packed operands in `scratch` (64-byte aligned, lm_tile_gemm_bf16_scratch_bytes(m, n, k) bytes).
size_t lm_tile_gemm_bf16_scratch_bytes(int m, int n, int k);
int lm_tile_gemm_bf16(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, size_t lda, const float *b,
                      size_t ldb, float beta, float *c, size_t ldc, void *scratch, size_t scratch_bytes);

// MARK: - Causal grouped-query attention, materialised (the naive twin the tests hold flash against)

/// att (B,H,T,T) receives the softmax probabilities (zero above the diagonal), kept for backward.
void lm_attention_naive_forward(float *out, float *att, const float *q, const float *k, const float *v,
                                int B, int T, int H, int G, int D);
/// Reverses the forward: dq (B,T,H,D), dk, dv (B,T,G,D) += …; scratch holds T·T floats.
void lm_attention_naive_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *att,
                                 const float *q, const float *k, const float *v, int B, int T, int H, int G, int D);

// MARK: - Decoding (decode.c): a few rows at a time over a KV cache, every element batch-invariant

/// Values of a weight (OC,C) packed for decoding: panels of 64 output channels, each four quarters of 16
/// channels stored (C, 16) row-major one after another, the last panel padded with zeros.
size_t lm_panels_values(int C, int OC);
/// Packs panels [first_panel, end_panel) of weight (OC,C) (a thread's share), in fp32 or rounded to bf16.
void lm_pack_panels(float *packed, const float *weight, int C, int OC, int first_panel, int end_panel);
void lm_pack_panels_bf16(uint16_t *packed, const float *weight, int C, int OC, int first_panel, int end_panel);
/// out (N,OC) (+)= inp (N,C) · weightᵀ over the output channels of panels [first_panel, end_panel), the weight
/// packed by lm_pack_panels (or _bf16, widened exactly to fp32 as it is read). Each element is one fused
/// multiply-add chain over c in order (then added to out when accumulating): the same bits for any N, any
/// panel range, thread count or vector width.
void lm_matmul_panels(float *out, const float *inp, const float *packed, int N, int C, int OC, int first_panel,
                      int end_panel, int accumulate);
void lm_matmul_panels_bf16(float *out, const float *inp, const uint16_t *packed, int N, int C, int OC,
                           int first_panel, int end_panel, int accumulate);
/// The sum of x by a plain streaming read in the widest vectors the CPU has: over a buffer larger than the
/// caches, the memory bandwidth that bounds batch-1 decoding, read the way lm_matmul_panels reads weights.
float lm_stream_sum(const float *x, size_t n);
/// Rotates rows x (N,heads,D) in place, row r at position positions[r] of the tables.
void lm_rope_forward_at(float *x, const float *cos_table, const float *sin_table, const int32_t *positions, int N,
                        int heads, int D);
/// Floats of scratch one call of lm_attention_cached needs for rows attending at most `length` positions.
size_t lm_attention_cached_scratch_floats(int H, int G, int length);
/// Row r of q (N,H,D) attends positions [0, positions[r]] of its sequence's cache, whose K and V rows (T,G,D)
/// start at k_cache + cache_offsets[r] and v_cache + cache_offsets[r]; out (N,H,D). Units (row, key/value head)
/// [first_unit, end_unit), N·G in all; scratch: lm_attention_cached_scratch_floats(H, G, longest) floats.
void lm_attention_cached(float *out, const float *q, const float *k_cache, const float *v_cache,
                         const size_t *cache_offsets, const int32_t *positions, int H, int G, int D, float *scratch,
                         size_t first_unit, size_t end_unit);
/// The same over a cache held in bf16 (half the bytes; each value widened exactly to fp32 as it is read).
void lm_attention_cached_bf16(float *out, const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                              const size_t *cache_offsets, const int32_t *positions, int H, int G, int D,
                              float *scratch, size_t first_unit, size_t end_unit);

// MARK: - SwiGLU

/// out (n) = silu(gate) · up, silu(x) = x · sigmoid(x).
void lm_swiglu_forward(float *out, const float *gate, const float *up, size_t n);
/// Reverses out = silu(gate) · up: dgate, dup (n) += ….
void lm_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n);

// MARK: - Cross-entropy

/// losses (N) = logsumexp(logits[n]) − logits[n][targets[n]]; 0 where targets[n] < 0 (ignored).
void lm_cross_entropy_forward(float *losses, const float *logits, const int32_t *targets, int N, int V);
/// dlogits (N,V) = (softmax(logits[n]) − onehot(targets[n])) · dloss; 0 on ignored rows. Overwrites dlogits,
/// which may be the logits buffer itself (in place).
void lm_cross_entropy_backward(float *dlogits, const float *logits, const int32_t *targets, float dloss,
                               int N, int V);

// MARK: - Optimizer helpers

/// Σ x², accumulated in double.
double lm_sum_squares(const float *x, size_t n);
/// x ← x · s.
void lm_scale(float *x, size_t n, float s);
/// x ← x + y.
void lm_add(float *x, const float *y, size_t n);
/// One AdamW step as PyTorch's torch.optim.AdamW (decoupled decay, bias correction):
/// p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
/// p ← p − (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps), with bc = 1 − βᵗ.
void lm_adamw_update(float *params, const float *grads, float *m, float *v, size_t n, float lr, float beta1,
                     float beta2, float eps, float weight_decay, float bias_correction1, float bias_correction2);
/// Number of elements that are NaN or ±Inf.
size_t lm_count_nonfinite(const float *x, size_t n);

#ifdef __cplusplus
}
#endif
