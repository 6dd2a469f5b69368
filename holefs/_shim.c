/*
 * holefs._shim: the FUSE handlers that pyfuse3 does not have.
 *
 * pyfuse3 registers no fallocate or lseek handler, so the kernel would get
 * ENOSYS once, remember it, and answer EOPNOTSUPP to every later fallocate
 * and SEEK_DATA/SEEK_HOLE until unmount.  pyfuse3 offers no hook to add
 * handlers, so this module interposes libfuse's fuse_session_new: Python
 * loads it with RTLD_GLOBAL before pyfuse3, which makes the dynamic linker
 * bind pyfuse3's call to fuse_session_new@FUSE_3.0 to the definition below.
 * It copies pyfuse3's ops table, adds the two handlers (and, for speed,
 * takes over read and write and wraps init and the xattr handlers, see
 * below), and passes the copy to the real function found with dlvsym.  The handlers call back into
 * Python synchronously; pyfuse3 runs fuse_session_process_buf with the GIL
 * held, inside its trio request loop, so each call is atomic with respect to
 * every other request.  holefs.mount checks engaged() after mounting and
 * refuses to run if the interposition did not happen.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <string.h>

#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <linux/fuse.h>

typedef struct fuse_session *(*session_new_fn)(
    struct fuse_args *, const struct fuse_lowlevel_ops *, size_t, void *);
typedef int (*receive_fn)(struct fuse_session *, struct fuse_buf *);
typedef void (*process_fn)(struct fuse_session *, const struct fuse_buf *);

static struct fuse_lowlevel_ops patched_ops;
static void (*pyfuse3_init)(void *userdata, struct fuse_conn_info *conn);
static void (*pyfuse3_getxattr)(fuse_req_t req, fuse_ino_t ino,
                                const char *name, size_t size);
static void (*pyfuse3_setxattr)(fuse_req_t req, fuse_ino_t ino,
                                const char *name, const char *value,
                                size_t size, int flags);
static void (*pyfuse3_write_buf)(fuse_req_t req, fuse_ino_t ino,
                                 struct fuse_bufvec *bufv, off_t off,
                                 struct fuse_file_info *fi);
static int capabilities_set;
static PyObject *fallocate_cb, *lseek_cb, *read_cb, *write_cb;
static int engaged;

/* Calls a Python handler; the caller holds the GIL.  Returns a new
 * reference, or NULL after reporting the exception: handlers catch their
 * own errors, so one that escapes is a bug, and the request gets EIO. */
static PyObject *call(PyObject *cb, const char *fmt, ...)
{
    va_list va;
    va_start(va, fmt);
    PyObject *args = Py_VaBuildValue(fmt, va);
    va_end(va);
    PyObject *out = args ? PyObject_CallObject(cb, args) : NULL;
    Py_XDECREF(args);
    if (out == NULL)
        PyErr_WriteUnraisable(cb);
    return out;
}

/* A handler's int result: >= 0 on success, or -errno.  Steals *out*. */
static long long as_result(PyObject *cb, PyObject *out)
{
    if (out == NULL)
        return -EIO;
    long long result = PyLong_AsLongLong(out);
    Py_DECREF(out);
    if (PyErr_Occurred()) {
        PyErr_WriteUnraisable(cb);
        return -EIO;
    }
    return result;
}

static void reply_result(fuse_req_t req, long long ret)
{
    fuse_reply_err(req, ret < 0 ? (int)-ret : 0);
}

static void shim_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
                           off_t offset, off_t length,
                           struct fuse_file_info *fi)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    long long ret = as_result(fallocate_cb, call(fallocate_cb, "(KiLL)",
                              (unsigned long long)ino, mode,
                              (long long)offset, (long long)length));
    PyGILState_Release(gil);
    (void)fi;
    reply_result(req, ret);
}

static void shim_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                       struct fuse_file_info *fi)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    long long ret = as_result(lseek_cb, call(lseek_cb, "(KLi)",
                              (unsigned long long)ino, (long long)off, whence));
    PyGILState_Release(gil);
    (void)fi;
    if (ret < 0)
        fuse_reply_err(req, (int)-ret);
    else
        fuse_reply_lseek(req, (off_t)ret);
}

