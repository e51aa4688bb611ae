"""kregistry: named custom objects and ``CustomObjectScope``, as in ``keras.utils``.

The base that kdata, kio, kviz and kparallel share: wherever they accept a name
instead of an object, they resolve it here, so a user's object filed in the registry
or passed in a scope is found.

Example:
    >>> from kregistry import custom_object_scope, resolve
    >>> def double(x):
    ...     return 2 * x
    >>> with custom_object_scope({"double": double}):
    ...     resolve("double")(21)
    42
"""

from importlib import metadata as _metadata

from kregistry._registry import (
    get_custom_objects,
    get_registered_name,
    get_registered_object,
    register,
)
from kregistry._resolve import UnknownObjectError, resolve
from kregistry._scope import (
    CustomObjectScope,
    ScopedWorkerInit,
    ScopeSnapshot,
    capture_scope,
    custom_object_scope,
)
from kregistry._store import CustomObjects

__version__ = _metadata.version("kutorch-kregistry")

__all__ = [
    "CustomObjectScope",
    "custom_object_scope",
    "get_custom_objects",
    "register",
    "get_registered_name",
    "get_registered_object",
    "resolve",
    "UnknownObjectError",
    "CustomObjects",
    "capture_scope",
    "ScopeSnapshot",
    "ScopedWorkerInit",
]
