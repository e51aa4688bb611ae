"""kregistry: name lookup and scope enter/exit against Keras 3, in the same run.

Run alone: `hatch run bench:python tools/bench/bench_kregistry.py [--quick]`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("KERAS_BACKEND", "torch")

from _common import Comparison, compare, print_header

import kregistry

N_GLOBAL = 200  # registered objects, as a project with a few libraries would have


def _make(i: int) -> object:
    def fn(x: object) -> object:
        return x

    fn.__name__ = f"fn{i}"
    return fn


def main(quick: bool = False) -> list[Comparison]:
    import keras

    print_header(f"kregistry vs keras {keras.__version__} (registry of {N_GLOBAL} objects)")
    calls = 20_000 if quick else 200_000
    repeat = 5 if quick else 9
    objects = [_make(i) for i in range(N_GLOBAL)]
    for obj in objects:
        kregistry.register(package="bench")(obj)
        keras.saving.register_keras_serializable(package="bench")(obj)
    name = "bench>fn150"
    scoped = {"ScopedThing": objects[3]}
    results = []

    def ours_lookup() -> None:
        get = kregistry.get_registered_object
        for _ in range(calls):
            get(name)

    def keras_lookup() -> None:
        get = keras.saving.get_registered_object
        for _ in range(calls):
            get(name)

    results.append(
        compare(
            "lookup of a registered name (per call)",
            ours_lookup,
            keras_lookup,
            "keras",
            repeat=repeat,
            per=calls,
            goal=1.0,
        )
    )
    with kregistry.custom_object_scope(scoped), keras.saving.custom_object_scope(scoped):
        results.append(
            compare(
                "lookup of a scope object inside the scope",
                ours_lookup,
                keras_lookup,
                "keras",
                repeat=repeat,
                per=calls,
                goal=1.0,
            )
        )

    def ours_resolve() -> None:
        resolve = kregistry.resolve
        for _ in range(calls):
            resolve("fn150", namespace="bench")

    results.append(
        compare(
            "resolve(name, namespace=...) vs keras lookup",
            ours_resolve,
            keras_lookup,
            "keras",
            repeat=repeat,
            per=calls,
        )
    )

    scope_calls = calls // 10

    def ours_scope() -> None:
        for _ in range(scope_calls):
            with kregistry.custom_object_scope(scoped):
                pass

    def keras_scope() -> None:
        for _ in range(scope_calls):
            with keras.saving.custom_object_scope(scoped):
                pass

    results.append(
        compare(
            "scope enter+exit", ours_scope, keras_scope, "keras", repeat=repeat, per=scope_calls
        )
    )
    return results


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
