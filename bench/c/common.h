/*
 * What every bench program shares: a monotonic clock, and a way out that
 * says why, so the Python side can show the reason next to the figure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

#define DIE(...) do { fprintf(stderr, __VA_ARGS__); \
                      fprintf(stderr, ": %s\n", strerror(errno)); exit(1); } while (0)

static inline double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Opens an existing file read-write and returns its size. */
static inline int open_existing(const char *path, size_t *size)
{
    int fd = open(path, O_RDWR);
    if (fd < 0)
        DIE("open %s", path);
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0)
        DIE("lseek %s", path);
    *size = (size_t)end;
    return fd;
}
