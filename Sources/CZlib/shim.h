// zlib (Debian zlib1g-dev): gzip streams of compressed corpora.
#include <zlib.h>
