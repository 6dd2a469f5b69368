/*
 * files DIR N [create-only]
 *
 * Creates N empty files in DIR, then stats, lists and unlinks them, timing
 * each phase apart: FUSE pays a round trip per create and unlink, but a
 * stat may be answered from the kernel's attribute cache; a listing is
 * read in pieces of a page or so.  With create-only the files stay, so
 * that the caller can weigh what they cost in memory.
 * Prints "create=SECONDS stat=SECONDS list=SECONDS unlink=SECONDS".
 */
#include "common.h"
#include <dirent.h>
#include <sys/stat.h>

#define LISTINGS 5 /* the list phase reads the directory this many times */

static void name(char *buf, size_t len, const char *dir, long i)
{
    snprintf(buf, len, "%s/f%07ld", dir, i);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s DIR N [create-only]\n", argv[0]);
        return 2;
    }
    long n = atol(argv[2]);
    int create_only = argc > 3 && strcmp(argv[3], "create-only") == 0;
    char path[4096];
    struct stat st;

    double t0 = now();
    for (long i = 0; i < n; i++) {
        name(path, sizeof path, argv[1], i);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0 || close(fd) != 0)
            DIE("create %s", path);
    }
    double t1 = now();
    printf("create=%.6f", t1 - t0);
    if (create_only) {
        putchar('\n');
        return 0;
    }
    for (long i = 0; i < n; i++) {
        name(path, sizeof path, argv[1], i);
        if (stat(path, &st) != 0)
            DIE("stat %s", path);
    }
    double t2 = now();
    for (int pass = 0; pass < LISTINGS; pass++) {
        DIR *d = opendir(argv[1]);
        long seen = 0;
        if (d == NULL)
            DIE("opendir %s", argv[1]);
        while (readdir(d) != NULL)
            seen++;
        closedir(d);
        if (seen != n + 2)
            DIE("listing %s: %ld entries, not %ld", argv[1], seen, n + 2);
    }
    double t3 = now();
    for (long i = 0; i < n; i++) {
        name(path, sizeof path, argv[1], i);
        if (unlink(path) != 0)
            DIE("unlink %s", path);
    }
    printf(" stat=%.6f list=%.6f unlink=%.6f\n", t2 - t1, (t3 - t2) / LISTINGS, now() - t3);
    return 0;
}
