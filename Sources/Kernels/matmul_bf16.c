// Matmuls in bf16 through oneDNN's matmul primitive: bf16 inputs, fp32 accumulation and fp32 outputs, and
// the rounding to bf16 (round to nearest even) the caller applies to every input just before its product.
// The one state kept here, behind a mutex: oneDNN's engine and a cache of primitives by shape and
// orientation, since creating a primitive costs far more than running a small one (and one stream per
// calling thread).
#include "lm_kernels.h"

#include <dnnl.h>
#include <pthread.h>
#include <stdlib.h>
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
    static int native = -1;
    if (native < 0) native = __builtin_cpu_supports("avx512bf16") ? 1 : 0;
    if (native) {
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

// MARK: - Engine, stream and the primitive cache

typedef struct {
    int64_t m, n, k;
    int trans_a, trans_b, accumulate;
    dnnl_primitive_t primitive;
    dnnl_memory_desc_t a, b, c;
} cached_matmul;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t engine;
static cached_matmul *cache;
static int cached, capacity;

static int ensure_engine(void) {
    if (engine) return 1;
    return dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success;
}

int lm_bf16_supported(void) {
    pthread_mutex_lock(&lock);
    int ok = ensure_engine() && dnnl_get_effective_cpu_isa() >= dnnl_cpu_isa_avx512_core_bf16;
    pthread_mutex_unlock(&lock);
    return ok;
}

void lm_set_matmul_threads(int threads) { omp_set_num_threads(threads < 1 ? 1 : threads); }

// The primitive for C (m,n) [+]= A (m,k) · B (k,n), A stored transposed when trans_a (as (k,m)), B when
// trans_b (as (n,k)); NULL if oneDNN refuses the shape.
static cached_matmul *matmul_for(int64_t m, int64_t n, int64_t k, int trans_a, int trans_b, int accumulate) {
    pthread_mutex_lock(&lock);
    for (int i = 0; i < cached; i++) {
        cached_matmul *e = &cache[i];
        if (e->m == m && e->n == n && e->k == k && e->trans_a == trans_a && e->trans_b == trans_b && e->accumulate == accumulate) {
            pthread_mutex_unlock(&lock);
            return e;
        }
    }
    cached_matmul entry = {m, n, k, trans_a, trans_b, accumulate, NULL};
    dnnl_dims_t a_dims = {m, k}, b_dims = {k, n}, c_dims = {m, n};
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int ok = ensure_engine()
        && dnnl_memory_desc_init_by_tag(&entry.a, 2, a_dims, dnnl_bf16, trans_a ? dnnl_ba : dnnl_ab) == dnnl_success
        && dnnl_memory_desc_init_by_tag(&entry.b, 2, b_dims, dnnl_bf16, trans_b ? dnnl_ba : dnnl_ab) == dnnl_success
        && dnnl_memory_desc_init_by_tag(&entry.c, 2, c_dims, dnnl_f32, dnnl_ab) == dnnl_success
        && dnnl_matmul_desc_init(&desc, &entry.a, &entry.b, NULL, &entry.c) == dnnl_success
        && dnnl_primitive_attr_create(&attr) == dnnl_success;
    if (ok && accumulate) {
        ok = dnnl_post_ops_create(&post) == dnnl_success && dnnl_post_ops_append_sum(post, 1.0f) == dnnl_success
            && dnnl_primitive_attr_set_post_ops(attr, post) == dnnl_success;
    }
    ok = ok && dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL) == dnnl_success
        && dnnl_primitive_create(&entry.primitive, pd) == dnnl_success;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (post) dnnl_post_ops_destroy(post);
    if (attr) dnnl_primitive_attr_destroy(attr);
    cached_matmul *result = NULL;
    if (ok) {
        if (cached == capacity) {
            capacity = capacity ? 2 * capacity : 32;
            cache = realloc(cache, sizeof(cached_matmul) * (size_t)capacity);
        }
        cache[cached] = entry;
        result = &cache[cached++];
    }
    pthread_mutex_unlock(&lock);
    return result;
}

int lm_matmul_bf16(float *c, const uint16_t *a, const uint16_t *b, int64_t m, int64_t n, int64_t k, int trans_a, int trans_b,
                   int accumulate) {
    cached_matmul *e = matmul_for(m, n, k, trans_a, trans_b, accumulate);
    if (!e) return 0;
    // One stream per calling thread, made on first use and kept (a stream is cheap but not free).
    static __thread dnnl_stream_t stream;
    if (!stream && dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) {
        stream = NULL;
        return 0;
    }
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL;
    int ok = dnnl_memory_create(&ma, &e->a, engine, (void *)a) == dnnl_success
        && dnnl_memory_create(&mb, &e->b, engine, (void *)b) == dnnl_success
        && dnnl_memory_create(&mc, &e->c, engine, c) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
        ok = dnnl_primitive_execute(e->primitive, stream, 3, args) == dnnl_success && dnnl_stream_wait(stream) == dnnl_success;
    }
    if (ma) dnnl_memory_destroy(ma);
    if (mb) dnnl_memory_destroy(mb);
    if (mc) dnnl_memory_destroy(mc);
    return ok;
}
