"""The shape of the package, checked: imports run one way, modules and classes stay readable,
every config field is explained, and the old module paths still import."""
import ast
import dataclasses
import importlib
import inspect
from pathlib import Path

import omnipose

PACKAGE = Path(omnipose.__file__).resolve().parent
# Subpackages in the order data flows; each may import only from itself and those before it.
LAYERS = ("core", "data", "nerf", "pose", "compare", "detector", "evaluation", "cli")
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 250
# Over the limits on purpose, with the reason.
LONG_ALLOWED: dict[str, str] = {}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def _imports(path: Path, module: str):
    """(line, imported module, names imported from it) for each import statement; names is () for
    ``import x``."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            yield node.lineno, target, tuple(alias.name for alias in node.names)


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:3]) if parts[1:3] == ["data", "synth"] else ".".join(parts[:2])


def _is_module(name: str) -> bool:
    return (PACKAGE.parent / Path(*name.split("."))).with_suffix(".py").is_file() or (
        PACKAGE.parent / Path(*name.split("."))).is_dir()


def test_imports_run_one_way():
    backwards = []
    for path, module in _modules():
        own = _layer(module)
        if own is None:
            continue
        for line, target, _ in _imports(path, module):
            if target.startswith("omnipose.") and (_layer(target) or 0) > own:
                backwards.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not backwards, "imports that run back up the layers:\n" + "\n".join(backwards)


def test_other_subpackages_are_used_through_their_public_api():
    """Within a subpackage modules import each other directly; another one is used through its
    ``__init__``, so that a subpackage can rearrange its modules without breaking the others.
    ``core``'s modules are themselves its public API."""
    reaching_in = []
    for path, module in _modules():
        if _layer(module) is None:
            continue
        for line, target, names in _imports(path, module):
            if not target.startswith("omnipose.") or _layer(target) is None or _layer(target) == 0:
                continue
            if _subpackage(target) == _subpackage(module) or _subpackage(target) in _subpackage(module):
                continue
            full = [target] if not names else [f"{target}.{n}" for n in names]
            if target != _subpackage(target) or any(_is_module(f) for f in full):
                reaching_in.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} {names}")
    assert not reaching_in, "imports reaching into another subpackage's modules:\n" + "\n".join(reaching_in)


def test_modules_and_classes_stay_readable():
    too_long = []
    for path, module in _modules():
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES and module not in LONG_ALLOWED:
            too_long.append(f"{module}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                name = f"{module}.{node.name}"
                if size > MAX_CLASS_LINES and name not in LONG_ALLOWED:
                    too_long.append(f"{name}: {size} lines")
    assert not too_long, "over the size limits (split them, or add them to LONG_ALLOWED with the reason):\n" + "\n".join(too_long)


def test_no_command_line_parsing_outside_cli():
    offenders = [str(path.relative_to(PACKAGE.parent)) for path, module in _modules()
                 if ".cli" not in module and "argparse" in path.read_text()]  # fmt: skip
    assert not offenders, f"argparse belongs in omnipose/cli/: {offenders}"


def _configs():
    from omnipose.core.config import Config

    for _, module in _modules():
        if module.endswith("__main__"):
            continue
        loaded = importlib.import_module(module)
        for _, value in inspect.getmembers(loaded, inspect.isclass):
            if value.__module__ == module and issubclass(value, Config) and value is not Config:
                yield value


def test_every_config_field_has_its_own_docstring():
    from omnipose.core.config import field_docs

    configs = list(_configs())
    assert len(configs) >= 8, [c.__name__ for c in configs]
    missing = [f"{c.__module__}.{c.__name__}.{f.name}" for c in configs
               for f in dataclasses.fields(c) if f.name not in field_docs(c)]  # fmt: skip
    assert not missing, "config fields without a docstring:\n" + "\n".join(missing)


def test_every_config_round_trips_through_a_dict():
    for config_class in _configs():
        config = config_class()
        again = config_class.from_dict(config.to_dict())
        assert again == config, config_class.__name__

