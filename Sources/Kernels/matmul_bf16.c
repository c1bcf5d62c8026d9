// Matmuls in bf16 through oneDNN's matmul primitive: bf16 inputs, fp32 accumulation and fp32 outputs, and
// the rounding to bf16 (round to nearest even) the caller applies to every input just before its product.
// Creating a primitive costs far more than running a small one, so primitives are cached by shape and
// orientation in a `lm_bf16_matmuls` the caller allocates (lm_bf16_matmuls_bytes) and owns, one per model:
// nothing here is global, so models in one process never share a cache, a stream or a scratchpad. Each
// primitive runs with a user scratchpad the caller provides (oneDNN's own is shared between primitives and not
// safe to use from two threads at once). oneDNN allocates its own objects (engine, stream, primitives).
#include "lm_kernels.h"

#include <dnnl.h>
#include <string.h>

// libgomp's, loaded with oneDNN (Debian builds it with OpenMP); declared here so no omp.h is needed.
extern void omp_set_num_threads(int);

static inline uint16_t to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return (uint16_t)((u >> 16) | 0x40);  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    return (uint16_t)(u >> 16);
}

#if defined(__x86_64__)
#include <immintrin.h>
// The CPU's own conversion (VCVTNEPS2BF16: round to nearest even, 16 at a time; denormal inputs become
// zero, which the scalar path does not do) where it has one: the rounding is a pass over every matmul input,
// as large as the logits.
__attribute__((target("avx512f,avx512bf16")))
static void to_bf16_avx512(uint16_t *out, const float *in, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(in + i));
        _mm256_storeu_si256((__m256i *)(out + i), (__m256i)v);
    }
    for (; i < n; i++) out[i] = to_bf16(in[i]);
}
#endif

void lm_to_bf16(uint16_t *out, const float *in, size_t n) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512bf16")) {  // reads libgcc's CPU model, filled once at start-up
        to_bf16_avx512(out, in, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) out[i] = to_bf16(in[i]);
}

void lm_from_bf16(float *out, const uint16_t *in, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)in[i] << 16;
        memcpy(&out[i], &u, 4);
    }
}

float lm_round_bf16(float x) {
    uint16_t h = to_bf16(x);
    float y;
    lm_from_bf16(&y, &h, 1);
    return y;
}

// MARK: - The cache of primitives, in the caller's memory

typedef struct {
    int64_t m, n, k;
    int trans_a, trans_b, accumulate;
    dnnl_primitive_t primitive;
    dnnl_memory_desc_t a, b, c, scratchpad;
} cached_matmul;

struct lm_bf16_matmuls {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    int capacity, used, next_evicted;
    cached_matmul entries[];
};

size_t lm_bf16_matmuls_bytes(int capacity) {
    return sizeof(lm_bf16_matmuls) + sizeof(cached_matmul) * (size_t)(capacity < 1 ? 1 : capacity);
}

int lm_bf16_matmuls_init(lm_bf16_matmuls *cache, int capacity) {
    memset(cache, 0, lm_bf16_matmuls_bytes(capacity));
    cache->capacity = capacity < 1 ? 1 : capacity;
    if (dnnl_engine_create(&cache->engine, dnnl_cpu, 0) != dnnl_success) return LM_ERROR_ONEDNN;
    if (dnnl_stream_create(&cache->stream, cache->engine, dnnl_stream_default_flags) != dnnl_success) return LM_ERROR_ONEDNN;
    return LM_OK;
}

void lm_bf16_matmuls_release(lm_bf16_matmuls *cache) {
    for (int i = 0; i < cache->used; i++) dnnl_primitive_destroy(cache->entries[i].primitive);
    if (cache->stream) dnnl_stream_destroy(cache->stream);
    if (cache->engine) dnnl_engine_destroy(cache->engine);
    memset(cache, 0, sizeof(lm_bf16_matmuls));
}

int lm_bf16_supported(void) { return dnnl_get_effective_cpu_isa() >= dnnl_cpu_isa_avx512_core_bf16; }

void lm_set_matmul_threads(int threads) { omp_set_num_threads(threads < 1 ? 1 : threads); }

