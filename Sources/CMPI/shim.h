// shim.h: OpenMPI for Swift. mpi.h defines its handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE, …)
// as macros that cast the address of a global, which Swift cannot import; these inline functions return them.
#pragma once

#include <mpi.h>

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
