"""The k* family at work, end to end, with no network: `hatch run demo`.

1. kio       fetches a small image dataset (an HDF5 file made here, served from a file://
             origin) into a cache, verifying its sha256.
2. kregistry a normalizer and an activation are resolved by name inside a scope.
3. kdata     HDF5Matrix views of the file feed a Sequence through worker processes.
4. kviz      prints the model's summary and draws its diagram.
5. kparallel trains through multi_gpu_model where two GPUs exist, plainly otherwise.

Writes into ./demo-output (or the folder given with --out).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

import kdata
import kio
import kparallel
import kregistry
import kviz

CLASSES = 10
SIDE = 16


# ---------------------------------------------------------------------------- the data
def make_glyphs(path: Path, n_train: int = 6000, n_test: int = 1000, seed: int = 0) -> None:
    """Write a small 10-class image dataset: noisy, shifted copies of 10 random glyphs."""
    rng = np.random.default_rng(seed)
    glyphs = rng.random((CLASSES, SIDE, SIDE)) < 0.3
    glyphs[:, :3, :] = glyphs[:, -3:, :] = False  # a margin, so shifts keep the glyph whole
    glyphs[:, :, :3] = glyphs[:, :, -3:] = False

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, CLASSES, n)
        images = glyphs[labels].astype(np.float32)
        for axis in (1, 2):
            shifts = rng.integers(-2, 3, n)
            images = np.stack(
                [np.roll(im, s, axis=axis - 1) for im, s in zip(images, shifts, strict=True)]
            )
        images = images * 200 + rng.normal(0, 40, images.shape)
        return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)

    with h5py.File(path, "w") as f:
        for split, n in (("train", n_train), ("test", n_test)):
            x, y = sample(n)
            f.create_dataset(f"{split}/x", data=x, chunks=(256, SIDE, SIDE), compression="gzip")
            f.create_dataset(f"{split}/y", data=y)


# ------------------------------------------------------------ objects resolved by name
def scale_to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]; applied by HDF5Matrix to every fetch."""
    return np.asarray(x, dtype=np.float32) / 255.0


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class GlyphSequence(kdata.Sequence):
    """Keras's Sequence contract: whole batches by index, reshuffled between epochs."""

    def __init__(self, x: Any, y: Any, batch_size: int, seed: int = 0) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(x))

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[idx * self.batch_size : (idx + 1) * self.batch_size]
        return self.x[rows][:, None], self.y[rows]  # unsorted rows: HDF5Matrix handles them

    def on_epoch_end(self) -> None:
        self.rng.shuffle(self.order)


def build_model(activation: str) -> nn.Module:
    act = kregistry.resolve(activation, kind="activation")
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        act(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        act(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (SIDE // 4) ** 2, CLASSES),
    )


# ------------------------------------------------------------------------- the job
def evaluate(model: nn.Module, loader: Any) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    out: Path = args.out.resolve()
    origin_dir = out / "origin"
    origin_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    started = time.perf_counter()

    print("== 1. kio: fetch the dataset through the cache, verified")
    source = origin_dir / "glyphs.h5"
    make_glyphs(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    path = kio.get_file(
        "glyphs.h5", source.as_uri(), file_hash=digest, cache_dir=out / "cache", progress=True
    )
    print(f"   {source.as_uri()} -> {path} (sha256 {digest[:12]}..., verified)")
    again = time.perf_counter()
    kio.get_file("glyphs.h5", source.as_uri(), file_hash=digest, cache_dir=out / "cache")
    print(f"   second call: cache hit in {(time.perf_counter() - again) * 1e3:.1f} ms")

    print("\n== 2. kregistry: a normalizer and an activation, by name, in a scope")
    with kregistry.custom_object_scope({"scale_to_unit": scale_to_unit, "swish": Swish}):
        x_train = kdata.HDF5Matrix(path, "train/x", normalizer="scale_to_unit")
        y_train = kdata.HDF5Matrix(path, "train/y")
        x_test = kdata.HDF5Matrix(path, "test/x", normalizer="scale_to_unit")
        y_test = kdata.HDF5Matrix(path, "test/y")
        template = build_model("swish")
        print(f"   train {x_train.shape} {x_train.dtype}, test {x_test.shape}; activation Swish")

        print("\n== 3. kviz: the model")
        kviz.print_summary(template, input_size=(64, 1, SIDE, SIDE))
        diagram = out / "model.png"
        try:
            kviz.plot_model(
                template, to_file=str(diagram), show_shapes=True, input_size=(64, 1, SIDE, SIDE)
            )
        except kviz.GraphvizNotFoundError as error:
            diagram = out / "model.dot"
            kviz.plot_model(
                template, to_file=str(diagram), show_shapes=True, input_size=(64, 1, SIDE, SIDE)
            )
            print(f"   ({error}; wrote the DOT source instead)")
        print(f"   diagram: {diagram}")

        print("\n== 4. kparallel: replicas where two GPUs exist")
        try:
            model = kparallel.multi_gpu_model(template, cpu_relocation=True)
            print(f"   training on {torch.cuda.device_count()} GPUs through multi_gpu_model")
        except ValueError as error:  # Keras's own fallback idiom
            model = template
            print(f"   training on one device (CPU): {error}")

        print(f"\n== 5. kdata: a Sequence through {args.workers} worker processes")
        train = kdata.SequenceLoader(
            GlyphSequence(x_train, y_train, batch_size=64),
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
        )
        test = kdata.SequenceLoader(GlyphSequence(x_test, y_test, batch_size=256))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        loss_fn = nn.CrossEntropyLoss()
        print(
            f"   before training: test accuracy {evaluate(template, test):.1%} "
            f"(chance {1 / CLASSES:.0%})"
        )
        for epoch in range(1, args.epochs + 1):
            model.train()
            t0, seen, total_loss = time.perf_counter(), 0, 0.0
            for x, y in train:
                optimizer.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                seen += len(y)
                total_loss += loss.item() * len(y)
            accuracy = evaluate(template, test)
            print(
                f"   epoch {epoch}/{args.epochs}: loss {total_loss / seen:.3f}, "
                f"test accuracy {accuracy:.1%}, {seen / (time.perf_counter() - t0):,.0f} "
                f"images/s"
            )

    torch.save(template.state_dict(), out / "glyphs-cnn.pt")  # the template holds the weights
    print(
        f"\nDone in {time.perf_counter() - started:.1f} s: test accuracy {accuracy:.1%} "
        f"against {1 / CLASSES:.0%} for chance. Outputs in {out}"
    )
    if accuracy < 3 / CLASSES:
        raise SystemExit("the model did not learn: accuracy is too close to chance")


if __name__ == "__main__":
    main()
