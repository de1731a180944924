"""ti.distributed: studies sharded over a local Ray instance equal the local run, resume from a
store, survive a killed worker, and refuse what they can't honour before any work is sent.

One Ray instance (2 CPUs, loopback only, no dashboard) serves the whole module.
"""

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when ray is imported: keeps the node on 127.0.0.1

import pytest  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

import tl_interp as ti  # noqa: E402
from tl_interp import hooks, site  # noqa: E402
from tl_interp.engine.executors import LocalExecutor  # noqa: E402
from tl_interp.distributed import model_digest, shard_addresses  # noqa: E402
from tl_interp.errors import ArtifactError, OptionError, UnsupportedError  # noqa: E402
from tl_interp.intervention import Intervention  # noqa: E402
from tests.conftest import _cfg, gpt2_style, hooked_model, llama_style  # noqa: E402

FAMILIES = {"gpt2": gpt2_style, "llama_gqa": llama_style}
TOL = 1e-6


_ELSEWHERE = ("import sys; sys.path.insert(0, %r)\n"
              "from tests.test_distributed import _addresses, _sweep_plan\n"
              "from tests.conftest import gpt2_style\n"
              "print(_addresses(_sweep_plan(gpt2_style()))[0])\n") % str(Path(__file__).parents[1])


@pytest.fixture(scope="module")
def cluster():
    # a new process computing a shard address (read by the last test) starts first, to overlap
    # with Ray's start-up; so do the workers, while the tests that need none run
    elsewhere = subprocess.Popen([sys.executable, "-c", _ELSEWHERE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ti.distributed.RayExecutor(num_workers=2).start()
    yield elsewhere
    elsewhere.kill()
    ray.shutdown()


@pytest.fixture(scope="module")
def executor(cluster):
    return ti.distributed.RayExecutor(num_workers=2)


@pytest.fixture(scope="module", params=list(FAMILIES))
def model(request):
    return FAMILIES[request.param]()


class Capture:
    """An executor that keeps the plans it is given and runs them locally."""

    def __init__(self):
        self.plans = []

    def run(self, plan, *, progress=True):
        self.plans.append(plan)
        return LocalExecutor().run(plan, progress=False)


def _pair(padded: bool):
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(1, 61, (3, 7), generator=g)
    corrupted = clean.clone()
    corrupted[:, 3] = torch.randint(1, 61, (3,), generator=g)
    mask = torch.ones_like(clean)
    if padded:
        mask[2, 5:] = 0
        clean[2, 5:], corrupted[2, 5:] = 0, 0
    return clean, corrupted, mask


METRIC = ti.metrics.logit_diff(torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]))


def _close(a, b) -> bool:
    """Within TOL everywhere, NaN exactly where the reference is NaN."""
    a, b = a.double(), b.double()
    return a.shape == b.shape and torch.equal(a.isnan(), b.isnan()) and \
        bool(((a - b).abs().nan_to_num(0.0) <= TOL).all())


def _assert_same(local, dist):
    assert dist.axes == local.axes and dist.labels == local.labels
    assert _close(dist.values, local.values)
    assert set(dist.extras) == set(local.extras)
    for k, v in local.extras.items():
        assert _close(dist.extras[k], v), k


def tripwire(name: str, flag: str, pidfile: str | None = None) -> Intervention:
    """A cell that changes nothing, unless ``flag`` exists: then it fails (``pidfile`` None), or
    writes its process id to ``pidfile`` and waits to be killed (taking the flag, so the retry passes)."""

    def _tripwire(act, hook):
        if os.path.exists(flag):
            if pidfile is None:
                raise RuntimeError("tripwire: simulated failure of this shard")
            try:
                os.rename(flag, flag + ".taken")
            except FileNotFoundError:
                return act
            Path(pidfile).write_text(str(os.getpid()))
            time.sleep(900)  # killed long before, however loaded the machine
        return act

    return Intervention.single(name, _tripwire, "tripwire")


def _sweep_plan(model, **kw):
    cap = Capture()
    clean, corrupted, _ = _pair(False)
    ti.patching.sweep(model, clean, corrupted, METRIC, site="z", over=("pos", "head_index"), executor=cap,
                      progress=False, **kw)
    return cap.plans[0]


