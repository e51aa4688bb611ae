"""to_categorical and normalize: Keras 2's results, numpy and torch, strict label checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdata import normalize, to_categorical


def reference_one_hot(y, num_classes=None, dtype="float32"):
    """An independent reference for Keras 2's results: rows of an identity matrix, with
    Keras 2's rule that a trailing axis of size 1 is dropped."""
    labels = np.asarray(y, dtype=np.int64)
    if labels.ndim > 1 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    n = int(labels.max()) + 1 if num_classes is None else num_classes
    return np.eye(n, dtype=dtype)[labels]


# Keras 2's own test cases: input shapes and the expected output shapes with 5 classes
SHAPES = [
    ((1,), (1, 5)),
    ((3,), (3, 5)),
    ((4, 3), (4, 3, 5)),
    ((5, 4, 3), (5, 4, 3, 5)),
    ((3, 1), (3, 5)),
    ((3, 2, 1), (3, 2, 5)),
]


@pytest.mark.parametrize(("shape", "expected"), SHAPES)
def test_to_categorical_numpy_matches_keras2(shape, expected):
    labels = np.random.default_rng(0).integers(0, 5, size=shape)
    out = to_categorical(labels, num_classes=5)
    assert isinstance(out, np.ndarray)
    assert out.shape == expected
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, reference_one_hot(labels, 5))
    np.testing.assert_array_equal(np.argmax(out, axis=-1), labels.reshape(expected[:-1]))


@pytest.mark.parametrize(("shape", "expected"), SHAPES)
def test_to_categorical_tensor_matches_keras2(shape, expected):
    labels = np.random.default_rng(1).integers(0, 5, size=shape)
    out = to_categorical(torch.from_numpy(labels), num_classes=5)
    assert isinstance(out, torch.Tensor)
    assert tuple(out.shape) == expected
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), reference_one_hot(labels, 5))


def test_to_categorical_infers_num_classes_and_takes_lists_and_floats():
    np.testing.assert_array_equal(to_categorical([0, 2, 1]), reference_one_hot([0, 2, 1]))
    np.testing.assert_array_equal(to_categorical(np.array([1.0, 0.0])), [[0, 1], [1, 0]])
    out = to_categorical(torch.tensor([2.0, 0.0]))
    assert out.tolist() == [[0, 0, 1], [1, 0, 0]]
    assert to_categorical(np.array([True, False])).tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize("dtype", ["int64", "uint8", "float64", "bool", np.int32])
def test_to_categorical_honours_dtype(dtype):
    out = to_categorical([1, 0], num_classes=3, dtype=dtype)
    assert out.dtype == np.dtype(dtype)
    assert out.tolist() == [[0, 1, 0], [1, 0, 0]]
    tensor = to_categorical(torch.tensor([1, 0]), num_classes=3, dtype=dtype)
    assert tensor.dtype == torch.from_numpy(np.zeros(1, dtype=dtype)).dtype
    assert tensor.tolist() == [[0, 1, 0], [1, 0, 0]]
    assert to_categorical(torch.tensor([1]), 2, dtype=torch.float16).dtype == torch.float16


def test_to_categorical_many_classes_few_labels_allocates_only_the_output():
    # 300,000 classes: a num_classes x num_classes identity would need 360 GB
    out = to_categorical(np.array([[299_999], [0], [7]]), num_classes=300_000, dtype="uint8")
    assert out.shape == (3, 300_000) and out.dtype == np.uint8
    assert out.sum() == 3 and out[0, 299_999] == out[1, 0] == out[2, 7] == 1
    tensor = to_categorical(torch.tensor([299_999, 1]), num_classes=300_000)
    assert tensor.shape == (2, 300_000) and float(tensor.sum()) == 2.0
    # more classes than the identity is built for, more labels than classes
    labels = np.random.default_rng(0).integers(0, 3000, 5000)
    np.testing.assert_array_equal(to_categorical(labels, 3000), reference_one_hot(labels, 3000))


def test_to_categorical_tensor_stays_on_its_device():
    y = torch.tensor([1, 0])
    assert to_categorical(y, 2).device == y.device


@pytest.mark.parametrize(
    ("labels", "num_classes", "needle"),
    [
        ([0, -1, 2], None, "-1"),
        ([0, 5, 2], 5, "5"),
        ([0, 1.5], None, "1.5"),
        ([0, np.nan], None, "nan"),
        ([7], 3, "7"),
    ],
)
def test_to_categorical_rejects_bad_labels(labels, num_classes, needle):
    with pytest.raises(ValueError, match=needle):
        to_categorical(np.array(labels), num_classes)
    with pytest.raises(ValueError, match=needle):
        to_categorical(torch.tensor(labels), num_classes)


