"""Streaming quantization: checkpoints larger than memory, one tensor at a time, resumable.

    report = fmq_np.quant.quantize_file("model.safetensors.index.json", "q.h5", bits=3, method="ot")
    report = fmq_np.quant.quantize_file("model.safetensors", "deq.safetensors", bits=4, resume=True)

**Inputs** (the named arrays :func:`fmq_np.io.read_arrays` gives, in its order): ``.safetensors`` (each tensor an
``np.memmap`` of its bytes in the file), a sharded checkpoint's ``*.safetensors.index.json`` (Hugging Face layout,
every shard's header checked against the index before any work), ``.npz`` (one member read at a time), ``.h5`` /
``.hdf5`` of float datasets (one dataset at a time) and torch zip checkpoints ``.pth`` / ``.pt`` / ``.ckpt`` /
``.bin`` (:func:`fmq_np.io.torch_pth.iter_pth`: the pickle is read whole, then each storage is read when its first
tensor is made and released after its last). fp16, bf16 (quantized as the float32 read_arrays gives) and fp32.
Each tensor is quantized exactly as :func:`~fmq_np.quant.quantize_model` quantizes it (the same function runs on
it): codes, codebooks and the tensors kept in float are the same bit for bit.

**Outputs.** ``dst`` ending in ``.h5`` / ``.hdf5``: the packed format of :mod:`fmq_np.io.quantized`, written tensor
by tensor into ``dst + ".partial"`` (root attribute ``complete`` false until the last tensor and the model's
``meta``, with the ``source_digest`` of the whole input, are in; then fsynced and renamed onto ``dst``);
``fmq_np.io.load`` refuses a partial file. ``dst`` ending in ``.safetensors``: the dequantized weights under the
input's names, shapes and dtypes (bf16 rounded to nearest even; for a non-safetensors input, the dtypes read_arrays
gives: a torch bf16 tensor comes back as F32; a .pth input is then read twice, once for the header's layout), the
header written first, each tensor's bytes
appended as it is done, into ``<shard>.partial`` files renamed at the end. A sharded input (or a ``dst`` ending in
``.safetensors.index.json``) gives shards ``<stem>-00001-of-0000N.safetensors`` holding the same tensors as the
input's shards, and their index ``<stem>.safetensors.index.json``, written last (the output is complete when it
exists).

**Memory bound.** Peak RSS ≈ fixed overhead (Python, NumPy, Numba, h5py and the loaded kernels: 169 MB measured) +
about 5 × the largest tensor's fp16 bytes (measured by ``benchmarks/bench_stream.py``: 795-800 MB peak for a sharded
fp16 checkpoint whose largest tensor holds 64 M values, 134 MB, the same at 0.27, 0.47 and 1.48 GB total; table in
``benchmarks/README.md``). Per tensor at the same time: the mapped input, its float32 working copy, the uint8 codes,
and for the report the dequantized copy and two sorted copies (W2); nothing but the report row is kept from one
tensor to the next, so the checkpoint's total size does not enter the bound. bf16 input adds a float32 copy of the
tensor (2 × its bytes); a torch checkpoint adds its pickle and the storages in use; HDF5 input its chunk cache.

**Resume.** ``resume=True`` continues the partial output of an interrupted run with the same settings: tensors
already in it are not quantized again (for ``.h5`` output they are still read, for the ``source_digest``). The
partial output records the settings and every done tensor's name, shape and dtype; a mismatch with this run is an
InputError (delete the partial file or run without ``resume``). The input's values are trusted not to have changed
between the two runs. Without ``resume`` a partial output is discarded and the run starts over.

**Dask and local processes.** ``client=`` (a ``dask.distributed.Client``; ``fmq-np quantize --scheduler ADDRESS``)
runs :func:`quantize_one` as one task per tensor; ``workers=N`` (``--workers N``) runs it in N local processes
(spawned: a script that calls it needs the ``if __name__ == "__main__":`` guard). For a ``.safetensors`` input
(one file or shards) a task gets the tensor's path and byte offset and memory-maps it itself, so input and output
must be on a file system every worker sees at the same path; other inputs are read here and their arrays sent with
the task. Results come back (packed codes, or the tensor kept in float) and are written here in input order, by
the same writers, so the output is the same bit for bit as a local run. At most 2 × the cluster's threads tasks are
in flight; for a ``.h5`` output this process still reads every tensor once for the ``source_digest`` (SHA-256, far
quicker than quantizing).

**Errors**: one line naming the file and tensor (FormatError for files, InputError for arguments): a shard the
index names that is missing, a tensor given by two shards or by a shard the index does not say, a shard truncated
before or during the run, a write that fails (a full disk). The partial output stays marked incomplete.
"""
import contextlib
import json
import os
import time

