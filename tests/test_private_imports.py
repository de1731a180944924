"""No subpackage uses another's private names: an underscore name is its own subpackage's business.

The rule, for every module of ``tl_interp``: a name that starts with one underscore (a private
function, class, constant, or a private module taken as an object) may be used only inside the
*unit* that defines it -- a subpackage (``tl_interp.models`` with everything under it) or a
top-level module (``tl_interp._checks``, ``tl_interp.cli``; the root package is a unit of its own).
Caught: ``from tl_interp.hooks._sae import _sae_hook_name`` in ``ablation/``,
``from tl_interp.models import _smollm2`` in ``training/``, and attribute reads through an
imported module (``compat._guard.reason`` outside ``compat/``), lazy imports included.
Allowed: a private *module's public names*, which are their subpackage's internal API
(``from tl_interp.models._adapter import Tokenized``), and dunders (``__version__``). A helper
another subpackage needs gets a public name in the layer it belongs to (``compat.sae.sae_site``,
``engine.inputs.paired_batches``). Tests may reach private names: they test them.
"""

import ast
from dataclasses import dataclass
from pathlib import Path

import tl_interp

PACKAGE = Path(tl_interp.__file__).parent


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """``tl_interp.models.zoo._store`` -> ``models``; ``tl_interp._checks`` -> ``_checks``; root -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_module(module: str, root: Path) -> bool:
    path = root.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


@dataclass(frozen=True)
class Use:
    """One use of a package name in a file: where, how it reads, and the package name it stands for."""

    line: int
    text: str  # as written: "from tl_interp.hooks._sae import _sae_hook_name", "compat._guard"
    full: str  # the dotted name it stands for: "tl_interp.hooks._sae._sae_hook_name"
    owner: str  # the package module the used name belongs to (its unit decides what is private to whom)
    private: bool  # the used name itself has one leading underscore


def package_uses(path: Path, root: Path = PACKAGE) -> list[Use]:
    """Every import from the package at ``root`` in ``path``, and every read of an underscore name
    through an imported package module (lazy imports included)."""
    package = root.name
    tree = ast.parse(path.read_text())
    modules: dict[str, str] = {}  # local name -> the package module it is bound to
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == package:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                owner = full if _is_module(full, root) else node.module
                uses.append(Use(node.lineno, f"from {node.module} import {alias.name}", full, owner,
                                _private(alias.name)))
                if owner == full:
                    modules[alias.asname or alias.name] = full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != package:
                    continue
                # `import tl_interp.x.y` binds the name tl_interp: reads go through attributes
                text = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                uses.append(Use(node.lineno, text, alias.name, alias.name,
                                bool(alias.asname) and _private(alias.name.rsplit(".", 1)[-1])))
                modules[alias.asname or package] = alias.name if alias.asname else package
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        chain, value = [], node.value
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in modules:
            full = ".".join([modules[value.id], *chain, node.attr])
            uses.append(Use(node.lineno, ".".join([value.id, *chain, node.attr]), full, full, True))
    return uses


def cross_unit_private_uses(path: Path, root: Path = PACKAGE) -> list[str]:
    """Each use in ``path`` of an underscore name defined in another unit of the package at ``root``."""
    here = _unit(_module_name(path, root))
    return [f"{path.name}:{use.line}: {use.text}" for use in package_uses(path, root)
            if use.private and _unit(use.owner) != here]


def test_no_subpackage_uses_another_subpackages_private_names() -> None:
    found = [use for path in sorted(PACKAGE.rglob("*.py")) for use in cross_unit_private_uses(path)]
    assert found == [], "give each a public name in the layer it belongs to:\n" + "\n".join(found)


def test_the_scan_finds_each_kind_of_planted_private_use(tmp_path: Path) -> None:
    root = tmp_path / "tl_interp"
    for module in ("hooks/_sae.py", "hooks/__init__.py", "models/_smollm2.py", "models/__init__.py",
                   "compat/_guard.py", "compat/__init__.py", "ablation/__init__.py", "__init__.py",
                   "ablation/_own.py"):
        (root / module).parent.mkdir(parents=True, exist_ok=True)
        (root / module).touch()
    planted = root / "ablation" / "_features.py"
    planted.write_text(
        "from tl_interp.hooks._sae import _sae_hook_name, sae_splice\n"  # 1: a private function
        "from tl_interp.models import _smollm2\n"  # 2: a private module as an object
        "from tl_interp import compat\n"
        "import tl_interp.models._smollm2 as weights\n"  # 3: the same, by import-as
        "import tl_interp.models\n"
        "from tl_interp.ablation._own import _helper\n"  # same unit: fine
        "from tl_interp import __version__\n"  # a dunder: fine
        "def f():\n"
        "    from tl_interp.hooks import _sae\n"  # 4: lazy, a private module
        "    tl_interp.models._smollm2.load()\n"  # 5: through the package's attributes
        "    return compat._guard.reason('x')\n")  # 6: through an imported module
    found = cross_unit_private_uses(planted, root)
    assert len(found) == 6, found
    assert any("_sae_hook_name" in f for f in found) and any("compat._guard" in f for f in found)


# --- outside the package: demos are what users copy; benchmarks may measure internals, by name --
ROOT = PACKAGE.parent


def private_uses_outside(path: Path, root: Path = PACKAGE) -> list[str]:
    """The dotted names of ``tl_interp``'s private modules and names that ``path`` (a script outside the
    package) imports or reads: any path component with one leading underscore
    (``tl_interp.circuits._curve``, ``tl_interp.models._gemma``, ``ti.stats._inputs``)."""
    return sorted({use.full for use in package_uses(path, root)
                   if any(_private(part) for part in use.full.split("."))})


# (benchmark file, private name) -> why the benchmark needs it. Each measures an internal step against
# its public call; a demo never gets an entry. An entry no longer used fails (remove it).
BENCHMARK_PRIVATE = {
    ("checksums.py", "tl_interp._io.read_checked_json"): "times the manifest verification inside ti.models.load",
    ("checksums.py", "tl_interp._io.verify_manifest"): "times the manifest verification inside ti.models.load",
    ("checksums.py", "tl_interp.models._gemma"): "the cache entry whose files it verifies (cache_entry())",
    ("checksums.py", "tl_interp.models._smollm2"): "the cache entry whose files it verifies (cache_entry())",
    ("memory.py", "tl_interp.patching._sweep.plan_sweep"): "the sweep's engine plan, run under a memory budget",
    ("circuits.py", "tl_interp.circuits._exact.exact_study"): "exact effects of a sample of edges (SmolLM2)",
    ("circuits.py", "tl_interp.circuits._runs.prepare"): "the checked batches of a sampled exact study (SmolLM2)",
    ("similarity.py", "tl_interp.similarity._kernels.cross_product_null"): "the batched null against a loop",
    ("similarity.py", "tl_interp.similarity._compare._one_resample"): "one resample's cost, per metric",
    ("similarity.py", "tl_interp.similarity._compare._resolved"): "one resample's cost, per metric",
    ("similarity.py", "tl_interp.stats._bootstrap.bootstrap_evaluator"): "the batched bootstrap against a loop",
    ("similarity.py", "tl_interp.stats._permutation.null_evaluator"): "the batched null against a loop",
    ("similarity.py", "tl_interp.stats._inputs"): "the unit scaling compare applies, before timing a metric",
    ("similarity.py", "tl_interp.similarity._schedule"): "compare's time estimate at a size too large to run",
    ("similarity.py", "tl_interp.similarity._schedule._estimate"): "compare's time estimate at a size too large to run",
    ("similarity.py", "tl_interp.similarity._compare"): "stops compare after its estimate (patches run_stages)",
}


def test_demos_use_public_names_only() -> None:
    found = [f"{path.relative_to(ROOT)}: {name}" for path in sorted((ROOT / "demos").rglob("*.py"))
             for name in private_uses_outside(path)]
    assert found == [], ("demos are what users copy: use the public name (export it if a demo needs it):\n"
                         + "\n".join(found))


def test_benchmarks_use_private_names_only_where_the_allowlist_says_why() -> None:
    used = {(path.name, name) for path in sorted((ROOT / "benchmarks").rglob("*.py"))
            for name in private_uses_outside(path)}
    unexplained = sorted(used - set(BENCHMARK_PRIVATE))
    stale = sorted(set(BENCHMARK_PRIVATE) - used)
    assert not unexplained, ("benchmarks' private names without a reason (use the public name, or add a "
                             f"(file, name) entry to BENCHMARK_PRIVATE saying why): {unexplained}")
    assert not stale, f"BENCHMARK_PRIVATE entries no benchmark uses any more (remove them): {stale}"


def test_the_outside_scan_finds_each_kind_of_private_use(tmp_path: Path) -> None:
    script = tmp_path / "demo.py"
    script.write_text(
        "import tl_interp as ti\n"
        "from tl_interp import circuits\n"  # public: fine
        "from tl_interp.circuits import Circuit\n"  # public: fine
        "from tl_interp.circuits._curve import faithfulness_curve\n"  # 1: a private module's name
        "from tl_interp.models import _gemma\n"  # 2: a private module
        "import tl_interp.stats._inputs\n"  # 3: by import
        "x = ti.stats._inputs.unit_scale\n"  # 4: through attributes
        "y = circuits._helper\n"  # 5: a private name of a public module
        "z = ti.__version__\n")  # a dunder: fine
    assert private_uses_outside(script) == [
        "tl_interp.circuits._curve.faithfulness_curve", "tl_interp.circuits._helper", "tl_interp.models._gemma",
        "tl_interp.stats._inputs"]
