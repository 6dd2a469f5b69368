/*
 * punch PATH COUNT
 *
 * Punches COUNT 4 KiB holes (PUNCH_HOLE|KEEP_SIZE) at random page-aligned
 * offsets of PATH: the way an allocator hands single pages back.  A page
 * may be punched twice, as in real use.  Prints "seconds=S".
 */
#include "common.h"
#include <linux/falloc.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PATH COUNT\n", argv[0]);
        return 2;
    }
    size_t size;
    int fd = open_existing(argv[1], &size);
    long count = atol(argv[2]);
    size_t pages = size / PAGE;
    srandom(getpid());
    double t0 = now();
    for (long i = 0; i < count; i++) {
        off_t off = (off_t)(random() % pages) * PAGE;
        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, PAGE) != 0)
            DIE("fallocate at %lld", (long long)off);
    }
    printf("seconds=%.6f\n", now() - t0);
    return 0;
}