import numpy as np

from fmq_np._validate import check_int
from fmq_np.errors import FmqError, FormatError, InputError

_H5_EXT = (".h5", ".hdf5")
_ST_EXT = ".safetensors"
_PARTIAL = ".partial"


def quantize_file(src, dst, *, bits=3, method="ot", granularity="channel", group_size=None, paper_compat=False,
                  resume=False, progress=None, meta=None, device="auto", key=None, client=None, workers=None):
    """Quantize the weight file ``src`` into ``dst`` tensor by tensor (see the module doc); returns a report dict.

    ``bits, method, granularity, group_size, paper_compat, device``: as :func:`~fmq_np.quant.quantize_model` (its
    default policy: 1-D tensors and tensors too small to gain are kept in float). ``dst``: ``.h5`` / ``.hdf5``
    (packed codes) or ``.safetensors`` / ``.safetensors.index.json`` (dequantized). ``resume``: continue a partial
    output. ``progress``: None (a bar when stderr is a terminal), True / False, or a callable
    ``progress(done, total, name, bytes_read)`` called after each tensor (``total`` None when unknown up front).
    ``meta``: extra JSON-able entries for the quantized model's ``meta`` (``.h5`` output). ``key``: for a torch
    checkpoint, the entry to quantize (``"model"`` for flow_matching's ``{"model", "optimizer", "args", ...}``; as
    :func:`fmq_np.io.read_arrays`), names then relative to it; other formats take no ``key``. ``client``: a
    ``dask.distributed.Client``: each tensor is quantized by a task on the cluster (see "Dask" in the module doc);
    the output is the same bit for bit. ``workers``: instead, N local processes (one big machine, no Dask).

    The report: ``src, dst, files_in, files_out`` (paths), ``bytes_in, bytes_out`` (their sizes on disk),
    ``tensors`` (count), ``quantized`` (how many got codes this run), ``resumed`` (how many were already in the
    partial output), ``seconds``, ``mb_per_s`` (input MB, 10**6 bytes, per second), ``rows`` (the
    :attr:`QuantizedModel.report` row of each tensor quantized in this run) and ``meta``.
    """
    from fmq_np.quant.schemes import check_options
    check_options(bits, method, granularity, group_size, paper_compat)
    src, dst = os.fspath(src), os.fspath(dst)
    source = _open_source(src, key)
    settings = dict(bits=bits, method=method, granularity=granularity, group_size=group_size,
                    paper_compat=bool(paper_compat))
    _check_not_input(dst, source.files)
    if dst.lower().endswith(_H5_EXT):
        out = _H5Out(dst, settings, resume)
    elif dst.lower().endswith(_ST_EXT) or dst.lower().endswith(_ST_EXT + ".index.json"):
        out = _StOut(dst, source, settings, resume)
    else:
        raise InputError(f"{dst}: output must be .h5/.hdf5 (packed) or .safetensors / .safetensors.index.json "
                         f"(dequantized)")
    total = source.count
    bar, callback = _progress(progress, total)
    start, bytes_read, rows, n_quantized, model_meta, n_float = time.perf_counter(), 0, [], 0, None, 0
    name = None

    if client is not None and workers is not None:
        raise InputError("quantize_file: give client= (a Dask cluster) or workers= (local processes), not both")
    if workers is not None:
        check_int("workers", workers, 1)
    jobs = _Jobs(client, workers, settings, device)

    def tensors():
        """Each (name, array) of the input, in order, quantized and written as it goes by."""
        nonlocal bytes_read, n_quantized, model_meta, name, n_float
        for i, (name, array, nbytes, done) in enumerate(jobs.run(source, out.n_done)):
            n_float += array.dtype.kind == "f"
            if done is None:
                out.check_done(i, name, array)
            else:
                row, t, tensor_meta = done
                model_meta = model_meta or tensor_meta
                rows.append(row)
                n_quantized += row["bits"] is not None
                _write(out, i, name, t, array)
                del t, done
            yield name, array
            del array
            bytes_read += nbytes
            bar.update(1, MB_s=bytes_read / 1e6 / max(time.perf_counter() - start, 1e-9))
            if callback is not None:
                callback(i + 1, total, name, bytes_read)
        name = None

    try:
        with bar:
            if out.needs_digest:
                from fmq_np.quant.model import weights_digest
                digest = weights_digest(_Items(tensors()))
            else:
                digest = None
                for _ in tensors():
                    pass
            if n_float == 0:
                raise _Empty(f"{src}: no float tensors to quantize" + (
                    f" (found only {out.count_seen} non-float arrays)" if out.count_seen else " (the file holds none)"))
            if model_meta is None:                     # every tensor was resumed: the settings give the meta
                model_meta = _meta_of(settings)
            model_meta = dict(model_meta, source_digest=digest) if digest else dict(model_meta)
            model_meta.update(meta or {})
            try:
                out.finish(model_meta)
            except OSError as exc:
                raise _WriteError(exc) from None
    except BaseException as exc:
        out.abort()
        if isinstance(exc, _Empty):               # nothing worth resuming
            out.discard()
            raise FormatError(str(exc)) from None
        if isinstance(exc, _WriteError):
            err = exc.args[0]
            where = f"tensor {name!r}" if name is not None else "the output"
            raise FormatError(f"{out.partial_path}: cannot write {where} ({err.strerror or err}); the partial "
                              f"output is kept, marked incomplete: fix the cause and re-run with resume=True "
                              f"(--resume)") from None
        if isinstance(exc, OSError):
            raise FormatError(f"{src}: cannot read tensor {name!r} ({exc.strerror or exc}); partial output "
                              f"{out.partial_path} kept, incomplete") from None
        if isinstance(exc, FmqError):
            raise type(exc)(f"{exc} [partial output {out.partial_path} kept, incomplete]") from None
        raise
    seconds = time.perf_counter() - start
    files_out = out.files
    return dict(src=src, dst=dst, files_in=list(source.files), files_out=files_out,
                bytes_in=sum(os.path.getsize(p) for p in source.files),
                bytes_out=sum(os.path.getsize(p) for p in files_out), tensors=out.count_seen, quantized=n_quantized,
                resumed=out.n_done, seconds=seconds, mb_per_s=bytes_read / 1e6 / max(seconds, 1e-9),
                rows=rows, meta=model_meta)


