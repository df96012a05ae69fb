"""hattn: attention kernels for sparse and hybrid patterns, through ctypes.

A thin binding of libhattn's public C API (hattn.h); no compiled extension.

    import numpy as np, hattn
    ctx = hattn.Context("cpu", db="")           # db: None default, "" none
    spec = ctx.parse("pattern local = causal & window(128)")
    kern = spec.kernel("local", batch=1, heads=8, kv_heads=2, lq=256, lk=256,
                       head_dim=64, dtype="fp32")
    o, lse = kern.forward(q, k, v)               # q: [B, H, S, D] (any strides)

Tensors are described logically as Q, O [B, H, Lq, D], K, V [B, Hkv, Lk, D]
and LSE [B, H, Lq] (float32); memory laid out as [B, S, H, D] is passed as
a strided view, e.g. x.transpose(0, 2, 1, 3).  The last dimension must be
contiguous.  NumPy dtypes: float32 for fp32, float16 for fp16, and uint16
words for bf16 (see to_bf16 / from_bf16).

Objects with __dlpack__ (PyTorch, CuPy, JAX) are passed through DLPack
capsules without copies; outputs are then allocated with the input's
new_empty (PyTorch) or must be given with out=(o, lse).  That path is not
yet covered by the tests (CI has NumPy only).

Variable-length batches whose lengths change from run to run: a plan made
for the longest lengths (the kernel's lq, lk and batch, without q_lens,
k_lens or offsets) takes each run's lengths as int32 arrays or tensors on
its device (hattn_run_varlen; Plan.check(...) checks the same arguments
without running):

    plan = kern.plan()
    o, lse = plan.run(q, k, v, q_lens=q_lens, k_lens=k_lens)   # padded: [B]
    o, lse = plan.run(qp, kp, vp, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)

Padded, entry b uses its first q_lens[b] queries and k_lens[b] keys of the
[B, H, S, D] tensors (its other rows of O get 0, of LSE -inf).  Packed
(FlashAttention's convention), its rows are cu_q[b] .. cu_q[b + 1] of Q and
O [total_q, H, D], LSE [H, total_q], and likewise of K, V [total_k, Hkv, D].
A paged plan takes k_lens with its block_table.

The library is found through $HATTN_LIBRARY, else the build tree's
.libs/libhattn.so next to this source tree, else where make install put it
(_paths.py, absolute or relative to this file, so a staged DESTDIR install
works too), else the directories of $LD_LIBRARY_PATH, sys.prefix/lib,
/usr/local/lib and /usr/lib (a module installed with pip from python/),
else ctypes.util.find_library.

Threads: the C API is one thread at a time per context (hattn.h), and
ctypes releases the GIL during each call, so this module serialises: every
Context holds a lock that parse, kernel, forward, close and the destruction
of its specs and kernels take.  Calls from several threads on one context
are safe and run one after another; for forwards in parallel, use one
Context per thread.

Host cost: Plan.run and Kernel.forward keep the DLTensor descriptions of
their previous call's arguments, by position, and reuse one (rewriting its
data pointer) when the argument is a NumPy array or PyTorch tensor of the
same shape, strides, dtype and device; everything else is described afresh,
and the library checks every call as before.  The descriptions are per
Plan or Kernel, read and written under the context's lock, and hold no
reference to the arrays; runs with lengths and Plan.check keep their own
(the lengths' included).  HATTN_PY_NOCACHE=1 turns this off
(tests/gpu/bench_pyhost.py measures both).

Lifetimes: a Kernel keeps its context alive.  After Context.close() (or
leaving a `with Context()` block) the kernels already made keep working;
Context.parse and Spec.kernel raise HattnError (HATTN_ECLOSED).

Arrays are checked before the call: outputs must be writable, with no
dimension of stride 0 (a broadcast view), in native byte order; inputs in
the other byte order are converted (copied); object arrays and values of
the wrong kind raise TypeError, wrong shapes and out-of-range integers
ValueError.
"""

import ctypes
import ctypes.util
import operator
import os
import sys
import threading

__all__ = ["HattnError", "Context", "Spec", "Kernel", "Plan", "to_bf16", "from_bf16",
           "strerror", "version"]

# ---- the C declarations (hattn.h, dlpack.h) ---------------------------------

kDLCPU, kDLCUDA = 1, 2
kDLInt, kDLUInt, kDLFloat, kDLBfloat = 0, 1, 2, 4

FP32, FP16, BF16 = 0, 1, 2
HATTN_EINVAL = -1
HATTN_EINPUT = -7
MERGE_MAX_PARTS = 16      # HATTN_MERGE_MAX_PARTS
HATTN_ECLOSED = -12
_DTYPES = {"fp32": FP32, "float32": FP32, "fp16": FP16, "float16": FP16,
           "bf16": BF16, "bfloat16": BF16}
