"""Every demo opens as a notebook, runs in a kernel, and its outputs show rendered views.

Each ``demos/*.py`` percent-cell script is converted to a notebook (``# %%`` starts a code
cell, ``# %% [markdown]`` a markdown cell), executed with nbclient + ipykernel in a fresh
folder (so the demo's outputs land there), and its outputs must contain a circuitsvis view
(``tl-interp-view``, with the circuitsvis bundle exactly once) or a displayed result (toy
networks without tokens have nothing for circuitsvis to draw). Demos that load SmolLM2 (their
source says ``smollm2``) run behind the ``real_model`` marker; the others in the default
suite. With ``TL_INTERP_WRITE_NOTEBOOKS=DIR`` the executed notebooks are written to DIR when
they are under 2 MB (``demos/notebooks/`` holds the committed ones), stripped of progress
output: a running notebook shows tqdm.auto's widgets, a committed one stores none of it.
"""

import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the dev extra installs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the dev extra installs nbclient")

ROOT = Path(__file__).resolve().parents[1]
DEMOS = sorted((ROOT / "demos").glob("*.py"))
BUNDLE_MARKER = "tl-interp-circuitsvis-bundle"
MAX_COMMITTED_BYTES = 2_000_000
# The first cell of every converted notebook: a kernel's own argv (-f connection.json) is not
# the demo's command line, so argparse must see none; and a kernel has no __file__, so the
# demo is placed at demos/<name> under the working folder (its results land there too).
SETUP_CELL = ("import sys\nfrom pathlib import Path\nsys.argv = sys.argv[:1] + {args!r}\n"
              "__file__ = str(Path.cwd() / 'demos' / {name!r})\n"
              "sys.path.append({demos!r})  # demos that reuse another demo's code import it from there")
# The longest demos run reduced as notebooks (their full runs are what `results/` holds, and each
# has a reduced run in its own test too): the same cells, fewer layers, scales and samples.
QUICK_ARGS = {
    "steering_numbers_months.py": ["--layers", "14,26", "--scales", "2", "--seeds", "1"],
    "steering_numbers_months_gemma.py": ["--layers", "9,15", "--scales", "1", "--seeds", "1"],
    "cross_model_similarity.py": ["--quick"],
    "sae_feature_spaces.py": ["--quick"],
    "paired_states_smollm2.py": ["--pairs", "12", "--permutations", "99"],
    "layer_angles_smollm2.py": ["--sentences", "12"],
    "smollm2_weights.py": ["--neurons", "6", "--random", "50"],
    "circuits_months_smollm2.py": ["--quick", "--circuit-edges", "30", "--prompts", "4", "--n-boot", "100"],
    "circuits_induction.py": ["--prompts", "16", "--n-boot", "100"],
    "lens_months_smollm2.py": ["--pairs", "3", "--top", "1", "--first-sender-layer", "20"],
    "tuned_lens_smollm2.py": ["--chunks", "2"],
}


class MissingViews(AssertionError):
    """A demo ran as a notebook but its outputs show no rendered view."""


def percent_to_notebook(source: str, name: str = "demo.py") -> "nbformat.NotebookNode":
    """A notebook from a percent-cell script (the subset of jupytext's format the demos use)."""
    cells = [nbformat.v4.new_code_cell(SETUP_CELL.format(name=name, args=QUICK_ARGS.get(name, []),
                                                         demos=str(ROOT / "demos")),
                                       metadata={"tags": ["injected-by-test"]})]
    chunks = re.split(r"^(# %%.*)$", source, flags=re.MULTILINE)
    preamble, rest = chunks[0], chunks[1:]
    if preamble.strip():
        cells.append(nbformat.v4.new_code_cell(preamble.strip("\n")))
    for header, body in zip(rest[::2], rest[1::2]):
        body = body.strip("\n")
        if "[markdown]" in header:
            text = "\n".join(re.sub(r"^# ?", "", line) for line in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(text))
        else:
            title = header[len("# %%"):].strip()
            cells.append(nbformat.v4.new_code_cell((f"# {title}\n" if title else "") + body))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def html_outputs(nb: "nbformat.NotebookNode") -> list[str]:
    return [out["data"]["text/html"] for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if "text/html" in out.get("data", {})]


