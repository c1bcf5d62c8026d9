// The bf16 tile product in steps, for flash attention to pack an operand once where it repeats (x86-64 with
// AVX-512 BF16 only; see tile_gemm_bf16.c). Packed A is m rows of (k+1)/2 bf16 pairs; packed B is (k+1)/2 rows
// of n rounded up to 16 pairs, 64-byte aligned.
#pragma once

#include <stddef.h>
#include <stdint.h>

size_t lm_bf16_packed_a_count(int m, int k);
size_t lm_bf16_packed_b_count(int k, int n);
void lm_bf16_pack_a(uint32_t *ap, int trans_a, int m, int k, const float *a, size_t lda);
void lm_bf16_pack_b(uint32_t *bp, int trans_b, int k, int n, const float *b, size_t ldb);
/// c (m,n) = alpha · A · B + beta · c from packed operands.
void lm_bf16_tile_run(int m, int n, int k, float alpha, const uint32_t *ap, const uint32_t *bp, float beta, float *c, size_t ldc);
/// Per-thread, 64-byte aligned scratch of at least `count` pairs, in one of 8 slots.
uint32_t *lm_bf16_scratch(int slot, size_t count);
