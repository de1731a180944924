"""The README's example runs as written (on the real SmolLM2-135M)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.real_model
def test_readme_example_runs() -> None:
    block = re.search(r"## A taste\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "README lost its example"
    namespace: dict = {}
    exec(compile(block.group(1), str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["sweep"].values.shape[0] == 30
    assert namespace["states"].stack().shape == (30, 2, 576)
    assert len(namespace["heads"].top(3)) == 3