/* Reads and writes skip pyfuse3's coroutine machinery: holefs's handlers
 * never await, so calling them here changes no ordering, and it saves a
 * task switch per request and, for writes, a copy of the data.  The read
 * handler returns a buffer or -errno. */
static void shim_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      struct fuse_file_info *fi)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *out = call(read_cb, "(KLn)", (unsigned long long)fi->fh,
                         (long long)off, (Py_ssize_t)size);
    Py_buffer view;
    if (out == NULL) {
        fuse_reply_err(req, EIO);
    } else if (PyLong_Check(out)) {
        reply_result(req, as_result(read_cb, out));
        out = NULL;
    } else if (PyObject_GetBuffer(out, &view, PyBUF_SIMPLE) == 0) {
        fuse_reply_buf(req, view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
    } else {
        PyErr_WriteUnraisable(read_cb);
        fuse_reply_err(req, EIO);
    }
    Py_XDECREF(out);
    PyGILState_Release(gil);
    (void)ino;
}

/* The handler sees the request's own buffer through a memoryview, which is
 * released before libfuse reuses the buffer. */
static void shim_write_buf(fuse_req_t req, fuse_ino_t ino,
                           struct fuse_bufvec *bufv, off_t off,
                           struct fuse_file_info *fi)
{
    struct fuse_buf *buf = &bufv->buf[bufv->idx];
    if (bufv->count != 1 || (buf->flags & FUSE_BUF_IS_FD)) {
        pyfuse3_write_buf(req, ino, bufv, off, fi);
        return;
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    long long ret = -EIO;
    PyObject *view = PyMemoryView_FromMemory((char *)buf->mem + bufv->off,
                                             (Py_ssize_t)(buf->size - bufv->off),
                                             PyBUF_READ);
    if (view != NULL) {
        ret = as_result(write_cb, call(write_cb, "(KLO)", (unsigned long long)fi->fh,
                                       (long long)off, view));
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
    else
        fuse_reply_write(req, (size_t)ret);
}

/* Every change reaches holefs through the kernel, so the kernel's page cache
 * is never stale; auto_inval_data would only throw it away whenever it sees
 * a new mtime, which is after every write. */
static void shim_init(void *userdata, struct fuse_conn_info *conn)
{
    pyfuse3_init(userdata, conn);
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

/* The kernel asks for security.capability before every write, to know
 * whether the write must drop it.  Until some file is given one, the answer
 * is known here, without the round trip through Python. */
static int is_capability_lookup(const char *name)
{
    return !capabilities_set && strcmp(name, "security.capability") == 0;
}

static void shim_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
                          size_t size)
{
    if (is_capability_lookup(name))
        fuse_reply_err(req, ENODATA);
    else
        pyfuse3_getxattr(req, ino, name, size);
}

static void shim_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
                          const char *value, size_t size, int flags)
{
    if (strcmp(name, "security.capability") == 0)
        capabilities_set = 1;
    pyfuse3_setxattr(req, ino, name, value, size, flags);
}

/* How long, and for how many requests, a stream of reads and writes may be
 * served here before trio gets the thread back for its other tasks. */
#define STREAM_WAIT_MS 1
#define STREAM_MAX 64

static int served_here(const struct fuse_buf *buf)
{
    const struct fuse_in_header *in = buf->mem;
    if (buf->flags & FUSE_BUF_IS_FD || buf->size < sizeof *in)
        return 0;
    switch (in->opcode) {
    case FUSE_READ: case FUSE_WRITE: case FUSE_FALLOCATE: case FUSE_LSEEK:
        return 1;
    case FUSE_GETXATTR:
        return in->len > sizeof *in + sizeof(struct fuse_getxattr_in) &&
               ((const char *)buf->mem)[in->len - 1] == '\0' &&
               is_capability_lookup((const char *)(in + 1) + sizeof(struct fuse_getxattr_in));
    default:
        return 0;
    }
}

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
int fuse_session_receive_buf(struct fuse_session *se, struct fuse_buf *buf)
{
    static receive_fn receive;
    static process_fn process;
    if (receive == NULL) {
        receive = (receive_fn)dlvsym(RTLD_NEXT, "fuse_session_receive_buf", "FUSE_3.0");
        process = (process_fn)dlvsym(RTLD_NEXT, "fuse_session_process_buf", "FUSE_3.0");
        if (receive == NULL || process == NULL)
            return -ENOSYS;
    }
    for (int served = 0;; served++) {
        int res = receive(se, buf);
        if (res <= 0 || !served_here(buf))
            return res;
        process(se, buf);
        if (served == STREAM_MAX || fuse_session_exited(se) ||
            !next_request_within(fuse_session_fd(se), STREAM_WAIT_MS))
            return -EINTR;
    }
}

struct fuse_session *fuse_session_new(struct fuse_args *args,
                                      const struct fuse_lowlevel_ops *op,
                                      size_t op_size, void *userdata)
{
    session_new_fn real = (session_new_fn)dlvsym(RTLD_NEXT,
                                                 "fuse_session_new",
                                                 "FUSE_3.0");
    if (real == NULL) {
        errno = ENOSYS;
        return NULL;
    }
    memset(&patched_ops, 0, sizeof patched_ops);
    memcpy(&patched_ops, op,
           op_size < sizeof patched_ops ? op_size : sizeof patched_ops);
    patched_ops.fallocate = shim_fallocate;
    patched_ops.lseek = shim_lseek;
    pyfuse3_init = patched_ops.init;
    patched_ops.init = shim_init;
    pyfuse3_getxattr = patched_ops.getxattr;
    patched_ops.getxattr = shim_getxattr;
    pyfuse3_setxattr = patched_ops.setxattr;
    patched_ops.setxattr = shim_setxattr;
    pyfuse3_write_buf = patched_ops.write_buf;
    patched_ops.write_buf = shim_write_buf;
    patched_ops.read = shim_read;
    engaged = 1;
    return real(args, &patched_ops, sizeof patched_ops, userdata);
}

static PyObject *shim_install(PyObject *self, PyObject *args)
{
    PyObject *handlers[4];
    if (!PyArg_ParseTuple(args, "OOOO", &handlers[0], &handlers[1],
                          &handlers[2], &handlers[3]))
        return NULL;
    for (int i = 0; i < 4; i++) {
        if (!PyCallable_Check(handlers[i])) {
            PyErr_SetString(PyExc_TypeError, "handlers must be callable");
            return NULL;
        }
    }
    Py_XSETREF(fallocate_cb, Py_NewRef(handlers[0]));
    Py_XSETREF(lseek_cb, Py_NewRef(handlers[1]));
    Py_XSETREF(read_cb, Py_NewRef(handlers[2]));
    Py_XSETREF(write_cb, Py_NewRef(handlers[3]));
    Py_RETURN_NONE;
}

static PyObject *shim_fallocate_fd(PyObject *self, PyObject *args)
{
    int fd, mode, ret;
    long long offset, length;
    if (!PyArg_ParseTuple(args, "iiLL", &fd, &mode, &offset, &length))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    ret = fallocate(fd, mode, (off_t)offset, (off_t)length);
    Py_END_ALLOW_THREADS
    if (ret != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *shim_engaged(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(engaged);
}

static PyMethodDef shim_methods[] = {
    {"install", shim_install, METH_VARARGS,
     "install(fallocate, lseek, read, write): set the Python handlers.\n\n"
     "fallocate(inode, mode, offset, length), lseek(inode, offset, whence)\n"
     "and write(fh, offset, data) return a result >= 0 or -errno;\n"
     "read(fh, offset, size) returns a buffer or -errno."},
    {"fallocate", shim_fallocate_fd, METH_VARARGS,
     "fallocate(fd, mode, offset, length): fallocate(2) with any mode."},
    {"engaged", shim_engaged, METH_NOARGS,
     "True once pyfuse3's fuse_session_new call went through the shim."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef shim_module = {
    PyModuleDef_HEAD_INIT, "holefs._shim",
    "fallocate and lseek handlers for pyfuse3, added by interposition.",
    -1, shim_methods,
};

PyMODINIT_FUNC PyInit__shim(void)
{
    PyObject *module = PyModule_Create(&shim_module);
    if (module == NULL ||
        PyModule_AddIntMacro(module, FALLOC_FL_KEEP_SIZE) < 0 ||
        PyModule_AddIntMacro(module, FALLOC_FL_PUNCH_HOLE) < 0 ||
        PyModule_AddIntMacro(module, FALLOC_FL_ZERO_RANGE) < 0) {
        Py_XDECREF(module);
        return NULL;
    }
    return module;
}
