// The bf16 tile product in steps, for flash attention to pack an operand once where it repeats (x86-64 with
// AVX-512 BF16 only; see tile_gemm_bf16.c). Packed A is m rows of (k+1)/2 bf16 pairs; packed B is (k+1)/2 rows
// of n rounded up to 16 pairs, 64-byte aligned.
#pragma once

#include <stddef.h>
#include <stdint.h>

size_t lm_bf16_packed_a_count(int m, int k);
size_t lm_bf16_packed_b_count(int k, int n);
/// The conversion rows the packing of an (m,k) A or (k,n) B needs (uint16 values; pass 0 for the other side).
size_t lm_bf16_row_count(int m, int n, int k);
void lm_bf16_pack_a(uint32_t *ap, uint16_t *rows, int trans_a, int m, int k, const float *a, size_t lda);
void lm_bf16_pack_b(uint32_t *bp, uint16_t *rows, int trans_b, int k, int n, const float *b, size_t ldb);
/// c (m,n) = alpha · A · B + beta · c from packed operands.
void lm_bf16_tile_run(int m, int n, int k, float alpha, const uint32_t *ap, const uint32_t *bp, float beta, float *c, size_t ldc);
/// Scratch carved in order into 64-byte aligned pieces (base 64-byte aligned); a NULL base only counts the
/// bytes, so one function both sizes and lays out a kernel's scratch.
typedef struct {
    char *base;
    size_t used;
} lm_bf16_carve;
void *lm_bf16_take(lm_bf16_carve *carve, size_t bytes);