// The primitive for C (m,n) [+]= A (m,k) · B (k,n), A stored transposed when trans_a (as (k,m)), B when
// trans_b (as (n,k)); NULL if oneDNN refuses the shape. A full cache replaces its entries in turn.
static cached_matmul *matmul_for(lm_bf16_matmuls *cache, int64_t m, int64_t n, int64_t k, int trans_a, int trans_b,
                                 int accumulate) {
    for (int i = 0; i < cache->used; i++) {
        cached_matmul *e = &cache->entries[i];
        if (e->m == m && e->n == n && e->k == k && e->trans_a == trans_a && e->trans_b == trans_b && e->accumulate == accumulate) {
            return e;
        }
    }
    cached_matmul entry = {m, n, k, trans_a, trans_b, accumulate, NULL};
    dnnl_dims_t a_dims = {m, k}, b_dims = {k, n}, c_dims = {m, n};
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int ok = dnnl_memory_desc_init_by_tag(&entry.a, 2, a_dims, dnnl_bf16, trans_a ? dnnl_ba : dnnl_ab) == dnnl_success
        && dnnl_memory_desc_init_by_tag(&entry.b, 2, b_dims, dnnl_bf16, trans_b ? dnnl_ba : dnnl_ab) == dnnl_success
        && dnnl_memory_desc_init_by_tag(&entry.c, 2, c_dims, dnnl_f32, dnnl_ab) == dnnl_success
        && dnnl_matmul_desc_init(&desc, &entry.a, &entry.b, NULL, &entry.c) == dnnl_success
        && dnnl_primitive_attr_create(&attr) == dnnl_success
        && dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success;
    if (ok && accumulate) {
        ok = dnnl_post_ops_create(&post) == dnnl_success && dnnl_post_ops_append_sum(post, 1.0f) == dnnl_success
            && dnnl_primitive_attr_set_post_ops(attr, post) == dnnl_success;
    }
    ok = ok && dnnl_primitive_desc_create(&pd, &desc, attr, cache->engine, NULL) == dnnl_success
        && dnnl_primitive_create(&entry.primitive, pd) == dnnl_success;
    const dnnl_memory_desc_t *scratchpad = ok ? dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0) : NULL;
    ok = ok && scratchpad;
    if (ok) entry.scratchpad = *scratchpad;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (post) dnnl_post_ops_destroy(post);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) {
        if (entry.primitive) dnnl_primitive_destroy(entry.primitive);
        return NULL;
    }
    int slot = cache->used;
    if (slot == cache->capacity) {
        slot = cache->next_evicted;
        cache->next_evicted = (slot + 1) % cache->capacity;
        dnnl_primitive_destroy(cache->entries[slot].primitive);
    } else {
        cache->used++;
    }
    cache->entries[slot] = entry;
    return &cache->entries[slot];
}

int lm_matmul_bf16(lm_bf16_matmuls *cache, float *c, const uint16_t *a, const uint16_t *b, int64_t m, int64_t n, int64_t k,
                   int trans_a, int trans_b, int accumulate, void *scratch, size_t scratch_bytes, size_t *scratch_needed) {
    cached_matmul *e = matmul_for(cache, m, n, k, trans_a, trans_b, accumulate);
    if (!e) return LM_ERROR_ONEDNN;
    const size_t needed = dnnl_memory_desc_get_size(&e->scratchpad);
    if (scratch_needed) *scratch_needed = needed;
    if (needed > scratch_bytes) return LM_ERROR_SCRATCH;
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, ms = NULL;
    int ok = dnnl_memory_create(&ma, &e->a, cache->engine, (void *)a) == dnnl_success
        && dnnl_memory_create(&mb, &e->b, cache->engine, (void *)b) == dnnl_success
        && dnnl_memory_create(&mc, &e->c, cache->engine, c) == dnnl_success
        && dnnl_memory_create(&ms, &e->scratchpad, cache->engine, scratch) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}, {DNNL_ARG_SCRATCHPAD, ms}};
        ok = dnnl_primitive_execute(e->primitive, cache->stream, 4, args) == dnnl_success
            && dnnl_stream_wait(cache->stream) == dnnl_success;
    }
    if (ma) dnnl_memory_destroy(ma);
    if (mb) dnnl_memory_destroy(mb);
    if (mc) dnnl_memory_destroy(mc);
    if (ms) dnnl_memory_destroy(ms);
    return ok ? LM_OK : LM_ERROR_ONEDNN;
}
