/*
 * pool PATH SIZE [private]
 *
 * Maps PATH (SIZE bytes, created if needed) MAP_SHARED, or MAP_PRIVATE with
 * "private", and keeps the mapping while it obeys commands on stdin, one
 * per line, answering each with one line on stdout:
 *   fill OFF LEN BYTE     write BYTE over the range through the mapping
 *   check OFF LEN BYTE    "ok", or "bad AT VALUE" for the first mismatch
 *   remove OFF LEN        madvise(MADV_REMOVE): "ok" or the errno name
 *   msync                 msync(MS_SYNC) of the whole mapping
 * This lets a test hold several live mappings of one file in separate
 * processes and look through each of them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s PATH SIZE [private]\n", argv[0]);
        return 2;
    }
    size_t size = strtoull(argv[2], NULL, 0);
    int private = argc > 3 && strcmp(argv[3], "private") == 0;
    int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
    if (fd < 0 || ftruncate(fd, size) != 0) {
        perror(argv[1]);
        return 1;
    }
    unsigned char *map = mmap(NULL, size, PROT_READ | PROT_WRITE,
                              private ? MAP_PRIVATE : MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        unsigned long long off = 0, len = 0;
        unsigned value = 0;
        if (sscanf(line, "fill %llu %llu %u", &off, &len, &value) == 3) {
            memset(map + off, (int)value, len);
            puts("ok");
        } else if (sscanf(line, "check %llu %llu %u", &off, &len, &value) == 3) {
            size_t i;
            for (i = 0; i < len && map[off + i] == value; i++)
                ;
            if (i == len)
                puts("ok");
            else
                printf("bad %llu %u\n", off + i, map[off + i]);
        } else if (sscanf(line, "remove %llu %llu", &off, &len) == 2) {
            puts(madvise(map + off, len, MADV_REMOVE) == 0 ? "ok" : strerrorname_np(errno));
        } else if (strncmp(line, "msync", 5) == 0) {
            puts(msync(map, size, MS_SYNC) == 0 ? "ok" : strerrorname_np(errno));
        } else {
            puts("unknown command");
        }
    }
    return 0;
}
