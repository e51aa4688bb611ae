"""register, get_custom_objects, get_registered_name/object, resolve."""

from __future__ import annotations

import pytest

import kregistry
from kregistry import (
    UnknownObjectError,
    custom_object_scope,
    get_custom_objects,
    get_registered_name,
    get_registered_object,
    register,
    resolve,
)


def relu2(x: float) -> float:
    return max(x, 0.0) ** 2


def test_public_names_are_exported() -> None:
    for name in kregistry.__all__:
        assert hasattr(kregistry, name), name


def test_get_custom_objects_is_live_and_the_same_mapping() -> None:
    objects = get_custom_objects()
    assert objects is get_custom_objects()
    objects["relu2"] = relu2
    assert get_custom_objects()["relu2"] is relu2
    assert get_registered_object("relu2") is relu2
    del objects["relu2"]
    assert "relu2" not in get_custom_objects()
    assert get_registered_object("relu2") is None


def test_live_mapping_refuses_non_str_names() -> None:
    with pytest.raises(TypeError, match=r"names must be str, got 3 \(int\)"):
        get_custom_objects()[3] = relu2  # type: ignore[index]


def test_register_files_under_package_and_name() -> None:
    @register()
    def swish(x: float) -> float:
        return x

    @register(name="gelu_tanh", package="my_lib")
    def gelu(x: float) -> float:
        return x

    assert get_custom_objects()["Custom>swish"] is swish
    assert get_custom_objects()["my_lib>gelu_tanh"] is gelu
    assert get_registered_name(swish) == "Custom>swish"
    assert get_registered_name(gelu) == "my_lib>gelu_tanh"
    assert get_registered_object("my_lib>gelu_tanh") is gelu


def test_register_classes_and_callable_instances() -> None:
    @register(package="layers")
    class Dense2:
        pass

    assert get_registered_object("layers>Dense2") is Dense2
    assert get_registered_name(Dense2) == "layers>Dense2"


def test_register_same_object_twice_is_fine() -> None:
    register(package="p")(relu2)
    register(package="p")(relu2)
    assert get_registered_object("p>relu2") is relu2


def test_register_refuses_another_object_under_a_taken_name() -> None:
    register(package="p", name="act")(relu2)

    def other(x: float) -> float:
        return x

    with pytest.raises(ValueError, match=r"'p>act' is already registered.*replace=True"):
        register(package="p", name="act")(other)
    assert get_registered_object("p>act") is relu2

    register(package="p", name="act", replace=True)(other)
    assert get_registered_object("p>act") is other
    assert get_registered_name(other) == "p>act"
    # The replaced object no longer claims the name.
    assert get_registered_name(relu2) == "relu2"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": 3}, TypeError, r"name must be a str, got 3 \(int\)"),
        ({"package": None}, TypeError, r"package must be a str, got None"),
        ({"name": "a>b"}, ValueError, r"without '>', got 'a>b'"),
        ({"package": ""}, ValueError, r"non-empty"),
    ],
)
def test_register_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        register(**kwargs)


def test_register_refuses_non_callables() -> None:
    with pytest.raises(TypeError, match=r"needs a class or a callable, got 42 \(int\)"):
        register(name="answer")(42)


def test_get_registered_name_falls_back_to_dunder_name() -> None:
    assert get_registered_name(relu2) == "relu2"
    assert get_registered_name(len) == "len"


def test_get_registered_object_lookup_order() -> None:
    def a() -> None: ...

    def b() -> None: ...

    def c() -> None: ...

    get_custom_objects()["x"] = a
    assert get_registered_object("x", {"x": b}, {"x": c}) is a
    del get_custom_objects()["x"]
    assert get_registered_object("x", {"x": b}, {"x": c}) is b
    assert get_registered_object("x", None, {"x": c}) is c
    assert get_registered_object("x") is None


def test_resolve_names_objects_and_namespaces() -> None:
    register(package="kio.hash", name="blake")(relu2)
    assert resolve("kio.hash>blake") is relu2
    assert resolve("blake", namespace="kio.hash") is relu2
    assert resolve(relu2) is relu2
    assert resolve("mine", custom_objects={"mine": relu2}) is relu2
    assert resolve("builtin", module_objects={"builtin": len}) is len


