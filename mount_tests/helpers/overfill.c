/*
 * overfill PATH SIZE CHECKS
 *
 * Creates PATH, grows it to SIZE with ftruncate, maps it MAP_SHARED and
 * dirties every page with a pattern, then makes the calls that CHECKS
 * names, in order, from "msync", "fsync" and "close" (comma-separated;
 * munmap comes before close).  Prints one line per call, "NAME 0" or
 * "NAME ERRNO_NAME", and exits 0.  A failed ftruncate prints
 * "ftruncate ERRNO_NAME" and stops before mapping anything.  A SIGBUS at a
 * store, which is what a full tmpfs gives, prints "SIGBUS OFFSET" and
 * exits 135.
 *
 * pattern(i) is never 0, so a page that was lost reads as zeros.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static unsigned char pattern(size_t i) { return (unsigned char)(i * 131 + 7) | 1; }

static unsigned char *map;

static void report(const char *call, int ret)
{
    printf("%s %s\n", call, ret == 0 ? "0" : strerrorname_np(errno));
    fflush(stdout);
}

static void on_sigbus(int sig, siginfo_t *info, void *context)
{
    char line[64];
    int n = snprintf(line, sizeof line, "SIGBUS %ld\n",
                     (long)((unsigned char *)info->si_addr - map));
    (void)!write(STDOUT_FILENO, line, (size_t)n);
    _exit(128 + SIGBUS);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s PATH SIZE CHECKS\n", argv[0]);
        return 2;
    }
    size_t size = strtoull(argv[2], NULL, 0);
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror("open");
        return 2;
    }
    if (ftruncate(fd, (off_t)size) != 0) {
        report("ftruncate", -1);
        return 0;
    }
    map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    struct sigaction sa = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO};
    sigaction(SIGBUS, &sa, NULL);
    for (size_t i = 0; i < size; i++)
        map[i] = pattern(i);

    for (char *check = strtok(argv[3], ","); check; check = strtok(NULL, ",")) {
        if (strcmp(check, "msync") == 0) {
            report("msync", msync(map, size, MS_SYNC));
        } else if (strcmp(check, "fsync") == 0) {
            report("fsync", fsync(fd));
        } else if (strcmp(check, "close") == 0) {
            munmap(map, size);
            report("close", close(fd));
        } else {
            fprintf(stderr, "unknown check %s\n", check);
            return 2;
        }
    }
    return 0;
}
