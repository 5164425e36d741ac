"""The operator seam, checked on the source: aqformer_d2/modeling/ops is the bottom of the model package (it
imports no other part of aqformer_d2), private torch ops are called only inside it, and the rest of the
package reaches it only through its public entries (docs/architecture.md, "Layers and imports")."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[3] / "aqformer_d2"
OPS = PACKAGE / "modeling" / "ops"


def _python_files(root: pathlib.Path):
    files = sorted(root.rglob("*.py"))
    assert files, f"no Python files under {root}"
    return files


def _imported_modules(path: pathlib.Path):
    """Absolute names of the modules ``path`` imports (relative imports resolved against its package)."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = package[:-1]  # the package a relative import starts from (also for __init__.py)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                module = ".".join(base + ([node.module] if node.module else []))
                yield from ([module] if node.module else [f"{module}.{alias.name}" for alias in node.names])
            else:
                yield node.module


def _attribute_chains(path: pathlib.Path):
    """Dotted names such as ``torch.ops.mkldnn`` used in ``path``'s code (not in strings or comments)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            parts = []
            while isinstance(node, ast.Attribute):
                parts.append(node.attr)
                node = node.value
            if isinstance(node, ast.Name):
                yield ".".join([node.id] + parts[::-1])


def test_ops_imports_nothing_else_of_the_package():
    for path in _python_files(OPS):
        for module in _imported_modules(path):
            if module.startswith("aqformer_d2"):
                assert module.startswith("aqformer_d2.modeling.ops"), f"{path.name} imports {module}"


def test_private_torch_ops_only_inside_ops():
    found = {path.relative_to(PACKAGE).as_posix() for path in _python_files(PACKAGE)
             if any(chain.startswith(("torch.ops.", "torch._C.")) for chain in _attribute_chains(path))}
    assert found, "the check must see the ops package's own calls (teeth)"
    assert all(name.startswith("modeling/ops/") for name in found), sorted(found)


def test_the_rest_of_the_package_uses_only_the_public_entries():
    internal = ("aqformer_d2.modeling.ops.deform_sampling", "aqformer_d2.modeling.ops.linear_op",
                "aqformer_d2.modeling.ops.ms_deform_attn_op")
    for path in _python_files(PACKAGE):
        if OPS in path.parents:
            continue
        for module in _imported_modules(path):
            assert not module.startswith(internal), f"{path.relative_to(PACKAGE)} imports {module}"
