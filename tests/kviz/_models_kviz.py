"""Small models with known structure and parameter counts, shared by the kviz tests, the
docs pictures and the CLI tests (importable by name: conftest puts this folder on sys.path)."""

from __future__ import annotations

import torch
from torch import nn


def chain3() -> nn.Sequential:
    """Linear(4, 8) -> ReLU -> Linear(8, 2): 40 + 18 = 58 parameters."""
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


class SmallCNN(nn.Module):
    """conv(3->8) bn relu pool conv(8->16) relu pool flatten linear(16*8*8 -> 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)  # 224
        self.bn1 = nn.BatchNorm2d(8)  # 16 params, 17 buffer elements
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)  # 1,168
        self.fc = nn.Linear(16 * 8 * 8, 10)  # 10,250

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class ResidualBlock(nn.Module):
    """y = relu(bn2(conv2(relu(bn1(conv1(x))))) + x): the skip edge goes x -> add."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + x)


class TwoInputLSTM(nn.Module):
    """tokens -> Embedding -> LSTM -> last step; features -> Linear; cat -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.meta = nn.Linear(5, 8)
        self.head = nn.Linear(32 + 8, 3)

    def forward(self, tokens: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(self.embed(tokens))
        merged = torch.cat([seq[:, -1], torch.relu(self.meta(features))], dim=1)
        return self.head(merged)


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.block = ResidualBlock(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.stem(x))


class NestedNet(nn.Module):
    """Encoder(stem Sequential + ResidualBlock) -> pool -> classifier Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.encoder(x)))


class SharedLayer(nn.Module):
    """One Linear(6, 6) called twice: 42 parameters, counted once."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 6)  # 24
        self.shared = nn.Linear(6, 6)  # 42
        self.out = nn.Linear(6, 1)  # 7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.shared(torch.relu(self.inp(x)))
        h = self.shared(torch.relu(h))
        return self.out(h)


class TiedWeights(nn.Module):
    """Embedding and output projection share one (50, 8) weight: 400 + 50 (bias) = 450."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.proj = nn.Linear(8, 50)
        self.proj.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(tokens))


class FrozenAndBuffer(nn.Module):
    """A frozen Linear(10, 10) (110), a trainable Linear(10, 2) (22), a registered buffer
    of 7 elements and a BatchNorm1d(10) (20 params, 21 buffer elements)."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(10, 10)
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.bn = nn.BatchNorm1d(10)
        self.top = nn.Linear(10, 2)
        self.register_buffer("scale", torch.ones(7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.bn(self.frozen(x)))


def make_cnn() -> SmallCNN:
    """A factory for the command-line tests."""
    return SmallCNN()


def deep_chain(n: int = 1000, width: int = 64) -> nn.Sequential:
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(n)])


class RaisingDataset(torch.utils.data.Dataset[int]):
    """A dataset whose items raise kviz's public errors inside a DataLoader worker."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        import kviz

        if self.kind == "forward":
            kviz.print_summary(Broken(), input_size=(1, 3), print_fn=lambda line: None)
        elif self.kind == "graphviz":
            raise kviz.GraphvizNotFoundError("no `dot` in this worker")
        return index


class Broken(nn.Module):
    """A model whose forward pass always fails."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.view(5, 7))


class ScriptedChild(nn.Module):
    """A Python model with a scripted child (one row, with its parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 4)  # 16
        self.fc = torch.jit.script(nn.Sequential(nn.Linear(4, 2), nn.ReLU()))  # 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.inp(x)))


def make_scripted_child() -> ScriptedChild:
    return ScriptedChild()


class ScriptFails(nn.Module):
    """A scripted child that raises inside TorchScript on the example input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.jit.script(nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def make_script_fails() -> ScriptFails:
    return ScriptFails()
