"""Check kparallel's CUDA path (torch.nn.parallel: replicate, scatter, parallel_apply,
gather) on whatever GPUs this machine has, and time it.

    python tools/gpu_check.py [--steps 30]

With one GPU, two replicas share it (devices=["cuda:0", "cuda:0"]), which still runs
replicate/scatter/parallel_apply/gather. With several, it also uses every GPU (gpus=N).
For each configuration it checks, against the plain model on cuda:0: forward outputs on an
uneven batch, template gradients, ten SGD steps, then cpu_merge=False and
cpu_relocation=True; and it prints the training-step time ratio of the wrapper vs
nn.DataParallel (same device ids) and vs the plain model. Exit status 1 if a check fails.
Without a GPU it says so and exits 0 (nothing to check).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from collections.abc import Callable

import torch
from torch import nn

import kparallel as kp

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}{(': ' + detail) if detail else ''}", flush=True)
    if not ok:
        FAILURES.append(name)


def make_mlp(seed: int = 0, width: int = 512, hidden: int = 1024) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(width, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().max())


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> tuple[bool, str]:
    d = max_diff(a, b)
    return d <= tol, f"max |diff| {d:.2e}"


def correctness(devices: list[str] | None, gpus: int | None, label: str) -> None:
    print(f"\n== {label}", flush=True)
    first = torch.device("cuda", 0) if devices is None else torch.device(devices[0])
    # TF32 would make the GPU matmuls differ from each other at the 1e-3 level.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    x = torch.randn(7, 512)
    y = torch.randint(0, 10, (7,))
    plain = make_mlp().to(first)
    template = make_mlp()
    parallel = kp.multi_gpu_model(template, gpus=gpus, devices=devices)
    check("uses the torch.nn.parallel path", parallel.uses_torch_parallel)
    check("template moved to the first device", next(template.parameters()).device == first)
    out = parallel(x)
    check("output merged on the CPU (cpu_merge=True)", out.device.type == "cpu")
    check("forward equals plain model (7 rows)", *close(out, plain(x.to(first))))
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(parallel(x), y).backward()
    loss_fn(plain(x.to(first)), y.to(first)).backward()
    worst = max(
        max_diff(p.grad, q.grad)  # type: ignore[arg-type]
        for p, q in zip(template.parameters(), plain.parameters(), strict=True)
    )
    check("template gradients equal plain gradients", worst <= 1e-4, f"max |diff| {worst:.2e}")
    for net in (parallel, plain):
        net.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(9, 512, generator=g), torch.randint(0, 10, (9,), generator=g))
        for _ in range(10)
    ]
    for net, dev in ((parallel, torch.device("cpu")), (plain, first)):
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        for bx, by in batches:
            opt.zero_grad()
            loss_fn(net(bx.to(dev)), by.to(dev) if dev.type == "cpu" else by.to(first)).backward()
            opt.step()
    worst = max(
        max_diff(p, q) for p, q in zip(template.parameters(), plain.parameters(), strict=True)
    )
    check("ten SGD steps match the plain model", worst <= 1e-4, f"max |diff| {worst:.2e}")
    state = template.state_dict()
    check("state_dict keys are the template's", list(parallel.state_dict()) == list(state))

    on_gpu = kp.multi_gpu_model(make_mlp(), gpus=gpus, devices=devices, cpu_merge=False)
    out = on_gpu(x)
    check("cpu_merge=False merges on the first device", out.device == first, str(out.device))
    check("cpu_merge=False output equals plain", *close(out, plain_copy(first)(x.to(first))))

    reloc_t = make_mlp()
    reloc = kp.multi_gpu_model(reloc_t, gpus=gpus, devices=devices, cpu_relocation=True)
    check(
        "cpu_relocation keeps the template on the CPU",
        next(reloc_t.parameters()).device.type == "cpu",
    )
    ref = make_mlp()
    out = reloc(x)
    check("cpu_relocation forward equals plain", *close(out, ref(x)))
    loss_fn(reloc(x), y).backward()
    loss_fn(ref(x), y).backward()
    worst = max(
        max_diff(p.grad, q.grad)  # type: ignore[arg-type]
        for p, q in zip(reloc_t.parameters(), ref.parameters(), strict=True)
    )
    check(
        "cpu_relocation gradients reach the CPU weights", worst <= 1e-4, f"max |diff| {worst:.2e}"
    )

    dicts = kp.multi_gpu_model(DictNet(), gpus=gpus, devices=devices)
    got = dicts({"a": x}, scale=2.0)
    check("dict in / dict out, non-tensor kwarg", set(got) == {"y", "n"} and got["n"] == 2.0)
    small = parallel(x[:1])
    check("batch of 1 runs on one replica", small.shape == (1, 10))


class DictNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(512, 4)

    def forward(self, batch: dict[str, torch.Tensor], *, scale: float) -> dict[str, object]:
        return {"y": self.lin(batch["a"]) * scale, "n": scale}


def plain_copy(device: torch.device) -> nn.Module:
    return make_mlp().to(device)


def timed(step: Callable[[], None], steps: int) -> float:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timing(devices: list[str], steps: int, batch: int) -> None:
    ids = [torch.device(d).index or 0 for d in devices]
    first = torch.device("cuda", ids[0])
    print(f"\n== step time, devices {devices}, batch {batch}, MLP 512-1024-1024-10", flush=True)
    x = torch.randn(batch, 512)
    y = torch.randint(0, 10, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def stepper(net: nn.Module, target: torch.device) -> Callable[[], None]:
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            out = net(x.to(target, non_blocking=True) if target.type == "cuda" else x)
            loss_fn(out, y.to(out.device)).backward()
            opt.step()

        return step

    ours = stepper(kp.multi_gpu_model(make_mlp(), devices=devices), torch.device("cpu"))
    ours_gpu_merge = stepper(
        kp.multi_gpu_model(make_mlp(), devices=devices, cpu_merge=False), torch.device("cpu")
    )
    plain = stepper(make_mlp().to(first), first)
    t_ours, t_merge, t_plain = timed(ours, steps), timed(ours_gpu_merge, steps), timed(plain, steps)
    print(f"  multi_gpu_model (cpu_merge=True)  {t_ours * 1e3:8.2f} ms")
    print(f"  multi_gpu_model (cpu_merge=False) {t_merge * 1e3:8.2f} ms")
    print(f"  plain model on {first}          {t_plain * 1e3:8.2f} ms")
    try:
        dp = stepper(
            nn.DataParallel(make_mlp().to(first), device_ids=ids, output_device=ids[0]), first
        )
        t_dp = timed(dp, steps)
        print(f"  nn.DataParallel(device_ids={ids})   {t_dp * 1e3:8.2f} ms")
        print(
            f"  ratio ours(cpu_merge=False) / DataParallel: {t_merge / t_dp:.2f}  "
            "(same merge device; <1 is faster)"
        )
        print(f"  ratio ours(cpu_merge=True)  / DataParallel: {t_ours / t_dp:.2f}")
    except Exception as exc:  # DataParallel may refuse repeated ids: report, don't fail
        print(f"  nn.DataParallel could not run here: {type(exc).__name__}: {exc}")
    print(
        f"  ratio ours(cpu_merge=True) / plain: {t_ours / t_plain:.2f}  "
        f"ours(cpu_merge=False) / plain: {t_merge / t_plain:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--batch", type=int, default=512, help="batch size for timings")
    args = parser.parse_args()
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        print(
            "gpu_check: no CUDA GPU is visible to this process; nothing to check "
            "(the CPU path is covered by tests/kparallel)."
        )
        return 0
    count = torch.cuda.device_count()
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(count))
    print(f"gpu_check: torch {torch.__version__}, {count} GPU(s): {names}")
    configs: list[tuple[list[str] | None, int | None, str]] = [
        (["cuda:0", "cuda:0"], None, "two replicas on cuda:0 (devices=['cuda:0', 'cuda:0'])")
    ]
    if count >= 2:
        configs.append((None, count, f"gpus={count} (every GPU)"))
    for devices, gpus, label in configs:
        try:
            correctness(devices, gpus, label)
        except Exception:
            traceback.print_exc()
            FAILURES.append(f"{label}: raised")
    timing_sets = [["cuda:0", "cuda:0"]]
    if count >= 2:
        timing_sets.append([f"cuda:{i}" for i in range(count)])
    for devices in timing_sets:
        try:
            timing(devices, args.steps, args.batch)
        except Exception:
            traceback.print_exc()
            FAILURES.append(f"timing {devices}: raised")
    if FAILURES:
        print(f"\ngpu_check: {len(FAILURES)} check(s) FAILED: {FAILURES}")
        return 1
    print("\ngpu_check: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
