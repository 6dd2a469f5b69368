/*
 * madv_remove PATH clean|dirty
 *
 * Maps all of PATH MAP_SHARED and faults every page in, by reading it
 * (clean) or by changing it (dirty), then times one madvise(MADV_REMOVE)
 * over the whole mapping.  The kernel turns it into a hole punch; on FUSE
 * it first writes the dirty pages back, which is why both cases count.
 * Prints "seconds=S".
 */
#include "common.h"
#include <sys/mman.h>

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[2], "clean") && strcmp(argv[2], "dirty"))) {
        fprintf(stderr, "usage: %s PATH clean|dirty\n", argv[0]);
        return 2;
    }
    size_t size;
    int fd = open_existing(argv[1], &size);
    int dirty = strcmp(argv[2], "dirty") == 0;
    volatile unsigned char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        DIE("mmap");
    for (size_t i = 0; i < size; i += PAGE) {
        if (dirty)
            map[i] += 1;
        else
            (void)map[i];
    }
    double t0 = now();
    if (madvise((void *)map, size, MADV_REMOVE) != 0)
        DIE("madvise(MADV_REMOVE)");
    printf("seconds=%.6f\n", now() - t0);
    return 0;
}
