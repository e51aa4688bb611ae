"""kio: part of the k* family, a PyTorch-native port of `keras.utils`."""

__version__ = "0.1.0"

__all__: list[str] = []