def _with(plan, *cells):
    return dataclasses.replace(plan, cells=plan.cells + cells, keys=plan.keys + tuple(("extra", i) for i in
                                                                                       range(len(cells))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- refused before any work (the workers start meanwhile) ----------------------------------

def test_the_cluster_stays_on_the_loopback_address(cluster):
    assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}


def test_an_unreachable_address_fails_fast(cluster):
    with pytest.raises(OptionError, match=r"no Ray cluster answers at '127\.0\.0\.1:\d+'.*ray start --head"):
        ti.distributed.RayExecutor(address=f"127.0.0.1:{_free_port()}")
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = "127.0.0.1:%d" % silent.getsockname()[1]
        with pytest.raises(OptionError, match=r"gave no answer within 1s; it is not a Ray cluster"):
            ti.distributed.RayExecutor(address=address, connect_timeout=1.0)
    with pytest.raises(OptionError, match="address must be 'host:port'"):
        ti.distributed.RayExecutor(address="nowhere")


def test_the_address_of_the_running_cluster_is_accepted(cluster):
    ex = ti.distributed.RayExecutor(address=ray.get_runtime_context().gcs_address)
    assert ex.address.startswith("127.0.0.1:")


def test_a_store_that_cannot_be_written_fails_before_any_work(cluster, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ArtifactError, match=r"the shard store '.*a-file/store' can't be written"):
        ti.distributed.RayExecutor(store=str(blocker / "store"))
    store = tmp_path / "store"
    ex = ti.distributed.RayExecutor(store=str(store))
    store.rmdir()
    store.write_text("replaced by a file")
    flag = tmp_path / "fail"
    flag.touch()  # any cell sent to a worker would fail with the tripwire's error instead
    plan = _with(_sweep_plan(gpt2_style()), tripwire(site("z", 1), str(flag)))
    with pytest.raises(ArtifactError, match="can't be written"):
        ex.run(plan, progress=False)


def test_a_cell_that_cannot_be_pickled_is_refused_before_any_work(executor, tmp_path):
    lock = threading.Lock()
    flag = tmp_path / "fail"
    flag.touch()
    plan = _sweep_plan(gpt2_style())
    bad = Intervention.single(site("z", 0), lambda act, hook: act if lock else act, "holds a lock")
    plan = _with(plan, tripwire(site("z", 1), str(flag)), bad)
    with pytest.raises(UnsupportedError, match=rf"cell {len(plan.cells) - 1} \(key \('extra', 1\).*holds a lock.*"
                                               r"can't be sent to Ray workers.*lock"):
        executor.run(plan, progress=False)


def test_gradient_plans_are_refused(executor):
    plan = _sweep_plan(gpt2_style())
    plan = dataclasses.replace(plan, options=dataclasses.replace(plan.options, grad=True))
    with pytest.raises(UnsupportedError, match="autograd graph"):
        executor.run(plan, progress=False)


def test_hooks_attached_by_hand_are_refused(executor):
    model = gpt2_style()
    plan = _sweep_plan(model)
    model.add_hook("blocks.0.hook_resid_pre", lambda act, hook: act)
    try:
        with pytest.raises(UnsupportedError, match=r"hooks attached at \['blocks\.0\.hook_resid_pre'\]"):
            executor.run(plan, progress=False)
    finally:
        model.reset_hooks()


def test_options_out_of_range_are_refused():
    with pytest.raises(OptionError, match="num_workers must be at least 1"):
        ti.distributed.RayExecutor(num_workers=0)
    with pytest.raises(OptionError, match="shard_size must be at least 1"):
        ti.distributed.RayExecutor(shard_size=0)
    with pytest.raises(ti.errors.TypeCheckError, match="num_workers"):
        ti.distributed.RayExecutor(num_workers="two")


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UnsupportedError, match=r"pip install tl_interp\[ray\]"):
        ti.distributed.RayExecutor()


# -- content addresses -------------------------------------------------------------------------

def _addresses(plan):
    from tl_interp.distributed import model_digest, shard_addresses

    return shard_addresses(plan, model_digest(plan.model), [(0, len(plan.cells))])


