"""Placeholder demo until the demo issue lands: exercises kregistry."""

from kregistry import custom_object_scope, get_custom_objects, register, resolve


@register(package="demo")
def double(x: int) -> int:
    return 2 * x


def main() -> None:
    print("registered:", sorted(get_custom_objects()))
    with custom_object_scope({"triple": lambda x: 3 * x}):
        print("inside a scope, triple(14) =", resolve("triple")(14))
    print("after the scope, 'triple' registered:", "triple" in get_custom_objects())
    print("demo>double(21) =", resolve("double", namespace="demo")(21))


if __name__ == "__main__":
    main()
