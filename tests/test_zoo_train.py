"""The training script reproduces zoo models: it writes loadable weights, deterministically."""

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from tl_interp import training
from tl_interp.models import train, zoo

NAMES = ["induction-2l", "s5-mlp"]  # the models this suite owns


def run(name: str, out, *, seed: int, steps: int = 3) -> dict[str, torch.Tensor]:
    assert train.main([name, "--steps", str(steps), "--seed", str(seed), "--out", str(out)]) == 0
    return load_file(out / "weights" / f"{name}.safetensors")


def test_every_registered_model_has_a_trainer():
    assert set(zoo.REGISTRY) <= set(training.TRAINERS)


@pytest.mark.parametrize("name", NAMES)
def test_a_short_run_writes_weights_and_a_card_that_the_loader_reads(name, tmp_path):
    run(name, tmp_path, seed=1)
    model = zoo.load(name, directory=tmp_path)
    card = json.loads((tmp_path / "cards" / f"{name}.json").read_text())
    assert model.card == {k: v for k, v in card.items() if k != "checksum"}
    assert card["provenance"]["steps"] == 3 and card["provenance"]["seed"] == 1
    command = f"python -m tl_interp.models.train {name} --steps 3 --seed 1"
    assert card["provenance"]["command"] == command
    weights = (tmp_path / "weights" / f"{name}.safetensors").read_bytes()
    assert card["files"][f"weights/{name}.safetensors"] == {
        "bytes": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}
    packaged = zoo.load(name)  # same architecture as the bundled model
    assert {k: p.shape for k, p in model.named_parameters()} == {
        k: p.shape for k, p in packaged.named_parameters()
    }


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_identical_weights_and_another_seed_does_not(name, tmp_path):
    first = run(name, tmp_path / "a", seed=5)
    again = run(name, tmp_path / "b", seed=5)
    other = run(name, tmp_path / "c", seed=6)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_the_packaged_cards_record_how_to_reproduce_the_packaged_weights():
    for name in NAMES:
        card = zoo.card(name)
        weights = (zoo.ZOO_DIR / "weights" / f"{name}.safetensors").read_bytes()
        assert card["files"][f"weights/{name}.safetensors"]["sha256"] == hashlib.sha256(weights).hexdigest()
        assert card["provenance"]["command"].startswith(f"python -m tl_interp.models.train {name} ")
        assert card["provenance"]["torch_threads"] == 1


def test_the_script_restores_the_callers_thread_count(tmp_path):
    before = torch.get_num_threads()
    run("s5-mlp", tmp_path, seed=0, steps=1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("name", ["induction-2l", "ordinal-4l"])
def test_training_a_hooked_zoo_model_without_hooked_transformer_names_what_it_needs(name, tmp_path, monkeypatch):
    from tl_interp.compat import tl
    from tl_interp.errors import UnsupportedError

    if tl.has_hooked_transformer():  # TransformerLens 3.x: 4.x's absence, simulated where the library asks
        monkeypatch.setattr(tl, "_hooked", lambda: (None, "this TransformerLens has no HookedTransformer (simulated)"))
    with pytest.raises(UnsupportedError, match=rf"training {name} needs TransformerLens's HookedTransformer.*"
                                               r"constraints.txt: transformer-lens 3.9"):
        train.main([name, "--steps", "1", "--out", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []  # refused before anything was trained or written