def test_shard_addresses_follow_the_content_of_cells_metric_and_weights():
    model = gpt2_style()
    base = _addresses(_sweep_plan(model))
    assert _addresses(_sweep_plan(model)) == base  # rebuilt plan, same content
    assert _addresses(_sweep_plan(gpt2_style())) == base  # another object, same weights
    plan = _sweep_plan(model)
    other_metric = dataclasses.replace(plan, metric=ti.metrics.logit_diff(torch.tensor([1, 2, 3]),
                                                                          torch.tensor([4, 5, 7])))
    assert _addresses(other_metric) != base
    other_cell = dataclasses.replace(plan, cells=plan.cells[:-1] + (hooks.scale(site("z", 1), 0.5),))
    assert _addresses(other_cell) != base
    with torch.no_grad():
        model.W_U[0, 0] += 1e-3
    assert _addresses(_sweep_plan(model)) != base


# -- equal to the local run --------------------------------------------------------------------

@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("where, over", [("z", ("pos", "head_index")), ("resid_pre", None)])
def test_sweep_through_ray_equals_the_local_sweep(model, executor, padded, where, over):
    clean, corrupted, mask = _pair(padded)
    kw = dict(site=where, over=over, attention_mask=mask if padded else None, progress=False)
    local = ti.patching.sweep(model, clean, corrupted, METRIC, **kw)
    dist = ti.patching.sweep(model, clean, corrupted, METRIC, executor=executor, **kw)
    _assert_same(local, dist)
    settings = dist.provenance.settings
    assert settings["engine"] == local.provenance.settings["engine"]
    assert settings["executor"] == "ray" and settings["workers"] == 2
    assert settings["shards_computed"] == settings["shards"] > 1 and settings["shards_reused"] == 0


@pytest.mark.parametrize("method, padded", [("mean", True), ("resample", False)])
def test_scan_through_ray_equals_the_local_scan(model, executor, method, padded):
    clean, _, mask = _pair(padded)
    kw = dict(method=method, attention_mask=mask if padded else None, n_boot=200, progress=False)
    local = ti.ablation.scan(model, clean, METRIC, **kw)
    dist = ti.ablation.scan(model, clean, METRIC, executor=executor, **kw)
    _assert_same(local, dist)
    assert dist.top(local.values.numel()).labels == local.top(local.values.numel()).labels


def test_feature_and_subspace_ablation_through_ray_equal_the_local_runs(executor):
    model, sae = ti.models.load("ordinal-4l"), ti.models.load_sae("ordinal-4l-res-l2")
    prompts = ["one , two , three ,", "january , february ,", "monday , tuesday ,", "five , six , seven ,"]
    kw = dict(answers=["four", "march", "wednesday", "eight"], n_boot=100, progress=False)
    local = ti.ablation.feature_ablation(model, sae, prompts, [3, 17, 571, 987], **kw)
    dist = ti.ablation.feature_ablation(model, sae, prompts, [3, 17, 571, 987], executor=executor, **kw)
    _assert_same(local, dist)
    assert dist.provenance.settings["executor"] == "ray"
    basis = {"two": torch.eye(model.cfg.d_model)[:2], "eight": torch.eye(model.cfg.d_model)[8:16]}
    kw = dict(metric=ti.metrics.logit_diff(9, 10), n_random=2, progress=False)
    local = ti.geometry.subspace_ablation(model, prompts, "blocks.1.hook_resid_post", basis, **kw)
    dist = ti.geometry.subspace_ablation(model, prompts, "blocks.1.hook_resid_post", basis, executor=executor, **kw)
    _assert_same(local, dist)
    assert dist.provenance.settings["executor"] == "ray"


def _steering_models():
    ordinal = ti.models.load("ordinal-4l")
    llama = hooked_model(_cfg(act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
                              rotary_dim=8, gated_mlp=True, final_rms=True, n_key_value_heads=2, d_model=128,
                              n_heads=4, d_head=32, d_vocab=ordinal.cfg.d_vocab),
                         tokenizer=ordinal.tokenizer).eval()
    return {"ordinal-4l (loaded by name)": ordinal, "llama-style (shipped)": llama}


