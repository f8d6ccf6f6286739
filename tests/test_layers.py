"""Imports go one way: errors -> io -> eval metrics -> model -> inference -> backends -> app -> front ends.

Every `import` in the package (at module level or inside a function) is parsed with `ast`; a module
may import its own layer or a lower one, never a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "maskvos"

#: Module-name prefix -> layer (the longest matching prefix decides). Lower layers know nothing of higher ones.
LAYERS: dict[str, int] = {
    "maskvos.errors": 0,
    "maskvos.io": 1,
    "maskvos.eval": 2,  # metrics and the DAVIS layout: on masks and files only
    "maskvos.model": 3,
    "maskvos.checkpoints": 3,
    "maskvos.adapters": 3,  # fine-tuned tensors stored apart from a checkpoint, folded into a model
    "maskvos.inference": 4,
    "maskvos.backends": 5,
    "maskvos.app": 6,
    "maskvos.eval.run": 7,  # the evaluation runner is a front end
    "maskvos.serve": 7,  # the HTTP API and page, a front end over the application layer
    "maskvos.train": 7,  # finetune: cached features, clips, losses, validation through sessions
    "maskvos.batch": 7,  # many videos over a process pool or Ray, a front end over the application layer
    "maskvos.integrations": 8,  # CVAT, Label Studio, X-AnyLabeling adapters; mounted under `serve`
    "maskvos.__main__": 9,
    "maskvos.cli": 9,  # the command line, over every front end
    "maskvos": 9,  # the package facade
}


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"module {module} has no layer; add it to LAYERS")
    return LAYERS[best]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, here: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every maskvos import in a file (`here`: its module name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = here or module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return [(line, name) for line, name in found if name == "maskvos" or name.startswith("maskvos.")]


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in SOURCES:
        layer(module_name(path))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(path):
    here = module_name(path)
    wrong = [
        f"{path.relative_to(PACKAGE)}:{line} imports {name} (layer {layer(name)} above {layer(here)})"
        for line, name in imported_modules(path)
        if layer(name) > layer(here)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_wrong_import(tmp_path):
    # An io module importing the model layer inside a function, and a relative import upward, are caught.
    bad = tmp_path / "frames.py"
    bad.write_text("import numpy\n\ndef f():\n    from maskvos.model.sam2 import PIXEL_MEAN\n    from ..inference import api\n")
    found = imported_modules(bad, here="maskvos.io.frames")
    assert found == [(4, "maskvos.model.sam2"), (5, "maskvos.inference")]
    assert all(layer(name) > layer("maskvos.io.frames") for _, name in found)
    assert layer("maskvos.eval.run") > layer("maskvos.app") > layer("maskvos.backends.featmatch")
    assert layer("maskvos.eval.davis") < layer("maskvos.model")
