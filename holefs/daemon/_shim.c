/*
 * holefs.daemon._shim: the requests that holefs serves in C, and how they get here.
 *
 * pyfuse3 registers no fallocate or lseek handler and offers no hook to add
 * one, so this module interposes libfuse's session constructor.  Python
 * loads it with RTLD_GLOBAL before pyfuse3 (holefs/__init__.py), so the
 * dynamic linker binds pyfuse3's call to the definitions below, which copy
 * pyfuse3's ops table, patch it, and pass the copy on to libfuse.  There
 * are two constructors to interpose, and this file builds against both
 * kinds of header:
 *   - fuse_session_new@FUSE_3.0, which pyfuse3 calls when it was built
 *     against libfuse 3.0 to 3.16;
 *   - fuse_session_new_versioned@FUSE_3.17, which pyfuse3 calls when it was
 *     built against 3.17 or later, whose fuse_session_new is an inline
 *     wrapper.  libfuse 3.17's own fuse_session_new@FUSE_3.0 calls it too,
 *     so the ops table may arrive here already patched.
 * holefs.daemon.mount checks engaged() after mounting and refuses to serve if
 * neither was called.
 *
 * THE CONTRACT BETWEEN C AND PYTHON
 *
 * Opcodes served here, without trio (SERVED_IN_C below is the one list):
 *   READ, WRITE, FALLOCATE, LSEEK, LOOKUP, GETATTR, CREATE, TMPFILE,
 *       UNLINK, IOCTL's FS_IOC_[FS]GETFLAGS and [FS]SETFLAGS, and the
 *       ioctls of holefs's own type: by the Python handler object given
 *       to install() (fs.FastPath), called synchronously with the GIL
 *       held; an O_DIRECT WRITE is answered once the kernel has dropped
 *       its cached pages of the range (DIRECT WRITES below);
 *   STATX (Linux 6.6 on), which libfuse does not know: answered here in
 *       the kernel's own form, with the birth time (serve_statx below);
 *   RELEASE: answered here, at once: holefs keeps nothing per open file
 *       (the fh is the inode number), and the kernel sends one after every
 *       close, which would otherwise wait its turn through trio;
 *   GETXATTR of security.capability and of the ACLs: answered ENODATA
 *       here until some file gets one, since the kernel asks before a
 *       file's first write, and for access checks;
 *   INIT: pyfuse3's, then the capabilities that holefs relies on (below).
 * Everything else goes to pyfuse3, which runs its handler as a trio task.
 * Before any of them, a WRITE, SETATTR or OPEN that the kernel marks
 * KILL_SUIDGID, and every FALLOCATE, calls the handler object's drop_setid
 * first (see below).
 *
 * The handler object's data methods get the file handle (fh) that open or
 * create returned:
 *   read(fh, offset, size, splice) -> a bytes-like object of at most
 *       size bytes; with splice true it may instead answer through
 *       reply_from_tiers() and return None (READ REPLIES)
 *   write(fh, offset, data, writeback, pid) -> the number of bytes
 *       written; data is a memoryview, or a Spliced still in a worker's
 *       pipe (SPLICED RECEIVE); writeback is true for the kernel's writeback of pages
 *       that a shared mapping dirtied, which no write(2) waits for; pid
 *       is the caller's (0 for writeback), for its capabilities
 *   fallocate(fh, mode, offset, length, pid) -> None
 *   lseek(fh, offset, whence) -> the new offset (SEEK_DATA or SEEK_HOLE)
 * Its namespace methods get inode numbers and names (bytes); attributes
 * are a tuple (ino, mode, nlink, uid, gid, rdev, size, blocks, atime_ns,
 * mtime_ns, ctime_ns):
 *   lookup(parent, name) -> attributes, and the kernel holds one more
 *       reference; or None for a negative entry
 *   getattr(inode) -> attributes
 *   create(parent, name, mode, uid, gid, umask, pid) -> attributes of a new
 *       regular file, referenced once; its inode number is its fh.  The
 *       kernel left the umask to it (DONT_MASK), since a default ACL of
 *       the directory takes its place
 *   tmpfile(parent, mode, uid, gid, umask, pid) -> the same, for a file with
 *       no name (O_TMPFILE), whose nlink is 0 until LINK names it
 *   unlink(parent, name) -> None
 *   statx(inode) -> (attributes, birth time in ns)
 *   get_flags(inode, as_xflags) -> chattr's flags, or FSGETXATTR's xflags;
 *   set_flags(inode, flags, as_xflags) -> None
 *   control(pending, inode, cmd, data, uid, pid) -> None: an ioctl of
 *       holefs's own type (CONTROL_TYPE, holefs/control.py), with its
 *       input bytes and the caller's uid and thread.  It may answer
 *       later, from any thread, with pending.answer(result, data); a
 *       Pending dropped unanswered gets EIO
 *   drop_setid(inode, uid, gid, pid, request) -> None: clear set-user-ID,
 *       set-group-ID and security.capability as the VFS does on a write,
 *       truncate, chown or fallocate by that caller; *request* is "write",
 *       "setattr", "open" or "fallocate", the one the kernel does not
 *       check the caller's CAP_FSETID for.  It gets the inode number: a
 *       truncate may come without a file handle.
 * A handler
 *   - must not await or block: it runs on a worker thread or inside
 *     pyfuse3's loop, and makes itself atomic with a lock of Python's;
 *   - must not keep `data` after it returns: it is a memoryview of libfuse's
 *     receive buffer, released when the handler returns;
 *   - reports a failure by raising OSError with its errno.  Any other
 *     exception is a bug: it goes to sys.unraisablehook and the request
 *     gets EIO.
 *
 * THE RULE FOR STATE THAT THE KERNEL CACHES
 *
 * The kernel caches attributes for cache_timeout, and believes only what
 * it is told.  A reply that carries attributes (LOOKUP, GETATTR, CREATE,
 * SETATTR, MKNOD, MKDIR, SYMLINK, LINK) tells it; a reply that carries none
 * (WRITE, OPEN, FALLOCATE, SETXATTR) leaves it to mark some of them stale
 * itself, which never includes the mode after a WRITE.  So any change that
 * holefs makes to an inode's attributes beyond what the request's own
 * reply tells the kernel must be followed, before that reply, by
 * invalidate_attributes(inode), which any handler may call from any
 * thread.  The places:
 *   - drop_setid, after a WRITE, an O_TRUNC OPEN, a FALLOCATE or a
 *     truncating SETATTR: the mode (exec honours a cached set-ID bit);
 *   - setxattr of system.posix_acl_access, which changes the mode;
 *   - set_flags: the ctime.
 * Times that only holefs moves (atime, on a read) need no push: the kernel
 * marks atime stale itself after each READ and READDIR.
 *
 * State has one owner, Python: the namespace, the extent maps and the
 * tiers live in holefs's Python objects, and this file keeps none of it,
 * only requests in flight.  So no piece of state has two copies to keep
 * in step, and Python's tests of the maps cover the served path too.  The
 * price is the GIL on every data request; a chunk index owned here, with
 * Python asking through a small API, would remove it (RESULTS.md).
 *
 * Capabilities, set in INIT on purpose rather than left to libfuse, whose
 * defaults differ between versions:
 *   - splice write: on, so that libfuse splices READ replies from the
 *     tier files (READ REPLIES below).  Splice move: off; the kernel would
 *     try to steal the tier's pages.  Splice read: off.  Spliced receive
 *     would hand write data over as a pipe, which the write handler cannot
 *     take.
 *   - auto_inval_data: off.  Every change comes through the kernel, so its
 *     page cache is never stale, and this would drop it after every write.
 *   - writeback cache: off, so that ENOSPC reaches write(2).
 *   - handle_killpriv: off; handle_killpriv_v2: on.  With v2 the kernel
 *     marks the superblock SB_NOSEC, so it stops asking for
 *     security.capability before every write (one round trip of two), and
 *     leaves holefs to clear the set-ID bits where a request is marked
 *     KILL_SUIDGID.  libfuse before 3.17 does not know the flag: the shim
 *     then adds it to the INIT reply itself, through libfuse's custom I/O.
 *   - atomic O_TRUNC: on where the kernel offers it; open() truncates.
 *   - posix_acl and dont_mask: on.  The kernel checks access against the
 *     ACLs that holefs stores (system.posix_acl_*), and leaves the umask
 *     to holefs, which applies it only where no default ACL is inherited;
 *     holefs keeps the mode and the ACL in step (holefs/acl.py).
 *   - ioctl_dir: on, so that chattr works on directories too.
 *   - allow_idmap: on where the kernel offers it (Linux 6.12), so that
 *     idmapped mounts of holefs can be made, as of tmpfs.  The kernel then
 *     sends the caller's uid and gid only with requests that make an
 *     inode, and (uid_t)-1 with the others (holefs/credentials.py).  No
 *     libfuse before 3.18 knows it: the shim adds it to the INIT reply.
 * libfuse 3.17 keeps them in want_ext, but still converts a changed `want`,
 * which pyfuse3 also uses; both are changed only through `want`.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <linux/fuse.h>

/* libfuse 3.17's header makes fuse_session_new a macro; this file defines
 * the exported function of that name itself. */
#undef fuse_session_new
struct libfuse_version;
#define LIBFUSE_KNOWS_KILLPRIV_V2 (FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17))

typedef struct fuse_session *(*session_new_fn)(
    struct fuse_args *, const struct fuse_lowlevel_ops *, size_t, void *);
typedef struct fuse_session *(*session_new_versioned_fn)(
    struct fuse_args *, const struct fuse_lowlevel_ops *, size_t,
    struct libfuse_version *, void *);
typedef int (*mount_fn)(struct fuse_session *, const char *);
typedef int (*session_fd_fn)(struct fuse_session *);
typedef void (*destroy_fn)(struct fuse_session *);
typedef int (*receive_fn)(struct fuse_session *, struct fuse_buf *);
typedef void (*process_fn)(struct fuse_session *, const struct fuse_buf *);

static struct fuse_lowlevel_ops patched_ops;
static void (*pyfuse3_init)(void *userdata, struct fuse_conn_info *conn);
static void (*pyfuse3_getxattr)(fuse_req_t req, fuse_ino_t ino,
                                const char *name, size_t size);
static void (*pyfuse3_setxattr)(fuse_req_t req, fuse_ino_t ino,
                                const char *name, const char *value,
                                size_t size, int flags);
static struct fuse_conn_info *conn_info;
static PyObject *read_cb, *write_cb, *fallocate_cb, *lseek_cb, *drop_setid_cb;
static PyObject *lookup_cb, *getattr_cb, *create_cb, *tmpfile_cb, *unlink_cb;
static PyObject *get_flags_cb, *set_flags_cb, *control_cb, *statx_cb;
static double cache_timeout; /* for names and attributes, from install() */
static int engaged;
static struct fuse_session *session; /* the mounted one, for notifications */
static receive_fn real_receive;
static process_fn real_process;
static session_fd_fn real_session_fd;

/* The name that the kernel gives an O_TMPFILE's dentry, and that TMPFILE
 * carries. */
#define TMPFILE_NAME "/"
#define CONTROL_TYPE 'H' /* the ioctl type of holefs's own, as in holefs/control.py */

