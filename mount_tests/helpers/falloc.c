/*
 * falloc PATH MODE OFFSET LENGTH
 *
 * Calls fallocate(2) with a raw MODE on PATH (opened O_RDWR) and prints
 * "ok" or the errno name, so that tests see exactly what the kernel said.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s PATH MODE OFFSET LENGTH\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) {
        printf("open:%s\n", strerrorname_np(errno));
        return 1;
    }
    if (fallocate(fd, (int)strtol(argv[2], NULL, 0), strtoll(argv[3], NULL, 0),
                  strtoll(argv[4], NULL, 0)) != 0) {
        printf("%s\n", strerrorname_np(errno));
        return 1;
    }
    printf("ok\n");
    return 0;
}