_BACKENDS = {"cpu": 0, "cuda": 1}


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice),
                ("ndim", ctypes.c_int32), ("dtype", DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


class _Options(ctypes.Structure):
    _fields_ = [("backend", ctypes.c_int), ("device", ctypes.c_int),
                ("db", ctypes.c_char_p), ("threads", ctypes.c_int),
                ("quiet", ctypes.c_int),
                ("threadpool", ctypes.c_void_p)]   # NULL: hattn's own threads


class _Problem(ctypes.Structure):
    _fields_ = [("batch", ctypes.c_int64), ("heads", ctypes.c_int64),
                ("kv_heads", ctypes.c_int64), ("lq", ctypes.c_int64),
                ("lk", ctypes.c_int64), ("head_dim", ctypes.c_int64),
                ("dtype", ctypes.c_int)]


class _Layout(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("bm", ctypes.c_int64),
                ("bn", ctypes.c_int64), ("nqb", ctypes.c_int64),
                ("nkb", ctypes.c_int64), ("bits", ctypes.c_void_p)]


class _PagedKV(ctypes.Structure):
    _fields_ = [("page_size", ctypes.c_int64), ("layout", ctypes.c_int),
                ("block_table", ctypes.POINTER(DLTensor))]


class _Inputs(ctypes.Structure):
    _fields_ = [("doc_offsets", ctypes.c_void_p), ("ndocs", ctypes.c_int64),
                ("layouts", ctypes.POINTER(_Layout)), ("nlayouts", ctypes.c_int),
                ("topk_blocks", ctypes.c_void_p), ("topk_k", ctypes.c_int64),
                ("alibi_slopes", ctypes.c_void_p), ("sink_logits", ctypes.c_void_p),
                ("seed", ctypes.c_uint64), ("paged", ctypes.POINTER(_PagedKV)),
                ("q_offset", ctypes.c_int64), ("k_offset", ctypes.c_int64),
                ("offsets_set", ctypes.c_int),
                ("q_lens", ctypes.c_void_p), ("k_lens", ctypes.c_void_p)]


class _Varlen(ctypes.Structure):
    """hattn_varlen: this run's lengths, int32 tensors on the plan's device
    (NULL: absent)."""
    _fields_ = [("q_lens", ctypes.POINTER(DLTensor)), ("k_lens", ctypes.POINTER(DLTensor)),
                ("cu_seqlens_q", ctypes.POINTER(DLTensor)), ("cu_seqlens_k", ctypes.POINTER(DLTensor))]


# Layouts of paged K and V pools (hattn_paged_layout), by name.
PAGE_LAYOUTS = {"nhd": 0, "hnd": 1}    # [pages, P, kv_heads, D], [pages, kv_heads, P, D]


def _find_library():
    env = os.environ.get("HATTN_LIBRARY")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    top = os.path.dirname(os.path.dirname(here))
    for cand in (os.path.join(top, ".libs", "libhattn.so"),
                 os.path.join(top, "build", ".libs", "libhattn.so")):
        if os.path.exists(cand):
            return cand
    dirs = []
    try:  # written by make install beside this file
        from . import _paths
        dirs += [_paths.LIBDIR, os.path.join(here, getattr(_paths, "LIBDIR_REL", _paths.LIBDIR))]
    except ImportError:
        pass
    # Installed with pip: the library is where make install put it, on the
    # loader's path or under a usual prefix.
    dirs += [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    dirs += [os.path.join(sys.prefix, "lib"), "/usr/local/lib", "/usr/lib"]
    for d in dirs:
        for name in ("libhattn.so", "libhattn.so.0"):
            cand = os.path.join(d, name)
            if os.path.exists(cand):
                return os.path.normpath(cand)
    found = ctypes.util.find_library("hattn")
    if found:
        return found
    raise OSError("libhattn not found: set HATTN_LIBRARY to the path of libhattn.so, or add its "
                  "directory to LD_LIBRARY_PATH")


_lib = None


def _L():
    global _lib
    if _lib is not None:
        return _lib
    lib = ctypes.CDLL(_find_library())
    vp, ci, cs = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    pp = ctypes.POINTER(ctypes.c_void_p)
    sigs = {
        "hattn_strerror": (cs, [ci]),
        "hattn_err_name": (cs, [ci]),
        "hattn_version": (cs, []),
        "hattn_options_init": (None, [ctypes.POINTER(_Options)]),
        "hattn_open": (ci, [ctypes.POINTER(_Options), pp]),
        "hattn_close": (None, [vp]),
        "hattn_errmsg": (cs, [vp]),
        "hattn_specfile_parse": (ci, [vp, cs, ctypes.c_size_t, cs, pp]),
        "hattn_specfile_destroy": (None, [vp]),
        "hattn_specfile_npatterns": (ci, [vp]),
        "hattn_specfile_pattern_name": (cs, [vp, ci]),
        "hattn_kernel_get": (ci, [vp, vp, cs, ctypes.POINTER(_Problem), pp]),
        "hattn_kernel_destroy": (None, [vp]),
        "hattn_kernel_needs": (ctypes.c_uint, [vp]),
        "hattn_kernel_config": (cs, [vp]),
        "hattn_kernel_errmsg": (cs, [vp]),
        "hattn_forward": (ci, [vp, ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor),
                               ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor),
                               ctypes.POINTER(DLTensor), ctypes.POINTER(_Inputs), vp]),
        "hattn_plan_create": (ci, [vp, ctypes.POINTER(_Inputs), pp]),
        "hattn_run": (ci, [vp, ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor),
                           ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor), vp]),
        "hattn_run_paged": (ci, [vp, ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor),
                                 ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor),
                                 ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor), vp]),
        "hattn_run_varlen": (ci, [vp, ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor),
                                  ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor), ctypes.POINTER(_Varlen),
                                  ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor), vp]),
        "hattn_run_check": (ci, [vp, ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor),
                                 ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor), ctypes.POINTER(_Varlen),
                                 ctypes.POINTER(DLTensor), ctypes.POINTER(DLTensor)]),
        "hattn_plan_destroy": (None, [vp]),
        "hattn_plan_errmsg": (cs, [vp]),
        "hattn_merge": (ci, [vp, ci, ctypes.POINTER(ctypes.POINTER(DLTensor)),
                             ctypes.POINTER(ctypes.POINTER(DLTensor)), ctypes.POINTER(DLTensor),
                             ctypes.POINTER(DLTensor), vp]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args
    _lib = lib
    return lib


class HattnError(Exception):
    """A failure of libhattn: status (a negative HATTN_E* code), name and
    message (the context's error text: compiler logs, the spec's errors)."""

    def __init__(self, status, message):
        self.status = status
        self.name = _L().hattn_err_name(status).decode()
        self.message = message
        super().__init__("%s: %s" % (self.name, message))


def _closed(what):
    return HattnError(HATTN_ECLOSED, "%s: the context is closed" % what)


def _int(name, v, lo=-2**63, hi=2**63, rng="[-2**63, 2**63)"):
    """V as a Python int in [LO, HI), else TypeError / ValueError naming NAME."""
    try:
        i = operator.index(v)
    except TypeError:
        raise TypeError("%s must be an integer, got %s" % (name, type(v).__name__)) from None
    if not lo <= i < hi:
        raise ValueError("%s must be an integer in %s, got %d" % (name, rng, i))
    return i


def _int_array(np, name, a, dtype):
    """A as a C-contiguous array of the integer DTYPE, its values checked to
    fit; TypeError for arrays of anything but integers."""
    a = np.asarray(a)
    if a.dtype.kind not in "iub":
        raise TypeError("%s: expected integers, got dtype %s" % (name, a.dtype))
    info = np.iinfo(dtype)
    if a.size and a.dtype.kind != "b" and (int(a.min()) < info.min or int(a.max()) > info.max):
        raise ValueError("%s: values must be in [%d, %d], got [%d, %d]"
                         % (name, info.min, info.max, int(a.min()), int(a.max())))
    return np.ascontiguousarray(a, dtype=dtype)


def _float_array(np, name, a):
    """A as a C-contiguous float32 array; TypeError for non-numbers."""
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise TypeError("%s: expected numbers, got dtype %s" % (name, a.dtype))
    return np.ascontiguousarray(a, dtype=np.float32)


def strerror(status):
    return _L().hattn_strerror(status).decode()


def version():
    return _L().hattn_version().decode()


# ---- bf16 helpers ----------------------------------------------------------------

def to_bf16(x):
    """float32 array -> bf16 as uint16 words (round to nearest even)."""
    import numpy as np
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    r = np.where(nan, 0x7FC0, r)
    return r.astype(np.uint16).reshape(np.shape(x))


def from_bf16(w):
    """bf16 uint16 words -> float32 array."""
    import numpy as np
    return (np.asarray(w, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


# ---- tensors ---------------------------------------------------------------------

class _Tensor:
    """A DLTensor for one call, keeping what it points at alive."""

    cacheable = False    # described from x's attributes alone (_Args may reuse it)

    def __init__(self, name, x, want_dtype, output=False):
        self.keep = x
        self.t = DLTensor()
        if _is_numpy(x) or (hasattr(x, "__array_interface__") and not hasattr(x, "__dlpack__")):
            self._from_numpy(name, x, want_dtype, output)
        elif _is_torch(x) and self._from_torch(x):
            pass
        elif hasattr(x, "__dlpack__"):
            self._from_dlpack(x)
        else:
            raise TypeError("%s: expected a NumPy array or an object with __dlpack__, got %s"
                            % (name, type(x).__name__))
        self.r = ctypes.byref(self.t)

    def _from_numpy(self, name, x, want_dtype, output):
        ai = x.__array_interface__
        typestr = ai["typestr"]
        kind, size = typestr[1], int(typestr[2:] or 0)
        native = "<" if sys.byteorder == "little" else ">"
        if kind not in "fui":
            raise TypeError("%s: unsupported NumPy dtype %s" % (name, getattr(x, "dtype", typestr)))
        converted = typestr[0] not in (native, "|")
        if converted:
            if output:
                raise ValueError("%s: byte order is %s-endian; hattn writes native (%s-endian) values"
                                 % (name, "big" if typestr[0] == ">" else "little", sys.byteorder))
            import numpy as np
            x = np.asarray(x)
            x = x.astype(x.dtype.newbyteorder("="))   # a copy, in native order
            self.keep = x
            ai = x.__array_interface__
            typestr = ai["typestr"]
        if output:
            if ai["data"][1]:
                raise ValueError("%s: the array is read-only (a read-only mapping or a broadcast view?); "
                                 "outputs must be writable" % name)
            if ai.get("strides") is not None:
                for i, (n, st) in enumerate(zip(ai["shape"], ai["strides"])):
                    if n > 1 and st == 0:
                        raise ValueError("%s: dimension %d has stride 0 (an overlapping view); outputs "
                                         "need memory of their own" % (name, i))
        if kind == "f" and size in (4, 2):
            code, bits = kDLFloat, size * 8
        elif kind == "u" and size == 2 and want_dtype == BF16:
            code, bits = kDLBfloat, 16     # bf16 words
        elif kind == "u":
            code, bits = kDLUInt, size * 8
        elif kind == "i":
            code, bits = kDLInt, size * 8
        else:
            raise TypeError("%s: unsupported NumPy dtype %s" % (name, typestr))
        shape = ai["shape"]
        nd = len(shape)
        self.shape = (ctypes.c_int64 * max(nd, 1))(*shape)
        self.t.data = ai["data"][0]
        self.t.device = DLDevice(kDLCPU, 0)
        self.t.ndim = nd
        self.t.dtype = DLDataType(code, bits, 1)
        self.t.shape = self.shape
        if ai.get("strides") is not None:
            st = ai["strides"]
            if any(s % size for s in st):
                raise ValueError("%s: strides %s are not multiples of the element size" % (name, st))
            self.strides = (ctypes.c_int64 * max(nd, 1))(*[s // size for s in st])
            self.t.strides = self.strides
        self.t.byte_offset = 0
        self.cacheable = not converted

    def _from_torch(self, x):
        """Describe a strided PyTorch tensor on the CPU or a CUDA device
        from its attributes, as its __dlpack__ would (the same pointer,
        shape and strides in elements) without making a capsule: a few
        microseconds a tensor less on every call.  False for anything else
        (other devices, layouts, dtypes), which takes the DLPack path."""
        t = _torch_types()
        dt = t[0].get(x.dtype)
        if dt is None or x.layout is not t[1]:
            return False
        dev = x.device
        if dev.type == "cuda":
            device = DLDevice(kDLCUDA, dev.index or 0)
        elif dev.type == "cpu":
            device = DLDevice(kDLCPU, 0)
        else:
            return False
        nd = x.dim()
        self.shape = (ctypes.c_int64 * max(nd, 1))(*x.shape)
        self.strides = (ctypes.c_int64 * max(nd, 1))(*x.stride())
        self.t.data = x.data_ptr()
        self.t.device = device
        self.t.ndim = nd
        self.t.dtype = DLDataType(dt[0], dt[1], 1)
        self.t.shape = self.shape
        self.t.strides = self.strides
        self.t.byte_offset = 0
        self.cacheable = True
        return True

    def _from_dlpack(self, x):
        cap = x.__dlpack__()
        self.capsule = cap     # owns the DLManagedTensor until dropped
        ptr = _capsule_pointer(cap, b"dltensor")
        self.t = ctypes.cast(ptr, ctypes.POINTER(DLTensor)).contents

    def ref(self):
        return self.r


def _is_numpy(x):
    return type(x).__module__ == "numpy"


def _is_torch(x):
    m = type(x).__module__
    return m == "torch" or m.startswith("torch.")


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]

_torch = None


def _torch_types():
    """({torch dtype: (DLPack code, bits)}, torch.strided), once PyTorch is
    loaded (a torch tensor was passed, so it is)."""
    global _torch
    if _torch is None:
        import torch
        _torch = ({torch.float32: (kDLFloat, 32), torch.float16: (kDLFloat, 16),
                   torch.bfloat16: (kDLBfloat, 16), torch.float64: (kDLFloat, 64),
                   torch.int32: (kDLInt, 32), torch.int64: (kDLInt, 64),
                   torch.uint8: (kDLUInt, 8)}, torch.strided)
    return _torch


# ---- argument caches ---------------------------------------------------------------
#
# Describing an argument costs microseconds (NumPy's __array_interface__
# alone builds a dict; ctypes arrays for the shape and strides); a plan run
# back to back is mostly that.  So Plan.run and Kernel.forward keep, per
# object and argument position, the _Tensor of the previous call together
# with a key of what its description was made from: for a NumPy array
# (shape, strides in bytes, dtype), for a PyTorch tensor (dtype, device,
# shape, strides).  An argument whose key equals the previous one reuses
# that DLTensor with its data pointer rewritten; any other argument is
# described afresh (and its description kept for the next call).  The
# library still checks every call's shapes, strides and dtypes.  Arrays
# with other types (DLPack objects, other __array_interface__ objects),
# NumPy arrays in the other byte order (converted) and outputs that are not
# writable are described afresh on every call, as before.  A cache holds
# no reference to the arrays; it is read and written under the context's
# lock only, in the same locked region as the C call that uses it.
# HATTN_PY_NOCACHE=1 in the environment (or hattn._NOCACHE = True) turns
# the caches off: every argument is described afresh.

_NOCACHE = os.environ.get("HATTN_PY_NOCACHE", "") not in ("", "0")

_KIND_OTHER, _KIND_NUMPY, _KIND_TORCH = 0, 1, 2
_kinds = {}             # type -> _KIND_*
_np_offset = None       # offset of a PyArrayObject's data pointer, or False
_strided = None         # torch.strided, once a torch tensor was seen


def _kind(tp):
    """The _KIND_* of arguments of type TP, remembered per type."""
    global _np_offset, _strided
    k = _KIND_OTHER
    if tp.__module__ == "numpy":
        np = sys.modules.get("numpy")
        if np is not None and issubclass(tp, np.ndarray):
            k = _KIND_NUMPY
            if _np_offset is None:
                _np_offset = _np_data_offset(np)
    elif tp.__module__ == "torch" or tp.__module__.startswith("torch."):
        _strided = _torch_types()[1]
        k = _KIND_TORCH
    _kinds[tp] = k
    return k


def _np_data_offset(np):
    """Where an ndarray keeps its data pointer: PyArrayObject's first field
    after the object header (NumPy's C API reads it there, PyArray_DATA), as
    an offset from id(array); checked against __array_interface__ on two
    arrays, else False (then the pointer is read from __array_interface__).
    CPython only: elsewhere id() need not be an address."""
    if sys.implementation.name != "cpython":
        return False
    off = object.__basicsize__
    try:
        a = np.zeros(4, dtype=np.float32)
        for x in (a, a[1:]):
            if ctypes.c_void_p.from_address(id(x) + off).value != x.__array_interface__["data"][0]:
                return False
    except Exception:
        return False
    return off


_c_void_p_at = ctypes.c_void_p.from_address


class _Args:
    """The _Tensors of one plan's or kernel's calls, by argument position,
    kept from call to call (see above).  Use under the context's lock."""

    __slots__ = ("keys", "tensors")

    def __init__(self, n):
        self.keys = [None] * n
        self.tensors = [None] * n

    def tensor(self, i, name, x, want_dtype, output=False):
        """The _Tensor of X in position I, for a call made under the same
        hold of the lock; raises as _Tensor does."""
        if _NOCACHE:
            return _Tensor(name, x, want_dtype, output)
        tp = type(x)
        kind = _kinds.get(tp)
        if kind is None:
            kind = _kind(tp)
        key = None
        if kind == _KIND_NUMPY:
            if not output or x.flags.writeable:
                key = (x.shape, x.strides, x.dtype)
                if key == self.keys[i]:
                    t = self.tensors[i]
                    if _np_offset:
                        t.t.data = _c_void_p_at(id(x) + _np_offset).value
                    else:
                        t.t.data = x.__array_interface__["data"][0]
                    return t
        elif kind == _KIND_TORCH:
            if x.layout is _strided:
                key = (x.dtype, x.device, x.shape, x.stride())
                if key == self.keys[i]:
                    t = self.tensors[i]
                    t.t.data = x.data_ptr()
                    return t
        t = _Tensor(name, x, want_dtype, output)
        if key is not None and t.cacheable:
            t.keep = None          # the caller holds x for the call
            self.keys[i], self.tensors[i] = key, t
        return t


def _check(ctx, st):
    if st != 0:
        raise HattnError(st, ctx._errmsg())


# ---- the objects -------------------------------------------------------------------

class Context:
    """A hattn context: backend ("cpu" or "cuda"), CUDA device ordinal, the
    kernel database (None: the default path, "": none, else a path) and CPU
    threads (0: all cores).  Calls on a context and its specs and kernels
    from several threads are serialised by the context's lock; a Context
    per thread runs them in parallel.  close() (or leaving a with block)
    gives the context up: its kernels keep it alive and keep working."""

    def __init__(self, backend="cpu", db=None, threads=0, device=0, quiet=True):
        lib = _L()
        if backend not in _BACKENDS:
            raise ValueError("backend must be 'cpu' or 'cuda', got %r" % (backend,))
        opt = _Options()
        lib.hattn_options_init(ctypes.byref(opt))
        opt.backend = _BACKENDS[backend]
        opt.db = None if db is None else os.fsencode(db)
        opt.quiet = 1 if quiet else 0
        opt.device = _int("device", device, -2**31, 2**31, "[-2**31, 2**31)")
        opt.threads = _int("threads", threads, -2**31, 2**31, "[-2**31, 2**31)")
        self.backend = backend
        self.device = device
        self._lock = threading.RLock()
        h = ctypes.c_void_p()
        st = lib.hattn_open(ctypes.byref(opt), ctypes.byref(h))
        self._h = h.value
        if st != 0:
            msg = self._errmsg()
            self.close()
            raise HattnError(st, msg)

    def _errmsg(self):
        if not self._h:
            return ""
        return _L().hattn_errmsg(self._h).decode(errors="replace")

    @property
    def errmsg(self):
        return self._errmsg()

    def parse(self, text, filename=None):
        """Parse a spec; HattnError(HATTN_ESPEC) carries its diagnostics."""
        if isinstance(text, str):
            text = text.encode()
        h = ctypes.c_void_p()
        with self._lock:
            if not self._h:
                raise _closed("Context.parse")
            st = _L().hattn_specfile_parse(self._h, text, len(text),
                                           None if filename is None else os.fsencode(filename),
                                           ctypes.byref(h))
            _check(self, st)
        return Spec(self, h.value)

    def merge(self, parts, out=None, stream=None):
        """Merge partial attention results by their LSE: parts is a list of
        (o, lse), o [B, H, L, D] (float32, float16, or bfloat16 as uint16
        words; all parts one dtype) and lse [B, H, L] float32 (natural log;
        -inf where a part saw no key), at most MERGE_MAX_PARTS of them, on
        the context's device.  Returns (o, lse): out=(o, lse) to write into
        (lse may be None), else allocated like the first part.  CPU:
        returns when they are written.  CUDA: queued on STREAM (None: for
        PyTorch tensors the current PyTorch stream, else the default stream)
        and never waited for."""
        parts = list(parts)
        if not parts and out is None:
            raise ValueError("merge: no parts (pass at least one (o, lse))")
        if out is None:
            o0, l0 = parts[0]
            if _is_numpy(o0):
                import numpy as np
                out = (np.empty(o0.shape, dtype=o0.dtype), np.empty(l0.shape, dtype=np.float32))
            elif hasattr(o0, "new_empty"):     # PyTorch
                out = (o0.new_empty(o0.shape), l0.new_empty(l0.shape))
            else:
                raise TypeError("pass out=(o, lse) for parts of type %s" % type(o0).__name__)
        o, lse = out
        tparts = []
        for i, (po, pl) in enumerate(parts):
            tparts.append((_Tensor("o_parts[%d]" % i, po, BF16), _Tensor("lse_parts[%d]" % i, pl, FP32)))
        to = _Tensor("o", o, BF16, output=True)
        tl = _Tensor("lse", lse, FP32, output=True) if lse is not None else None
        n = len(tparts)
        ap = (ctypes.POINTER(DLTensor) * max(n, 1))(*[ctypes.pointer(a.t) for a, _ in tparts])
        lp = (ctypes.POINTER(DLTensor) * max(n, 1))(*[ctypes.pointer(b.t) for _, b in tparts])
        if stream is None and parts:
            stream = _current_stream(parts[0][0])
        lib = _L()
        with self._lock:
            if not self._h:
                raise _closed("Context.merge")
            st = lib.hattn_merge(self._h, n, ap, lp, to.ref(), tl.ref() if tl is not None else None, stream)
            _check(self, st)
        del tparts
        return o, lse

    def close(self):
        """Give up the context; kernels made from it keep it alive and keep
        working, nothing new is made from it.  Closing twice is harmless."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            if self._h:
                _L().hattn_close(self._h)
                self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


class Spec:
    def __init__(self, ctx, h):
        self.ctx = ctx
        self._h = h

    @property
    def patterns(self):
        lib = _L()
        return [lib.hattn_specfile_pattern_name(self._h, i).decode()
                for i in range(lib.hattn_specfile_npatterns(self._h))]

    def kernel(self, pattern, batch, heads, kv_heads, lq, lk, head_dim, dtype="fp32"):
        """The kernel of PATTERN for one problem; dtype "fp32", "fp16", "bf16".
        HattnError (HATTN_ECLOSED) once the context is closed."""
        if dtype not in _DTYPES:
            raise ValueError("dtype must be fp32, fp16 or bf16, got %r" % (dtype,))
        dims = [_int(n, x) for n, x in (("batch", batch), ("heads", heads), ("kv_heads", kv_heads),
                                         ("lq", lq), ("lk", lk), ("head_dim", head_dim))]
        pr = _Problem(*dims, _DTYPES[dtype])
        h = ctypes.c_void_p()
        with self.ctx._lock:
            if not self.ctx._h:
                raise _closed("Spec.kernel")
            st = _L().hattn_kernel_get(self.ctx._h, self._h, pattern.encode(), ctypes.byref(pr),
                                       ctypes.byref(h))
            _check(self.ctx, st)
        return Kernel(self, h.value, pr)

    def __del__(self):
        try:
            with self.ctx._lock:     # the context may hold a reference to it
                if self._h:
                    _L().hattn_specfile_destroy(self._h)
                    self._h = None
        except Exception:
            pass


class Kernel:
    def __init__(self, spec, h, problem):
        self.spec = spec
        self.ctx = spec.ctx       # for its lock; the C kernel keeps the C context alive
        self._h = h
        self.problem = problem
        self.dtype = problem.dtype
        self._args = _Args(5)     # q, k, v, o, lse of the last forward

    @property
    def config(self):
        return _L().hattn_kernel_config(self._h).decode()

    @property
    def needs(self):
        return _L().hattn_kernel_needs(self._h)

    def _alloc(self, like, packed=False):
        """O and LSE for a call on LIKE (the query tensor): [B, H, Lq, D] and
        [B, H, Lq], or when PACKED [total_q, H, D] and [H, total_q] with
        total_q LIKE's first dimension."""
        p = self.problem
        if packed:
            shape = getattr(like, "shape", None)
            if shape is None or len(shape) < 1:
                raise TypeError("pass out=(o, lse) for a packed q without a shape (%s)" % type(like).__name__)
            rows = int(shape[0])
            so, sl = (rows, p.heads, p.head_dim), (p.heads, rows)
        else:
            so, sl = (p.batch, p.heads, p.lq, p.head_dim), (p.batch, p.heads, p.lq)
        if _is_numpy(like):
            import numpy as np
            dt = {FP32: np.float32, FP16: np.float16, BF16: np.uint16}[self.dtype]
            return np.empty(so, dtype=dt), np.empty(sl, dtype=np.float32)
        if hasattr(like, "new_empty"):     # PyTorch
            import torch
            return like.new_empty(so), like.new_empty(sl, dtype=torch.float32)
        raise TypeError("pass out=(o, lse) for inputs of type %s" % type(like).__name__)

    def _inputs(self, docs, layouts, topk, alibi_slopes, sink_logits, seed, q_offset=None, k_offset=None,
                q_lens=None, k_lens=None):
        """The _Inputs of a call and the arrays it points into (keep them
        alive for the call)."""
        import numpy as np
        p = self.problem
        seed = _int("seed", seed, 0, 2**64, "[0, 2**64)")
        inp = _Inputs()
        if q_offset is not None or k_offset is not None:
            # Either given: query row q at q + q_offset (default lk - lq),
            # key row k at k + k_offset (default 0); the library checks them.
            inp.offsets_set = 1
            inp.q_offset = _int("q_offset", p.lk - p.lq if q_offset is None else q_offset)
            inp.k_offset = _int("k_offset", 0 if k_offset is None else k_offset)
        keep = []
        if docs is not None:
            d = _int_array(np, "docs", docs, np.int64)
            if d.ndim != 1:
                raise ValueError("docs: expected one dimension, got shape %s" % (d.shape,))
            keep.append(d)
            inp.doc_offsets = d.ctypes.data
            inp.ndocs = d.size - 1
        if layouts:
            arr = (_Layout * len(layouts))()
            for i, (name, (bm, bn, bits)) in enumerate(layouts.items()):
                b = _int_array(np, "layouts[%r]" % (name,), bits, np.uint8)
                if b.ndim != 2:
                    raise ValueError("layouts[%r]: expected bits of two dimensions [nqb, nkb], got shape %s"
                                     % (name, b.shape))
                bm, bn = _int("layouts[%r] bm" % (name,), bm), _int("layouts[%r] bn" % (name,), bn)
                nm = name.encode()
                keep += [b, nm]
                arr[i] = _Layout(nm, bm, bn, b.shape[0], b.shape[1], b.ctypes.data)
            keep.append(arr)
            inp.layouts = arr
            inp.nlayouts = len(layouts)
        if topk is not None:
            t = _int_array(np, "topk", topk, np.int32)
            want = (p.batch, p.heads, (p.lk + 63) // 64, t.shape[-1] if t.ndim else 0)
            if t.shape != want:
                raise ValueError("topk: expected shape %s, got %s ([batch, heads, ceil(lk / 64), K])"
                                 % (want, t.shape))
            keep.append(t)
            inp.topk_blocks = t.ctypes.data
            inp.topk_k = t.shape[-1]
        for field, arr in (("alibi_slopes", alibi_slopes), ("sink_logits", sink_logits)):
            if arr is not None:
                a = _float_array(np, field, arr)
                if a.shape != (self.problem.heads,):
                    raise ValueError("%s: expected shape (%d,), got %s"
                                     % (field, self.problem.heads, a.shape))
                keep.append(a)
                setattr(inp, field, a.ctypes.data)
        for field, arr in (("q_lens", q_lens), ("k_lens", k_lens)):
            if arr is not None:
                a = _int_array(np, field, arr, np.int32)
                if a.shape != (p.batch,):
                    raise ValueError("%s: expected shape (%d,), one length per batch entry, got %s"
                                     % (field, p.batch, a.shape))
                keep.append(a)
                setattr(inp, field, a.ctypes.data)
        inp.seed = seed
        return inp, keep

    def _paged(self, k, page_size, page_layout, block_table, inp, keep):
        """Point INP at a _PagedKV of PAGE_SIZE (None: from the pool K's
        shape) and PAGE_LAYOUT ("nhd" or "hnd"), with BLOCK_TABLE (None: a
        plan's, which takes its table at run time)."""
        if page_layout not in PAGE_LAYOUTS:
            raise ValueError("page_layout: expected 'nhd' or 'hnd', got %r" % (page_layout,))
        if page_size is None:
            shape = getattr(k, "shape", None)
            if shape is None or len(shape) != 4:
                raise ValueError("page_size: not given, and k is not a 4-d pool to take it from")
            page_size = shape[1] if page_layout == "nhd" else shape[2]
        pk = _PagedKV(_int("page_size", page_size), PAGE_LAYOUTS[page_layout], None)
        if block_table is not None:
            tb = _Tensor("block_table", block_table, None)
            keep.append(tb)
            pk.block_table = ctypes.pointer(tb.t)
        keep.append(pk)
        inp.paged = ctypes.pointer(pk)

    def forward(self, q, k, v, docs=None, out=None, layouts=None, topk=None, stream=None,
                alibi_slopes=None, sink_logits=None, seed=0, block_table=None, page_size=None,
                page_layout="nhd", q_offset=None, k_offset=None, q_lens=None, k_lens=None):
        """O = attention(q, k, v) and LSE; returns (o, lse).  Each call plans,
        runs and (CUDA) synchronises the device: to run one problem many
        times, make a plan() once.

        docs: document offsets (ndocs + 1 cumulative key positions, from 0 to
        lk); layouts: {name: (bm, bn, bits uint8 [nqb, nkb])}; topk:
        int32 [B, H, ceil(lk / 64), K] routed key blocks; alibi_slopes:
        float32 [heads] for a pattern "with alibi"; sink_logits: float32
        [heads], learned sink logits (one more softmax term per row, with no
        value; -inf for none); seed: nonzero, XORed into every random()
        atom's seed; q_offset, k_offset: the positions of query row 0 and
        key row 0 (either given: the other defaults to lk - lq, resp. 0), for
        a chunk of queries or a slice of the keys at its true positions
        (docs/spec.md, "Positions"); q_lens, k_lens: int32 [batch], a
        variable-length batch (padded: lq and lk are the longest; entry b
        uses its first q_lens[b] query and k_lens[b] key rows, as if run
        alone; its rows past q_lens[b] get O 0 and LSE -inf; CPU only);
        out: (o, lse) to write into (lse may be None).

        block_table: int32 [batch, max_pages], for paged K and V: k and v
        are then pools of pages, [pages, P, kv_heads, D] (page_layout
        "nhd") or [pages, kv_heads, P, D] ("hnd"), and logical key t of
        batch entry b is slot t % P of page block_table[b, t // P];
        page_size: P (None: from k's shape)."""
        inp, keep = self._inputs(docs, layouts, topk, alibi_slopes, sink_logits, seed, q_offset, k_offset,
                                 q_lens, k_lens)
        if block_table is not None:
            self._paged(k, page_size, page_layout, block_table, inp, keep)
        if out is None:
            o, lse = self._alloc(q)
        else:
            o, lse = out
        dt = self.dtype
        a = self._args
        lib = _L()
        with self.ctx._lock:
            tq = a.tensor(0, "q", q, dt)
            tk = a.tensor(1, "k", k, dt)
            tv = a.tensor(2, "v", v, dt)
            to = a.tensor(3, "o", o, dt, True)
            tl = a.tensor(4, "lse", lse, FP32, True) if lse is not None else None
            st = lib.hattn_forward(self._h, tq.r, tk.r, tv.r, to.r, tl.r if tl is not None else None,
                                   ctypes.byref(inp), stream)
            if st != 0:
                raise HattnError(st, lib.hattn_kernel_errmsg(self._h).decode(errors="replace"))
        del keep
        return o, lse

    def plan(self, docs=None, layouts=None, topk=None, alibi_slopes=None, sink_logits=None, seed=0,
             page_size=None, page_layout="nhd", q_offset=None, k_offset=None, q_lens=None, k_lens=None):
        """The Plan of this kernel with these run-time inputs (as forward
        takes them; copied, q_lens and k_lens included: every run uses
        those lengths): the block plan and tables built, and on CUDA
        uploaded, once.  Plan.run then only launches.  page_size: paged K
        and V in pages of that many positions, in page_layout ("nhd" or
        "hnd"): Plan.run then takes the pools and each run's block_table."""
        inp, keep = self._inputs(docs, layouts, topk, alibi_slopes, sink_logits, seed, q_offset, k_offset,
                                 q_lens, k_lens)
        if page_size is not None:
            self._paged(None, page_size, page_layout, None, inp, keep)
        lib = _L()
        h = ctypes.c_void_p()
        with self.ctx._lock:
            st = lib.hattn_plan_create(self._h, ctypes.byref(inp), ctypes.byref(h))
            if st != 0:
                raise HattnError(st, lib.hattn_kernel_errmsg(self._h).decode(errors="replace"))
        del keep
        return Plan(self, h.value, paged=page_size is not None)

    def __del__(self):
        try:
            with self.ctx._lock:     # destroying the last kernel may free the context
                if self._h:
                    _L().hattn_kernel_destroy(self._h)
                    self._h = None
        except Exception:
            pass


def merge(ctx, parts, out=None, stream=None):
    """Context.merge: merge [(o1, lse1), (o2, lse2), ...] by their LSE."""
    return ctx.merge(parts, out=out, stream=stream)


_raw_stream = None      # torch._C._cuda_getCurrentRawStream, or False


def _current_stream(x):
    """The current PyTorch CUDA stream of tensor X's device (a CUstream as
    an int), or None for anything else."""
    global _raw_stream
    dev = getattr(x, "device", None)
    if getattr(dev, "type", None) != "cuda":
        return None
    if _raw_stream is None:      # a cudaStream_t as an int, cheaply
        import torch
        _raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or False
    if _raw_stream and dev.index is not None:
        return _raw_stream(dev.index) or None
    import torch
    if _raw_stream:
        return _raw_stream(torch.cuda.current_device()) or None
    return torch.cuda.current_stream(dev).cuda_stream


class Plan:
    """A kernel's per-problem state (Kernel.plan): run() checks the
    tensors and launches, allocating, copying and synchronising nothing.
    The plan keeps its context alive, also after the Kernel and the
    Context are gone."""

    def __init__(self, kernel, h, paged=False):
        self.kernel = kernel        # for its problem and dtype
        self.ctx = kernel.ctx       # for its lock
        self._h = h
        self.paged = paged          # made with page_size: runs take a block_table
        self._args = _Args(6)       # q, k, v, o, lse, block_table of the last run
        # ... and of the last run or check with lengths: those six, then
        # q_lens, k_lens, cu_seqlens_q, cu_seqlens_k.
        self._vargs = _Args(10)

    def run(self, q, k, v, out=None, stream=None, block_table=None, q_lens=None, k_lens=None,
            cu_seqlens_q=None, cu_seqlens_k=None):
        """O = attention(q, k, v) and LSE under the plan; returns (o, lse).
        out: (o, lse) to write into (lse may be None), else allocated like q.
        CPU: returns when they are written.  CUDA: queued on STREAM (a
        CUstream as an int; None: for PyTorch tensors the current PyTorch
        stream, else the default stream) and never waited for: synchronise
        the stream before reading the outputs on the host.  A paged plan
        (Kernel.plan(page_size=...)) takes k and v as the pools and this
        run's block_table (int32 [batch, max_pages]; hattn_run_paged).

        A variable-length batch, its lengths given per run
        (hattn_run_varlen): int32 arrays or tensors on the plan's device
        (NumPy arrays, PyTorch tensors, DLPack objects; for a CPU plan also
        lists of ints), for a plan made without q_lens, k_lens or offsets,
        for the longest lengths (lq, lk) and the batch.  Padded form:
        q_lens, k_lens [batch], q, k, v, o, lse as without them; entry b
        uses its first q_lens[b] queries and k_lens[b] keys, its other rows
        of O get 0 and of LSE -inf.  Packed form: cu_seqlens_q [batch + 1]
        (nondecreasing offsets), q and o [total_q, heads, head_dim], lse
        [heads, total_q] (allocated so when out is None, total_q from q's
        first dimension); cu_seqlens_k [batch + 1] with k, v [total_k,
        kv_heads, head_dim].  One form per side (q_lens or cu_seqlens_q,
        k_lens or cu_seqlens_k); an absent one means lq (lk) for every
        entry.  Entry b's queries end with its keys (query row i at
        position i + k_len - q_len).  A paged plan takes k_lens (with its
        block_table), not cu_seqlens_k.  CPU: the lengths are checked, and
        HattnError (HATTN_EINPUT) names a bad one; CUDA: the kernels read
        them on the device and trust them (check() them first when they
        may be wrong)."""
        if q_lens is not None or k_lens is not None or cu_seqlens_q is not None or cu_seqlens_k is not None:
            return self._varlen(True, q, k, v, out, stream, block_table, q_lens, k_lens, cu_seqlens_q,
                                cu_seqlens_k)
        if out is None:
            o, lse = self.kernel._alloc(q)
        else:
            o, lse = out
        if stream is None and _kinds.get(type(q)) != _KIND_NUMPY:
            stream = _current_stream(q)
        dt = self.kernel.dtype
        a = self._args
        lib = _L()
        with self.ctx._lock:
            tq = a.tensor(0, "q", q, dt)
            tk = a.tensor(1, "k", k, dt)
            tv = a.tensor(2, "v", v, dt)
            to = a.tensor(3, "o", o, dt, True)
            tl = a.tensor(4, "lse", lse, FP32, True) if lse is not None else None
            tb = a.tensor(5, "block_table", block_table, None) if block_table is not None else None
            if not self._h:
                raise HattnError(HATTN_EINVAL, "Plan.run: the plan was destroyed")
            if self.paged or tb is not None:
                st = lib.hattn_run_paged(self._h, tq.r, tk.r, tv.r, tb.r if tb is not None else None, to.r,
                                         tl.r if tl is not None else None, stream)
            else:
                st = lib.hattn_run(self._h, tq.r, tk.r, tv.r, to.r, tl.r if tl is not None else None, stream)
            if st != 0:
                raise HattnError(st, lib.hattn_plan_errmsg(self._h).decode(errors="replace"))
        return o, lse

    def check(self, q, k, v, out=None, lse=None, block_table=None, q_lens=None, k_lens=None, cu_seqlens_q=None,
              cu_seqlens_k=None):
        """Check what run() with these arguments would check, and on a
        device what it trusts (hattn_run_check): the tensors, the lengths
        (in range, offsets nondecreasing and within the packed tensors'
        rows) and the block table's entries the run would read, the lengths
        and the table downloaded from the device (synchronously).  Launches
        nothing and writes nothing.  out: O, or (o, lse) as run() takes it;
        lse: LSE (None: none); with out None, O and LSE as run() would
        allocate them.  Returns None; raises HattnError with the status and
        the message the run would give."""
        if isinstance(out, tuple):
            if lse is not None:
                raise ValueError("Plan.check: lse given twice (in out=(o, lse) and as lse=)")
            o, lse = out
        elif out is None:
            o, l2 = self.kernel._alloc(q, cu_seqlens_q is not None)
            lse = l2 if lse is None else lse
        else:
            o = out
        self._varlen(False, q, k, v, (o, lse), None, block_table, q_lens, k_lens, cu_seqlens_q, cu_seqlens_k)

    def _lens(self, name, x):
        """X, lengths for hattn_run_varlen: a list, tuple or range of ints
        becomes an int32 NumPy array (a CPU plan only); anything else is
        passed as it is, and the library checks it (int32, one dimension,
        its length, on the plan's device)."""
        if isinstance(x, (list, tuple, range)):
            if self.ctx.backend != "cpu":
                raise TypeError("%s: a Python %s is host memory; a %s plan takes an int32 tensor on its device"
                                % (name, type(x).__name__, self.ctx.backend))
            import numpy as np
            a = _int_array(np, name, x, np.int32)
            if a.ndim != 1:
                raise ValueError("%s: expected one dimension, got shape %s" % (name, a.shape))
            return a
        return x

    def _varlen(self, launch, q, k, v, out, stream, block_table, q_lens, k_lens, cu_seqlens_q, cu_seqlens_k):
        """run() with lengths (LAUNCH: hattn_run_varlen, returns (o, lse))
        or check() (hattn_run_check; no lengths: a check of a plain run)."""
        q_lens, k_lens = self._lens("q_lens", q_lens), self._lens("k_lens", k_lens)
        cu_seqlens_q, cu_seqlens_k = self._lens("cu_seqlens_q", cu_seqlens_q), self._lens("cu_seqlens_k", cu_seqlens_k)
        if out is None:
            o, lse = self.kernel._alloc(q, cu_seqlens_q is not None)
        else:
            o, lse = out
        if launch and stream is None and _kinds.get(type(q)) != _KIND_NUMPY:
            stream = _current_stream(q)
        if block_table is not None and not self.paged:
            raise HattnError(HATTN_EINPUT, "Plan.%s: block_table given, but the plan was made for contiguous K "
                             "and V (Kernel.plan without page_size)" % ("run" if launch else "check"))
        dt = self.kernel.dtype
        a = self._vargs
        lib = _L()
        with self.ctx._lock:
            tq = a.tensor(0, "q", q, dt)
            tk = a.tensor(1, "k", k, dt)
            tv = a.tensor(2, "v", v, dt)
            to = a.tensor(3, "o", o, dt, True)
            tl = a.tensor(4, "lse", lse, FP32, True) if lse is not None else None
            tb = a.tensor(5, "block_table", block_table, None) if block_table is not None else None
            lens = _Varlen()
            held = []           # the length tensors' _Tensors (a DLPack capsule) until the call returns
            for i, (field, x) in enumerate((("q_lens", q_lens), ("k_lens", k_lens), ("cu_seqlens_q", cu_seqlens_q),
                                            ("cu_seqlens_k", cu_seqlens_k))):
                if x is not None:
                    t = a.tensor(6 + i, field, x, None)
                    held.append(t)
                    setattr(lens, field, ctypes.pointer(t.t))
            if not self._h:
                raise HattnError(HATTN_EINVAL, "Plan.%s: the plan was destroyed" % ("run" if launch else "check"))
            args = (self._h, tq.r, tk.r, tv.r, tb.r if tb is not None else None, ctypes.byref(lens) if held else None,
                    to.r, tl.r if tl is not None else None)
            st = lib.hattn_run_varlen(*args, stream) if launch else lib.hattn_run_check(*args)
            if st != 0:
                raise HattnError(st, lib.hattn_plan_errmsg(self._h).decode(errors="replace"))
        return o, lse

    def destroy(self):
        """Free the plan now (CUDA: after the runs queued on it finished)."""
        lock = getattr(self, "ctx", None)
        if lock is None:
            return
        with self.ctx._lock:         # destroying the last plan may free the context
            if self._h:
                _L().hattn_plan_destroy(self._h)
                self._h = None

    def __del__(self):
        try:
            self.destroy()
        except Exception:
            pass