#define WORKERS_MAX 16
#define WORKER_BUFFER (256 * 4096 + 4096) /* libfuse's own: 256 pages and a header */
#define REQUEST_HEADROOM 4096             /* what a WRITE needs beside its data */
static void start_workers(struct fuse_session *se);
static uint64_t negotiated(void);
static int kernel_offers_killpriv_v2; /* read from the INIT request */
static int kernel_offers_idmap;       /* FUSE_ALLOW_IDMAP, Linux 6.12 on */
static uint64_t init_unique;          /* the INIT request, until answered */
static int killpriv_v2_added;         /* to the INIT reply, by io_writev */
/* The kernel's INIT request as it came, for a successor to replay (HAND-OVER). */
static unsigned char init_request[256];
static size_t init_request_size;
static int replaying_init; /* the INIT reply then goes nowhere: the kernel has it */
static int taking_over;    /* a successor's session: no workers until resume() */
static int workers_wanted; /* threads=, from install() */
/* From pause() to resume(): pyfuse3 receives nothing, even in a task that
 * trio woke for the fd before the pause and runs after it. */
static int paused;
static int idmap_added;               /* to the INIT reply, by io_writev */
/* Not in the kernel headers before 6.12, nor libfuse's before 3.18. */
#define INIT_ALLOW_IDMAP_FLAGS2 (1U << (40 - 32))

/* The errno that a failed handler call stands for, with the exception
 * cleared: an OSError's own, or EIO for anything else, which is a bug and
 * is reported through sys.unraisablehook. */
static int handler_errno(PyObject *cb)
{
    int err = 0;
    if (PyErr_ExceptionMatches(PyExc_OSError)) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        PyObject *number = value ? PyObject_GetAttrString(value, "errno") : NULL;
        if (number != NULL && PyLong_Check(number))
            err = (int)PyLong_AsLong(number);
        Py_XDECREF(number);
        PyErr_Clear();
        if (err > 0) {
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            return err;
        }
        PyErr_Restore(type, value, tb);
    }
    PyErr_WriteUnraisable(cb);
    return EIO;
}

/* Calls a handler; the caller holds the GIL.  Returns a new reference, or
 * NULL with *err set. */
static PyObject *vcall(PyObject *cb, int *err, const char *fmt, va_list va)
{
    PyObject *args = Py_VaBuildValue(fmt, va);
    PyObject *out = args ? PyObject_CallObject(cb, args) : NULL;
    Py_XDECREF(args);
    if (out == NULL)
        *err = handler_errno(cb);
    return out;
}

static PyObject *call(PyObject *cb, int *err, const char *fmt, ...)
{
    va_list va;
    va_start(va, fmt);
    PyObject *out = vcall(cb, err, fmt, va);
    va_end(va);
    return out;
}

/* A handler's integer result (None counts as 0), or -errno.  Steals *out*,
 * which call() returned with *err. */
static long long as_result(PyObject *cb, PyObject *out, const int *err)
{
    if (out == NULL)
        return -*err;
    long long result = out == Py_None ? 0 : PyLong_AsLongLong(out);
    Py_DECREF(out);
    if (result < 0) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "%R returned %lld", cb, result);
        return -handler_errno(cb);
    }
    return result;
}

/*
 * READ REPLIES
 *
 * The read handler is called with splice=True where libfuse can splice
 * the reply (SPLICE_WRITE, and two pages or more).  It then answers
 * through reply_from_tiers(), with the pieces of the tier files that hold
 * the range, while it holds its lock: splice(2) takes references to the
 * tier's pages into libfuse's pipe, and only the lock keeps a freed slot
 * from being reused (punched first, so a page already taken keeps its
 * bytes) before that.  The kernel copies once, from those pages into the
 * reader's page cache, where a copy into a buffer of the daemon's and out
 * again took two.  A reply of 1 MiB needs a pipe of 2 MiB, more than
 * pipe-max-size allows a process without CAP_SYS_RESOURCE: the handler
 * copies as before where the pipe cannot hold the reply (splice_fits).
 */

/* A sparse memfd that holes are spliced from: the kernel hands out its
 * zero page, without a copy.  As long as the longest READ (256 pages). */
#define ZEROS_SIZE (1 << 20)
static int zeros_fd = -1;

/* The largest pipe that libfuse can have: beyond pipe-max-size only with
 * CAP_SYS_RESOURCE.  Where its pipe cannot hold a reply, libfuse copies
 * through a buffer that it allocates for each, slower than the handler's
 * own copy (RESULTS.md), so no READ is offered splicing then. */
#define PIPE_WANTED (2 << 20)
static size_t pipe_room;

static size_t largest_pipe(void)
{
    int fds[2];
    long room = 0;
    if (pipe2(fds, O_CLOEXEC) != 0)
        return 0;
    if (fcntl(fds[0], F_SETPIPE_SZ, PIPE_WANTED) >= 0) {
        room = PIPE_WANTED;
    } else {
        FILE *max = fopen("/proc/sys/fs/pipe-max-size", "re");
        if (max == NULL || fscanf(max, "%ld", &room) != 1)
            room = 0;
        if (max != NULL)
            fclose(max);
    }
    close(fds[0]);
    close(fds[1]);
    return room > 0 ? (size_t)room : 0;
}

/* Whether libfuse's pipe holds a reply of *size* bytes in pieces of at
 * most a chunk each, by libfuse's own reckoning (fuse_send_data_iov). */
static int splice_fits(size_t size)
{
    size_t pieces = size / (64 * 1024) + 2;
    size_t needed = 4096 * (pieces + 2) + sizeof(struct fuse_out_header) + size;
    return size >= 2 * 4096 && needed <= pipe_room;
}

static __thread fuse_req_t read_unanswered; /* the READ whose handler runs on this thread */

static void shim_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      struct fuse_file_info *fi)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int err = 0;
    Py_buffer view;
    int splice = (negotiated() & FUSE_CAP_SPLICE_WRITE) && splice_fits(size) && zeros_fd >= 0;
    read_unanswered = req;
    PyObject *out = call(read_cb, &err, "(KLnO)", (unsigned long long)fi->fh,
                         (long long)off, (Py_ssize_t)size, splice ? Py_True : Py_False);
    if (read_unanswered == NULL) {
        /* answered by reply_from_tiers() */
    } else if (out != NULL && PyObject_GetBuffer(out, &view, PyBUF_SIMPLE) == 0) {
        /* A fresh object of the handler's: nothing changes it meanwhile. */
        Py_BEGIN_ALLOW_THREADS
        fuse_reply_buf(req, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
        PyBuffer_Release(&view);
    } else {
        if (out != NULL)
            err = handler_errno(read_cb);
        fuse_reply_err(req, err);
    }
    read_unanswered = NULL;
    Py_XDECREF(out);
    PyGILState_Release(gil);
    (void)ino;
}

static PyObject *shim_reply_from_tiers(PyObject *self, PyObject *pieces)
{
    fuse_req_t req = read_unanswered;
    if (req == NULL)
        return PyErr_Format(PyExc_RuntimeError, "no READ to answer on this thread");
    PyObject *seq = PySequence_Fast(pieces, "pieces must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    size_t room = sizeof(struct fuse_bufvec) + (n ? (size_t)n : 1) * sizeof(struct fuse_buf);
    struct fuse_bufvec *bufv = calloc(1, room);
    size_t count = 0;
    if (bufv == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int fd;
        long long pos, length;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i),
                              "iLL;a piece is (fd, offset, length)", &fd, &pos, &length))
            goto fail;
        if (length <= 0 || pos < 0)
            continue;
        if (fd < 0 && length > ZEROS_SIZE) { /* no READ is longer */
            PyErr_Format(PyExc_ValueError, "a hole of %lld bytes in one reply", length);
            goto fail;
        }
        bufv->buf[count++] = (struct fuse_buf){
            .size = (size_t)length, .flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK,
            .fd = fd >= 0 ? fd : zeros_fd, .pos = fd >= 0 ? (off_t)pos : 0};
    }
    bufv->count = count;
    read_unanswered = NULL;
    Py_BEGIN_ALLOW_THREADS
    if (count)
        fuse_reply_data(req, bufv, 0);
    else
        fuse_reply_buf(req, NULL, 0);
    Py_END_ALLOW_THREADS
    free(bufv);
    Py_DECREF(seq);
    Py_RETURN_NONE;
fail:
    free(bufv);
    Py_DECREF(seq);
    return NULL;
}

/* The handler sees the request's own buffer through a memoryview, which is
 * released before libfuse reuses the buffer: no copy. */
/*
 * DIRECT WRITES
 *
 * The kernel drops its cached pages of a range before an O_DIRECT write,
 * and, for a synchronous one, after it too; after an asynchronous one (aio,
 * io_uring) it does not, so pages that a buffered reader's readahead read
 * meanwhile keep the old bytes.  holefs drops them itself (a notification
 * of the range) before it answers.  That may wait for page locks that
 * READs in flight hold, so some thread must stay free to read and serve
 * them: a worker notifies itself only while another worker waits in
 * read(2), which is then not allowed to; otherwise the reply goes out from
 * the invalidator thread, after its notification.  The hop to that thread
 * costs a round trip's worth (RESULTS.md), so it is the fallback.
 */

struct direct_write {
    struct direct_write *next;
    fuse_req_t req;
    fuse_ino_t ino;
    off_t off;
    size_t size;
};

static pthread_mutex_t invalidator_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t invalidator_wake = PTHREAD_COND_INITIALIZER;
static struct direct_write *direct_head, **direct_tail = &direct_head; /* under the lock */
static int invalidator_state; /* 0 not started, 1 running, 2 stopping; under the lock */
static pthread_t invalidator;

static void *invalidator_main(void *unused)
{
    pthread_mutex_lock(&invalidator_lock);
    for (;;) {
        while (direct_head == NULL && invalidator_state == 1)
            pthread_cond_wait(&invalidator_wake, &invalidator_lock);
        struct direct_write *w = direct_head;
        if (w == NULL)
            break; /* stopping, and every write answered */
        direct_head = w->next;
        if (direct_head == NULL)
            direct_tail = &direct_head;
        pthread_mutex_unlock(&invalidator_lock);
        fuse_lowlevel_notify_inval_inode(session, w->ino, w->off, (off_t)w->size);
        fuse_reply_write(w->req, w->size);
        free(w);
        pthread_mutex_lock(&invalidator_lock);
    }
    pthread_mutex_unlock(&invalidator_lock);
    (void)unused;
    return NULL;
}

static __thread int is_worker;
static int workers_reading; /* in read(2) now; atomic */