def _meta_of(settings):
    from fmq_np.quant.schemes import check_options
    bits, group_size = check_options(settings["bits"], settings["method"], settings["granularity"],
                                     settings["group_size"], settings["paper_compat"])
    return dict(bits=bits, method=settings["method"], granularity=settings["granularity"],
                group_size=group_size or None, paper_compat=settings["paper_compat"])


def quantize_one(name, array, settings, device="auto"):
    """One tensor as :func:`~fmq_np.quant.quantize_model` quantizes it: ``(report row, QuantizedTensor or the
    array kept, the model meta without its digest)``. ``array`` may be a :func:`read_located` locator (tuple), read
    here: what a Dask worker runs."""
    from fmq_np.quant.model import quantize_model
    if isinstance(array, tuple):
        array = read_located(array)
    qm = quantize_model({name: array}, bits=settings["bits"], method=settings["method"],
                        granularity=settings["granularity"], group_size=settings["group_size"],
                        paper_compat=settings["paper_compat"], device=device)
    return qm.report[0], qm.tensors[name], {k: v for k, v in qm.meta.items() if k != "source_digest"}


class _Jobs:
    """Runs :func:`quantize_one` over a source's tensors: here, as Dask tasks (``client``) or in ``workers`` local
    processes, with at most ``window`` in flight and results taken in input order."""

    def __init__(self, client, workers, settings, device):
        self.client, self.workers, self.settings, self.device = client, workers, settings, device

    def run(self, source, n_done):
        """Yields ``(name, array, nbytes, result)`` in input order; result None for the first ``n_done`` tensors
        (already in a resumed output)."""
        if self.client is None and self.workers is None:
            for i, (name, array, nbytes) in enumerate(source):
                yield name, array, nbytes, (None if i < n_done else
                                            quantize_one(name, array, self.settings, self.device))
            return
        with self._executor() as (submit, window):
            yield from self._pipeline(source, n_done, submit, window)

    @contextlib.contextmanager
    def _executor(self):
        """``(submit(name, payload) -> future, window)`` of the Dask client or of a local process pool."""
        if self.client is not None:
            import uuid
            run_id = uuid.uuid4().hex[:12]
            count = iter(range(1 << 62))
            yield (lambda name, payload: self.client.submit(
                quantize_one, name, payload, self.settings, self.device, pure=False,
                key=f"fmq-quantize-{run_id}-{next(count)}"), 2 * max(1, sum(self.client.nthreads().values())))
            return
        import concurrent.futures
        import multiprocessing
        from .._workers import worker_environment
        with worker_environment(self.workers), concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn")) as pool:   # it spawns as it goes
            yield (lambda name, payload: pool.submit(quantize_one, name, payload, self.settings, self.device),
                   2 * self.workers)

    @staticmethod
    def _pipeline(source, n_done, submit, window):
        import collections
        located = isinstance(source, _SafetensorsSource)   # workers read their tensor by path and offset
        items = source.locations() if located else iter(source)
        pending = collections.deque()
        for i, (name, payload, nbytes) in enumerate(items):
            array = read_located(payload) if located else payload
            pending.append((name, array, nbytes, None if i < n_done else submit(name, payload)))
            if len(pending) >= window:
                yield _Jobs._take(pending)
        while pending:
            yield _Jobs._take(pending)

    @staticmethod
    def _take(pending):
        name, array, nbytes, task = pending.popleft()
        return name, array, nbytes, (None if task is None else task.result())


