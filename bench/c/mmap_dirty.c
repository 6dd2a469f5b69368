/*
 * mmap_dirty PATH
 *
 * Maps all of PATH MAP_SHARED, changes one byte in every page, and msyncs:
 * the cost is the write faults plus the writeback of every page, which is
 * what a program that keeps its state in a shared mapping pays.
 * Prints "seconds=S bytes=N".
 */
#include "common.h"
#include <sys/mman.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH\n", argv[0]);
        return 2;
    }
    size_t size;
    int fd = open_existing(argv[1], &size);
    double t0 = now();
    unsigned char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        DIE("mmap");
    for (size_t i = 0; i < size; i += PAGE)
        map[i] += 1;
    if (msync(map, size, MS_SYNC) != 0)
        DIE("msync");
    printf("seconds=%.6f bytes=%zu\n", now() - t0, size);
    return 0;
}