static void reply_direct_write(fuse_req_t req, fuse_ino_t ino, off_t off, size_t size)
{
    int expected = __atomic_load_n(&workers_reading, __ATOMIC_SEQ_CST);
    while (is_worker && expected > 0) {
        /* Take one reader's place, so that no two notify on its account. */
        if (__atomic_compare_exchange_n(&workers_reading, &expected, expected - 1, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            fuse_lowlevel_notify_inval_inode(session, ino, off, (off_t)size);
            __atomic_add_fetch(&workers_reading, 1, __ATOMIC_SEQ_CST);
            fuse_reply_write(req, size);
            return;
        }
    }
    struct direct_write *w = malloc(sizeof *w);
    pthread_mutex_lock(&invalidator_lock);
    if (w != NULL && invalidator_state == 0 && session != NULL &&
        pthread_create(&invalidator, NULL, invalidator_main, NULL) == 0) {
        pthread_setname_np(invalidator, "holefs-inval");
        invalidator_state = 1;
    }
    int queued = w != NULL && invalidator_state == 1;
    if (queued) {
        *w = (struct direct_write){NULL, req, ino, off, size};
        *direct_tail = w;
        direct_tail = &w->next;
        pthread_cond_signal(&invalidator_wake);
    }
    pthread_mutex_unlock(&invalidator_lock);
    if (!queued) { /* out of memory or threads: the write stands, the cache may lag */
        free(w);
        fuse_reply_write(req, size);
    }
}

/* Answers the writes still queued, and ends the thread. */
static void stop_invalidator(void)
{
    pthread_mutex_lock(&invalidator_lock);
    int running = invalidator_state == 1;
    invalidator_state = running ? 2 : 0;
    pthread_cond_signal(&invalidator_wake);
    pthread_mutex_unlock(&invalidator_lock);
    if (running) {
        int have_gil = PyGILState_Check();
        PyThreadState *thread = have_gil ? PyEval_SaveThread() : NULL;
        pthread_join(invalidator, NULL);
        if (have_gil)
            PyEval_RestoreThread(thread);
        invalidator_state = 0;
    }
}

static void shim_write_buf(fuse_req_t req, fuse_ino_t ino,
                           struct fuse_bufvec *bufv, off_t off,
                           struct fuse_file_info *fi)
{
    struct fuse_buf *buf = &bufv->buf[bufv->idx];
    if (bufv->count != 1 || (buf->flags & FUSE_BUF_IS_FD)) {
        /* Only spliced receive gives a pipe, and INIT turned it off. */
        fuse_reply_err(req, EIO);
        return;
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    long long ret = -EIO;
    PyObject *view = PyMemoryView_FromMemory((char *)buf->mem + bufv->off,
                                             (Py_ssize_t)(buf->size - bufv->off),
                                             PyBUF_READ);
    if (view != NULL) {
        int err;
        ret = as_result(write_cb, call(write_cb, &err, "(KLOOI)", (unsigned long long)fi->fh,
                                       (long long)off, view,
                                       fi->writepage ? Py_True : Py_False,
                                       (unsigned int)fuse_req_ctx(req)->pid), &err);
        PyObject *done = PyObject_CallMethod(view, "release", NULL);
        if (done == NULL)
            PyErr_WriteUnraisable(write_cb);
        Py_XDECREF(done);
        Py_DECREF(view);
    } else {
        PyErr_WriteUnraisable(write_cb);
    }
    PyGILState_Release(gil);
    if (ret < 0)
        fuse_reply_err(req, (int)-ret);
    else if (fi->flags & O_DIRECT && !fi->writepage && ret > 0)
        reply_direct_write(req, ino, off, (size_t)ret);
    else
        fuse_reply_write(req, (size_t)ret);
}

static void shim_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
                           off_t offset, off_t length,
                           struct fuse_file_info *fi)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int err;
    long long ret = as_result(fallocate_cb,
                              call(fallocate_cb, &err, "(KiLLI)", (unsigned long long)fi->fh,
                                   mode, (long long)offset, (long long)length,
                                   (unsigned int)fuse_req_ctx(req)->pid), &err);
    PyGILState_Release(gil);
    fuse_reply_err(req, ret < 0 ? (int)-ret : 0);
    (void)ino;
}

static void shim_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                       struct fuse_file_info *fi)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int err;
    long long ret = as_result(lseek_cb,
                              call(lseek_cb, &err, "(KLi)", (unsigned long long)fi->fh,
                                   (long long)off, whence), &err);
    PyGILState_Release(gil);
    if (ret < 0)
        fuse_reply_err(req, (int)-ret);
    else
        fuse_reply_lseek(req, (off_t)ret);
    (void)ino;
}

/* A time in nanoseconds since the epoch, a Python int of any size, as a
 * timespec: seconds may go past 2262 (tmpfs keeps 64 bits of them), and
 * nanoseconds are 0 to 999999999 before 1970 too.  0, or -1 with an
 * exception set. */
static int to_timespec(PyObject *ns, struct timespec *ts)
{
    static PyObject *billion;
    if (billion == NULL && (billion = PyLong_FromLong(1000000000)) == NULL)
        return -1;
    PyObject *parts = PyNumber_Divmod(ns, billion);
    if (parts == NULL)
        return -1;
    long long sec = PyLong_AsLongLong(PyTuple_GET_ITEM(parts, 0));
    long nsec = PyLong_AsLong(PyTuple_GET_ITEM(parts, 1));
    Py_DECREF(parts);
    if (PyErr_Occurred())
        return -1;
    *ts = (struct timespec){(time_t)sec, nsec};
    return 0;
}

/* An inode's attributes from a handler's tuple: (ino, mode, nlink, uid,
 * gid, rdev, size, blocks, atime_ns, mtime_ns, ctime_ns).  0, or -errno
 * (a bug, reported) if the tuple is not that. */
static int to_stat(PyObject *cb, PyObject *tuple, struct stat *st)
{
    unsigned long long ino, size, blocks;
    unsigned int mode, nlink, uid, gid;
    unsigned long long rdev;
    PyObject *atime, *mtime, *ctime;
    memset(st, 0, sizeof *st);
    if (!PyArg_ParseTuple(tuple, "KIIIIKKKOOO;attributes", &ino, &mode, &nlink, &uid, &gid,
                          &rdev, &size, &blocks, &atime, &mtime, &ctime) ||
        to_timespec(atime, &st->st_atim) < 0 || to_timespec(mtime, &st->st_mtim) < 0 ||
        to_timespec(ctime, &st->st_ctim) < 0)
        return -handler_errno(cb);
    st->st_ino = ino;
    st->st_mode = mode;
    st->st_nlink = nlink;
    st->st_uid = uid;
    st->st_gid = gid;
    st->st_rdev = rdev;
    st->st_size = (off_t)size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)blocks;
    return 0;
}

/* The entry that a LOOKUP or CREATE handler's result stands for: None is
 * a negative entry, which the kernel may cache too. */
static int to_entry(PyObject *cb, PyObject *result, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    e->entry_timeout = cache_timeout;
    if (result == Py_None)
        return 0;
    e->attr_timeout = cache_timeout;
    int err = to_stat(cb, result, &e->attr);
    e->ino = e->attr.st_ino;
    return err;
}

/* Calls a LOOKUP or CREATE handler, taking the GIL: 0 with *e filled in,
 * or an errno. */
static int entry_from(PyObject *cb, struct fuse_entry_param *e, const char *fmt, ...)
{
    va_list va;
    va_start(va, fmt);
    PyGILState_STATE gil = PyGILState_Ensure();
    int err = 0;
    PyObject *out = vcall(cb, &err, fmt, va);
    va_end(va);
    if (out != NULL)
        err = -to_entry(cb, out, e);
    Py_XDECREF(out);
    PyGILState_Release(gil);
    return err;
}

static void shim_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fuse_entry_param e;
    int err = entry_from(lookup_cb, &e, "(Ky)", (unsigned long long)parent, name);
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_entry(req, &e);
}

static void shim_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int err = 0;
    struct stat st;
    PyObject *out = call(getattr_cb, &err, "(K)", (unsigned long long)ino);
    if (out != NULL)
        err = -to_stat(getattr_cb, out, &st);
    Py_XDECREF(out);
    PyGILState_Release(gil);
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_attr(req, &st, cache_timeout);
    (void)fi;
}

/* CREATE, and TMPFILE in CREATE's form (before_dispatch): its name is
 * "/", which no CREATE can have. */
static void shim_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                        struct fuse_file_info *fi)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    struct fuse_entry_param e;
    int err = strcmp(name, TMPFILE_NAME) == 0
        ? entry_from(tmpfile_cb, &e, "(KIIIII)", (unsigned long long)parent,
                     (unsigned int)mode, (unsigned int)ctx->uid, (unsigned int)ctx->gid,
                     (unsigned int)ctx->umask, (unsigned int)ctx->pid)
        : entry_from(create_cb, &e, "(KyIIIII)", (unsigned long long)parent, name,
                     (unsigned int)mode, (unsigned int)ctx->uid, (unsigned int)ctx->gid,
                     (unsigned int)ctx->umask, (unsigned int)ctx->pid);
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    fi->fh = e.ino; /* holefs's file handle is the inode number */
    fi->keep_cache = 1;
    fuse_reply_create(req, &e, fi);
}

static void shim_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int err;
    long long ret = as_result(unlink_cb, call(unlink_cb, &err, "(Ky)",
                                              (unsigned long long)parent, name), &err);
    PyGILState_Release(gil);
    fuse_reply_err(req, ret < 0 ? (int)-ret : 0);
}

/* An ioctl that Python answers when it is done, perhaps from trio after
 * a remount's awaits: answered exactly once, with EIO if dropped. */
typedef struct {
    PyObject_HEAD
    fuse_req_t req; /* NULL once answered */
    size_t out_size;
} Pending;

static void pending_dealloc(PyObject *self)
{
    Pending *pending = (Pending *)self;
    if (pending->req != NULL)
        fuse_reply_err(pending->req, EIO);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *pending_answer(PyObject *self, PyObject *args)
{
    Pending *pending = (Pending *)self;
    int result;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "iy*", &result, &data))
        return NULL;
    PyObject *error = NULL;
    if (pending->req == NULL)
        error = PyErr_Format(PyExc_RuntimeError, "already answered");
    else if ((size_t)data.len > pending->out_size)
        error = PyErr_Format(PyExc_ValueError, "%zd bytes of data, the caller takes %zu",
                             data.len, pending->out_size);
    if (error == NULL) {
        fuse_req_t req = pending->req;
        pending->req = NULL;
        Py_BEGIN_ALLOW_THREADS
        fuse_reply_ioctl(req, result, data.len ? data.buf : NULL, (size_t)data.len);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&data);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef pending_methods[] = {
    {"answer", pending_answer, METH_VARARGS,
     "answer(result, data): reply to the ioctl with its result (what the\n"
     "caller's ioctl(2) returns) and at most as many bytes as it takes."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PendingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "holefs.daemon._shim.Pending",
    .tp_doc = "An ioctl of holefs's own, waiting for its answer.",
    .tp_basicsize = sizeof(Pending),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = pending_dealloc,
    .tp_methods = pending_methods,
};

/* holefs's own ioctls (holefs/control.py), which may come from any user:
 * Python checks the caller, and answers now or later. */
static void shim_control(fuse_req_t req, fuse_ino_t ino, unsigned int cmd,
                         const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    PyGILState_STATE gil = PyGILState_Ensure();
    int err = 0;
    Pending *pending = PyObject_New(Pending, &PendingType);
    if (pending == NULL) {
        PyErr_Clear();
        err = ENOMEM;
    } else {
        pending->req = req;
        pending->out_size = out_bufsz;
        PyObject *out = call(control_cb, &err, "(OKIy#II)", (PyObject *)pending,
                             (unsigned long long)ino, cmd, in_buf ? in_buf : "",
                             (Py_ssize_t)in_bufsz, (unsigned int)ctx->uid,
                             (unsigned int)ctx->pid);
        if (out == NULL && pending->req != NULL)
            pending->req = NULL; /* the error is the answer, below */
        else
            err = 0;
        Py_XDECREF(out);
        Py_DECREF(pending);
    }
    PyGILState_Release(gil);
    if (err)
        fuse_reply_err(req, err);
}

/* chattr's flags, and holefs's own ioctls.  The kernel sends
 * FS_IOC_GETFLAGS and SETFLAGS (flags as an int), or FSGETXATTR and
 * FSSETXATTR (xflags in a struct fsxattr) itself, after its own checks
 * (the owner, CAP_LINUX_IMMUTABLE); it reads them before each change.
 * Any other ioctl of a program arrives unchecked, and gets ENOTTY. */
static void shim_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
                       struct fuse_file_info *fi, unsigned flags, const void *in_buf,
                       size_t in_bufsz, size_t out_bufsz)
{
    if (_IOC_TYPE(cmd) == CONTROL_TYPE) {
        shim_control(req, ino, cmd, in_buf, in_bufsz, out_bufsz);
        return;
    }
    int get = cmd == (unsigned int)FS_IOC_GETFLAGS || cmd == (unsigned int)FS_IOC_FSGETXATTR;
    int set = cmd == (unsigned int)FS_IOC_SETFLAGS || cmd == (unsigned int)FS_IOC_FSSETXATTR;
    int xflags = cmd == (unsigned int)FS_IOC_FSGETXATTR || cmd == (unsigned int)FS_IOC_FSSETXATTR;
    struct fsxattr fsx = {0};
    unsigned int value = 0;
    void *out = xflags ? (void *)&fsx : (void *)&value;
    size_t size = xflags ? sizeof fsx : sizeof value;
    if (!(get && out_bufsz == size) && !(set && in_bufsz == size)) {
        fuse_reply_err(req, ENOTTY);
        return;
    }
    if (set) {
        memcpy(out, in_buf, size);
        if (xflags && (fsx.fsx_extsize || fsx.fsx_projid || fsx.fsx_cowextsize)) {
            fuse_reply_err(req, EOPNOTSUPP); /* as tmpfs: no extent sizes, no projects */
            return;
        }
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    int err;
    PyObject *as_xflags = xflags ? Py_True : Py_False;
    long long ret = get
        ? as_result(get_flags_cb, call(get_flags_cb, &err, "(KO)", (unsigned long long)ino,
                                       as_xflags), &err)
        : as_result(set_flags_cb, call(set_flags_cb, &err, "(KIO)", (unsigned long long)ino,
                                       xflags ? fsx.fsx_xflags : value, as_xflags), &err);
    PyGILState_Release(gil);
    if (ret < 0) {
        fuse_reply_err(req, (int)-ret);
    } else if (get) {
        if (xflags)
            fsx.fsx_xflags = (unsigned int)ret;
        else
            value = (unsigned int)ret;
        fuse_reply_ioctl(req, 0, out, size);
    } else {
        fuse_reply_ioctl(req, 0, NULL, 0);
    }
    (void)arg;
    (void)fi;
    (void)flags;
}

static void shim_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0);
    (void)ino;
    (void)fi;
}