def test_to_categorical_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        to_categorical([0], num_classes=0)
    with pytest.raises(TypeError, match="num_classes"):
        to_categorical([0], num_classes=2.5)
    with pytest.raises(TypeError, match="dtype"):
        to_categorical([0], 2, dtype="no-such-type")
    with pytest.raises(TypeError, match="dtype"):
        to_categorical(torch.tensor([0]), 2, dtype=object)
    with pytest.raises(TypeError, match="dtype"):
        to_categorical(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="empty"):
        to_categorical([])
    assert to_categorical(np.zeros((0,), dtype=int), 3).shape == (0, 3)
    assert tuple(to_categorical(torch.zeros(0, dtype=torch.long), 3).shape) == (0, 3)


def reference_normalize(x, axis=-1, order=2):
    """An independent reference for Keras 2's results: x divided by its `order`-norm along
    `axis`, zero vectors left as they are."""
    magnitude = np.abs(x)
    if order == np.inf:
        norm = magnitude.max(axis=axis, keepdims=True)
    elif order == 0:
        norm = (magnitude != 0).sum(axis=axis, keepdims=True).astype(x.dtype)
    else:
        norm = (magnitude**order).sum(axis=axis, keepdims=True) ** (1.0 / order)
    return x / np.where(norm == 0, 1, norm)


@pytest.mark.parametrize("axis", [-1, 0, 1, 2, -3])
@pytest.mark.parametrize("order", [1, 2, 3, np.inf, 0])
def test_normalize_matches_keras2_for_every_axis_and_order(axis, order):
    x = np.random.default_rng(2).normal(size=(3, 4, 5))
    x[1, 2, :] = 0  # a zero vector along the last axis
    x[:, 0, 0] = 0  # and along the first
    expected = reference_normalize(x, axis, order)
    out = normalize(x, axis=axis, order=order)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    tensor = normalize(torch.from_numpy(x), axis=axis, order=order)
    assert isinstance(tensor, torch.Tensor)
    np.testing.assert_allclose(tensor.numpy(), expected, rtol=1e-10)


def test_normalize_zero_vectors_stay_zero_and_axis0_is_right():
    x = np.array([[3.0, 0.0], [4.0, 0.0]])
    out = normalize(x, axis=0)
    np.testing.assert_allclose(out, [[0.6, 0.0], [0.8, 0.0]])
    assert not np.isnan(out).any()
    tensor = normalize(torch.tensor(x, dtype=torch.float32), axis=0)
    np.testing.assert_allclose(tensor.numpy(), [[0.6, 0.0], [0.8, 0.0]], rtol=1e-6)
    # a 1-D input keeps its shape (Keras 2 gave (1, n)), values as Keras's
    np.testing.assert_allclose(normalize(np.array([3.0, 4.0])), [0.6, 0.8])
    assert tuple(normalize(torch.tensor([3.0, 4.0])).shape) == (2,)
    # ints become floats, as in Keras (numpy) / the default float dtype (torch)
    assert normalize(np.array([[3, 4]])).dtype == np.float64
    assert normalize(torch.tensor([[3, 4]])).dtype == torch.get_default_dtype()


def test_normalize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="axis=2"):
        normalize(np.ones((2, 2)), axis=2)
    with pytest.raises(ValueError, match="axis=-3"):
        normalize(torch.ones(2, 2), axis=-3)
    with pytest.raises(TypeError, match="axis"):
        normalize(np.ones(2), axis=(0, 1))
    with pytest.raises(TypeError, match="order"):
        normalize(np.ones(2), order="fro")
    with pytest.raises(ValueError, match="scalar"):
        normalize(np.float64(3.0))
    with pytest.raises(TypeError, match="dtype"):
        normalize(np.array(["a"]))


def test_numpy_integers_for_num_classes_axis_and_order():
    one_hot = to_categorical([1, 0], num_classes=np.int64(3))
    assert one_hot.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    assert tuple(to_categorical(torch.tensor([1, 0]), np.int32(2)).shape) == (2, 2)
    out = normalize(np.array([[3.0, 0.0], [4.0, 2.0]]), axis=np.int64(0), order=np.int64(1))
    np.testing.assert_allclose(out, [[3 / 7, 0.0], [4 / 7, 1.0]])