def test_resolve_finds_scope_objects() -> None:
    with custom_object_scope({"relu2": relu2}):
        assert resolve("relu2", kind="activation") is relu2
    with pytest.raises(UnknownObjectError):
        resolve("relu2", kind="activation")


def test_resolve_unknown_name_lists_close_matches() -> None:
    register(package="kdata.norm", name="minmax")(relu2)
    register(package="kdata.norm", name="zscore")(relu2)
    with pytest.raises(UnknownObjectError) as info:
        resolve("minmx", kind="normalizer", namespace="kdata.norm")
    error = info.value
    assert isinstance(error, ValueError) and isinstance(error, LookupError)
    assert error.name == "minmx" and error.kind == "normalizer"
    assert error.suggestions[0] == "minmax"
    assert "unknown normalizer 'minmx'; did you mean 'minmax'" in str(error)


def test_resolve_unknown_name_without_matches_says_how_to_register() -> None:
    with pytest.raises(UnknownObjectError, match=r"unknown object 'zzzz'.*register"):
        resolve("zzzz")


def test_resolve_callable_checks() -> None:
    get_custom_objects()["forty_two"] = 42
    with pytest.raises(TypeError, match=r"registered as 'forty_two' is not callable: 42"):
        resolve("forty_two", kind="normalizer")
    assert resolve("forty_two", callable_only=False) == 42
    with pytest.raises(TypeError, match=r"normalizer must be a registered name or a callable"):
        resolve(3.5, kind="normalizer")
    assert resolve(3.5, callable_only=False) == 3.5


def test_register_takes_keras_argument_order() -> None:
    # register_keras_serializable(package="Custom", name=None): the first positional
    # argument is the package, here as in Keras.
    register("my_pkg")(relu2)
    assert get_registered_name(relu2) == "my_pkg>relu2"
    register("other", "act2")(relu2)
    assert get_registered_object("other>act2") is relu2


def test_unknown_name_suggests_the_registered_spelling_once() -> None:
    register(package="my_pkg")(relu2)
    register(package="their_pkg", name="relu2")(relu2)
    with pytest.raises(UnknownObjectError) as info:
        resolve("relu2", kind="activation", module_objects={"relu": len})
    suggestions = info.value.suggestions
    assert "my_pkg>relu2" in suggestions and "their_pkg>relu2" in suggestions
    assert len(suggestions) == len(set(suggestions))
    assert str(info.value).count("'my_pkg>relu2'") == 1
    # A name in both the registry and the caller's built-ins is suggested once.
    with pytest.raises(UnknownObjectError) as info:
        resolve("relu3", custom_objects={"relu2": relu2}, module_objects={"relu2": len})
    assert info.value.suggestions.count("relu2") == 1


def test_builtins_as_module_objects_survive_clearing_the_custom_objects() -> None:
    builtins = {"normalize": len}
    get_custom_objects().clear()  # the Keras idiom
    assert resolve("normalize", namespace="pkg.norm", module_objects=builtins) is len
    register(package="pkg.norm", name="normalize")(relu2)  # the user's own wins
    assert resolve("normalize", namespace="pkg.norm", module_objects=builtins) is relu2


def test_unknown_object_error_is_rebuilt_from_its_message_and_pickles() -> None:
    import pickle

    plain = UnknownObjectError("unknown thing 'x'")
    assert str(plain) == "unknown thing 'x'" and plain.name is None
    with pytest.raises(UnknownObjectError) as info:
        resolve("minmx", kind="normalizer", module_objects={"minmax": len})
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is UnknownObjectError and str(copy) == str(info.value)
    assert (copy.name, copy.kind, copy.suggestions) == ("minmx", "normalizer", ["minmax"])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_unknown_object_error_keeps_its_type_through_a_dataloader_worker(context: str) -> None:
    torch = pytest.importorskip("torch")
    import _kreg_helpers as helpers

    loader = torch.utils.data.DataLoader(
        helpers.ResolvingDataset("no_such_normalizer"),
        batch_size=None,
        num_workers=1,
        multiprocessing_context=context,
    )
    with pytest.raises(UnknownObjectError, match=r"no_such_normalizer"):
        next(iter(loader))
