"""Issue 13's items for kviz: public errors across DataLoader workers, logging, warnings,
the autograd graph without torchviz, declared = imported dependencies, docstrings."""

from __future__ import annotations

import ast
import logging
import pickle
import re
import sys
from pathlib import Path

import pytest
import tomllib
from _models_kviz import Broken, RaisingDataset, SmallCNN, chain3
from torch import nn
from torch.utils.data import DataLoader

import kviz
from kviz import ForwardError, GraphvizNotFoundError, model_to_dot, print_summary

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "packages" / "kviz" / "src" / "kviz"


@pytest.mark.parametrize("cls", [ForwardError, GraphvizNotFoundError])
def test_public_errors_from_one_message_and_pickled(cls: type[Exception]) -> None:
    error = cls("one message")
    assert str(error) == "one message"
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is cls and str(again) == "one message"
    assert isinstance(ForwardError("x"), ValueError)
    assert isinstance(GraphvizNotFoundError("x"), FileNotFoundError)


@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "spawn"])
@pytest.mark.parametrize(
    ("kind", "cls", "match"),
    [
        ("forward", ForwardError, "the forward pass of Broken failed"),
        ("graphviz", GraphvizNotFoundError, "no `dot` in this worker"),
    ],
)
def test_public_errors_keep_their_type_across_a_dataloader_worker(
    context: str, kind: str, cls: type[Exception], match: str
) -> None:
    loader = DataLoader(
        RaisingDataset(kind), batch_size=None, num_workers=1, multiprocessing_context=context
    )
    with pytest.raises(cls, match=match):
        next(iter(loader))


def test_forward_error_names_the_model_and_the_input() -> None:
    with pytest.raises(ForwardError, match=r"Broken failed .*\[\(1, 3\)\].*RuntimeError"):
        print_summary(Broken(), input_size=(1, 3), print_fn=lambda line: None)


def test_logging_goes_to_the_kviz_logger_silently(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level(logging.DEBUG, logger="kviz"):
        print_summary(SmallCNN(), input_size=(1, 3, 32, 32), print_fn=lambda line: None)
        kviz.plot_model(chain3(), tmp_path / "m.dot")
    records = [r for r in caplog.records if r.name == "kviz"]
    assert any(r.levelno == logging.DEBUG and "traced SmallCNN" in r.getMessage() for r in records)
    assert any(r.levelno == logging.INFO and "m.dot" in r.getMessage() for r in records)
    assert logging.getLogger("kviz").handlers == []  # kviz adds no handler


def test_autograd_graph_without_torchviz_or_distutils(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on Python 3.12 without setuptools: neither can be imported.
    monkeypatch.setitem(sys.modules, "torchviz", None)
    monkeypatch.setitem(sys.modules, "distutils", None)
    deep = nn.Sequential(*[nn.Linear(8, 8) for _ in range(1500)])
    text = model_to_dot(deep, input_size=(1, 8), graph="autograd")
    assert text.count("AddmmBackward0") == 1500  # no RecursionError, no torchviz
    assert '"1499.weight\\n(8, 8)"' in text and '"output\\n(1, 8)"' in text
    small = model_to_dot(chain3(), input_size=(1, 4), graph="autograd", show_shapes=True)
    assert re.search(r"mat1: \(1, 4\)", small)  # saved tensors shown by their shapes


def test_autograd_graph_edges_follow_next_functions() -> None:
    model = nn.Linear(3, 2)
    text = model_to_dot(model, input_size=(1, 3), graph="autograd")
    labels = dict(re.findall(r'(\w+) \[label="([^"]+)"', text))
    edges = re.findall(r"(\w+) -> (\w+);", text)
    addmm = next(k for k, v in labels.items() if v == "AddmmBackward0")
    weight = next(k for k, v in labels.items() if v.startswith("weight"))
    bias = next(k for k, v in labels.items() if v.startswith("bias"))
    assert (bias, addmm) in edges
    assert any(dst == addmm for src, dst in edges if labels[src] == "TBackward0")
    assert any(src == weight for src, _ in edges)


def test_declared_dependencies_are_the_imported_ones() -> None:
    project = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in project["dependencies"]}
    imported: set[str] = set()
    for path in SRC.glob("*.py"):
        for item in ast.walk(ast.parse(path.read_text())):
            if isinstance(item, ast.Import):
                imported.update(a.name.split(".")[0] for a in item.names)
            elif isinstance(item, ast.ImportFrom) and item.level == 0 and item.module:
                imported.add(item.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names}
    third_party -= {"kviz", "IPython"}  # IPython: the optional "notebook" extra
    # numpy is declared for torchinfo, which imports it without declaring it.
    assert declared == third_party | {"numpy"}, (declared, third_party)
    assert not {"kutorch-kregistry", "graphviz", "torchviz"} & declared


def test_docstrings_have_no_sphinx_roles() -> None:
    role = re.compile(r":(class|func|meth|attr|mod|exc|data|obj|ref):`")
    offenders = [
        f"{path.name}:{n}"
        for path in SRC.glob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if role.search(line)
    ]
    assert offenders == []


def test_summary_row_fields_are_documented() -> None:
    tree = ast.parse((SRC / "_summary.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SummaryRow")
    body = cls.body
    for i, item in enumerate(body):
        if isinstance(item, ast.AnnAssign):
            doc = body[i + 1] if i + 1 < len(body) else None
            assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant), ast.dump(
                item.target
            )
    assert set(kviz.SummaryRow._fields) >= {"name", "params", "shared", "mult_adds"}


def test_kviz_does_not_import_kregistry_or_a_sibling() -> None:
    imports = " ".join(p.read_text() for p in SRC.glob("*.py"))
    for sibling in ("kregistry", "kdata", "kio", "kparallel"):
        assert f"import {sibling}" not in imports and f"from {sibling}" not in imports
