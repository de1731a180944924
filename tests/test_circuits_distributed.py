"""ti.circuits on a Ray executor: the exact single-edge plan and the faithfulness plan (cells that
close over the senders' values, the model's per-head switches set for the study) run on Ray
workers and equal the local run. One local Ray instance (2 CPUs, loopback only, no dashboard)."""

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when ray is imported: keeps the node on 127.0.0.1

import pytest  # noqa: E402
import torch  # noqa: E402

import tl_interp as ti  # noqa: E402
from tests.conftest import llama_style  # noqa: E402
from tests.test_circuits import METRIC, _pair  # noqa: E402

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def executor():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ti.distributed.RayExecutor(num_workers=2)
    ray.shutdown()


def test_exact_scores_and_faithfulness_on_ray_workers_equal_the_local_run(executor):
    model = llama_style()  # grouped-query attention: the study ungroups K/V while its plan runs
    switches = ("use_split_qkv_input", "use_attn_result", "use_hook_mlp_in", "ungroup_grouped_query_attention")
    before = {flag: getattr(model.cfg, flag) for flag in switches}
    clean, corrupted = _pair()
    local = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False)
    remote = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False, executor=executor)
    assert remote.provenance.settings["executor"] == "ray" and remote.names == local.names
    torch.testing.assert_close(remote.per_prompt, local.per_prompt, atol=1e-5, rtol=0)
    edges = ti.circuits.graph(model).edges
    circuits = [edges[::3], edges[1::7], ()]
    local_f = ti.circuits.faithfulness(model, clean, corrupted, circuits, METRIC, progress=False)
    remote_f = ti.circuits.faithfulness(model, clean, corrupted, circuits, METRIC, progress=False, executor=executor)
    assert remote_f.provenance.settings["executor"] == "ray"
    torch.testing.assert_close(remote_f.values, local_f.values, atol=1e-5, rtol=0)
    torch.testing.assert_close(remote_f.corrupted, local_f.corrupted, atol=1e-5, rtol=0)
    assert {flag: getattr(model.cfg, flag) for flag in switches} == before  # restored


def test_the_faithfulness_curve_on_ray_workers_equals_the_local_curve(executor):
    model = llama_style()
    clean, corrupted = _pair(rows=4)
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", progress=False)
    local = ti.circuits.faithfulness_curve(model, clean, corrupted, scores, METRIC, n_boot=50, progress=False)
    remote = ti.circuits.faithfulness_curve(model, clean, corrupted, scores, METRIC, n_boot=50, progress=False,
                                            executor=executor)
    assert remote.provenance.settings["executor"] == "ray" and local.provenance.settings["executor"] == "local"
    torch.testing.assert_close(remote.extras["circuit"], local.extras["circuit"], atol=1e-5, rtol=0)
    torch.testing.assert_close(remote.values, local.values, atol=1e-4, rtol=0)
