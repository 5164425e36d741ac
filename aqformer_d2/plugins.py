"""Making your own components visible to the registries: the config's ``IMPORTS`` and installed plugins.

A component (backbone, audio encoder, pixel decoder, transformer decoder, dataset mapper, dataset) is
found by the name a config gives it only if the module that registers it has been imported. Two ways:

* ``IMPORTS`` (top-level config key, a list of module names, default ``[]``): :func:`import_config_modules`
  imports them. :func:`aqformer_d2.engine.build_cfg` calls it for every config it builds, before the
  config object exists, so every entry point that builds its config there (``train_net.py`` and each
  process :func:`aqformer_d2.engine.launch` starts, ``demo/demo.py``, ``tools/export_onnx.py``, the
  tools that build models) imports them before anything is built. The modules are found the usual way:
  an installed package or a folder on ``PYTHONPATH``.
* Installed plugins: every distribution that declares an entry point in the group
  ``aqformer_d2.plugins`` (:data:`ENTRY_POINT_GROUP`) is loaded by :func:`load_installed_plugins` when
  ``aqformer_d2`` is imported. One that fails is reported by name (a logging warning) and skipped; the
  others and the core are unaffected.

Compared with mmengine's ``custom_imports = dict(imports=[...], allow_failed_imports=False)`` (imported
by ``Config.fromfile`` before anything is built, inherited from base configs, an ``ImportError`` that
lists ``sys.path`` and says to set ``PYTHONPATH``), which this follows, the differences are:

* the key is a plain list (``IMPORTS: [my_project.backbones]``), a detectron2 config has no dicts;
* there is no ``allow_failed_imports``: a module that does not import is always an error (a run
  without the component it registers would fail later or, worse, silently use something else);
* any exception raised while importing the module (not only ``ImportError``: also a ``SyntaxError``
  or a failing ``@register`` in it) is reported as an ``ImportError`` naming the module and the config
  file, with the original exception chained;
* ``IMPORTS`` given on the command line (``IMPORTS "['my_module']"``) counts too; mmengine imports
  only what the file names;
* the modules are imported before the config keys are merged, so a module may add its own keys with
  :func:`aqformer_d2.config.register_config_extension` and the same file may set them;
* installed plugins (entry points) are an addition; mmengine has no such group.
"""
import importlib
import importlib.metadata
import logging
import os
import sys
from typing import Dict, List, Sequence

from detectron2.config import CfgNode

__all__ = [
    "ENTRY_POINT_GROUP", "HOW_TO_MAKE_VISIBLE", "import_config_modules", "import_modules", "imported_modules",
    "imports_of_config", "load_installed_plugins", "failed_plugins",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "aqformer_d2.plugins"

# How a user makes a new registered name visible; quoted by every "not registered" error.
HOW_TO_MAKE_VISIBLE = (
    "A new name becomes visible when the module that registers it is imported before the build: list the "
    "module in the config's IMPORTS (e.g. `IMPORTS: [\"my_project.my_backbone\"]`; the module must be "
    "importable: an installed package or a folder on PYTHONPATH), or install a package that declares it "
    f"as an entry point in the group '{ENTRY_POINT_GROUP}' (README: \"Add your own backbone\", "
    "\"Write a plugin package\")."
)

# Modules imported through IMPORTS in this process, in order (launch imports them in its workers too).
_IMPORTED: List[str] = []
# Entry point name -> "Type: message" of the installed plugins that failed to import in this process.
_FAILED_PLUGINS: Dict[str, str] = {}


def imports_of_config(config_file: str, opts: Sequence[str] = ()) -> List[str]:
    """The ``IMPORTS`` list that ``config_file`` (with its ``_BASE_`` chain) and the ``KEY VALUE`` ``opts``
    give, read before the config is built, with the precedence the merge has: the file over its bases,
    then the last ``IMPORTS`` in ``opts``.

    Raises:
        ValueError naming the config file: ``IMPORTS`` is not a list of non-empty module names.
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{config_file}: config file not found")
    loaded = CfgNode.load_yaml_with_base(config_file, allow_unsafe=True) or {}
    names = loaded.get("IMPORTS", [])
    source = config_file
    opts = list(opts)
    for key, value in zip(opts[0::2], opts[1::2]):
        if key == "IMPORTS":
            names, source = CfgNode._decode_cfg_value(value), f"{config_file} (command line IMPORTS {value!r})"
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(
            f"{source}: IMPORTS must be a list of module names, e.g. IMPORTS: [\"my_project.my_backbone\"]; "
            f"got {names!r}"
        )
    return [n.strip() for n in names]


def import_modules(names: Sequence[str], *, source: str) -> None:
    """Import every module of ``names`` in order; ``source`` (the config file) is named in the error.

    Raises:
        ImportError naming the module, ``source``, the original error (chained) and ``sys.path``.
    """
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # any failure while importing is the user's module failing; re-raised
            path = "\n    ".join(sys.path)
            raise ImportError(
                f"{source}: IMPORTS names module '{name}', which failed to import: {type(e).__name__}: {e}\n"
                f"The module must be importable from this Python: an installed package, or a folder on "
                f"PYTHONPATH (e.g. PYTHONPATH=/path/to/folder/containing/{name.split('.')[0]}). "
                f"sys.path is:\n    {path}"
            ) from e
        if name not in _IMPORTED:
            _IMPORTED.append(name)


def import_config_modules(config_file: str, opts: Sequence[str] = ()) -> List[str]:
    """Import the modules named by ``IMPORTS`` of ``config_file`` + ``opts`` (see :func:`imports_of_config`);
    returns their names. The one function every entry point's config goes through
    (:func:`aqformer_d2.engine.build_cfg`)."""
    names = imports_of_config(config_file, opts)
    import_modules(names, source=config_file)
    return names


def imported_modules() -> List[str]:
    """Names imported through ``IMPORTS`` in this process so far, in order."""
    return list(_IMPORTED)


def _entry_points():
    eps = importlib.metadata.entry_points()
    if hasattr(eps, "select"):  # Python >= 3.10
        return list(eps.select(group=ENTRY_POINT_GROUP))
    return list(eps.get(ENTRY_POINT_GROUP, ()))


def load_installed_plugins() -> List[str]:
    """Load every entry point of the group ``aqformer_d2.plugins``; returns the names that loaded.

    A plugin whose import raises is logged (a warning naming the entry point, its distribution and the
    error), listed by :func:`failed_plugins`, and skipped: the other plugins and aqformer_d2 itself
    still load.
    """
    loaded = []
    for ep in _entry_points():
        dist = getattr(ep, "dist", None)
        label = f"'{ep.name}' ({ep.value}" + (f", distribution {dist.name} {dist.version})" if dist else ")")
        try:
            ep.load()
        except Exception as e:  # a broken plugin must not break the others or the core: report and skip
            _FAILED_PLUGINS[ep.name] = f"{type(e).__name__}: {e}"
            logger.warning("aqformer_d2: plugin %s failed to import and is skipped: %s: %s",
                           label, type(e).__name__, e)
            continue
        _FAILED_PLUGINS.pop(ep.name, None)
        loaded.append(ep.name)
        logger.debug("aqformer_d2: loaded plugin %s", label)
    return loaded


def failed_plugins() -> Dict[str, str]:
    """Entry point name -> error of the installed plugins that failed to import in this process."""
    return dict(_FAILED_PLUGINS)