@pytest.mark.parametrize("which", ["ordinal-4l (loaded by name)", "llama-style (shipped)"])
def test_steering_evaluate_through_ray_equals_the_local_battery(executor, which):
    model = _steering_models()[which]
    g = torch.Generator().manual_seed(0)
    vector = ti.steering.SteeringVector(torch.randn(128, generator=g), "blocks.1.hook_resid_pre", name="v")
    tasks = {"numbers": [("one , two ,", "three"), ("two , three ,", "four"), ("one , two , three ,", "four")]}
    kw = dict(controls=ti.steering.Controls(random_seeds=(0,), unrelated_prompts=("a a a", "the the")),
              n_boot=100, progress=False)
    local = ti.steering.evaluate(model, tasks, vector, [0.0, 2.0, 8.0], **kw)
    dist = ti.steering.evaluate(model, tasks, vector, [0.0, 2.0, 8.0], executor=executor, **kw)
    _assert_same(local, dist)
    assert dist.meta == local.meta


def test_a_model_loaded_by_name_is_loaded_by_name_on_workers_unless_it_changed(executor):
    model = ti.models.load("ordinal-4l")
    plan = _sweep_plan(model, layers=[1])
    out = executor.run(plan, progress=False)
    assert out.stats["model_transfer"] == "load by name"
    with torch.no_grad():
        model.W_U[:, 0] += 1.0  # the name no longer gives this model
    plan = _sweep_plan(model, layers=[1])
    local, out = LocalExecutor().run(plan, progress=False), executor.run(plan, progress=False)
    assert out.stats["model_transfer"] == "object store"
    # float32 rounding only: shards group cells into passes (and prefix starts) differently from
    # one local run, and this model's values are larger (|value| ~ 2) than the random models'
    assert (out.values - local.values).abs().max().item() <= 1e-5


# -- resume, failures --------------------------------------------------------------------------

def test_a_rerun_after_a_failing_shard_computes_only_the_missing_shards(cluster, tmp_path):
    model = gpt2_style()
    flag = tmp_path / "fail"
    flag.touch()
    plan = _with(_sweep_plan(model), tripwire(site("z", 1), str(flag)))
    ex = ti.distributed.RayExecutor(num_workers=2, store=str(tmp_path / "store"), shard_size=4)
    n_shards = len(ex.ranges(len(plan.cells)))
    with pytest.raises(RuntimeError, match="simulated failure of this shard"):
        ex.run(plan, progress=False)
    stored = len(ti.distributed.ShardStore(tmp_path / "store"))
    assert stored == n_shards - 1  # every shard but the failing one (the last) was kept
    flag.unlink()
    local = LocalExecutor().run(plan, progress=False)
    resumed = ex.run(plan, progress=False)
    assert resumed.stats["shards_computed"] == n_shards - stored == 1
    assert resumed.stats["shards_reused"] == stored
    assert (resumed.values - local.values).abs().max().item() <= TOL
    assert torch.equal(resumed.base, local.base.to(resumed.base.dtype)) and resumed.paths == local.paths
    again = ex.run(plan, progress=False)
    assert again.stats["shards_computed"] == 0 and again.stats["shards_reused"] == n_shards
    assert torch.equal(again.values, resumed.values)


def test_a_sweep_with_a_store_reuses_every_shard_when_rerun(cluster, tmp_path):
    model = llama_style()
    clean, corrupted, mask = _pair(True)
    ex = ti.distributed.RayExecutor(store=str(tmp_path))
    first = ti.patching.sweep(model, clean, corrupted, METRIC, attention_mask=mask, executor=ex, progress=False)
    second = ti.patching.sweep(model, clean, corrupted, METRIC, attention_mask=mask, executor=ex, progress=False)
    assert second.provenance.settings["shards_reused"] == first.provenance.settings["shards_computed"] > 1
    assert second.provenance.settings["shards_computed"] == 0
    other = ti.patching.sweep(model, corrupted, clean, METRIC, attention_mask=mask, executor=ex, progress=False)
    assert other.provenance.settings["shards_reused"] == 0  # other inputs, other addresses
    _assert_same(first, second)