class _Items:
    """A one-pass mapping view over an iterator of (name, array), for :func:`weights_digest`."""

    def __init__(self, it):
        self._it = it

    def items(self):
        return self._it


class _Empty(Exception):
    """The input holds no float tensor."""


class _WriteError(Exception):
    """An OSError of the output (full disk, I/O error), told apart from the input's."""


def _write(out, i, name, t, array):
    try:
        out.write(i, name, t, array)
    except OSError as exc:
        raise _WriteError(exc) from None


def _progress(progress, total):
    from fmq_np._progress import Progress
    callback = progress if callable(progress) else None
    enabled = None if progress is None or callback is not None else bool(progress)
    return Progress(total or 0, "quantize tensors", enabled=enabled), callback


def _check_not_input(dst, files):
    real = {os.path.realpath(p) for p in files}
    for p in (dst, dst + _PARTIAL):
        if os.path.realpath(p) in real:
            raise InputError(f"{dst}: output would overwrite the input {p}")


# ---------------------------------------------------------------------------------------------------- sources
def iter_tensors(src, key=None):
    """``(name, array, nbytes)`` of every tensor of the weight file ``src``, one at a time, read the way
    :func:`quantize_file` reads them (memory-mapped for safetensors, one member / dataset / storage at a time for
    the others); ``nbytes``: the tensor's bytes in the file. What ``fmq-np bench --stream`` times as plain reading."""
    return iter(_open_source(os.fspath(src), key))


