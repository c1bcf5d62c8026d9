// libsnappy (Debian libsnappy-dev): the pages of snappy-compressed Parquet files, through its C interface.
#include <snappy-c.h>