def _damage(path: Path, how: str, other: Path) -> None:
    if how == "flipped byte":  # same size: only the checksum can tell
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # a valid shard of another cell range in its place
        path.write_bytes(other.read_bytes())


@pytest.mark.parametrize("how", ["flipped byte", "truncated", "swapped"])
def test_a_damaged_shard_is_recomputed_with_a_warning_naming_it(cluster, tmp_path, how):
    model = gpt2_style()
    plan = _sweep_plan(model)
    ex = ti.distributed.RayExecutor(num_workers=2, store=str(tmp_path / "store"), shard_size=4)
    first = ex.run(plan, progress=False)
    addresses = shard_addresses(plan, model_digest(model), ex.ranges(len(plan.cells)))
    bad, other = ex.store.path(addresses[1]), ex.store.path(addresses[2])
    size = bad.stat().st_size
    _damage(bad, how, other)
    assert (bad.stat().st_size < size) == (how == "truncated")  # a flipped byte or swapped shard keeps the size
    with pytest.warns(ti.errors.TlInterpWarning, match=rf"{bad.name}.*(corrupt|truncated|not the shard stored "
                                                       r"under its name).*Computing this shard \(4\.\.8\) again"):
        second = ex.run(plan, progress=False)
    assert second.stats["shards_rejected"] == 1 and second.stats["shards_computed"] == 1
    assert second.stats["shards_reused"] == second.stats["shards"] - 1
    assert torch.equal(second.values, first.values)  # the damaged values were never used
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file was replaced: a third run reuses everything, silently
        third = ex.run(plan, progress=False)
    assert third.stats["shards_reused"] == third.stats["shards"] and third.stats["shards_rejected"] == 0


@pytest.mark.parametrize("how", ["flipped byte", "truncated", "swapped"])
def test_reading_a_damaged_shard_directly_is_refused_naming_the_file(tmp_path, how):
    store = ti.distributed.ShardStore(tmp_path)
    store.write("aa", ti.distributed.Shard(0, 2, torch.arange(6.0).reshape(2, 3), torch.zeros(3), {}, {}))
    store.write("bb", ti.distributed.Shard(2, 4, torch.ones(2, 3), torch.zeros(3), {}, {}))
    _damage(store.path("aa"), how, store.path("bb"))
    expected = {"flipped byte": r"does not match its checksum: the file is corrupt",
                "truncated": r"not a readable safetensors file.*truncated",
                "swapped": r"intact but is not the shard stored under its name.*address 'bb'"}[how]
    with pytest.raises(ArtifactError, match=rf"aa\.safetensors'.*{expected}.*delete it and rerun"):
        store.read("aa")


def test_a_killed_worker_loses_and_duplicates_no_cell(cluster, tmp_path):
    model = gpt2_style()
    flag, pidfile = tmp_path / "kill", tmp_path / "pid"
    plan = _with(_sweep_plan(model), tripwire(site("z", 1), str(flag), str(pidfile)))
    local = LocalExecutor().run(plan, progress=False)
    ex = ti.distributed.RayExecutor(num_workers=2, shard_size=4)
    before = ex.worker_pids()
    flag.touch()
    results, errors = [], []
    thread = threading.Thread(target=lambda: _collect(ex, plan, results, errors))
    thread.start()
    deadline = time.monotonic() + 900  # generous: the suite must pass on a loaded machine
    while not pidfile.exists() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    victim = int(pidfile.read_text())
    assert victim in before
    os.kill(victim, signal.SIGKILL)
    thread.join(900)
    assert not errors and len(results) == 1
    out = results[0]
    assert out.values.shape == local.values.shape
    assert (out.values - local.values).abs().max().item() <= TOL
    assert out.stats["shards_computed"] == out.stats["shards"]
    after = ex.worker_pids()
    assert victim not in after and len(set(after) - set(before)) == 1  # Ray restarted that one worker


def _collect(ex, plan, results, errors):
    try:
        results.append(ex.run(plan, progress=False))
    except Exception as err:  # noqa: BLE001 - reported by the test
        errors.append(err)



# -- start-up under load: say what the workers were doing, blame resources only when lacking --