def _open_source(src, key=None):
    from fmq_np.io.importers import ST_INDEX_SUFFIX
    from fmq_np.io.torch_pth import TORCH_EXTENSIONS
    if os.path.isdir(src):
        raise FormatError(f"{src}: is a directory, not a weight file")
    low = src.lower()
    if key is not None and os.path.splitext(low)[1] not in TORCH_EXTENSIONS:
        raise InputError(f"{src}: key={key!r} picks an entry of a torch checkpoint ({', '.join(TORCH_EXTENSIONS)}); "
                         "this file's tensors are quantized under their own names")
    if low.endswith(ST_INDEX_SUFFIX):
        return _SafetensorsSource(src, sharded=True)
    ext = os.path.splitext(low)[1]
    known = (".npz", _ST_EXT) + _H5_EXT + TORCH_EXTENSIONS
    if ext not in known:
        raise InputError(f"{src}: unknown file type {ext!r}; expected .safetensors, *{ST_INDEX_SUFFIX}, .npz, .h5, "
                         f".hdf5 or a torch checkpoint ({', '.join(TORCH_EXTENSIONS)})")
    if not os.path.isfile(src):
        raise FormatError(f"{src}: no such file")
    if ext == _ST_EXT:
        return _SafetensorsSource(src, sharded=False)
    return _IterSource(src, ext, key)


class _SafetensorsSource:
    """Tensors of one .safetensors file or of the shards of an index, each memory-mapped when it is reached."""

    def __init__(self, src, sharded):
        from fmq_np.io.importers import read_st_header, read_st_index
        self.src, self.sharded = src, sharded
        shard_files = list(read_st_index(src)) if sharded else [src]
        self.shards = []                 # (path, data_start, {name: (dtype, shape, begin, end)}, metadata)
        for path in shard_files:
            self.shards.append((path,) + read_st_header(path))
        self.files = ([src] if sharded else []) + shard_files
        self.count = sum(len(e) for _, _, e, _ in self.shards)

    def plan(self):
        """``[(shard path, metadata, [(name, st dtype, shape), ...]), ...]`` of the input's layout."""
        return [(path, meta, [(n, d, s) for n, (d, s, _, _) in entries.items()])
                for path, _, entries, meta in self.shards]

    def locations(self):
        """``(name, locator, nbytes)`` of every tensor in order; :func:`read_located` reads a locator."""
        for path, data_start, entries, _ in self.shards:
            for name, (dtype, shape, begin, end) in entries.items():
                yield name, (path, name, dtype, tuple(shape), data_start + begin, end - begin), end - begin

    def __iter__(self):
        for name, locator, nbytes in self.locations():
            yield name, read_located(locator), nbytes


def read_located(locator):
    """The tensor at ``locator = (path, name, st dtype, shape, byte offset, byte length)`` of a .safetensors file,
    memory-mapped (bf16 widened to float32); FormatError when the file is shorter than that."""
    from fmq_np.io.importers import _ST_DTYPES, st_to_numpy
    path, name, dtype, shape, offset, length = locator
    size = os.path.getsize(path)
    if offset + length > size:
        raise FormatError(f"{path}: tensor {name!r} is truncated (the file ends at byte {size}, the tensor at byte "
                          f"{offset + length}; was it cut during the run?)")
    if length == 0:
        return np.zeros(shape, _ST_DTYPES[dtype])
    raw = np.memmap(path, dtype=_ST_DTYPES[dtype], mode="r", offset=offset, shape=shape)
    return st_to_numpy(raw, dtype, copy=False)