/* The capabilities of the contract above, by the names that status shows;
 * the writeback cache is on where install() asked for it. */
static int writeback_cache_wanted;
static const struct {
    const char *name;
    uint64_t flag;
    int on;
} capabilities[] = {
    {"splice_read", FUSE_CAP_SPLICE_READ, 0},
    {"splice_write", FUSE_CAP_SPLICE_WRITE, 1},
    {"splice_move", FUSE_CAP_SPLICE_MOVE, 0},
    {"auto_inval_data", FUSE_CAP_AUTO_INVAL_DATA, 0},
    {"writeback_cache", FUSE_CAP_WRITEBACK_CACHE, 0},
    {"handle_killpriv", FUSE_CAP_HANDLE_KILLPRIV, 0},
    {"atomic_o_trunc", FUSE_CAP_ATOMIC_O_TRUNC, 1},
    {"posix_acl", FUSE_CAP_POSIX_ACL, 1},
    {"dont_mask", FUSE_CAP_DONT_MASK, 1},
    {"ioctl_dir", FUSE_CAP_IOCTL_DIR, 1},
};
#define N_CAPABILITIES (sizeof capabilities / sizeof capabilities[0])

static void shim_init(void *userdata, struct fuse_conn_info *conn)
{
    pyfuse3_init(userdata, conn);
    for (size_t i = 0; i < N_CAPABILITIES; i++) {
        uint32_t flag = (uint32_t)capabilities[i].flag;
        int on = capabilities[i].on ||
                 (flag == FUSE_CAP_WRITEBACK_CACHE && writeback_cache_wanted);
        if (on && (conn->capable & flag))
            conn->want |= flag;
        else
            conn->want &= ~flag;
    }
#if LIBFUSE_KNOWS_KILLPRIV_V2
    if (conn->capable & FUSE_CAP_HANDLE_KILLPRIV_V2)
        conn->want |= FUSE_CAP_HANDLE_KILLPRIV_V2;
#endif
    if (conn->max_write > WORKER_BUFFER - REQUEST_HEADROOM)
        conn->max_write = WORKER_BUFFER - REQUEST_HEADROOM; /* a worker's buffer */
    conn_info = conn;
}

/* What libfuse settled on after INIT; 3.17 keeps the final word in want_ext. */
static uint64_t negotiated(void)
{
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17)
    return conn_info->want_ext;
#else
    return conn_info->want;
#endif
}

/* Whether the kernel took handle_killpriv_v2, by whichever path it got it. */
static int killpriv_v2(void)
{
#if LIBFUSE_KNOWS_KILLPRIV_V2
    return conn_info != NULL && (negotiated() & FUSE_CAP_HANDLE_KILLPRIV_V2) != 0;
#else
    return killpriv_v2_added;
#endif
}

/* libfuse's custom I/O: plain read and writev on the session's fd, except
 * that the INIT reply also takes what the kernel offers and holefs wants
 * but libfuse cannot ask for: handle_killpriv_v2 before libfuse 3.17, and
 * allow_idmap (idmapped mounts; the kernel then sends the caller's ids
 * only with the requests that make an inode, see holefs/credentials.py). */
static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
    (void)userdata;
    return read(fd, buf, len);
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    const struct fuse_out_header *out = iov[0].iov_base;
    if (init_unique != 0 && out->unique == init_unique) {
        init_unique = 0;
        struct fuse_init_out *init = count > 1 ? iov[1].iov_base : NULL;
        size_t size = count > 1 ? iov[1].iov_len : 0;
        if (out->error == 0 && size >= offsetof(struct fuse_init_out, flags) + sizeof(uint32_t)) {
            if (!LIBFUSE_KNOWS_KILLPRIV_V2 && kernel_offers_killpriv_v2) {
                init->flags |= FUSE_HANDLE_KILLPRIV_V2;
                killpriv_v2_added = 1;
            }
            if (kernel_offers_idmap &&
                size >= offsetof(struct fuse_init_out, flags2) + sizeof(uint32_t)) {
                init->flags |= FUSE_INIT_EXT;
                init->flags2 |= INIT_ALLOW_IDMAP_FLAGS2;
                idmap_added = 1;
            }
        }
        if (replaying_init) {
            ssize_t size = 0;
            for (int i = 0; i < count; i++)
                size += (ssize_t)iov[i].iov_len;
            return size;
        }
    }
    (void)userdata;
    return writev(fd, iov, count);
}

/* libfuse offers SPLICE_WRITE to a custom I/O only with this. */
static ssize_t io_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
                              unsigned int flags, void *userdata)
{
    (void)userdata;
    return splice(fdin, offin, fdout, offout, len, flags);
}

static void replay_init(struct fuse_session *se);
static int open_handoff(void);

/* pyfuse3 mounts through here, so that an older libfuse's session gets
 * the custom I/O above once it has its fd, and the workers start. */
int fuse_session_mount(struct fuse_session *se, const char *mountpoint)
{
    mount_fn real = (mount_fn)dlvsym(RTLD_NEXT, "fuse_session_mount", "FUSE_3.0");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    int res = real(se, mountpoint);
    if (res == 0)
        session = se;
    static const struct fuse_custom_io io = {
        .writev = io_writev, .read = io_read, .splice_send = io_splice_send};
    if (res == 0)
        /* If this fails the session keeps plain I/O, without what io_writev adds. */
        fuse_session_custom_io(se, &io, real_session_fd(se));
    if (res == 0 && taking_over) {
        replay_init(se);
        if (workers_wanted > 0) { /* so pyfuse3 reads what resume() queues */
            open_handoff();
        } else { /* the old daemon's workers left the fd non-blocking */
            int flags = fcntl(real_session_fd(se), F_GETFL);
            if (flags >= 0)
                fcntl(real_session_fd(se), F_SETFL, flags & ~O_NONBLOCK);
        }
    } else if (res == 0) {
        start_workers(se);
    }
    return res;
}

/* The kernel asks for security.capability before a write, to know whether
 * the write must drop it: before every write without handle_killpriv_v2,
 * and with it before a file's first.  With ACLs on, it asks for an inode's
 * access ACL when it checks a caller outside the owner class.  Until some
 * file is given one of these, the answer (ENODATA) is known here, without
 * the round trip through Python. */
static const char *const answered_until_set[] = {
    "security.capability", "system.posix_acl_access", "system.posix_acl_default"};
#define N_ANSWERED (sizeof answered_until_set / sizeof answered_until_set[0])
static int names_set[N_ANSWERED];

static int answered_here(const char *name)
{
    for (size_t i = 0; i < N_ANSWERED; i++)
        if (strcmp(name, answered_until_set[i]) == 0)
            return !names_set[i];
    return 0;
}

static void shim_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
                          size_t size)
{
    if (answered_here(name))
        fuse_reply_err(req, ENODATA);
    else
        pyfuse3_getxattr(req, ino, name, size);
}

static void shim_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
                          const char *value, size_t size, int flags)
{
    /* A default ACL passes on access ACLs that no setxattr brings. */
    int acl = strncmp(name, "system.posix_acl_", 17) == 0;
    for (size_t i = 0; i < N_ANSWERED; i++)
        if (strcmp(name, answered_until_set[i]) == 0 ||
            (acl && strncmp(answered_until_set[i], "system.posix_acl_", 17) == 0))
            names_set[i] = 1;
    pyfuse3_setxattr(req, ino, name, value, size, flags);
}

/* The opcodes served here, with the ops-table entry that serves each.  The
 * receive loop and the patched table both come from this one list. */
#define SERVED_IN_C(X)                           \
    X(FUSE_READ, read, shim_read)                \
    X(FUSE_WRITE, write_buf, shim_write_buf)     \
    X(FUSE_FALLOCATE, fallocate, shim_fallocate) \
    X(FUSE_LSEEK, lseek, shim_lseek)             \
    X(FUSE_LOOKUP, lookup, shim_lookup)          \
    X(FUSE_GETATTR, getattr, shim_getattr)       \
    X(FUSE_CREATE, create, shim_create)          \
    X(FUSE_UNLINK, unlink, shim_unlink)          \
    X(FUSE_IOCTL, ioctl, shim_ioctl)             \
    X(FUSE_RELEASE, release, shim_release)

/*
 * STATX
 *
 * The kernel asks FUSE_STATX when a program wants the birth time, and
 * remembers ENOSYS, which libfuse answers, as "no statx" for the
 * connection.  So holefs answers it here, in the kernel's own form (the
 * kernel's header has it only from 6.6, hence the copy), with the
 * attributes that GETATTR gives and the birth time.
 */
#define OPCODE_STATX 52
#define STATX_BASIC 0x7ffU
#define STATX_BIRTH 0x800U

struct sx_time {
    int64_t sec;
    uint32_t nsec;
    int32_t reserved;
};

struct statx_in {
    uint32_t getattr_flags, reserved;
    uint64_t fh;
    uint32_t sx_flags, sx_mask;
};