class Slow:
    """An actor that waits while ``flag`` exists: in its constructor (``in_init``: a worker whose
    process is slow to start) or in ``prepare`` (a worker slow to load its model)."""

    def __init__(self, flag: str, in_init: bool):
        while in_init and os.path.exists(flag):
            time.sleep(0.05)
        self.flag = flag

    def pid(self):
        return os.getpid()

    def prepare(self):
        while os.path.exists(self.flag):
            time.sleep(0.05)
        return os.getpid()


def _slow_pool(flag, in_init, cpus):
    from tl_interp.distributed._cluster import Pool

    options = {"num_cpus": cpus, "num_gpus": 0.0}
    return Pool([ray.remote(Slow).options(**options).remote(str(flag), in_init)], options, {})


def test_workers_slow_to_start_are_reported_as_slow_not_as_lacking_resources(cluster, tmp_path):
    from tl_interp.distributed._cluster import wait_ready

    flag = tmp_path / "hold"
    flag.touch()
    pool = _slow_pool(flag, True, 0.0)
    try:
        with pytest.raises(UnsupportedError) as info:
            wait_ready(pool, timeout=1.0)  # however fast the machine, this worker can't start before the flag goes
        message = str(info.value)
        assert re.search(r"only 0 of 1 workers started within start_timeout=1s; the 1 workers: 1 (starting its "
                         r"process|waiting for Ray to start a process).*Ray has the resources: the workers are slow, "
                         r"not blocked.*pass a longer start_timeout=", message), message
        assert "lacks" not in message
    finally:
        flag.unlink()
        ray.kill(pool.actors[0])


def test_workers_slow_to_load_the_model_are_reported_as_loading(cluster, tmp_path):
    from tl_interp.distributed._cluster import wait_loaded

    flag = tmp_path / "hold"
    pool = _slow_pool(flag, False, 0.0)
    try:
        ray.get(pool.actors[0].pid.remote())  # started, no deadline
        flag.touch()
        refs = [pool.actors[0].prepare.remote()]
        with pytest.raises(UnsupportedError, match=r"only 0 of 1 workers had loaded the model within "
                                                   r"start_timeout=1s; the 1 workers: 1 loading the model\. Ray has "
                                                   r"the resources: the workers are slow"):
            wait_loaded(pool, refs, time.monotonic() + 1.0, 1.0)
    finally:
        flag.unlink(missing_ok=True)
        ray.kill(pool.actors[0])


def test_resources_are_blamed_only_when_the_cluster_lacks_them(cluster, executor, tmp_path):
    from tl_interp.distributed._cluster import wait_ready

    executor.worker_pids()  # the module's two workers hold both CPUs
    too_big = _slow_pool(tmp_path / "none", False, 3.0)
    held = _slow_pool(tmp_path / "none", False, 2.0)
    try:
        with pytest.raises(UnsupportedError, match=r"1 not scheduled\. The cluster lacks the resources \(1 workers "
                                                   r"x 3 CPU = 3, the cluster has 2\): pass fewer num_workers="):
            wait_ready(too_big, timeout=1.0)
        with pytest.raises(UnsupportedError, match=r"1 not scheduled\. The cluster has the resources in total, but "
                                                   r"other tasks or actors hold them now \(free: 0 CPU"):
            wait_ready(held, timeout=1.0)
    finally:
        ray.kill(too_big.actors[0])
        ray.kill(held.actors[0])


def test_the_start_timeout_is_a_parameter_with_a_default_for_loaded_machines():
    import inspect

    assert inspect.signature(ti.distributed.RayExecutor).parameters["start_timeout"].default >= 600
    with pytest.raises(OptionError, match="start_timeout must be a positive number of seconds, got 0"):
        ti.distributed.RayExecutor(start_timeout=0)


# -- in a new process -------------------------------------------------------------------------

@pytest.mark.hooked  # the new process builds a HookedTransformer (conftest.gpt2_style)
def test_shard_addresses_are_the_same_in_a_new_process(cluster):
    out, err = cluster.communicate(timeout=900)
    assert cluster.returncode == 0, err[-2000:]
    assert out.strip().splitlines()[-1] == _addresses(_sweep_plan(gpt2_style()))[0]
