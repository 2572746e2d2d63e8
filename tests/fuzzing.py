"""Mutation fuzzing of the file loaders with a time budget per load (used by test_fuzz_files.py and
benchmarks/fuzz_files.py).

A mutation is drawn from a seed: ``bitflip`` (1-3 random bits), ``truncate`` (a random length), ``zero512`` (a
512-byte block zeroed at a random offset) or ``overwrite8`` (1-4 random 8-byte overwrites). Every mutated file is
loaded in a separate worker process (``python tests/fuzzing.py --worker``, one per run, restarted after a hang), so a
load that does not finish within the budget is reported as ``"hang"`` instead of hanging the caller.

Outcomes of one load:

- ``identical``: loaded, and equal to what the pristine file gives (names, order, dtypes, bytes, metadata);
- ``faithful``: (safetensors only) loaded, differs from the pristine file but equals an independent plain parse of
  the mutated bytes (the format has no checksum over its data);
- ``format_error``: raised :class:`fmq_np.errors.FormatError`;
- ``different``: loaded, but not ``identical`` (nor ``faithful``): a corruption that went undetected;
- ``other``: raised any other exception (a raw h5py / zipfile / NumPy error);
- ``hang``: no answer within the budget (the worker is killed).
"""
import json
import os
import queue
import struct
import subprocess
import sys
import threading

import numpy as np

KINDS = ("bitflip", "truncate", "zero512", "overwrite8")
OUTCOMES = ("identical", "faithful", "format_error", "different", "other", "hang")
#: file formats the worker knows how to load and compare
FORMATS = ("float_h5", "legacy_float_h5", "quantized_h5", "quantized_v1_h5", "npz", "safetensors")
#: a quantized model in format version 1 (one HDF5 object per tensor; tests/fixtures/make_quantized_v1.py)
QUANTIZED_V1 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "quantized_v1.h5")


# ------------------------------------------------------------------------------------------------ mutations
def mutate(raw, seed, kind=None):
    """``(mutated bytes, description)`` of ``raw`` for ``seed``; ``kind`` defaults to ``KINDS[seed % 4]``."""
    rng = np.random.default_rng(seed)
    kind = KINDS[seed % len(KINDS)] if kind is None else kind
    out = bytearray(raw)
    n = len(out)
    if kind == "bitflip":
        sites = [(int(rng.integers(n)), int(rng.integers(8))) for _ in range(int(rng.integers(1, 4)))]
        for pos, bit in sites:
            out[pos] ^= 1 << bit
        what = ", ".join(f"byte {p} bit {b}" for p, b in sites)
    elif kind == "truncate":
        keep = int(rng.integers(n))
        del out[keep:]
        what = f"kept {keep} of {n} bytes"
    elif kind == "zero512":
        start = int(rng.integers(max(1, n - 511)))
        out[start:start + 512] = bytes(len(out[start:start + 512]))
        what = f"bytes {start}..{min(n, start + 512) - 1} zeroed"
    elif kind == "overwrite8":
        starts = [int(rng.integers(max(1, n - 7))) for _ in range(int(rng.integers(1, 5)))]
        for s in starts:
            out[s:s + 8] = rng.integers(0, 256, size=len(out[s:s + 8]), dtype=np.uint8).tobytes()
        what = "8 random bytes at " + ", ".join(map(str, starts))
    else:
        raise ValueError(f"unknown mutation kind {kind!r}")
    return bytes(out), f"seed {seed} {kind}: {what}"


def touched_range(raw, seed):
    """``(first, last)`` byte positions a same-length mutation of ``seed`` may change, or None for truncation."""
    a = np.frombuffer(raw, np.uint8)
    b = np.frombuffer(mutate(raw, seed)[0], np.uint8)
    if len(a) != len(b):
        return None
    diff = np.flatnonzero(a != b)
    return (int(diff[0]), int(diff[-1])) if diff.size else (len(a), len(a))


