"""The sweep's rows spread over a Dask cluster (``reproduce.run(..., client=)``, ``fmq-np reproduce --scheduler``):
every number is the one the serial run measures."""
import pytest

from fmq_np import reproduce
from test_reproduce import measured_numbers, run_differences, write_models

distributed = pytest.importorskip("distributed")

METHODS = ["ot", "ot-opt+ef"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_models(str(tmp_path_factory.mktemp("models")), ["mnist"])


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


def test_rows_on_a_cluster_equal_the_serial_run(models, client, monkeypatch, tmp_path):
    """Rows and the paper-sampler check come back as they finish; the report keeps the serial order."""
    monkeypatch.setitem(reproduce.SCALES, "tiny", dict(reproduce.SCALES["tiny"], paper_check=8))
    kw = dict(datasets=["mnist"], bits=(2, 3), methods=METHODS, scale="tiny", progress=False, models_dir=models)
    serial = reproduce.run(str(tmp_path / "serial"), **kw)
    spread = reproduce.run(str(tmp_path / "dask"), client=client, **kw)
    assert [(r["method"], r["bits"]) for r in spread["datasets"]["mnist"]["runs"]] == \
        [(m, b) for m in METHODS for b in (2, 3)]
    assert spread["datasets"]["mnist"]["paper_sampler"]["fd"]["n_samples"] == 8
    assert run_differences(measured_numbers(spread), measured_numbers(serial)) == []
