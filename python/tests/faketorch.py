"""faketorch: a stand-in for the parts of PyTorch that hattn reads from a
tensor, for the tests and benchmarks of a machine without PyTorch.  Not
PyTorch, and not part of the hattn module.

hattn describes a PyTorch tensor from its attributes (_Tensor._from_torch,
_Args.tensor): type(x).__module__ == "torch", x.dtype (a key of the table
_torch_types builds from torch.float32, torch.float16, ...), x.layout (is
torch.strided), x.device (.type, .index; compared with ==), x.dim(),
x.shape, x.stride() (in elements) and x.data_ptr() (the address of element
0, storage offset included).  Tensor here has those, over a NumPy array
(its memory), CPU only; install() puts this module in sys.modules["torch"]
unless a real PyTorch is there.
"""
import sys
import types

import numpy as np


class dtype:
    def __init__(self, name, np_dtype):
        self.name, self.np_dtype = name, np.dtype(np_dtype)

    def __repr__(self):
        return "faketorch." + self.name


float32 = dtype("float32", np.float32)
float16 = dtype("float16", np.float16)
bfloat16 = dtype("bfloat16", np.uint16)       # bf16 words
float64 = dtype("float64", np.float64)
int32 = dtype("int32", np.int32)
int64 = dtype("int64", np.int64)
uint8 = dtype("uint8", np.uint8)
strided = object()
sparse_coo = object()


class device:
    __slots__ = ("type", "index")

    def __init__(self, type, index=None):
        self.type, self.index = type, index

    def __eq__(self, other):
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))


_BY_NP = {d.np_dtype: d for d in (float32, float16, float64, int32, int64, uint8)}


class Tensor:
    """A strided CPU tensor over NumPy array A (a view of it: transpose,
    slicing and .numpy() share the memory).  dtype: a faketorch dtype, by
    default from A's (uint16 words: pass bfloat16)."""

    layout = strided

    def __init__(self, a, dtype=None):
        self._a = a
        self.dtype = dtype if dtype is not None else _BY_NP[a.dtype]
        self._stride = tuple(s // a.itemsize for s in a.strides)
        self._ptr = a.__array_interface__["data"][0]

    @property
    def device(self):
        return device("cpu")        # a new object each time, as PyTorch's

    @property
    def shape(self):
        return self._a.shape

    def dim(self):
        return self._a.ndim

    def stride(self):
        return self._stride

    def data_ptr(self):
        return self._ptr

    def numpy(self):
        return self._a

    def transpose(self, i, j):
        return Tensor(self._a.swapaxes(i, j), self.dtype)

    def __getitem__(self, idx):
        return Tensor(self._a[idx], self.dtype)


Tensor.__module__ = "torch"


def from_numpy(a, dtype=None):
    return Tensor(a, dtype)


def install():
    """The torch module: the real one when it imports, else this one, put
    in sys.modules["torch"].  Returns (module, is_fake)."""
    try:
        import torch
        return torch, False
    except ImportError:
        pass
    m = sys.modules[__name__]
    fake = types.ModuleType("torch")
    for name in ("float32", "float16", "bfloat16", "float64", "int32", "int64", "uint8", "strided",
                 "sparse_coo", "device", "Tensor", "from_numpy"):
        setattr(fake, name, getattr(m, name))
    sys.modules["torch"] = fake
    return fake, True