# ---------------------------------------------------------------------------------------------- sample files
def legacy_float_checkpoint(path, model, meta=None):
    """A float checkpoint as fmq_np wrote them before issue 12: HDF5's default ('earliest') object format, without
    metadata checksums, and variable-length string attributes (kept in the unchecksummed global heap)."""
    import h5py
    params = model.parameters()
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "fmq_np.model"
        f.attrs["format_version"] = 1
        f.attrs["fmq_np_version"] = "0.1.0"
        f.attrs["model_class"] = type(model).__name__
        f.attrs["model_config"] = json.dumps(model.config())
        f.attrs["param_names"] = json.dumps(list(params))
        f.attrs["meta"] = json.dumps(meta or {})
        g = f.create_group("params")
        for name, arr in params.items():
            g.create_dataset(name, data=arr, compression="gzip", compression_opts=4, fletcher32=True)


def make_files(folder):
    """Write one pristine file of every format in ``FORMATS`` into ``folder`` → ``{format: path}`` (the quantized
    model in the current format, small tensors packed; ``quantized_v1_h5`` copied from the committed fixture)."""
    import shutil

    import fmq_np as fq
    from fmq_np.io.importers import write_safetensors
    from fmq_np.quant import quantize_model
    folder = os.fspath(folder)
    paths = {fmt: os.path.join(folder, name) for fmt, name in
             (("float_h5", "float.h5"), ("legacy_float_h5", "legacy.h5"), ("quantized_h5", "q.h5"),
              ("quantized_v1_h5", "q_v1.h5"), ("npz", "m.npz"), ("safetensors", "m.safetensors"))}
    model = fq.nn.MLPVelocity(dim=2, hidden=16, depth=2, seed=0)
    fq.io.save(paths["float_h5"], model, meta={"note": "fuzz"})
    legacy_float_checkpoint(paths["legacy_float_h5"], model, meta={"note": "fuzz"})
    arrays = sample_arrays()
    qm = quantize_model(arrays, bits=3, method="ot")
    qm.tensors["u"] = quantize_model({"u": arrays["a.weight"]}, bits=2, method="uniform").tensors["u"]
    fq.io.save(paths["quantized_h5"], qm)
    shutil.copyfile(QUANTIZED_V1, paths["quantized_v1_h5"])
    np.savez_compressed(paths["npz"], **arrays)
    write_safetensors(paths["safetensors"], arrays)
    return paths


def sample_arrays():
    rng = np.random.default_rng(0)
    return {"a.weight": rng.standard_normal((6, 10)).astype(np.float32),
            "a.bias": rng.standard_normal(6).astype(np.float32),
            "b/kernel": rng.standard_normal((3, 4, 2)),
            "n": np.arange(3, dtype=np.int32)}


# ------------------------------------------------------------------------------------------------------ runner
def run_mutations(fmt, pristine, seeds, folder, budget_s=30.0):
    """Load a mutation of file ``pristine`` (format ``fmt``) for every seed, each in the worker process within
    ``budget_s`` seconds → list of ``(seed, description, outcome, detail)``."""
    raw = open(pristine, "rb").read()
    ext = os.path.splitext(pristine)[1]
    results, worker = [], None
    try:
        for seed in seeds:
            data, what = mutate(raw, seed)
            path = os.path.join(os.fspath(folder), f"mut-{fmt}-{seed}{ext}")
            with open(path, "wb") as fh:
                fh.write(data)
            if worker is None:
                worker = _Worker(fmt, pristine)
            outcome, detail = worker.load(path, budget_s)
            if outcome == "hang":
                worker.kill()
                worker = None
            else:
                os.remove(path)          # hung files stay, to be looked at
            results.append((seed, what, outcome, detail))
    finally:
        if worker is not None:
            worker.kill()
    return results


def counts(results):
    """``{outcome: count}`` over ``OUTCOMES`` for ``run_mutations``'s results."""
    out = dict.fromkeys(OUTCOMES, 0)
    for _, _, outcome, _ in results:
        out[outcome] += 1
    return out


