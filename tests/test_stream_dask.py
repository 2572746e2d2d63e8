"""Streaming quantization spread over a Dask cluster (distributed.LocalCluster) and over local processes: the output
is the one a local run writes."""
import numpy as np
import pytest

import fmq_np as fq
from fmq_np._cluster import connect
from fmq_np.cli import main
from fmq_np.errors import FmqError, InputError
from fmq_np.io import quantized as qio

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster) as c:
        yield c


def _weights(rng):
    return {"a.weight": rng.standard_normal((48, 70)).astype(np.float32),
            "a.bias": rng.standard_normal(48).astype(np.float32),
            "b.weight": (rng.standard_normal((32, 3, 3, 3)) * 0.1).astype(np.float16),
            "steps": np.arange(4, dtype=np.int64),
            "c.weight": rng.standard_t(3, (20, 200)).astype(np.float32)}


def _safetensors(tmp_path, seed):
    src = str(tmp_path / "w.safetensors")
    fq.io.write_safetensors(src, _weights(np.random.default_rng(seed)))
    return src


def _local_run(src, tmp_path, bits):
    local = str(tmp_path / "local.h5")
    fq.quant.quantize_file(src, local, bits=bits, progress=False)
    return local


def _same_packed(p, q):
    a, b = fq.io.load(p), fq.io.load(q)
    assert list(a.tensors) == list(b.tensors) and a.meta == b.meta
    for name, t in a.tensors.items():
        u = b.tensors[name]
        if isinstance(t, np.ndarray):
            np.testing.assert_array_equal(t, u)
        else:
            np.testing.assert_array_equal(t.codes, u.codes)
            np.testing.assert_array_equal(t.codebook, u.codebook)


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_dask_output_equals_the_local_run(client, tmp_path, fmt):
    src = str(tmp_path / f"w.{fmt}")
    w = _weights(np.random.default_rng(0))
    fq.io.write_safetensors(src, w) if fmt == "safetensors" else np.savez(src, **w)
    local, spread = str(tmp_path / "local.h5"), str(tmp_path / "dask.h5")
    fq.quant.quantize_file(src, local, bits=3, method="ot-opt", progress=False)
    rep = fq.quant.quantize_file(src, spread, bits=3, method="ot-opt", progress=False, client=client)
    assert rep["tensors"] == len(w)
    _same_packed(local, spread)


def test_dask_dequantized_safetensors_are_the_local_bytes(client, tmp_path):
    src = _safetensors(tmp_path, 1)
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    fq.quant.quantize_file(src, a, bits=2, progress=False)
    fq.quant.quantize_file(src, b, bits=2, progress=False, client=client)
    assert open(a, "rb").read() == open(b, "rb").read()


def test_cli_scheduler_address(cluster, tmp_path, capsys):
    src = _safetensors(tmp_path, 2)
    local, spread = str(tmp_path / "local.h5"), str(tmp_path / "dask.h5")
    assert main(["quantize", src, "--bits", "4", "--out", local]) == 0
    assert main(["quantize", src, "--bits", "4", "--out", spread, "--scheduler", cluster.scheduler_address]) == 0
    capsys.readouterr()
    _same_packed(local, spread)


def test_local_processes_give_the_local_output(tmp_path):
    src = _safetensors(tmp_path, 3)
    local, procs = _local_run(src, tmp_path, 3), str(tmp_path / "procs.h5")
    fq.quant.quantize_file(src, procs, bits=3, progress=False, workers=2)
    _same_packed(local, procs)


def test_resume_through_dask_skips_what_is_done(client, tmp_path, monkeypatch):
    monkeypatch.setattr(qio, "PACK_BYTES", 1)               # every small tensor is done as soon as it is written
    src = _safetensors(tmp_path, 4)
    local, spread = _local_run(src, tmp_path, 3), str(tmp_path / "dask.h5")

    def stop_after_two(done, total, name, nbytes):
        if done == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        fq.quant.quantize_file(src, spread, bits=3, progress=stop_after_two, client=client)
    rep = fq.quant.quantize_file(src, spread, bits=3, progress=False, client=client, resume=True)
    assert rep["resumed"] == 2
    _same_packed(local, spread)


def test_a_scheduler_that_does_not_answer_fails_promptly():
    with pytest.raises(FmqError, match="no Dask scheduler answers at tcp://127.0.0.1:9"):
        connect("tcp://127.0.0.1:9", timeout=1)


def test_client_and_workers_together_are_refused(client, tmp_path):
    src = str(tmp_path / "w.npz")
    np.savez(src, w=np.ones((4, 4), np.float32))
    with pytest.raises(InputError, match="not both"):
        fq.quant.quantize_file(src, str(tmp_path / "q.h5"), client=client, workers=2)
