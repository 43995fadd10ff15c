#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static unsigned popcount8(uint8_t b) {
    unsigned n = 0;
    while (b) {
        b &= (uint8_t)(b - 1);
        n++;
    }
    return n;
}

static PyObject *bitset_popcount(PyObject *self, PyObject *args) {
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*:popcount", &buf)) return NULL;
    const uint8_t *p = buf.buf;
    unsigned long long total = 0;
    for (Py_ssize_t i = 0; i < buf.len; i++) total += popcount8(p[i]);
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLongLong(total);
}

static PyObject *bitset_hamming(PyObject *self, PyObject *args) {
    Py_buffer a, b;
    if (!PyArg_ParseTuple(args, "y*y*:hamming", &a, &b)) return NULL;
    if (a.len != b.len) {
        PyBuffer_Release(&a);
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "hamming: inputs differ in length");
        return NULL;
    }
    const uint8_t *p = a.buf, *q = b.buf;
    unsigned long long total = 0;
    for (Py_ssize_t i = 0; i < a.len; i++) total += popcount8(p[i] ^ q[i]);
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLongLong(total);
}

static PyMethodDef methods[] = {
    {"popcount", bitset_popcount, METH_VARARGS, "Number of set bits."},
    {"hamming", bitset_hamming, METH_VARARGS, "Number of differing bits."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "bitset._speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