struct statx_out {
    uint64_t attr_valid;
    uint32_t attr_valid_nsec, flags;
    uint64_t spare[2];
    struct {
        uint32_t mask, blksize;
        uint64_t attributes;
        uint32_t nlink, uid, gid;
        uint16_t mode, spare0;
        uint64_t ino, size, blocks, attributes_mask;
        struct sx_time atime, btime, ctime, mtime;
        uint32_t rdev_major, rdev_minor, dev_major, dev_minor;
        uint64_t spare2[14];
    } stat;
};
_Static_assert(sizeof(struct statx_out) == 32 + 256, "the kernel's struct fuse_statx_out");

static struct sx_time sx_time(struct timespec ts)
{
    return (struct sx_time){.sec = ts.tv_sec, .nsec = (uint32_t)ts.tv_nsec};
}

static int statx_of(uint64_t ino, struct statx_out *out)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int err = 0;
    struct stat st;
    struct timespec btime;
    PyObject *result = call(statx_cb, &err, "(K)", (unsigned long long)ino);
    PyObject *attributes, *birth;
    if (result != NULL) {
        if (!PyArg_ParseTuple(result, "OO;statx", &attributes, &birth))
            err = handler_errno(statx_cb);
        else
            err = -to_stat(statx_cb, attributes, &st);
        if (!err && to_timespec(birth, &btime) < 0)
            err = handler_errno(statx_cb);
    }
    Py_XDECREF(result);
    PyGILState_Release(gil);
    if (err)
        return err;
    memset(out, 0, sizeof *out);
    out->attr_valid = (uint64_t)cache_timeout;
    out->attr_valid_nsec = (uint32_t)((cache_timeout - (double)out->attr_valid) * 1e9);
    out->stat.mask = STATX_BASIC | STATX_BIRTH;
    out->stat.blksize = (uint32_t)st.st_blksize;
    out->stat.nlink = (uint32_t)st.st_nlink;
    out->stat.uid = st.st_uid;
    out->stat.gid = st.st_gid;
    out->stat.mode = (uint16_t)st.st_mode;
    out->stat.ino = st.st_ino;
    out->stat.size = (uint64_t)st.st_size;
    out->stat.blocks = (uint64_t)st.st_blocks;
    out->stat.atime = sx_time(st.st_atim);
    out->stat.btime = sx_time(btime);
    out->stat.ctime = sx_time(st.st_ctim);
    out->stat.mtime = sx_time(st.st_mtim);
    out->stat.rdev_major = major(st.st_rdev);
    out->stat.rdev_minor = minor(st.st_rdev);
    return 0;
}

static void serve_statx(struct fuse_session *se, const struct fuse_buf *buf)
{
    const struct fuse_in_header *in = buf->mem;
    struct statx_out out;
    int err = in->len < sizeof *in + sizeof(struct statx_in) ? EIO : statx_of(in->nodeid, &out);
    struct fuse_out_header header = {
        .len = (uint32_t)(sizeof header + (err ? 0 : sizeof out)),
        .error = -err,
        .unique = in->unique,
    };
    struct iovec iov[2] = {{&header, sizeof header}, {&out, sizeof out}};
    /* ENOENT: the caller was interrupted and is gone; nothing to answer. */
    while (writev(real_session_fd(se), iov, err ? 1 : 2) < 0 && errno == EINTR)
        ;
}

/* Serve a request that served_here() took. */
static void serve(struct fuse_session *se, const struct fuse_buf *buf)
{
    if (((const struct fuse_in_header *)buf->mem)->opcode == OPCODE_STATX)
        serve_statx(se, buf);
    else
        real_process(se, buf);
}

static int served_here(const struct fuse_buf *buf)
{
    const struct fuse_in_header *in = buf->mem;
    if (buf->flags & FUSE_BUF_IS_FD || buf->size < sizeof *in)
        return 0;
    switch (in->opcode) {
#define CASE(opcode, field, handler) case opcode:
    SERVED_IN_C(CASE)
#undef CASE
    case FUSE_TMPFILE:
    case OPCODE_STATX:
        return 1;
    case FUSE_GETXATTR:
        return in->len > sizeof *in + sizeof(struct fuse_getxattr_in) &&
               ((const char *)buf->mem)[in->len - 1] == '\0' &&
               answered_here((const char *)(in + 1) + sizeof(struct fuse_getxattr_in));
    default:
        return 0;
    }
}

/* The inode whose set-ID bits and capability a request asks holefs to
 * drop before serving it, or 0, with the *request* named for drop_setid.
 * The kernel marks a write, truncate or O_TRUNC open by a caller without
 * CAP_FSETID, and every chown.  It does not mark a fallocate, which tmpfs
 * treats as a write: for that one, holefs looks at the caller's
 * capability itself. */
static uint64_t setid_to_drop(const struct fuse_in_header *in, const char **request)
{
    const void *arg = in + 1;
    size_t size = in->len - sizeof *in;
    switch (in->opcode) {
    case FUSE_WRITE:
        *request = "write";
        return size >= sizeof(struct fuse_write_in) &&
               ((const struct fuse_write_in *)arg)->write_flags & FUSE_WRITE_KILL_SUIDGID
               ? in->nodeid : 0;
    case FUSE_SETATTR:
        *request = "setattr";
        return size >= sizeof(struct fuse_setattr_in) &&
               ((const struct fuse_setattr_in *)arg)->valid & FATTR_KILL_SUIDGID
               ? in->nodeid : 0;
    case FUSE_OPEN:
        *request = "open";
        return size >= sizeof(struct fuse_open_in) &&
               ((const struct fuse_open_in *)arg)->open_flags & FUSE_OPEN_KILL_SUIDGID
               ? in->nodeid : 0;
    case FUSE_FALLOCATE:
        *request = "fallocate";
        return in->nodeid;
    default:
        return 0;
    }
}

static void drop_setid_as_asked(const struct fuse_in_header *in)
{
    const char *request = NULL;
    uint64_t inode = setid_to_drop(in, &request);
    if (inode != 0 && drop_setid_cb != NULL) {
        int err;
        PyGILState_STATE gil = PyGILState_Ensure();
        /* An OSError leaves the bits alone (the inode is gone); the request
         * still goes on and gets its own answer. */
        Py_XDECREF(call(drop_setid_cb, &err, "(KIIIs)", (unsigned long long)inode,
                        in->uid, in->gid, in->pid, request));
        PyGILState_Release(gil);
    }
}

/* What every request needs before libfuse dispatches it: INIT's offer is
 * noted, set-ID bits are dropped where the kernel asks, and a TMPFILE
 * becomes the CREATE that it is in form (the same arguments, the same
 * reply, the name "/"): pyfuse3 has no handler for it, nor libfuse
 * before 3.17 an entry. */
static void before_dispatch(const struct fuse_buf *buf)
{
    struct fuse_in_header *in = buf->mem;
    if (buf->flags & FUSE_BUF_IS_FD || buf->size < sizeof *in || in->len > buf->size ||
        in->len < sizeof *in)
        return;
    if (in->opcode == FUSE_TMPFILE) {
        const char *name = (const char *)(in + 1) + sizeof(struct fuse_create_in);
        if (in->len >= sizeof *in + sizeof(struct fuse_create_in) + sizeof TMPFILE_NAME &&
            memcmp(name, TMPFILE_NAME, sizeof TMPFILE_NAME) == 0)
            in->opcode = FUSE_CREATE;
        return;
    }
    if (in->opcode == FUSE_INIT && in->len >= sizeof *in + sizeof(struct fuse_init_in)) {
        const struct fuse_init_in *init = (const void *)(in + 1);
        kernel_offers_killpriv_v2 = (init->flags & FUSE_HANDLE_KILLPRIV_V2) != 0;
        kernel_offers_idmap = init->flags & FUSE_INIT_EXT &&
                              init->flags2 & INIT_ALLOW_IDMAP_FLAGS2;
        init_unique = in->unique;
        init_request_size = in->len < sizeof init_request ? in->len : sizeof init_request;
        memmove(init_request, in, init_request_size);
        return;
    }
    drop_setid_as_asked(in);
}

/* How long, and for how many requests, a stream of reads and writes may be
 * served here before trio gets the thread back for its other tasks. */
#define STREAM_WAIT_MS 1
#define STREAM_MAX 64

static int next_request_within(int fd, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int ready;
    Py_BEGIN_ALLOW_THREADS
    ready = poll(&pfd, 1, ms);
    Py_END_ALLOW_THREADS
    return ready == 1 && (pfd.revents & POLLIN);
}

/* pyfuse3's loop waits for the fd in trio and then receives one request.
 * When that request is one the shim serves synchronously, serve it here and
 * take the next one if it comes at once, as it does from a process doing
 * I/O in a loop: each request then costs a read and a reply, not a pass
 * through trio's scheduler.  Anything else goes back to pyfuse3, and so
 * does the thread after STREAM_MAX requests or an idle STREAM_WAIT_MS,
 * with -EINTR, which makes pyfuse3 wait for the fd again. */
static int receive_and_serve(struct fuse_session *se, struct fuse_buf *buf)
{
    for (int served = 0;; served++) {
        int res = real_receive(se, buf);
        if (res <= 0)
            return res;
        before_dispatch(buf);
        if (!served_here(buf))
            return res;
        serve(se, buf);
        if (served == STREAM_MAX || fuse_session_exited(se) ||
            !next_request_within(real_session_fd(se), STREAM_WAIT_MS))
            return -EINTR;
    }
}

/*
 * WORKER THREADS
 *
 * With workers, they alone read the session's fd, each waiting in poll(2)
 * without the GIL, and they serve the requests of SERVED_IN_C themselves,
 * so that two clients' reads and writes are served at once and the
 * wake-ups of the round trip (most of its cost) overlap.  The handlers
 * still run under the GIL; Python serializes them against the trio thread
 * with a lock of its own (state.MountState.lock).  Every other request is
 * handed over to pyfuse3 on the trio thread: pyfuse3 waits on an eventfd
 * (fuse_session_fd below answers with it), and receives from the queue.
 * Replies go to the one fd whichever thread sends them, so no request
 * needs to know which thread read it.  A worker's buffer holds the largest
 * request INIT allows (shim_init caps max_write to fit).
 *
 * The fd is non-blocking, and a worker that finds nothing to read polls it
 * beside stop_fd: so workers leave (unmount, a hand-over's pause) between
 * requests, never holding one.  Cancelled in read(2) instead, they lost
 * requests under load (glibc 2.36): a cancel that arrives as read returns
 * acts on it, and the request read is never answered.
 */

struct handed_over {
    struct handed_over *next;
    void *mem;   /* NULL: the session ended */
    size_t size;
};

static int workers_running;
static pthread_t workers[WORKERS_MAX];
static int session_fd = -1;
static int stop_fd = -1;      /* an eventfd, readable once the workers must leave */
static int workers_stopping;  /* atomic; checked before each request */
static int handoff_fd = -1;
static pthread_mutex_t handoff_lock = PTHREAD_MUTEX_INITIALIZER;
static struct handed_over *handoff_head, **handoff_tail = &handoff_head;

/* Queue a request for the trio thread and wake it; mem becomes its.  Out
 * of memory, the request stays unanswered, as libfuse leaves it then. */
