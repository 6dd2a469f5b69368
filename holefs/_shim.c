/*
 * holefs._shim: the FUSE handlers that pyfuse3 does not have.
 *
 * pyfuse3 registers no fallocate or lseek handler, so the kernel would get
 * ENOSYS once, remember it, and answer EOPNOTSUPP to every later fallocate
 * and SEEK_DATA/SEEK_HOLE until unmount.  pyfuse3 offers no hook to add
 * handlers, so this module interposes libfuse's fuse_session_new: Python
 * loads it with RTLD_GLOBAL before pyfuse3, which makes the dynamic linker
 * bind pyfuse3's call to fuse_session_new@FUSE_3.0 to the definition below.
 * It copies pyfuse3's ops table, adds the two handlers (and wraps init and
 * the xattr handlers, for speed, below), and passes the copy to the real
 * function found with dlvsym.  The handlers call back into
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
#include <string.h>

#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>

typedef struct fuse_session *(*session_new_fn)(
    struct fuse_args *, const struct fuse_lowlevel_ops *, size_t, void *);

static struct fuse_lowlevel_ops patched_ops;
static void (*pyfuse3_init)(void *userdata, struct fuse_conn_info *conn);
static void (*pyfuse3_getxattr)(fuse_req_t req, fuse_ino_t ino,
                                const char *name, size_t size);
static void (*pyfuse3_setxattr)(fuse_req_t req, fuse_ino_t ino,
                                const char *name, const char *value,
                                size_t size, int flags);
static int capabilities_set;
static PyObject *fallocate_cb;
static PyObject *lseek_cb;
static int engaged;

/* Calls a Python callback that returns an int: >= 0 on success or -errno. */
static long long call_back(PyObject *cb, const char *fmt, ...)
{
    long long result = -ENOSYS;
    PyGILState_STATE gil = PyGILState_Ensure();
    if (cb != NULL) {
        va_list va;
        va_start(va, fmt);
        PyObject *ret = Py_VaBuildValue(fmt, va);
        va_end(va);
        PyObject *out = ret ? PyObject_CallObject(cb, ret) : NULL;
        Py_XDECREF(ret);
        if (out != NULL) {
            result = PyLong_AsLongLong(out);
            Py_DECREF(out);
        }
        if (PyErr_Occurred()) {
            PyErr_WriteUnraisable(cb);
            result = -EIO;
        }
    }
    PyGILState_Release(gil);
    return result;
}

static void shim_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
                           off_t offset, off_t length,
                           struct fuse_file_info *fi)
{
    long long ret = call_back(fallocate_cb, "(KiLL)",
                              (unsigned long long)ino, mode,
                              (long long)offset, (long long)length);
    (void)fi;
    fuse_reply_err(req, ret < 0 ? (int)-ret : 0);
}

static void shim_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                       struct fuse_file_info *fi)
{
    long long ret = call_back(lseek_cb, "(KLi)", (unsigned long long)ino,
                              (long long)off, whence);
    (void)fi;
    if (ret < 0)
        fuse_reply_err(req, (int)-ret);
    else
        fuse_reply_lseek(req, (off_t)ret);
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
static void shim_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
                          size_t size)
{
    if (!capabilities_set && strcmp(name, "security.capability") == 0)
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
    engaged = 1;
    return real(args, &patched_ops, sizeof patched_ops, userdata);
}

static PyObject *shim_install(PyObject *self, PyObject *args)
{
    PyObject *fallocate, *lseek;
    if (!PyArg_ParseTuple(args, "OO", &fallocate, &lseek))
        return NULL;
    if (!PyCallable_Check(fallocate) || !PyCallable_Check(lseek)) {
        PyErr_SetString(PyExc_TypeError, "handlers must be callable");
        return NULL;
    }
    Py_XSETREF(fallocate_cb, Py_NewRef(fallocate));
    Py_XSETREF(lseek_cb, Py_NewRef(lseek));
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
     "install(fallocate, lseek): set the Python handlers.\n\n"
     "fallocate(inode, mode, offset, length) and lseek(inode, offset, "
     "whence) return a non-negative result or -errno."},
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
    return PyModule_Create(&shim_module);
}
