"""CustomObjectScope: Keras 2's visible behaviour, nesting, re-entry, contexts, processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import threading
import warnings
from typing import Any

import _kreg_helpers as helpers
import pytest

import kregistry._scope
from kregistry import (
    CustomObjectScope,
    ScopedWorkerInit,
    ScopeSnapshot,
    UnknownObjectError,
    capture_scope,
    custom_object_scope,
    get_custom_objects,
    get_registered_object,
    register,
    resolve,
)


def state() -> list[tuple[str, int]]:
    """The exact registry state: keys and object identities, in order."""
    return [(name, id(obj)) for name, obj in get_custom_objects().items()]


@pytest.fixture
def populated() -> None:
    objects = get_custom_objects()
    objects["double"] = helpers.double
    objects["swish"] = helpers.Swish


def test_scope_objects_visible_inside_only(populated: None) -> None:
    before = state()
    with CustomObjectScope({"triple": helpers.triple}) as scope:
        assert isinstance(scope, CustomObjectScope)
        assert get_custom_objects()["triple"] is helpers.triple
        assert get_registered_object("triple") is helpers.triple
        assert get_custom_objects()["double"] is helpers.double
    assert "triple" not in get_custom_objects()
    assert state() == before


def test_scope_merges_several_mappings_later_wins() -> None:
    with custom_object_scope({"a": helpers.double}, None, {"a": helpers.triple, "b": len}):
        assert get_custom_objects()["a"] is helpers.triple
        assert get_custom_objects()["b"] is len


@pytest.mark.parametrize("change", ["add", "replace", "delete", "clear", "register", "update"])
def test_changes_inside_a_scope_are_undone_exactly(populated: None, change: str) -> None:
    before = state()
    objects = get_custom_objects()
    with custom_object_scope({"triple": helpers.triple}):
        if change == "add":
            objects["new"] = len
            assert "new" in get_custom_objects()
        elif change == "replace":
            objects["double"] = helpers.triple
            assert get_registered_object("double") is helpers.triple
        elif change == "delete":
            del objects["double"]
            assert "double" not in get_custom_objects()
        elif change == "clear":
            objects.clear()
            assert len(get_custom_objects()) == 0
        elif change == "register":
            register(package="scoped")(helpers.triple)
            assert get_registered_object("scoped>triple") is helpers.triple
        else:
            objects.update({"double": len, "x": abs})
            assert objects["double"] is len
    assert state() == before


def test_exit_restores_when_the_body_raises(populated: None) -> None:
    before = state()
    with pytest.raises(KeyError), custom_object_scope({"triple": helpers.triple}):
        get_custom_objects().clear()
        raise KeyError("boom")
    assert state() == before


def test_three_nested_scopes_merge_and_unwind(populated: None) -> None:
    before = state()
    with custom_object_scope({"a": helpers.double}):
        with custom_object_scope({"b": helpers.triple}):
            with custom_object_scope({"c": len, "a": abs}):
                objects = get_custom_objects()
                assert objects["a"] is abs  # inner wins
                assert objects["b"] is helpers.triple  # outer still seen (Keras 3 loses it)
                assert objects["double"] is helpers.double
                objects["only_inner"] = min
            assert get_custom_objects()["a"] is helpers.double
            assert "c" not in get_custom_objects()
            assert "only_inner" not in get_custom_objects()
        assert "b" not in get_custom_objects()
    assert state() == before


def test_a_scope_object_can_be_entered_again(populated: None) -> None:
    before = state()
    scope = custom_object_scope({"triple": helpers.triple})
    for _ in range(3):
        with scope:
            assert get_registered_object("triple") is helpers.triple
        assert state() == before
    with scope:  # and nested in itself
        get_custom_objects()["x"] = len
        with scope:
            assert get_custom_objects()["x"] is len
            get_custom_objects()["y"] = len
        assert "y" not in get_custom_objects()
    assert state() == before


def test_out_of_order_exit_is_an_error() -> None:
    outer, inner = custom_object_scope({"a": len}), custom_object_scope({"b": len})
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError, match="out of order"):
        outer.__exit__(None, None, None)
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)
    assert "a" not in get_custom_objects()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([("a", len)],), r"argument 0 is \[\('a', <built-in function len>\)\] \(list\)"),
        (({}, "name"), r"argument 1 is 'name' \(str\)"),
        (({1: len},), r"argument 0 has the key 1 \(int\)"),
    ],
)
def test_scope_bad_arguments(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(TypeError, match=match):
        CustomObjectScope(*args)


def test_threads_do_not_see_each_others_scopes() -> None:
    barrier = threading.Barrier(2, timeout=10)
    seen: dict[str, Any] = {}

    def in_scope() -> None:
        with custom_object_scope({"mine": helpers.double}):
            barrier.wait()  # both threads are now running, this one inside its scope
            seen["a_inside"] = get_registered_object("mine")
            barrier.wait()
            get_custom_objects()["a_added"] = len
            barrier.wait()

    def outside() -> None:
        barrier.wait()
        seen["b_sees_mine"] = get_registered_object("mine")
        barrier.wait()
        barrier.wait()
        seen["b_sees_added"] = get_registered_object("a_added")

    threads = [threading.Thread(target=in_scope), threading.Thread(target=outside)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert seen == {"a_inside": helpers.double, "b_sees_mine": None, "b_sees_added": None}
    assert "a_added" not in get_custom_objects()


def test_asyncio_tasks_have_their_own_scopes() -> None:
    async def task(name: str, obj: Any, ready: asyncio.Event, go: asyncio.Event) -> Any:
        with custom_object_scope({name: obj}):
            ready.set()
            await go.wait()  # the other task runs its scope meanwhile
            return sorted(k for k in get_custom_objects() if k in {"one", "two"})

    async def main() -> list[Any]:
        r1, r2, go = asyncio.Event(), asyncio.Event(), asyncio.Event()
        t1 = asyncio.create_task(task("one", helpers.double, r1, go))
        t2 = asyncio.create_task(task("two", helpers.triple, r2, go))
        await r1.wait()
        await r2.wait()
        go.set()
        return list(await asyncio.gather(t1, t2))

    assert asyncio.run(main()) == [["one"], ["two"]]


def test_capture_outside_any_scope_is_empty() -> None:
    snapshot = capture_scope()
    assert not snapshot
    assert pickle.loads(pickle.dumps(snapshot)).added == {}


def test_capture_records_added_replaced_and_hidden(populated: None) -> None:
    with custom_object_scope({"triple": helpers.triple, "double": helpers.triple}):
        del get_custom_objects()["swish"]
        snapshot = capture_scope()
    assert snapshot.added == {"triple": helpers.triple, "double": helpers.triple}
    assert snapshot.removed == frozenset({"swish"})
    before = state()
    with snapshot:
        assert get_registered_object("double") is helpers.triple
        assert get_registered_object("swish") is None
    assert state() == before


def test_unpicklable_scope_object_is_left_behind_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kregistry._scope, "_warned", set())
    with custom_object_scope({"inline": lambda x: x, "triple": helpers.triple}):
        snapshot = capture_scope()
    with pytest.warns(RuntimeWarning, match=r"scope object 'inline' is not carried") as caught:
        carried = pickle.loads(pickle.dumps(snapshot))
    # The warning points at the line that pickled, not at kregistry's insides.
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per name: a second pickling stays quiet
        pickle.dumps(snapshot)
    assert carried.added == {"triple": helpers.triple}
    assert set(carried.unavailable) == {"inline"}
    with carried:
        assert resolve("triple") is helpers.triple
        with pytest.raises(UnknownObjectError, match=r"could not be pickled") as info:
            resolve("inline", kind="activation")
        assert info.value.name == "inline" and info.value.suggestions == []
    with pytest.raises(UnknownObjectError, match=r"unknown activation 'inline'; register"):
        resolve("inline", kind="activation")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_pool_runs_beside_an_unpicklable_scope_object(method: str) -> None:
    context = multiprocessing.get_context(method)
    with custom_object_scope({"inline": lambda x: x, "triple": helpers.triple}):
        init = ScopedWorkerInit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with context.Pool(1, initializer=init, initargs=(0,)) as pool:
            seen = pool.apply(helpers.worker_sees, (["triple"],))
            problem = pool.apply(helpers.resolve_error_in_child, ("inline",))
    assert seen == {"triple": helpers.triple}
    if method == "spawn":
        assert problem is not None and problem[0] is UnknownObjectError
        assert "could not be pickled" in problem[1]
    else:  # a forked worker inherits the object itself
        assert problem is None


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_snapshot_reenters_in_another_process(method: str) -> None:
    context = multiprocessing.get_context(method)
    with custom_object_scope({"triple": helpers.triple, "swish": helpers.Swish}):
        snapshot = capture_scope()
    with context.Pool(1) as pool:
        seen = pool.apply(helpers.lookup_in_child, (snapshot, ["triple", "swish", "nothing"]))
    assert seen == {"triple": helpers.triple, "swish": helpers.Swish, "nothing": None}


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_init_carries_the_active_scope(method: str) -> None:
    context = multiprocessing.get_context(method)
    calls: list[int] = []
    with custom_object_scope({"triple": helpers.triple}):
        init = ScopedWorkerInit()
    assert isinstance(init.snapshot, ScopeSnapshot)
    with context.Pool(2, initializer=init, initargs=(0,)) as pool:
        results = pool.map(helpers.worker_sees, [["triple"]] * 4)
    assert results == [{"triple": helpers.triple}] * 4
    # The user's own worker_init_fn still runs, after the scope is installed.
    ScopedWorkerInit(then=calls.append)(7)
    assert calls == [7]


def test_worker_init_rejects_non_callable_then() -> None:
    with pytest.raises(TypeError, match="then must be callable"):
        ScopedWorkerInit(then=3)  # type: ignore[arg-type]


def test_capture_does_not_hide_names_registered_globally_meanwhile() -> None:
    with custom_object_scope({"triple": helpers.triple}):
        # Another context registers globally after this scope began: the scope's own
        # mapping does not show it, but a captured snapshot must not hide it either.
        threading_done = threading.Event()

        def register_elsewhere() -> None:
            get_custom_objects()["late"] = len
            threading_done.set()

        threading.Thread(target=register_elsewhere).start()
        assert threading_done.wait(10)
        snapshot = capture_scope()
    assert snapshot.removed == frozenset()
    with snapshot:
        assert get_registered_object("late") is len
        assert get_registered_object("triple") is helpers.triple
