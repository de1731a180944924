"""The ``tl-interp`` command: list and inspect models, reproduce the bundled zoo.

    tl-interp models              every name ``ti.models.load`` accepts
    tl-interp inspect NAME|PATH   load a model and print its shape facts and hook points
    tl-interp train NAME [...]    retrain a zoo model (same as python -m tl_interp.models.train)
    tl-interp report RESULT.safetensors [-o page.html] [--force]
                                  render a saved result as one offline HTML page

Outputs: a path named with ``-o`` is written (replacing a file there, as any save does); a
default output name (``RESULT.html``) never replaces an existing file unless ``--force`` is
given; no command ever writes over one of its inputs. ``train --out DIR`` writes the named
model into ``DIR`` (replacing that model, which is what retraining is for).
"""

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _models(_: argparse.Namespace) -> int:
    from tl_interp.models import known_names

    for name in known_names():
        print(name)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import tl_interp as ti

    model = ti.models.load(args.name)
    adapter = ti.models.adapt(model)
    print(f"{adapter.model_id} ({adapter.family}): n_layers={adapter.n_layers} n_heads={adapter.n_heads} "
          f"n_key_value_heads={adapter.n_key_value_heads} d_model={adapter.d_model} d_head={adapter.d_head} "
          f"d_mlp={adapter.d_mlp} d_vocab={adapter.d_vocab}")
    names = adapter.hook_names
    shown = names if args.all_hooks else [n for n in names if not n.startswith("blocks.") or n.startswith("blocks.0.")]
    print(f"{len(names)} hook points" + ("" if args.all_hooks else " (block 0 shown; --all-hooks for every block)"))
    for name in shown:
        print(f"  {name}")
    return 0


def _register_result_kinds() -> None:
    """Import every study package, so ``Result.load`` rebuilds each saved kind's own class."""
    import tl_interp

    for name in tl_interp.__all__:
        if name not in ("models", "results", "viz", "__version__"):
            getattr(tl_interp, name)  # imports each study package (and registers its result kinds)


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from safetensors import SafetensorError

    from tl_interp._io import check_target, refuse_existing
    from tl_interp.errors import ArtifactError
    from tl_interp.results import Result
    from tl_interp.viz import Report

    path = Path(args.result)
    if not path.is_file():
        raise ArtifactError(f"no result file at {path}; pass a .safetensors file written by Result.save")
    out = Path(args.output) if args.output else path.with_suffix(".html")
    # before loading anything: the input is never written over, an unnamed existing page never replaced
    refuse_existing(out, inputs=[path], named=bool(args.output) or args.force,
                    fix="Pass --force to replace it, or -o PAGE.html to write another file")
    check_target(out)
    _register_result_kinds()
    try:
        result = Result.load(path)
    except (KeyError, OSError, ValueError, SafetensorError) as err:
        raise ArtifactError(f"{path} is not a tl_interp result ({err}); pass a file written by Result.save") from err
    report = Report(args.title or f"{type(result).__name__}: {result.metric} ({result.provenance.model_id})")
    report.result(result)
    print(report.write(out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tl-interp`` command."""
    parser = argparse.ArgumentParser(prog="tl-interp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the model names load() accepts").set_defaults(run=_models)
    inspect = sub.add_parser("inspect", help="load a model and print its facts and hook points")
    inspect.add_argument("name", help="a model name or a local Hugging Face directory")
    inspect.add_argument("--all-hooks", action="store_true")
    inspect.set_defaults(run=_inspect)
    report = sub.add_parser("report", help="render a saved result (RESULT.safetensors) as an offline HTML page")
    report.add_argument("result", help="a .safetensors file written by Result.save")
    report.add_argument("-o", "--output", help="the page to write, replaced if it exists (default: RESULT.html, "
                                               "never replacing an existing file without --force)")
    report.add_argument("--force", action="store_true", help="replace an existing RESULT.html")
    report.add_argument("--title", help="the page's title")
    report.set_defaults(run=_report)
    sub.add_parser("train", help="retrain a zoo model (arguments as python -m tl_interp.models.train)",
                   add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "train":
        from tl_interp.models import train

        return train.main(rest) or 0
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
