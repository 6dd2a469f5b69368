/*
 * madvise_remove PATH SIZE OFFSET LENGTH
 *
 * Creates PATH with SIZE bytes, fills it through a MAP_SHARED mapping,
 * msyncs, then drops [OFFSET, OFFSET+LENGTH) with madvise(MADV_REMOVE).
 * Checks that the range reads zeros through the mapping and through
 * read(2), that the bytes around it are intact, and that st_blocks fell.
 * Prints "blocks_before=N blocks_after=N" and exits 0 only if all held.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned char pattern(size_t i) { return (unsigned char)(i * 131 + 7) | 1; }

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); return 1; } while (0)

int main(int argc, char **argv)
{
    if (argc != 5)
        FAIL("usage: %s PATH SIZE OFFSET LENGTH", argv[0]);
    size_t size = strtoull(argv[2], NULL, 0);
    size_t off = strtoull(argv[3], NULL, 0);
    size_t len = strtoull(argv[4], NULL, 0);

    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, size) != 0)
        FAIL("open/ftruncate: %s", strerror(errno));
    unsigned char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        FAIL("mmap: %s", strerror(errno));
    for (size_t i = 0; i < size; i++)
        map[i] = pattern(i);
    if (msync(map, size, MS_SYNC) != 0)
        FAIL("msync: %s", strerror(errno));

    struct stat before, after;
    fstat(fd, &before);
    if (madvise(map + off, len, MADV_REMOVE) != 0)
        FAIL("madvise(MADV_REMOVE): %s", strerror(errno));
    fstat(fd, &after);

    for (size_t i = 0; i < size; i++) {
        unsigned char want = (i >= off && i < off + len) ? 0 : pattern(i);
        if (map[i] != want)
            FAIL("mapping: byte %zu is %u, want %u", i, map[i], want);
    }
    unsigned char *buf = malloc(size);
    if (pread(fd, buf, size, 0) != (ssize_t)size)
        FAIL("pread: %s", strerror(errno));
    for (size_t i = 0; i < size; i++) {
        unsigned char want = (i >= off && i < off + len) ? 0 : pattern(i);
        if (buf[i] != want)
            FAIL("read(2): byte %zu is %u, want %u", i, buf[i], want);
    }
    printf("blocks_before=%lld blocks_after=%lld\n",
           (long long)before.st_blocks, (long long)after.st_blocks);
    if (after.st_blocks >= before.st_blocks)
        FAIL("st_blocks did not drop");
    return 0;
}
