/*
 * holefs._fallocate: fallocate(2) with any mode, which os.posix_fallocate
 * does not offer.  It links nothing but libc, so that `import holefs` maps
 * no libfuse (the daemon's interposer is holefs/daemon/_shim.c).
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <fcntl.h>
#include <linux/falloc.h>

static PyObject *fallocate_fd(PyObject *self, PyObject *args)
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

static PyMethodDef methods[] = {
    {"fallocate", fallocate_fd, METH_VARARGS,
     "fallocate(fd, mode, offset, length): fallocate(2) with any mode."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "holefs._fallocate", "fallocate(2) with any mode.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fallocate(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL || PyModule_AddIntMacro(module, FALLOC_FL_KEEP_SIZE) < 0 ||
        PyModule_AddIntMacro(module, FALLOC_FL_PUNCH_HOLE) < 0 ||
        PyModule_AddIntMacro(module, FALLOC_FL_ZERO_RANGE) < 0) {
        Py_XDECREF(module);
        return NULL;
    }
    return module;
}
