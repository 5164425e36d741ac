"""Registry lookups whose failure says what is registered and how to register more.

Every builder in the plugin looks its component up with :func:`lookup` (backbone, audio encoder, pixel
decoder, transformer decoder, meta-architecture, dataset mapper) and checks dataset names with
:func:`require_datasets`, so a misspelled or unimported name ends in the same kind of error: the config
key and its value, the registered names (closest first when one is close), and how a new one is made
visible (``IMPORTS``, an installed plugin; :data:`aqformer_d2.plugins.HOW_TO_MAKE_VISIBLE`).
"""
import difflib
from typing import Any, Iterable, List, Sequence

from detectron2.data import DatasetCatalog

from ..plugins import HOW_TO_MAKE_VISIBLE, failed_plugins

__all__ = ["NotRegisteredError", "lookup", "require_datasets"]


class NotRegisteredError(KeyError):
    """A name missing from a registry or the DatasetCatalog (a KeyError, as detectron2 raises, whose
    message prints as written instead of as a quoted repr)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _message(what: str, config_key: str, name: str, registered: Iterable[str], register_with: str) -> str:
    registered = sorted(registered)
    close = difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
    lines = [f"{config_key} = {name!r}: no {what} of that name is registered."]
    if close:
        lines.append(f"Did you mean: {', '.join(repr(c) for c in close)}?")
    lines.append(f"Registered {what} names: {', '.join(registered) if registered else '(none)'}.")
    lines.append(f"A new {what} is registered with {register_with}. {HOW_TO_MAKE_VISIBLE}")
    failed = failed_plugins()
    if failed:
        lines.append("Installed plugins that failed to import: "
                     + "; ".join(f"'{k}': {v}" for k, v in sorted(failed.items())) + ".")
    return "\n".join(lines)


def lookup(registry, name: str, *, config_key: str, what: str, register_with: str) -> Any:
    """``registry.get(name)``, or a :class:`NotRegisteredError` listing the registered names.

    Args:
        registry: a detectron2 / fvcore ``Registry``.
        name: the name the config gives.
        config_key: the config key that gave it ("MODEL.BACKBONE.NAME"), named in the error.
        what: what the registry holds ("backbone"), for the message.
        register_with: how to register one, e.g. "@BACKBONE_REGISTRY.register() (from detectron2.modeling)".
    """
    if name in registry:
        return registry.get(name)
    raise NotRegisteredError(_message(what, config_key, name, (k for k, _ in registry), register_with))


def require_datasets(names: Sequence[str], *, config_key: str) -> List[str]:
    """Check that every dataset of ``names`` is in detectron2's DatasetCatalog; returns them as a list.

    Raises:
        NotRegisteredError naming the first missing dataset, ``config_key`` and the registered names.
    """
    registered = DatasetCatalog.list()
    for name in names:
        if name not in registered:
            raise NotRegisteredError(_message(
                "dataset", config_key, name, registered,
                "DatasetCatalog.register(name, func) and MetadataCatalog.get(name).set(evaluator_type=\"avs\", "
                "...) (from detectron2.data; see aqformer_d2/data/datasets/register_synthavs.py)"))
    return list(names)
