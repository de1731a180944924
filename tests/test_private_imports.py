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


def cross_unit_private_uses(path: Path, root: Path = PACKAGE) -> list[str]:
    """Each use in ``path`` of an underscore name defined in another unit of the package at ``root``."""
    here = _unit(_module_name(path, root))
    package = root.name
    tree = ast.parse(path.read_text())
    modules: dict[str, str] = {}  # local name -> the package module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == package:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                owner = full if _is_module(full, root) else node.module
                if _private(alias.name) and _unit(owner) != here:
                    found.append(f"{path.name}:{node.lineno}: from {node.module} import {alias.name}")
                if owner == full:
                    modules[alias.asname or alias.name] = full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != package:
                    continue
                if alias.asname:
                    if _private(alias.name.rsplit(".", 1)[-1]) and _unit(alias.name) != here:
                        found.append(f"{path.name}:{node.lineno}: import {alias.name} as {alias.asname}")
                    modules[alias.asname] = alias.name
                else:  # `import tl_interp.x.y` binds the name tl_interp: reads go through attributes
                    modules[package] = package
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        chain, value = [], node.value
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in modules:
            owner = ".".join([modules[value.id], *chain, node.attr])
            if _unit(owner) != here:
                found.append(f"{path.name}:{node.lineno}: {'.'.join([value.id, *chain, node.attr])}")
    return found


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
