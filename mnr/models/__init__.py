"""Models by name: the registry and the built-in families.

Importing this package registers the built-in models (`mnr.models.cnn`, `mnr.models.resnet`);
installed plugins load on first use. See `mnr.models.registry` for how to add your own.
"""

from __future__ import annotations

from mnr.models import cnn, resnet  # noqa: F401 - imported for their @register_model side effect
from mnr.models.registry import (
    PLUGIN_GROUP,
    InputConfig,
    count_parameters,
    create_model,
    describe_models,
    import_model_module,
    is_model,
    list_models,
    load_plugins,
    model_description,
    register_model,
    takes_in_chans,
)

__all__ = [
    "PLUGIN_GROUP",
    "InputConfig",
    "count_parameters",
    "create_model",
    "describe_models",
    "import_model_module",
    "is_model",
    "list_models",
    "load_plugins",
    "model_description",
    "register_model",
    "takes_in_chans",
]
