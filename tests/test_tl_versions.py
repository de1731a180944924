"""The same studies give the same values on TransformerLens 3.9 and 4.x (issue 25).

The references were computed on 3.9 (HookedTransformer) by ``tests/data/make_tl_references.py``;
here the studies run again on the installed TransformerLens -- on 4.x the same weights in a
TransformerBridge in compatibility mode -- and every value must agree: 1e-5 on the zoo, 1e-4 on
SmolLM2-135M (processed weights; the two libraries fold the norms in a different order). On 3.9
the comparison keeps the committed file honest.
"""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch.testing import assert_close

import tl_interp as ti
from tests.tl_versions import REAL_MODEL, ZOO_MODEL, real_model_sweep, studies

DATA = Path(__file__).parent / "data"


def _reference(name: str) -> dict[str, torch.Tensor]:
    with safe_open(str(DATA / f"tl39_{name}.safetensors"), "pt") as f:
        assert f.metadata()["transformer_lens"].startswith("3.9")
        return {k: f.get_tensor(k) for k in f.keys()}


def _assert_equal_values(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], atol: float) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        assert_close(got[key], want[key], rtol=0, atol=atol, equal_nan=True, msg=lambda m, k=key: f"{k}: {m}")


def test_the_zoo_model_loads_as_the_installed_transformer_lens_offers() -> None:
    model = ti.models.load(ZOO_MODEL)
    expected = "HookedTransformer" if ti.compat.has_hooked_transformer() else "TransformerBridge"
    assert type(model).__name__ == expected


@pytest.mark.filterwarnings("ignore::tl_interp.errors.TlInterpWarning")  # small sets: the studies say so
def test_a_sweep_a_scan_a_steering_evaluation_and_a_similarity_equal_the_tl39_values() -> None:
    want = _reference(ZOO_MODEL)
    assert {k.split(".")[0] for k in want} == {"sweep", "sweep_heads", "scan", "steering", "similarity"}
    _assert_equal_values(studies(ti.models.load(ZOO_MODEL)), want, atol=1e-5)


def test_the_reference_is_not_trivial() -> None:
    # a comparison against zeros or NaNs would pass for any model that runs
    want = _reference(ZOO_MODEL)
    assert want["sweep.values"].abs().max() > 0.5
    assert want["scan.values"].abs().max() > 0.01
    assert torch.isfinite(want["similarity.values"]).all()


@pytest.mark.real_model
def test_a_smollm2_sweep_equals_the_tl39_values() -> None:
    path = DATA / f"tl39_{REAL_MODEL}.safetensors"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run tests/data/make_tl_references.py --real on TransformerLens 3.9")
    want = _reference(REAL_MODEL)
    assert want["sweep.values"].abs().max() > 0.1
    _assert_equal_values(real_model_sweep(ti.models.load(REAL_MODEL, device="cpu")), want, atol=1e-4)