static void hand_over(void *mem, size_t size)
{
    struct handed_over *item = malloc(sizeof *item);
    if (item == NULL) {
        free(mem);
        return;
    }
    *item = (struct handed_over){NULL, mem, size};
    pthread_mutex_lock(&handoff_lock);
    *handoff_tail = item;
    handoff_tail = &item->next;
    pthread_mutex_unlock(&handoff_lock);
    uint64_t one = 1;
    while (write(handoff_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

/* The next handed-over request, for pyfuse3's receive on the trio thread. */
static int receive_handed_over(struct fuse_session *se, struct fuse_buf *buf)
{
    uint64_t count;
    if (read(handoff_fd, &count, sizeof count) != sizeof count)
        return -EINTR; /* a wake-up with nothing queued: pyfuse3 waits again */
    pthread_mutex_lock(&handoff_lock);
    struct handed_over *item = handoff_head;
    handoff_head = item->next;
    if (handoff_head == NULL)
        handoff_tail = &handoff_head;
    pthread_mutex_unlock(&handoff_lock);
    if (item->mem == NULL) {
        free(item);
        fuse_session_exit(se);
        return 0;
    }
    free(buf->mem);
    buf->mem = item->mem;
    buf->size = item->size;
    buf->flags = 0;
    free(item);
    before_dispatch(buf);
    return (int)buf->size;
}

struct worker {
    PyGILState_STATE gil;
    PyThreadState *thread; /* kept while the GIL is away, so taking it is cheap */
    void *mem;
    int pipe[2]; /* for spliced receive; -1 without */
};

/*
 * SPLICED RECEIVE
 *
 * Where a worker's pipe can hold the largest request (pipes of 2 MiB, as
 * for READ REPLIES), it receives by splice(2): the kernel then hands over
 * the data of a buffered WRITE as references to the page-cache pages that
 * hold it, where read(2) copied it into the worker's buffer.  The header
 * is read out of the pipe; a WRITE's data stays there, and the write
 * handler gets a Spliced object for it, whose splice_into() moves it into
 * the tier slot it picks, in order (one copy); the bytes never reach
 * Python, and what the handler did not take is drained before the reply,
 * which the shim sends itself.  Every other request, and an O_DIRECT
 * WRITE (whose reply waits for DIRECT WRITES' invalidation), is read out
 * whole and goes on as before.
 */
#define SPLICE_WRITE_MIN (2 * 4096) /* a smaller write is read out whole */

typedef struct Spliced {
    PyObject_HEAD
    struct Spliced *whole; /* a slice's whole, referenced; NULL in the whole */
    int fd;                /* the whole's: the pipe, -1 once the request is done */
    size_t start, length;  /* in bytes of the data */
    size_t taken;          /* the whole's: how much has left the pipe */
} Spliced;

static PyTypeObject SplicedType;

static Spliced *spliced_whole(Spliced *self)
{
    return self->whole != NULL ? self->whole : self;
}

static void spliced_dealloc(PyObject *self)
{
    Py_XDECREF(((Spliced *)self)->whole);
    Py_TYPE(self)->tp_free(self);
}

static Py_ssize_t spliced_length(PyObject *self)
{
    return (Py_ssize_t)((Spliced *)self)->length;
}

static PyObject *spliced_subscript(PyObject *self, PyObject *key)
{
    Spliced *s = (Spliced *)self;
    Py_ssize_t start, stop, step;
    if (!PySlice_Check(key) || PySlice_Unpack(key, &start, &stop, &step) < 0 || step != 1)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_TypeError, "only [a:b] slices");
    Py_ssize_t n = PySlice_AdjustIndices((Py_ssize_t)s->length, &start, &stop, step);
    Spliced *part = PyObject_New(Spliced, &SplicedType);
    if (part == NULL)
        return NULL;
    part->whole = spliced_whole(s);
    Py_INCREF(part->whole);
    part->fd = -1;
    part->start = s->start + (size_t)start;
    part->length = (size_t)n;
    part->taken = 0;
    return (PyObject *)part;
}

/* Whether *self* is next in the pipe; else an exception is set. */
static Spliced *spliced_next(Spliced *self)
{
    Spliced *whole = spliced_whole(self);
    if (whole->fd < 0)
        return PyErr_Format(PyExc_ValueError, "the request is done"), NULL;
    if (self->start != whole->taken)
        return PyErr_Format(PyExc_ValueError, "data at %zu taken out of order (%zu is next)",
                            self->start, whole->taken), NULL;
    return whole;
}

static PyObject *spliced_splice_into(PyObject *self, PyObject *args)
{
    Spliced *s = (Spliced *)self;
    int fd;
    long long offset;
    if (!PyArg_ParseTuple(args, "iL", &fd, &offset))
        return NULL;
    Spliced *whole = spliced_next(s);
    if (whole == NULL)
        return NULL;
    loff_t at = offset;
    size_t done = 0;
    ssize_t n = 0;
    Py_BEGIN_ALLOW_THREADS
    while (done < s->length &&
           (n = splice(whole->fd, NULL, fd, &at, s->length - done, 0)) > 0)
        done += (size_t)n;
    Py_END_ALLOW_THREADS
    whole->taken += done;
    if (n < 0 && done == 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromSize_t(done);
}

static PyObject *spliced_bytes(PyObject *self, PyObject *unused)
{
    Spliced *s = (Spliced *)self;
    Spliced *whole = spliced_next(s);
    if (whole == NULL)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)s->length);
    if (out == NULL)
        return NULL;
    size_t done = 0;
    ssize_t n = 0;
    Py_BEGIN_ALLOW_THREADS
    while (done < s->length &&
           (n = read(whole->fd, PyBytes_AS_STRING(out) + done, s->length - done)) > 0)
        done += (size_t)n;
    Py_END_ALLOW_THREADS
    whole->taken += done;
    if (done < s->length) {
        Py_DECREF(out);
        return PyErr_Format(PyExc_OSError, "the pipe gave %zu of %zu bytes", done, s->length);
    }
    return out;
}

static PyMappingMethods spliced_mapping = {
    .mp_length = spliced_length,
    .mp_subscript = spliced_subscript,
};

static PyMethodDef spliced_methods[] = {
    {"splice_into", spliced_splice_into, METH_VARARGS,
     "splice_into(fd, offset): move these bytes from the pipe to fd at\n"
     "offset, in order; return how many moved."},
    {"__bytes__", spliced_bytes, METH_NOARGS, "These bytes, out of the pipe."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SplicedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "holefs.daemon._shim.Spliced",
    .tp_doc = "A WRITE's data, still in the worker's pipe (SPLICED RECEIVE).",
    .tp_basicsize = sizeof(Spliced),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = spliced_dealloc,
    .tp_as_mapping = &spliced_mapping,
    .tp_methods = spliced_methods,
};

static int open_receive_pipe(int fds[2])
{
    if (pipe_room >= PIPE_WANTED && pipe2(fds, O_CLOEXEC) == 0) {
        if (fcntl(fds[0], F_SETPIPE_SZ, PIPE_WANTED) >= PIPE_WANTED)
            return 1;
        close(fds[0]);
        close(fds[1]);
    }
    fds[0] = fds[1] = -1;
    return 0;
}

static int read_exactly(int fd, char *buf, size_t size)
{
    while (size > 0) {
        ssize_t n = read(fd, buf, size);
        if (n <= 0)
            return -1;
        buf += n;
        size -= (size_t)n;
    }
    return 0;
}

/* One request by splice: what is in w->mem, and in *data the bytes of a
 * WRITE's data left in the pipe.  A pipe that misbehaves is given up: the
 * worker reads from then on. */
static ssize_t receive_spliced(struct worker *w, size_t *data)
{
    *data = 0;
    ssize_t n = splice(session_fd, NULL, w->pipe[1], NULL, WORKER_BUFFER, 0);
    if (n <= 0)
        return n;
    struct fuse_in_header *in = w->mem;
    const size_t first = sizeof *in + sizeof(struct fuse_write_in);
    /* A WRITE's header and arguments fill the pipe's first buffer alone. */
    ssize_t got = read(w->pipe[0], w->mem, first);
    if (got >= (ssize_t)sizeof *in && in->len == (size_t)n) {
        const struct fuse_write_in *arg = (const void *)(in + 1);
        if (in->opcode == FUSE_WRITE && got == (ssize_t)first &&
            in->len >= first + SPLICE_WRITE_MIN && !(arg->flags & O_DIRECT)) {
            *data = in->len - first;
            return (ssize_t)first;
        }
        if (read_exactly(w->pipe[0], (char *)w->mem + got, in->len - (size_t)got) == 0)
            return n;
    }
    fprintf(stderr, "holefs: spliced receive failed; reading requests from now on\n");
    close(w->pipe[0]);
    close(w->pipe[1]);
    w->pipe[0] = w->pipe[1] = -1;
    errno = EIO;
    return -1;
}

/* Serve a WRITE whose data is in the pipe, and answer it. */
static void serve_spliced_write(struct worker *w, size_t size)
{
    const struct fuse_in_header *in = w->mem;
    const struct fuse_write_in *arg = (const void *)(in + 1);
    drop_setid_as_asked(in);
    long long ret = -ENOMEM;
    size_t left = size;
    PyGILState_STATE gil = PyGILState_Ensure();
    Spliced *data = PyObject_New(Spliced, &SplicedType);
    if (data != NULL) {
        *data = (Spliced){.ob_base = data->ob_base, .fd = w->pipe[0], .length = size};
        int err;
        ret = as_result(write_cb, call(write_cb, &err, "(KLOOI)", (unsigned long long)arg->fh,
                                       (long long)arg->offset, (PyObject *)data,
                                       arg->write_flags & FUSE_WRITE_CACHE ? Py_True : Py_False,
                                       (unsigned int)in->pid), &err);
        data->fd = -1;
        left -= data->taken;
        Py_DECREF(data);
    } else {
        PyErr_Clear();
    }
    PyGILState_Release(gil);
    char *scratch = (char *)w->mem + 4096;
    while (left > 0) {
        size_t part = left < WORKER_BUFFER - 4096 ? left : WORKER_BUFFER - 4096;
        ssize_t n = read(w->pipe[0], scratch, part);
        if (n <= 0)
            break;
        left -= (size_t)n;
    }
    if (left > 0) { /* the next request would follow the rest: give the pipe up */
        close(w->pipe[0]);
        close(w->pipe[1]);
        w->pipe[0] = w->pipe[1] = -1;
    }
    struct fuse_out_header header = {
        .len = sizeof header + (ret < 0 ? 0 : sizeof(struct fuse_write_out)),
        .error = ret < 0 ? (int32_t)ret : 0,
        .unique = in->unique,
    };
    struct fuse_write_out out = {.size = ret < 0 ? 0 : (uint32_t)ret};
    struct iovec iov[2] = {{&header, sizeof header}, {&out, sizeof out}};
    /* ENOENT: the caller was interrupted and is gone; nothing to answer. */
    while (writev(session_fd, iov, ret < 0 ? 1 : 2) < 0 && errno == EINTR)
        ;
}

static void worker_exit(struct worker *w)
{
    free(w->mem);
    if (w->pipe[0] >= 0) {
        close(w->pipe[0]);
        close(w->pipe[1]);
    }
    PyEval_RestoreThread(w->thread);
    PyGILState_Release(w->gil);
}

/* The next request, or -1 with errno ECANCELED once the workers must leave. */
static ssize_t receive(struct worker *w, size_t *spliced)
{
    for (;;) {
        ssize_t n = w->pipe[0] >= 0 ? receive_spliced(w, spliced)
                                    : read(session_fd, w->mem, WORKER_BUFFER);
        if (n >= 0 || errno != EAGAIN)
            return n;
        struct pollfd fds[2] = {{.fd = session_fd, .events = POLLIN},
                                {.fd = stop_fd, .events = POLLIN}};
        if (poll(fds, 2, -1) < 0 && errno != EINTR)
            return -1;
        if (fds[1].revents) {
            errno = ECANCELED;
            return -1;
        }
    }
}

/* One worker: read, serve or hand over, until the session ends or the
 * workers are stopped. */
static void *worker_main(void *unused)
{
    struct worker w;
    w.gil = PyGILState_Ensure();
    w.thread = PyEval_SaveThread();
    w.mem = malloc(WORKER_BUFFER);
    open_receive_pipe(w.pipe);
    is_worker = 1;
    while (w.mem != NULL && !__atomic_load_n(&workers_stopping, __ATOMIC_SEQ_CST)) {
        size_t spliced = 0;
        __atomic_add_fetch(&workers_reading, 1, __ATOMIC_SEQ_CST);
        ssize_t n = receive(&w, &spliced);
        __atomic_sub_fetch(&workers_reading, 1, __ATOMIC_SEQ_CST);
        if (n < 0) {
            if (errno == ECANCELED)
                break;
            if (errno == EINTR || errno == ENOENT || errno == EIO)
                continue;
            hand_over(NULL, 0); /* ENODEV: unmounted, or the connection aborted */
            break;
        }
        if (spliced) {
            serve_spliced_write(&w, spliced);
            continue;
        }
        struct fuse_buf buf = {.mem = w.mem, .size = (size_t)n};
        if (served_here(&buf)) {
            before_dispatch(&buf);
            serve(session, &buf);
        } else {
            /* A copy of its own size: a namespace request is small. */
            void *request = malloc((size_t)n);
            if (request != NULL) {
                memcpy(request, w.mem, (size_t)n);
                hand_over(request, (size_t)n);
            }
        }
    }
    worker_exit(&w);
    (void)unused;
    return NULL;
}

/* The eventfd that pyfuse3 waits on for handed-over requests.  It must
 * exist before pyfuse3.init() returns: pyfuse3 asks fuse_session_fd() once. */
static int open_handoff(void)
{
    if (handoff_fd < 0)
        handoff_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE);
    return handoff_fd;
}

/* Start the workers on a mounted session; with none, the trio thread
 * reads the fd itself, as before. */
static void start_workers(struct fuse_session *se)
{
    if (workers_wanted == 0 || open_handoff() < 0)
        return;
    session_fd = real_session_fd(se);
    if (stop_fd < 0)
        stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int flags = fcntl(session_fd, F_GETFL);
    if (stop_fd < 0 || flags < 0 || fcntl(session_fd, F_SETFL, flags | O_NONBLOCK) < 0)
        workers_wanted = 0;
    while (workers_running < workers_wanted &&
           pthread_create(&workers[workers_running], NULL, worker_main, NULL) == 0)
        pthread_setname_np(workers[workers_running++], "holefs-worker");
    if (workers_running == 0 && handoff_head == NULL) { /* no threads: trio's reads */
        close(handoff_fd);
        handoff_fd = -1;
    }
}

/* Make the workers leave once the request each serves is answered, and
 * wait for them. */
static void join_workers(void)
{
    __atomic_store_n(&workers_stopping, 1, __ATOMIC_SEQ_CST);
    uint64_t one = 1;
    while (write(stop_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
    int have_gil = PyGILState_Check();
    PyThreadState *thread = have_gil ? PyEval_SaveThread() : NULL;
    for (int i = 0; i < workers_running; i++)
        pthread_join(workers[i], NULL);
    if (have_gil)
        PyEval_RestoreThread(thread);
    workers_running = 0;
    uint64_t count;
    while (read(stop_fd, &count, sizeof count) < 0 && errno == EINTR)
        ;
    __atomic_store_n(&workers_stopping, 0, __ATOMIC_SEQ_CST);
}

/* Stop the workers, at the session's end, and drop what they queued. */
static void stop_workers(void)
{
    join_workers();
    while (handoff_head != NULL) {
        struct handed_over *item = handoff_head;
        handoff_head = item->next;
        free(item->mem);
        free(item);
    }
    handoff_tail = &handoff_head;
    close(handoff_fd);
    handoff_fd = -1;
}

int fuse_session_receive_buf(struct fuse_session *se, struct fuse_buf *buf)
{
    if (real_receive == NULL || real_process == NULL || real_session_fd == NULL)
        return -ENOSYS;
    if (paused)
        return -EINTR;
    return handoff_fd >= 0 ? receive_handed_over(se, buf) : receive_and_serve(se, buf);
}

/* pyfuse3 waits on what this returns: the eventfd when workers read. */
int fuse_session_fd(struct fuse_session *se)
{
    if (handoff_fd >= 0 && se == session)
        return handoff_fd;
    return real_session_fd ? real_session_fd(se) : -1;
}

void fuse_session_destroy(struct fuse_session *se)
{
    destroy_fn real = (destroy_fn)dlvsym(RTLD_NEXT, "fuse_session_destroy", "FUSE_3.0");
    if (se == session) {
        if (handoff_fd >= 0)
            stop_workers();
        stop_invalidator();
        session = NULL;
    }
    if (real != NULL)
        real(se);
}

/*
 * HAND-OVER
 *
 * A successor daemon takes the session over (holefs/daemon/handover.py).
 * The serving daemon pauses: its workers leave once the request each
 * serves is answered, so none takes one it does not serve; the invalidator
 * answers the O_DIRECT writes it holds; and the requests queued for the
 * trio thread, not yet served, are taken out for the successor to serve
 * first.  From then on, until resume(), nothing reads the fd, and the
 * kernel keeps new requests waiting.
 *
 * The kernel sends INIT once per connection, and libfuse answers nothing
 * else until it has seen one.  So the successor replays the old daemon's
 * INIT request through its own session, and drops the reply, which the
 * kernel already has (io_writev).  Its session then settles what the old
 * one did, if it is the same holefs on the same libfuse: settled() lets the
 * two compare.  It starts no workers until resume().
 */

static void replay_init(struct fuse_session *se)
{
    void *mem = malloc(init_request_size);
    if (mem == NULL)
        return; /* then settled() shows no INIT, and the successor refuses */
    memcpy(mem, init_request, init_request_size);
    struct fuse_buf buf = {.mem = mem, .size = init_request_size};
    before_dispatch(&buf);
    replaying_init = 1;
    real_process(se, &buf);
    replaying_init = 0;
    free(mem);
}

static PyObject *shim_take_over(PyObject *self, PyObject *args)
{
    const char *request;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y#", &request, &size))
        return NULL;
    const struct fuse_in_header *in = (const void *)request;
    if ((size_t)size < sizeof *in + sizeof(struct fuse_init_in) ||
        (size_t)size > sizeof init_request || in->opcode != FUSE_INIT || in->len != size)
        return PyErr_Format(PyExc_ValueError, "not an INIT request (%zd bytes)", size);
    memcpy(init_request, request, (size_t)size);
    init_request_size = (size_t)size;
    taking_over = 1;
    Py_RETURN_NONE;
}

static PyObject *shim_init_request(PyObject *self, PyObject *unused)
{
    return PyBytes_FromStringAndSize((const char *)init_request, (Py_ssize_t)init_request_size);
}

static PyObject *shim_connection_fd(PyObject *self, PyObject *unused)
{
    if (session == NULL)
        return PyErr_Format(PyExc_RuntimeError, "not mounted");
    return PyLong_FromLong(real_session_fd(session));
}

static PyObject *shim_settled(PyObject *self, PyObject *unused)
{
    if (conn_info == NULL)
        Py_RETURN_NONE;
    return Py_BuildValue("{s:K,s:I,s:I,s:i,s:i}", "want", (unsigned long long)negotiated(),
                         "max_write", conn_info->max_write, "max_readahead",
                         conn_info->max_readahead, "killpriv_v2_added", killpriv_v2_added,
                         "idmap_added", idmap_added);
}

static PyObject *shim_pause(PyObject *self, PyObject *unused)
{
    if (session == NULL)
        return PyErr_Format(PyExc_RuntimeError, "not mounted");
    if (workers_wanted > 0 && (handoff_fd < 0 || workers_running == 0))
        return PyErr_Format(PyExc_RuntimeError, "not served by workers");
    paused = 1;
    if (workers_wanted == 0) /* trio's thread alone reads, and it is the caller */
        return PyList_New(0);
    join_workers();
    stop_invalidator();
    pthread_mutex_lock(&handoff_lock);
    struct handed_over *item = handoff_head;
    handoff_head = NULL;
    handoff_tail = &handoff_head;
    pthread_mutex_unlock(&handoff_lock);
    uint64_t count;
    while (read(handoff_fd, &count, sizeof count) == sizeof count)
        ; /* the wake-ups of the requests taken out */
    PyObject *queued = PyList_New(0);
    int ended = 0;
    while (item != NULL) {
        struct handed_over *next = item->next;
        if (item->mem == NULL) {
            ended = 1;
        } else if (queued != NULL) {
            PyObject *request = PyBytes_FromStringAndSize(item->mem, (Py_ssize_t)item->size);
            if (request == NULL || PyList_Append(queued, request) < 0)
                Py_CLEAR(queued);
            Py_XDECREF(request);
        }
        free(item->mem);
        free(item);
        item = next;
    }
    if (queued == NULL || ended) {
        /* Out of memory, serve on; ended by the kernel, let pyfuse3 see it. */
        paused = 0;
        if (ended)
            hand_over(NULL, 0);
        else
            start_workers(session);
        Py_XDECREF(queued);
        return ended ? PyErr_Format(PyExc_RuntimeError, "the session ended") : NULL;
    }
    return queued;
}

static PyObject *shim_resume(PyObject *self, PyObject *queued)
{
    if (session == NULL || !PyList_Check(queued))
        return PyErr_Format(PyExc_TypeError, "resume(queued) takes a list, once mounted");
    taking_over = 0;
    paused = 0;
    if (workers_wanted == 0) {
        if (PyList_GET_SIZE(queued) > 0)
            return PyErr_Format(PyExc_ValueError, "requests queued for a session without workers");
        Py_RETURN_NONE;
    }
    if (open_handoff() < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(queued); i++) {
        char *data;
        Py_ssize_t size;
        if (PyBytes_AsStringAndSize(PyList_GET_ITEM(queued, i), &data, &size) < 0)
            return NULL;
        void *request = malloc((size_t)size);
        if (request == NULL)
            return PyErr_NoMemory();
        memcpy(request, data, (size_t)size);
        hand_over(request, (size_t)size);
    }
    start_workers(session);
    if (workers_running == 0)
        return PyErr_Format(PyExc_RuntimeError, "no worker thread could start");
    Py_RETURN_NONE;
}

/* pyfuse3's table with holefs's entries in it. */
static const struct fuse_lowlevel_ops *patch(const struct fuse_lowlevel_ops *op,
                                             size_t op_size)
{
    if (op == &patched_ops)
        return op;
    memset(&patched_ops, 0, sizeof patched_ops);
    memcpy(&patched_ops, op,
           op_size < sizeof patched_ops ? op_size : sizeof patched_ops);
#define PATCH(opcode, field, handler) patched_ops.field = handler;
    SERVED_IN_C(PATCH)
#undef PATCH
    pyfuse3_init = patched_ops.init;
    patched_ops.init = shim_init;
    pyfuse3_getxattr = patched_ops.getxattr;
    patched_ops.getxattr = shim_getxattr;
    pyfuse3_setxattr = patched_ops.setxattr;
    patched_ops.setxattr = shim_setxattr;
    real_receive = (receive_fn)dlvsym(RTLD_NEXT, "fuse_session_receive_buf", "FUSE_3.0");
    real_process = (process_fn)dlvsym(RTLD_NEXT, "fuse_session_process_buf", "FUSE_3.0");
    real_session_fd = (session_fd_fn)dlvsym(RTLD_NEXT, "fuse_session_fd", "FUSE_3.0");
    engaged = 1;
    return &patched_ops;
}

struct fuse_session *fuse_session_new(struct fuse_args *args,
                                      const struct fuse_lowlevel_ops *op,
                                      size_t op_size, void *userdata)
{
    session_new_fn real = (session_new_fn)dlvsym(RTLD_NEXT, "fuse_session_new",
                                                 "FUSE_3.0");
    if (real == NULL) {
        errno = ENOSYS;
        return NULL;
    }
    return real(args, patch(op, op_size), sizeof patched_ops, userdata);
}

struct fuse_session *fuse_session_new_versioned(struct fuse_args *args,
                                                const struct fuse_lowlevel_ops *op,
                                                size_t op_size,
                                                struct libfuse_version *version,
                                                void *userdata)
{
    session_new_versioned_fn real = (session_new_versioned_fn)dlvsym(
        RTLD_NEXT, "fuse_session_new_versioned", "FUSE_3.17");
    if (real == NULL) {
        errno = ENOSYS;
        return NULL;
    }
    return real(args, patch(op, op_size), sizeof patched_ops, version, userdata);
}

/* The fast path's handlers, the one list of them: install() takes each by
 * name from the object it is given, and the module exports the names as
 * HANDLERS (holefs/daemon/protocol.py types them). */
static const struct {
    const char *name;
    PyObject **slot;
} fast_path[] = {
    {"read", &read_cb},       {"write", &write_cb},         {"fallocate", &fallocate_cb},
    {"lseek", &lseek_cb},     {"drop_setid", &drop_setid_cb}, {"lookup", &lookup_cb},
    {"getattr", &getattr_cb}, {"create", &create_cb},       {"tmpfile", &tmpfile_cb},
    {"unlink", &unlink_cb},   {"get_flags", &get_flags_cb}, {"set_flags", &set_flags_cb},
    {"control", &control_cb}, {"statx", &statx_cb},
};
#define N_HANDLERS (sizeof fast_path / sizeof fast_path[0])

static PyObject *handler_names(void)
{
    PyObject *names = PyTuple_New((Py_ssize_t)N_HANDLERS);
    for (size_t i = 0; names != NULL && i < N_HANDLERS; i++) {
        PyObject *name = PyUnicode_FromString(fast_path[i].name);
        if (name == NULL) {
            Py_CLEAR(names);
            break;
        }
        PyTuple_SET_ITEM(names, (Py_ssize_t)i, name);
    }
    return names;
}

static PyObject *shim_install(PyObject *self, PyObject *args)
{
    PyObject *handlers;
    int workers, writeback_cache;
    double timeout;
    if (!PyArg_ParseTuple(args, "Oidp", &handlers, &workers, &timeout, &writeback_cache))
        return NULL;
    if (workers < 0 || workers > WORKERS_MAX)
        return PyErr_Format(PyExc_ValueError, "workers must be 0 to %d", WORKERS_MAX);
    PyObject *methods[N_HANDLERS];
    for (size_t i = 0; i < N_HANDLERS; i++) {
        methods[i] = PyObject_GetAttrString(handlers, fast_path[i].name);
        if (methods[i] == NULL || !PyCallable_Check(methods[i])) {
            if (methods[i] != NULL)
                PyErr_Format(PyExc_TypeError, "handlers.%s must be callable", fast_path[i].name);
            for (size_t j = 0; j <= i; j++)
                Py_XDECREF(methods[j]);
            return NULL;
        }
    }
    for (size_t i = 0; i < N_HANDLERS; i++)
        Py_XSETREF(*fast_path[i].slot, methods[i]);
    if (zeros_fd < 0) {
        zeros_fd = memfd_create("holefs-zeros", MFD_CLOEXEC);
        if (zeros_fd >= 0 && ftruncate(zeros_fd, ZEROS_SIZE) != 0) {
            close(zeros_fd);
            zeros_fd = -1;
        }
    }
    pipe_room = largest_pipe();
    workers_wanted = workers;
    cache_timeout = timeout;
    writeback_cache_wanted = writeback_cache;
    Py_RETURN_NONE;
}

/* Tells the kernel that an inode's attributes changed behind its back.
 * A negative offset invalidates the attributes alone: the kernel takes no
 * page lock, so this is safe while a request of that inode is unanswered,
 * and it bumps the inode's attr_version, so a reply already on its way
 * with the old attributes is dropped. */
static PyObject *shim_invalidate_attributes(PyObject *self, PyObject *args)
{
    unsigned long long ino;
    if (!PyArg_ParseTuple(args, "K", &ino))
        return NULL;
    int err = 0;
    if (session != NULL) {
        Py_BEGIN_ALLOW_THREADS
        err = fuse_lowlevel_notify_inval_inode(session, (fuse_ino_t)ino, -1, 0);
        Py_END_ALLOW_THREADS
    }
    /* ENOENT: the kernel holds no copy of the inode, so none is stale. */
    if (err < 0 && err != -ENOENT) {
        errno = -err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *shim_engaged(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(engaged);
}

static PyObject *shim_negotiated(PyObject *self, PyObject *unused)
{
    if (conn_info == NULL)
        Py_RETURN_NONE;
    PyObject *out = PyDict_New();
    for (size_t i = 0; out != NULL && i < N_CAPABILITIES; i++) {
        PyObject *on = PyBool_FromLong((negotiated() & capabilities[i].flag) != 0);
        if (PyDict_SetItemString(out, capabilities[i].name, on) < 0)
            Py_CLEAR(out);
        Py_DECREF(on);
    }
    PyObject *v2 = PyBool_FromLong(killpriv_v2());
    if (out != NULL && PyDict_SetItemString(out, "handle_killpriv_v2", v2) < 0)
        Py_CLEAR(out);
    Py_DECREF(v2);
    PyObject *idmap = PyBool_FromLong(idmap_added);
    if (out != NULL && PyDict_SetItemString(out, "allow_idmap", idmap) < 0)
        Py_CLEAR(out);
    Py_DECREF(idmap);
    return out;
}

/* Whether libfuse exports an entry point, for the error when none engaged. */
static PyObject *exports(const char *name, const char *version)
{
    return PyBool_FromLong(dlvsym(RTLD_NEXT, name, version) != NULL);
}

static PyObject *shim_splicing(PyObject *self, PyObject *unused)
{
    size_t size = 0;
    if (conn_info != NULL && negotiated() & FUSE_CAP_SPLICE_WRITE && zeros_fd >= 0)
        for (size = 256 * 4096; size >= 2 * 4096 && !splice_fits(size); size -= 4096)
            ;
    int receive = workers_running && pipe_room >= PIPE_WANTED;
    return Py_BuildValue("{s:n,s:O}", "replies_up_to", (Py_ssize_t)(size >= 2 * 4096 ? size : 0),
                         "receive", receive ? Py_True : Py_False);
}

static PyObject *shim_libfuse(PyObject *self, PyObject *unused)
{
    return Py_BuildValue(
        "{s:s,s:s,s:{s:N,s:N}}",
        "version", fuse_pkgversion(),
        "headers", FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17) ? "3.17+" : "3.0-3.16",
        "entry_points",
        "fuse_session_new@FUSE_3.0", exports("fuse_session_new", "FUSE_3.0"),
        "fuse_session_new_versioned@FUSE_3.17",
        exports("fuse_session_new_versioned", "FUSE_3.17"));
}

static PyMethodDef shim_methods[] = {
    {"install", shim_install, METH_VARARGS,
     "install(handlers, workers, cache_timeout, writeback_cache): the object\n"
     "whose methods serve the requests of the fast path, how many threads\n"
     "serve them beside trio's (0: trio's thread alone), how long the kernel\n"
     "may cache names and attributes, and whether it may cache writes; see\n"
     "the contract in holefs/daemon/_shim.c."},
    {"reply_from_tiers", shim_reply_from_tiers, METH_O,
     "reply_from_tiers(pieces): answer the READ whose handler runs on this\n"
     "thread, called with splice=True, by splicing its data from files:\n"
     "each piece is (fd, offset, length), fd -1 for zeros.  Call it while\n"
     "no piece can be given to another file."},
    {"invalidate_attributes", shim_invalidate_attributes, METH_VARARGS,
     "invalidate_attributes(inode): make the kernel ask for the attributes\n"
     "of *inode* again, after holefs changed them on its own."},
    {"take_over", shim_take_over, METH_VARARGS,
     "take_over(init_request): make the next session a successor's, which\n"
     "replays the old daemon's INIT request instead of awaiting one, and\n"
     "starts no workers until resume()."},
    {"init_request", shim_init_request, METH_NOARGS,
     "The kernel's INIT request to this session, as bytes, for a successor."},
    {"connection_fd", shim_connection_fd, METH_NOARGS,
     "The session's /dev/fuse descriptor, for a successor."},
    {"settled", shim_settled, METH_NOARGS,
     "What INIT settled with the kernel, for a successor to compare; None\n"
     "before INIT."},
    {"pause", shim_pause, METH_NOARGS,
     "Stop reading requests: the workers leave, and the requests queued for\n"
     "pyfuse3 and not yet served come back, as a list of bytes.  Call it on\n"
     "trio's thread, without the mount's lock."},
    {"resume", shim_resume, METH_O,
     "resume(queued): queue these requests for pyfuse3, then start the\n"
     "workers: after pause(), or in a successor, once the old daemon left."},
    {"engaged", shim_engaged, METH_NOARGS,
     "True once pyfuse3's session was created through the shim."},
    {"negotiated", shim_negotiated, METH_NOARGS,
     "The capabilities holefs sets, as libfuse settled them in INIT\n"
     "(name -> bool); None before INIT."},
    {"splicing", shim_splicing, METH_NOARGS,
     "Where splice(2) saves a copy: the largest READ whose reply is spliced\n"
     "from the tier files (0: none), and whether workers receive by splice."},
    {"libfuse", shim_libfuse, METH_NOARGS,
     "The libfuse version loaded, the headers built against, and which\n"
     "session constructors the loaded libfuse exports."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef shim_module = {
    PyModuleDef_HEAD_INIT, "holefs.daemon._shim",
    "The FUSE requests that holefs serves in C; see holefs/daemon/_shim.c.",
    -1, shim_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__shim(void)
{
    PyObject *module = PyModule_Create(&shim_module);
    PyObject *names = handler_names();
    if (module == NULL || names == NULL || PyType_Ready(&PendingType) < 0 ||
        PyType_Ready(&SplicedType) < 0 ||
        PyModule_AddObjectRef(module, "Pending", (PyObject *)&PendingType) < 0 ||
        PyModule_AddObjectRef(module, "Spliced", (PyObject *)&SplicedType) < 0 ||
        PyModule_AddObjectRef(module, "HANDLERS", names) < 0 ||
        PyModule_AddIntMacro(module, CONTROL_TYPE) < 0) {
        Py_XDECREF(module);
        module = NULL;
    }
    Py_XDECREF(names);
    return module;
}