class _IterSource:
    """Tensors of a .npz, HDF5 or torch file, one at a time from the readers of :mod:`fmq_np.io`."""

    def __init__(self, src, ext, key=None):
        from fmq_np.io.torch_pth import TORCH_EXTENSIONS
        self.src, self.ext, self.key, self.files, self.sharded = src, ext, key, [src], False
        if ext in _H5_EXT:
            from fmq_np.io.importers import is_quantized_h5
            if is_quantized_h5(src):
                raise InputError(f"{src} is already quantized; quantize the float weights it came from")
        self.count = self._count() if ext not in TORCH_EXTENSIONS else None

    def _count(self):
        import zipfile
        if self.ext == ".npz":
            with contextlib.suppress(zipfile.BadZipFile, OSError):      # a bad file is reported when read
                with zipfile.ZipFile(self.src) as z:
                    return len(z.infolist())
            return None
        from fmq_np.io._h5 import open_h5
        from fmq_np.io.importers import _is_float_dataset
        names = []
        with open_h5(self.src) as f:
            f.visititems(lambda name, obj: names.append(name) if _is_float_dataset(obj) else None)
        return len(names)

    def _iter(self):
        from fmq_np.io.importers import iter_h5, iter_npz
        from fmq_np.io.torch_pth import iter_pth
        if self.ext == ".npz":
            return iter_npz(self.src)
        if self.ext in _H5_EXT:
            return iter_h5(self.src)
        return iter_pth(self.src, self.key)

    def plan(self):
        """One pass over the file without quantizing: the layout a .safetensors output needs up front."""
        from fmq_np.io.importers import _ST_NAMES
        layout = []
        for name, a in self._iter():
            key = a.dtype.newbyteorder("<")
            if key not in _ST_NAMES:
                raise InputError(f"{self.src}: tensor {name!r}: dtype {a.dtype} cannot be stored in safetensors")
            layout.append((name, _ST_NAMES[key], tuple(a.shape)))
        return [(self.src, {}, layout)]

    def __iter__(self):
        for name, a in self._iter():
            yield name, a, a.nbytes


