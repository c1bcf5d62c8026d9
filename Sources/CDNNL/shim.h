// oneDNN (Debian libdnnl-dev 2.6): the matmul primitive for bf16 products.
#include <dnnl.h>
