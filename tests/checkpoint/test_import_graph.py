"""The modules of aqformer_d2.checkpoint import each other without a circle, and the converters know no URLs."""
import ast
import pathlib

import aqformer_d2.checkpoint

PACKAGE = "aqformer_d2.checkpoint"
ROOT = pathlib.Path(aqformer_d2.checkpoint.__file__).parent
CONVERTERS = ("coco_backbone", "timm_convert", "torchvggish_convert", "torchvision_resnet")
URL_MODULES = ("url_schemes", "weight_cache")


def _sibling_imports(path: pathlib.Path):
    """Names of the package's own modules that ``path`` imports (relative or absolute, any nesting)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import a, b
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(PACKAGE + "."):
            found.add(node.module[len(PACKAGE) + 1:].split(".")[0])
        elif isinstance(node, ast.Import):
            names = [a.name[len(PACKAGE) + 1:] for a in node.names if a.name.startswith(PACKAGE + ".")]
            found.update(name.split(".")[0] for name in names)
    return found


def _graph():
    modules = {p.stem: p for p in ROOT.glob("*.py") if p.stem != "__init__"}
    return {name: _sibling_imports(path) & set(modules) for name, path in modules.items()}


def test_no_import_circle_inside_the_package():
    graph = _graph()
    assert set(CONVERTERS + URL_MODULES) <= set(graph)  # the modules were found
    done, on_path = set(), []

    def visit(name):
        if name in on_path:
            raise AssertionError(f"import circle: {' -> '.join(on_path[on_path.index(name):] + [name])}")
        if name not in done:
            on_path.append(name)
            for dep in sorted(graph[name]):
                visit(dep)
            on_path.pop()
            done.add(name)

    for name in sorted(graph):
        visit(name)


def test_converters_are_free_of_urls_and_downloads():
    graph = _graph()
    for name in CONVERTERS:
        assert not graph[name] & set(URL_MODULES), f"{name} imports {sorted(graph[name] & set(URL_MODULES))}"
