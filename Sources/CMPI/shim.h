// shim.h: OpenMPI for Swift. mpi.h defines its handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE, …)
// as macros that cast the address of a global, which Swift cannot import; these inline functions return them.
#pragma once

#include <mpi.h>
#include <stdint.h>

static inline MPI_Comm lm_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm lm_mpi_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Datatype lm_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype lm_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype lm_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype lm_mpi_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype lm_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Op lm_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op lm_mpi_max(void) { return MPI_MAX; }
static inline MPI_Op lm_mpi_min(void) { return MPI_MIN; }
static inline void *lm_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Request lm_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *lm_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Errhandler lm_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline int lm_mpi_comm_type_shared(void) { return MPI_COMM_TYPE_SHARED; }
static inline MPI_Info lm_mpi_info_null(void) { return MPI_INFO_NULL; }

// bf16 gradients on the wire (train.grad_reduce = bf16): a sum that adds in fp32 and rounds back to bf16
// (round to nearest even) at every step of the reduction, and the conversions either side of it.
static inline uint16_t lm_bf16_from_float(float x) {
    uint32_t u;
    __builtin_memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float lm_float_from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    __builtin_memcpy(&x, &u, 4);
    return x;
}

static void lm_bf16_sum_function(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = (const uint16_t *)in;
    uint16_t *b = (uint16_t *)inout;
    for (int i = 0; i < *len; i++) b[i] = lm_bf16_from_float(lm_float_from_bf16(a[i]) + lm_float_from_bf16(b[i]));
}

/// The bf16 sum, created on first use (after MPI_Init).
static inline MPI_Op lm_mpi_bf16_sum(void) {
    static MPI_Op op = MPI_OP_NULL;
    if (op == MPI_OP_NULL) MPI_Op_create(lm_bf16_sum_function, 1, &op);
    return op;
}

static inline MPI_Datatype lm_mpi_uint16(void) { return MPI_UINT16_T; }

static inline void lm_floats_to_bf16(uint16_t *out, const float *in, long n) {
    for (long i = 0; i < n; i++) out[i] = lm_bf16_from_float(in[i]);
}

static inline void lm_bf16_to_floats(float *out, const uint16_t *in, long n) {
    for (long i = 0; i < n; i++) out[i] = lm_float_from_bf16(in[i]);
}