def execute(script: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> "nbformat.NotebookNode":
    nb = percent_to_notebook(script.read_text(), script.name)
    # the kernel is this interpreter (its kernelspec says plain "python"), offline, on few threads
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for name, value in (("HF_HUB_OFFLINE", "1"), ("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1")):
        monkeypatch.setenv(name, value)
    client = nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def check_views(nb: "nbformat.NotebookNode", name: str) -> None:
    pages = html_outputs(nb)
    views = sum(page.count('class="tl-interp-view"') for page in pages)
    results = sum(page.count('class="tl-interp-result"') for page in pages)
    if views + results == 0:
        raise MissingViews(f"{name} ran as a notebook but no cell output shows a tl_interp view or result; end a "
                           "cell with a view (ti.viz.attention(...), ...) or a result")
    if views:
        assert sum(page.count(BUNDLE_MARKER) for page in pages) == 1, "the circuitsvis bundle must ride along once"


# tqdm's text bars ("ablating:  40%|████  | 12/30 [00:27<00:41, 2.28s/it]"), its warning when
# ipywidgets is missing, and the blank lines it leaves; its widgets (and their saved state)
PROGRESS_TEXT = re.compile(r"\d+%\|[^|]*\|\s*\d+/\d+|\d+(?:\.\d+)?(?:it/s|s/it)\]|IProgress not found|TqdmWarning")
WIDGET = "application/vnd.jupyter.widget-view+json"


def is_progress(output: dict) -> bool:
    """A progress bar: a tqdm widget, or stderr text that is tqdm's (or blank)."""
    if WIDGET in output.get("data", {}):
        return True
    if output.get("output_type") == "stream" and output.get("name") == "stderr":
        text = "".join(output.get("text", ""))
        return not text.strip() or bool(PROGRESS_TEXT.search(text))
    return False


def strip_progress(nb: "nbformat.NotebookNode") -> "nbformat.NotebookNode":
    """``nb`` without progress outputs or saved widget state (every other output kept, in order)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [out for out in cell.get("outputs", []) if not is_progress(out)]
    nb.metadata.pop("widgets", None)
    return nb


def keep(nb: "nbformat.NotebookNode", name: str) -> None:
    target = os.environ.get("TL_INTERP_WRITE_NOTEBOOKS")
    if not target:
        return
    nb.cells = [c for c in nb.cells if "injected-by-test" not in c.get("metadata", {}).get("tags", [])]
    text = nbformat.writes(strip_progress(nb))
    if len(text.encode()) < MAX_COMMITTED_BYTES:
        Path(target).mkdir(parents=True, exist_ok=True)
        (Path(target) / name.replace(".py", ".ipynb")).write_text(text)


def demo_params() -> list[object]:
    params = []
    for script in DEMOS:
        marks = [pytest.mark.real_model] if "smollm2" in script.read_text().lower() else []
        params.append(pytest.param(script, marks=marks, id=script.stem))
    return params


def test_the_demos_are_discovered() -> None:
    assert {p.name for p in DEMOS} >= {"main_study.py"}


def notebook_with_html(*pages: str) -> "nbformat.NotebookNode":
    cells = [nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output("display_data", {"text/html": page})])
             for page in pages]
    return nbformat.v4.new_notebook(cells=cells + [nbformat.v4.new_markdown_cell("text")])


def test_the_view_check_refuses_a_notebook_that_shows_nothing_and_accepts_one_that_does() -> None:
    # the check every demo goes through can fail: no view or result -> MissingViews, views without
    # the circuitsvis bundle (or with it twice) -> AssertionError
    with pytest.raises(MissingViews, match="no cell output shows a tl_interp view or result"):
        check_views(notebook_with_html("<p>a table</p>"), "demo.py")
    view = f'<div class="tl-interp-view"></div><script class="{BUNDLE_MARKER}"></script>'
    check_views(notebook_with_html(view), "demo.py")
    check_views(notebook_with_html('<div class="tl-interp-result"></div>'), "demo.py")
    for pages in (['<div class="tl-interp-view"></div>'], [view, view]):
        with pytest.raises(AssertionError, match="bundle must ride along once"):
            check_views(notebook_with_html(*pages), "demo.py")


@pytest.mark.parametrize("script", demo_params())
def test_demo_runs_as_a_notebook_and_shows_views(script: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute(script, tmp_path, monkeypatch)
    check_views(nb, script.name)
    keep(nb, script.name)


def test_conversion_and_execution_on_a_small_percent_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "tiny_demo.py"
    script.write_text('# %% [markdown]\n# # A tiny demo\n#\n# Two views of the induction model.\n\n'
                      "# %%\nimport argparse, torch\nimport tl_interp as ti\n"
                      "args = argparse.ArgumentParser().parse_args()\n"
                      'model = ti.models.load("induction-2l")\ntokens = torch.tensor([0, 5, 6, 7, 5, 6, 7])\n\n'
                      "# %% the induction head\nti.viz.attention(model, tokens, layer=1, heads=[2])\n\n"
                      "# %%\nti.viz.predictions(model, tokens)\n")
    nb = percent_to_notebook(script.read_text(), script.name)
    assert [c.cell_type for c in nb.cells] == ["code", "markdown", "code", "code", "code"]
    assert nb.cells[1].source.startswith("# A tiny demo") and nb.cells[3].source.startswith("# the induction head")
    executed = execute(script, tmp_path, monkeypatch)
    check_views(executed, script.name)
    pages = html_outputs(executed)
    assert len(pages) == 2 and 'data-element="AttentionHeads"' in pages[0] and BUNDLE_MARKER in pages[0]
    assert 'data-element="TokenLogProbs"' in pages[1] and len(pages[1]) < 100_000


@pytest.mark.parametrize("path", sorted((ROOT / "demos" / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_committed_notebooks_store_no_progress_output(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    found = [(i, "".join(out.get("text", ""))[:80] or sorted(out.get("data", {}))) for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" for out in cell.get("outputs", []) if is_progress(out)]
    assert found == [], f"{path.name} stores progress output (strip it: tests/test_notebooks.strip_progress): {found[:3]}"
    assert "widgets" not in nb.metadata


def test_strip_progress_drops_bars_and_widgets_and_keeps_everything_else() -> None:
    stream = nbformat.v4.new_output
    bar = stream("stream", name="stderr", text="patching resid_pre:  33%|███▎      | 100/300 [00:27<00:49,  4.02it/s]")
    warning = stream("stream", name="stderr", text="TqdmWarning: IProgress not found. Please update jupyter")
    blank = stream("stream", name="stderr", text="\n")
    widget = stream("display_data", data={WIDGET: {"model_id": "abc"}, "text/plain": "  0%|  | 0/30"})
    printed = stream("stream", name="stdout", text="loaded SmolLM2-135M-Instruct (30 layers) in 1.2s\n")
    real = stream("stream", name="stderr", text="UserWarning: the corrupted prompts differ in length\n")
    shown = stream("execute_result", data={"text/html": "<div class='tl-interp-view'></div>"}, execution_count=1)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("run()", outputs=[bar, warning, printed, blank,
                                                                                    widget, real, shown])])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    kept = strip_progress(nb).cells[0].outputs
    assert kept == [printed, real, shown] and "widgets" not in nb.metadata

