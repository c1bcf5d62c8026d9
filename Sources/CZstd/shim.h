// libzstd (Debian libzstd-dev): zstd streams of compressed corpora.
#include <zstd.h>
