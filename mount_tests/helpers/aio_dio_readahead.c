/* aio_dio_readahead PATH ROUNDS: asynchronous O_DIRECT writes raced by
 * buffered readers, as xfstests' aio-dio-invalidate-readahead does.
 *
 * Each round, a child reads the file through the page cache over and over
 * (so readahead fills the cache while the write is in flight), and the
 * parent writes a new byte over the whole file with io_submit on an
 * O_DIRECT fd, waits for its completion, stops the child, and reads the
 * file back through the page cache, by an fd open from the start.  Prints the rounds whose read-back
 * held old bytes: 0 on a filesystem whose cache follows direct writes. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define SIZE (1 << 20)

static void die(const char *what)
{
    perror(what);
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PATH ROUNDS\n", argv[0]);
        return 2;
    }
    int rounds = atoi(argv[2]);
    int direct = open(argv[1], O_RDWR | O_CREAT | O_DIRECT, 0644);
    if (direct < 0)
        die("open O_DIRECT");
    char *block;
    if (posix_memalign((void **)&block, 4096, SIZE))
        die("posix_memalign");
    memset(block, 0, SIZE);
    if (pwrite(direct, block, SIZE, 0) != SIZE)
        die("pwrite");
    aio_context_t ctx = 0;
    if (syscall(SYS_io_setup, 1, &ctx) < 0)
        die("io_setup");
    char *back = malloc(SIZE);
    /* Opened once: an open may drop the cache, and hide what stayed. */
    int buffered = open(argv[1], O_RDONLY);
    if (buffered < 0)
        die("open");
    int stale = 0;
    for (int round = 1; round <= rounds; round++) {
        pid_t reader = fork();
        if (reader == 0) {
            int fd = open(argv[1], O_RDONLY);
            for (;;)
                if (pread(fd, back, SIZE, 0) < 0)
                    _exit(1);
        }
        usleep(2000);
        memset(block, round & 0xff, SIZE);
        struct iocb cb = {.aio_fildes = (unsigned)direct, .aio_lio_opcode = IOCB_CMD_PWRITE,
                          .aio_buf = (unsigned long)block, .aio_nbytes = SIZE};
        struct iocb *cbs[1] = {&cb};
        struct io_event event;
        if (syscall(SYS_io_submit, ctx, 1, cbs) != 1)
            die("io_submit");
        if (syscall(SYS_io_getevents, ctx, 1, 1, &event, NULL) != 1)
            die("io_getevents");
        if (event.res != SIZE) {
            fprintf(stderr, "round %d: the write gave %lld\n", round, (long long)event.res);
            return 2;
        }
        kill(reader, SIGKILL);
        waitpid(reader, NULL, 0);
        if (pread(buffered, back, SIZE, 0) != SIZE)
            die("read back");
        for (int i = 0; i < SIZE; i++)
            if (back[i] != (char)(round & 0xff)) {
                stale++;
                break;
            }
    }
    printf("%d\n", stale);
    return 0;
}
