"""core/ stays deterministic: no I/O, clock, global randomness, or driver imports."""

import ast
import pathlib

CORE = pathlib.Path(__file__).resolve().parents[1] / "src" / "quorumdb" / "core"
FORBIDDEN_MODULES = {
    "asyncio",
    "socket",
    "time",
    "random",
    "threading",
    "selectors",
    "subprocess",
    "uuid",
    "lmdb",
    "uvloop",
    "os",
    "io",
    "pathlib",
    "datetime",
    "secrets",
}
FORBIDDEN_PACKAGES = ("quorumdb.runtime", "quorumdb.sim", "quorumdb.api", "quorumdb.client")


def imported_modules(path: pathlib.Path, package: str = "quorumdb.core") -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = package.split(".")
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                names.append(".".join(base + ([node.module] if node.module else [])))
            else:
                names.append(node.module or "")
    return names


def test_core_has_modules_to_check() -> None:
    assert len(list(CORE.rglob("*.py"))) >= 5


def test_core_imports_nothing_impure() -> None:
    offences = []
    for path in sorted(CORE.rglob("*.py")):
        relative = path.relative_to(CORE).parent.parts
        for name in imported_modules(path, ".".join(("quorumdb", "core", *relative))):
            top = name.split(".")[0]
            if top in FORBIDDEN_MODULES or name.startswith(FORBIDDEN_PACKAGES):
                offences.append(f"{path.relative_to(CORE)} imports {name}")
    assert offences == []


def test_core_never_calls_builtin_open() -> None:
    offences = []
    for path in sorted(CORE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
                offences.append(str(path.relative_to(CORE)))
    assert offences == []


def test_the_checker_itself_detects_a_forbidden_import(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import time\nfrom ..runtime import transport\n")
    assert imported_modules(sample) == ["time", "quorumdb.runtime"]
