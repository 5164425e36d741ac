"""detectron2 compatibility, kept in one place.

detectron2 v0.6 as installed from PyPI's ``pb1-detectron2`` sdist has no compiled ``detectron2._C``
(the sdist lacks ``detectron2/layers/csrc``). Three modules of ``detectron2.layers`` import ``_C`` at
module load, so without it *nothing* in detectron2 imports. :func:`ensure_detectron2_ops` installs a
placeholder module named ``detectron2._C`` **only when the real compiled extension cannot be found**.
Every attribute looked up on the placeholder is a function that raises :class:`MissingCompiledOpError`
naming the op, so deformable convolution and rotated-box ops fail loudly at call time, never silently.
AQFormer itself does not use any of those ops.

Nothing else in detectron2 is patched.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

__all__ = ["MissingCompiledOpError", "ensure_detectron2_ops", "has_compiled_detectron2_ops"]

_PLACEHOLDER_FLAG = "__aqformer_placeholder__"


class MissingCompiledOpError(RuntimeError):
    """Raised when a detectron2 op that needs the compiled ``detectron2._C`` extension is called."""


def _compiled_extension_exists() -> bool:
    """Whether a compiled ``detectron2/_C*.so`` sits next to the installed detectron2 package."""
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return False
    for location in spec.submodule_search_locations:
        finder = importlib.machinery.FileFinder(
            location, (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
        )
        if finder.find_spec("detectron2._C") is not None:
            return True
    return False


class _MissingOpsModule(types.ModuleType):
    """Stands in for ``detectron2._C``; any op looked up on it raises when called.

    The three build-information functions that ``detectron2.utils.collect_env`` (run by
    ``default_setup``) queries are answered truthfully instead: no compiler, no CUDA.
    """

    @staticmethod
    def get_compiler_version() -> str:
        return "none: detectron2._C not compiled (aqformer_d2.compat placeholder)"

    @staticmethod
    def get_cuda_version() -> str:
        return "none: detectron2._C not compiled (aqformer_d2.compat placeholder)"

    @staticmethod
    def has_cuda() -> bool:
        return False

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def _missing(*args, **kwargs):
            raise MissingCompiledOpError(
                f"detectron2 op '_C.{name}' was called, but this detectron2 was installed without its "
                "compiled C++/CUDA extension (detectron2._C). AQFormer does not need it; the op belongs "
                "to deformable convolution / rotated boxes. Build detectron2 from source to use it."
            )

        _missing.__name__ = name
        return _missing


def has_compiled_detectron2_ops() -> bool:
    """True when the real compiled ``detectron2._C`` is (or would be) the one imported."""
    mod = sys.modules.get("detectron2._C")
    if mod is not None:
        return not getattr(mod, _PLACEHOLDER_FLAG, False)
    return _compiled_extension_exists()


def ensure_detectron2_ops() -> None:
    """Make ``import detectron2.layers`` work when the compiled extension is absent.

    Must run before the first import of ``detectron2.layers``. A no-op when the real extension is
    installed (a user who built detectron2 from source) or when it already ran.
    """
    if "detectron2._C" in sys.modules or _compiled_extension_exists():
        return
    placeholder = _MissingOpsModule("detectron2._C")
    setattr(placeholder, _PLACEHOLDER_FLAG, True)
    placeholder.__doc__ = "Placeholder installed by aqformer_d2.compat: the compiled extension is missing."
    sys.modules["detectron2._C"] = placeholder


ensure_detectron2_ops()