# ---------------------------------------------------------------------------------------------------- outputs
class _H5Out:
    """The packed .h5 output, written into ``dst.partial`` by :class:`fmq_np.io.quantized.Writer` (so the file
    holds what ``save_quantized`` writes for the same tensors): root attrs ``complete`` (false until finish),
    ``stream_settings`` (JSON) and ``n_done`` (the writer's ``done``: small tensors waiting for their pack are not
    done, a resumed run quantizes them again; the last pack is written before ``complete`` turns true)."""

    needs_digest = True

    def __init__(self, dst, settings, resume):
        import h5py
        from fmq_np.io.quantized import _LIBVER, Writer, write_root
        self.dst, self.partial_path = dst, dst + _PARTIAL
        self.settings = json.dumps(settings, sort_keys=True)
        self.n_done, self.count_seen, self.started, self.f = 0, 0, False, None
        if resume and os.path.exists(self.partial_path):
            self._reopen()
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.partial_path)
            self.f = h5py.File(self.partial_path, "w", libver=_LIBVER)
            write_root(self.f, 0, "{}")
            self.writer = Writer(self.f)
            self.f.attrs["complete"] = False
            self.f.attrs["n_done"] = 0
            self.f.attrs.create("stream_settings", np.bytes_(self.settings.encode()))
            self.f.flush()
        self.started = True

    def _reopen(self):
        import h5py
        from fmq_np.io._h5 import H5_ERRORS, read_attr
        from fmq_np.io.quantized import Writer
        path = self.partial_path
        try:
            self.f = h5py.File(path, "r+")
        except H5_ERRORS as exc:
            raise FormatError(f"{path}: partial output cannot be resumed (unreadable: {exc}); delete it and run "
                              f"without resume") from None
        try:
            found = read_attr(self.f, "stream_settings", str, path)
            if found != self.settings:
                raise InputError(f"{path}: partial output was written with other settings ({found}, now "
                                 f"{self.settings}); delete it or use the same settings")
            self.n_done = read_attr(self.f, "n_done", int, path)
            self.writer = Writer.resume(self.f, self.n_done, path)     # what follows the last done tensor is torn
        except BaseException:
            self.f.close()
            raise

    def check_done(self, i, name, array):
        found, shape = self.writer.stored(i)
        if found != name or shape != json.dumps(list(array.shape)):
            raise InputError(f"{self.partial_path}: tensor {i} is {found!r} {shape} in the partial output but "
                             f"{name!r} {list(array.shape)} in the input: not the same input; delete it or run "
                             f"without resume")
        self.count_seen = i + 1

    def write(self, i, name, t, array):
        done = self.writer.done
        self.writer.add(i, name, t)
        if self.writer.done != done:
            self.f.attrs["n_done"] = self.writer.done
            self.f.flush()
        self.count_seen = i + 1

    def finish(self, meta):
        from fmq_np.io.quantized import _dumps, _set_str
        self.writer.flush()
        self.f.attrs["n_tensors"] = self.count_seen
        _set_str(self.f, "meta", _dumps(meta, "QuantizedModel.meta"))
        del self.f.attrs["n_done"]
        del self.f.attrs["stream_settings"]
        self.f.attrs["complete"] = True
        self.f.close()
        self.f = None
        _publish(self.partial_path, self.dst)

    def abort(self):
        if self.f is not None:
            with contextlib.suppress(Exception):
                self.f.close()
            self.f = None

    def discard(self):
        with contextlib.suppress(OSError):
            os.remove(self.partial_path)

    @property
    def files(self):
        return [self.dst]


