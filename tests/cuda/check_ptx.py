"""Compile every CUDA kernel of fmq_np.quant.gpu to PTX with NVVM, on a machine without a GPU.

The simulator (``NUMBA_ENABLE_CUDASIM=1``, what CI runs) executes the kernels as Python: it checks their answers,
not that Numba's CUDA target can type and compile them (a helper the simulator runs happily may use something
device code does not support). This script closes that gap where no GPU is lent:

1. it runs ``tests/cuda`` under the simulator with every kernel launch recorded (which kernel, with which argument
   types: array dtype, dimensions and layout, scalar types);
2. in a fresh process on the real CUDA target it compiles each recorded (kernel, signature) with
   ``numba.cuda.compile_ptx`` for ``--cc`` (default 9.0, the H200's), the shared device helpers included.

Needs NVVM, not a GPU: in a venv with fmq_np's requirements plus ``nvidia-cuda-nvcc-cu12``, with ``CUDA_HOME`` at
its ``nvidia/cuda_nvcc`` folder::

    python -m venv /tmp/ptxvenv && /tmp/ptxvenv/bin/pip install -e '.[test]' nvidia-cuda-nvcc-cu12
    CUDA_HOME=/tmp/ptxvenv/lib/python3.11/site-packages/nvidia/cuda_nvcc /tmp/ptxvenv/bin/python tests/cuda/check_ptx.py

Prints one line per (kernel, signature) and exits 1 if any fails to compile.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _arg_type(arg):
    """A JSON-able description of one kernel argument as Numba's CUDA target would type it."""
    import numpy as np
    ary = getattr(arg, "_ary", arg)                  # the simulator's device arrays wrap a NumPy array
    if isinstance(ary, np.ndarray) and ary.ndim > 0:
        return ["array", ary.dtype.name, ary.ndim, "C" if ary.flags.c_contiguous else "A"]
    if isinstance(arg, (bool, np.bool_)):
        return ["scalar", "boolean"]
    if isinstance(arg, (int, np.integer)):
        return ["scalar", np.asarray(arg).dtype.name if isinstance(arg, np.integer) else "int64"]
    if isinstance(arg, (float, np.floating)):
        return ["scalar", np.asarray(arg).dtype.name if isinstance(arg, np.floating) else "float64"]
    raise TypeError(f"unrecorded argument type {type(arg).__name__}")


def record(out):
    """Run tests/cuda under the simulator, writing the distinct (kernel name, argument types) launched to ``out``."""
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    import pytest
    from numba.cuda.simulator.kernel import FakeCUDAKernel
    seen = set()
    original = FakeCUDAKernel.__call__

    def recording_call(self, *args):
        if not self._device and self.fn.__module__ == "fmq_np.quant.gpu":
            seen.add(json.dumps([self.fn.__name__, [_arg_type(a) for a in args]]))
        return original(self, *args)

    FakeCUDAKernel.__call__ = recording_call
    code = pytest.main(["-q", "-p", "no:cacheprovider", os.path.join(HERE, "test_gpu_kernels.py")])
    if code != 0:
        sys.exit(f"the simulator tests failed (exit {code}): fix them first")
    with open(out, "w") as f:
        json.dump(sorted(json.loads(s) for s in seen), f, indent=1)
    print(f"recorded {len(seen)} (kernel, signature) pairs")


def compile_all(recorded, cc):
    """Compile each recorded launch to PTX on the real CUDA target; returns the number of failures."""
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    import numpy as np
    from numba import cuda, types
    from numba.cuda import dispatcher
    from fmq_np.quant import gpu

    class Device:                      # a device function compiles for the current device's cc: say which
        compute_capability = cc
    dispatcher.get_current_device = lambda: Device
    with open(recorded) as f:
        launches = json.load(f)
    failures = 0
    for name, arg_types in launches:
        sig = tuple(types.Array(getattr(types, t[1]), t[2], t[3]) if t[0] == "array" else getattr(types, t[1])
                    for t in arg_types)
        kernel = getattr(gpu, name, None)
        if kernel is None:            # made per dtype by a factory: gpu._CHUNK_MEANS, keyed by the input's dtype
            kernel = gpu._CHUNK_MEANS[np.dtype(arg_types[0][1])]
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=cc)
            print(f"ok    {name}{sig}: {len(ptx):,} characters of PTX")
        except Exception as exc:                      # report every kernel, not just the first failure
            failures += 1
            print(f"FAIL  {name}{sig}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    print(f"{len(launches) - failures} of {len(launches)} compiled for sm_{cc[0]}{cc[1]}")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cc", default="9.0", help="compute capability to compile for (default 9.0)")
    ap.add_argument("--record", help=argparse.SUPPRESS)
    ap.add_argument("--compile", help=argparse.SUPPRESS)
    args = ap.parse_args()
    cc = tuple(int(p) for p in args.cc.split("."))
    if args.record:
        return record(args.record)
    if args.compile:
        sys.exit(1 if compile_all(args.compile, cc) else 0)
    recorded = os.path.join(os.environ.get("TMPDIR", "/tmp"), "fmq_np_cuda_launches.json")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    subprocess.run([sys.executable, __file__, "--record", recorded], check=True, cwd=ROOT, env=env)
    env.pop("NUMBA_ENABLE_CUDASIM")
    sys.exit(subprocess.run([sys.executable, __file__, "--compile", recorded, "--cc", args.cc], cwd=ROOT,
                            env=env).returncode)


if __name__ == "__main__":
    main()
