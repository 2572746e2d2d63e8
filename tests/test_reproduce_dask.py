"""The sweep's rows spread over a Dask cluster (``reproduce.run(..., client=)``, ``fmq-np reproduce --scheduler``):
every number is the one the serial run measures."""
import json

import pytest

from fmq_np import reproduce
from test_reproduce import write_models

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


def _measured(results):
    """Everything a run measured, without its wall times."""
    entry = dict(results["datasets"]["mnist"])
    for key in ("seconds", "model_file"):
        entry.pop(key)
    entry["calibration"] = {k: v for k, v in entry["calibration"].items() if k != "seconds"}
    return json.loads(json.dumps(entry, default=float))


def test_rows_on_a_cluster_equal_the_serial_run(models, client, tmp_path):
    kw = dict(datasets=["mnist"], bits=(2, 3), methods=METHODS, scale="tiny", progress=False, models_dir=models)
    serial = reproduce.run(str(tmp_path / "serial"), **kw)
    spread = reproduce.run(str(tmp_path / "dask"), client=client, **kw)
    assert [(r["method"], r["bits"]) for r in spread["datasets"]["mnist"]["runs"]] == \
        [(m, b) for m in METHODS for b in (2, 3)]
    assert _measured(spread) == _measured(serial)