class _StOut:
    """Dequantized .safetensors output: per output file a ``.partial`` holding the final header and the bytes of
    the tensors done so far, in header order; resumed at the last whole tensor."""

    needs_digest = False

    def __init__(self, dst, source, settings, resume):
        from fmq_np.io.importers import ST_INDEX_SUFFIX
        low = dst.lower()
        sharded = low.endswith(ST_INDEX_SUFFIX) or source.sharded
        stem = dst[:-len(ST_INDEX_SUFFIX)] if low.endswith(ST_INDEX_SUFFIX) else dst[:-len(_ST_EXT)]
        plan = source.plan()
        if not any(layout for *_, layout in plan):
            raise FormatError(f"{source.src}: no float tensors to quantize (the file holds none)")
        self.index = stem + ST_INDEX_SUFFIX if sharded else None
        n = len(plan)
        self.outs = []                         # [final path, partial path, header bytes, [(name, dtype, shape, end)]]
        stamp = json.dumps(settings, sort_keys=True)
        for j, (_, meta, layout) in enumerate(plan):
            final = f"{stem}-{j + 1:05d}-of-{n:05d}{_ST_EXT}" if sharded else dst
            header, offset, rows = {"__metadata__": dict(meta, fmq_np_dequantized=stamp)}, 0, []
            for name, dtype, shape in layout:
                nbytes = _st_nbytes(dtype, shape)
                header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
                offset += nbytes
                rows.append((name, dtype, tuple(shape), offset))
            raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
            raw += b" " * (-len(raw) % 8)
            self.outs.append([final, final + _PARTIAL, len(raw).to_bytes(8, "little") + raw, rows])
        self.order = [(j, k) for j, (_, _, _, rows) in enumerate(self.outs) for k in range(len(rows))]
        self.partial_path = self.outs[0][1] if len(self.outs) == 1 else f"{stem}-*{_ST_EXT}{_PARTIAL}"
        self.n_done, self.count_seen, self.started, self.fh, self.current = 0, 0, False, None, None
        done = self._resume_point() if resume else [0] * len(self.outs)
        for j, d in enumerate(done):                 # resumed tensors: a prefix of the input's order
            self.n_done += d
            if d < len(self.outs[j][3]):
                break
        self.started = True

    def _resume_point(self):
        """Tensors already whole in each output file's partial (or in its final file, renamed before a crash)."""
        done = []
        for final, partial, header, rows in self.outs:
            path = partial if os.path.exists(partial) else final if os.path.exists(final) else None
            if path is None:
                done.append(0)
                continue
            with open(path, "rb") as fh:
                found = fh.read(len(header))
            if found != header:
                raise InputError(f"{path}: partial output was written with other settings or from another input; "
                                 f"delete it or run without resume")
            data = os.path.getsize(path) - len(header)
            whole = sum(1 for *_, end in rows if end <= data)
            if path == final and whole < len(rows):
                whole = 0
            if path == final and whole:                  # move it back: finish() renames every output file
                os.replace(final, partial)
            done.append(whole)
        return done

    def check_done(self, i, name, array):
        j, k = self.order[i]
        row = self.outs[j][3][k]
        if row[0] != name or row[2] != tuple(array.shape):
            raise InputError(f"{self.outs[j][1]}: tensor {row[0]!r} {list(row[2])} of the partial output is "
                             f"{name!r} {list(array.shape)} in the input; delete it or run without resume")
        self.count_seen = i + 1

    def _open(self, j, k0):
        if self.fh is not None:
            self.fh.close()
        final, partial, header, rows = self.outs[j]
        if k0 == 0:
            self.fh = open(partial, "wb")
            self.fh.write(header)
        else:
            self.fh = open(partial, "r+b")
            self.fh.truncate(len(header) + rows[k0 - 1][3])
            self.fh.seek(0, os.SEEK_END)
        self.current = j

    def write(self, i, name, t, array):
        from fmq_np.io.importers import f32_to_bf16
        from fmq_np.quant.tensor import QuantizedTensor
        j, k = self.order[i]
        row = self.outs[j][3][k]
        if self.current != j:
            self._open(j, k)
        values = t.dequantize() if isinstance(t, QuantizedTensor) else np.asarray(t)
        if row[1] == "BF16":
            values = f32_to_bf16(values)
        else:
            values = np.ascontiguousarray(values, values.dtype.newbyteorder("<"))
        self.fh.write(memoryview(values.reshape(-1)).cast("B"))
        self.count_seen = i + 1

    def finish(self, meta):
        if self.count_seen != len(self.order):
            raise FormatError(f"{self.outs[0][1]}: the input gave {self.count_seen} tensors, its layout "
                              f"{len(self.order)}")
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        for final, partial, header, _ in self.outs:
            if not os.path.exists(partial):          # an output file without tensors
                with open(partial, "wb") as fh:
                    fh.write(header)
            _publish(partial, final)
        if self.index:
            from fmq_np._atomic import atomic_path
            wmap = {name: os.path.basename(final) for final, _, _, rows in self.outs for name, *_ in rows}
            total = sum(rows[-1][3] for *_, rows in self.outs if rows)
            with atomic_path(self.index) as tmp, open(tmp, "w") as fh:
                json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, fh, indent=2)

    def abort(self):
        if self.fh is not None:
            with contextlib.suppress(OSError):
                self.fh.close()
            self.fh = None

    def discard(self):
        for _, partial, _, _ in self.outs:
            with contextlib.suppress(OSError):
                os.remove(partial)

    @property
    def files(self):
        return ([self.index] if self.index else []) + [final for final, *_ in self.outs]


def _st_nbytes(dtype, shape):
    from fmq_np.io.importers import _ST_DTYPES
    n = np.dtype(_ST_DTYPES[dtype]).itemsize
    for d in shape:
        n *= d
    return n


def _publish(partial, final):
    """fsync ``partial`` and rename it onto ``final`` (atomic on one file system)."""
    with open(partial, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, final)
