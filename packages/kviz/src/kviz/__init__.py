"""kviz: Keras's ``print_summary`` and ``plot_model`` for any ``torch.nn.Module``.

Part of the k* family, a PyTorch-native port of ``keras.utils``.
"""

from importlib import metadata as _metadata

from ._forward import ForwardError
from ._plot import model_to_dot, plot_model
from ._render import GraphvizNotFoundError
from ._summary import ModelSummary, SummaryRow, print_summary

__version__ = _metadata.version("kutorch-kviz")

__all__ = [
    "print_summary",
    "plot_model",
    "model_to_dot",
    "ModelSummary",
    "SummaryRow",
    "ForwardError",
    "GraphvizNotFoundError",
]