class _Worker:
    """A ``python fuzzing.py --worker FMT PRISTINE`` process answering one JSON line per path sent."""

    def __init__(self, fmt, pristine, start_budget_s=300.0):
        import fmq_np
        env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        root = os.path.dirname(os.path.dirname(os.path.abspath(fmq_np.__file__)))
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", fmt, pristine],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._answer(start_budget_s)      # the worker loads the pristine file first (imports, JIT)
        if ready != ["ready", ""]:
            self.kill()
            raise RuntimeError(f"fuzz worker for {fmt} did not start: {ready}")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _answer(self, budget_s):
        try:
            line = self.lines.get(timeout=budget_s)
        except queue.Empty:
            return ["hang", f"no answer within {budget_s:g} s"]
        if line is None:
            return ["other", f"worker died (exit status {self.proc.wait()})"]
        return json.loads(line)

    def load(self, path, budget_s):
        try:
            self.proc.stdin.write(path + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return "other", f"worker died (exit status {self.proc.wait()})"
        outcome, detail = self._answer(budget_s)
        return outcome, detail

    def kill(self):
        self.proc.kill()
        self.proc.wait()


# ------------------------------------------------------------------------------------------------------ worker
def _loader(fmt):
    """``load(path)`` → a comparable plain structure for format ``fmt`` (raises what the loader raises)."""
    import fmq_np as fq
    from fmq_np.io.importers import read_arrays
    if fmt in ("float_h5", "legacy_float_h5"):
        def load(path):
            model = fq.io.load(path)             # file_format, then load_model: the path users take
            meta = fq.io.load_model(path)[1]
            return ("model", type(model).__name__, json.dumps(model.config(), sort_keys=True), _arrays_key(
                model.parameters()), json.dumps(meta, sort_keys=True))
        return load
    if fmt in ("quantized_h5", "quantized_v1_h5"):
        def load(path):
            qm = fq.io.load(path)
            return ("quantized", json.dumps(qm.meta, sort_keys=True),
                    [_tensor_key(k, t) for k, t in qm.tensors.items()])
        return load
    if fmt in ("npz", "safetensors"):
        return lambda path: _arrays_key(read_arrays(path))
    raise ValueError(f"unknown format {fmt!r}")


def _arrays_key(arrays):
    return [(k, a.dtype.str, a.shape, a.tobytes()) for k, a in arrays.items()]


def _tensor_key(name, t):
    if isinstance(t, np.ndarray):
        return (name, "array", t.dtype.str, t.shape, t.tobytes())
    codes, codebook = np.asarray(t.codes), np.asarray(t.codebook)
    return (name, tuple(t.shape), np.dtype(t.dtype).str, int(t.bits), t.method, t.granularity, int(t.group_size),
            json.dumps(t.meta, sort_keys=True), codes.dtype.str, codes.shape, codes.tobytes(), codebook.dtype.str,
            codebook.shape, codebook.tobytes())


def reference_safetensors(raw):
    """Independent plain reading of safetensors bytes → ``_arrays_key``-like list (None when it does not parse)."""
    dtypes = {"F32": "<f4", "F64": "<f8", "I32": "<i4"}
    try:
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        header.pop("__metadata__", None)
        out = []
        for k, e in header.items():
            dt = np.dtype(dtypes[e["dtype"]])
            blob = raw[8 + n + e["data_offsets"][0]:8 + n + e["data_offsets"][1]]
            a = np.frombuffer(blob, dt).reshape(e["shape"]).astype(dt.newbyteorder("="))
            out.append((k, a.dtype.str, a.shape, a.tobytes()))
        return out
    except Exception:                    # noqa: BLE001 - anything unparsable has no reference
        return None


def _classify(fmt, load, reference, path):
    from fmq_np.errors import FormatError
    try:
        got = load(path)
    except FormatError as exc:
        return "format_error", str(exc)
    except BaseException as exc:         # noqa: BLE001 - the point is to report any other exception
        return "other", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if got == reference:
        return "identical", ""
    if fmt == "safetensors" and got == reference_safetensors(open(path, "rb").read()):
        return "faithful", ""
    return "different", "loaded content differs from the pristine file's"


def _worker_main(fmt, pristine):
    load = _loader(fmt)
    reference = load(pristine)
    print(json.dumps(["ready", ""]), flush=True)
    for line in sys.stdin:
        outcome, detail = _classify(fmt, load, reference, line.rstrip("\n"))
        print(json.dumps([outcome, detail[:300]]), flush=True)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker_main(sys.argv[2], sys.argv[3])
