"""Check kparallel's multi_gpu_model on the GPUs of this machine, and time it.

    python tools/gpu_check.py [--steps 20] [--budget 240] [--require-gpu] [--devices LIST]

What a CPU-only CI cannot catch: the torch.nn.parallel path (replicate, Scatter,
parallel_apply, Gather), device moves, cpu_merge, cpu_relocation, and gradients flowing
back to the template through Broadcast / ReduceAddCoalesced. For every configuration this
machine allows it runs, against the plain model (same weights, TF32 off):

* configurations: two replicas on one GPU (devices=["cuda:0", "cuda:0"]: replicate's
  same-device case), every GPU (gpus=N), GPUs in reverse order (gpus=[N-1, ..., 0]: the
  template on a GPU that is not the current device), and a mixed ["cuda:0", "cpu"] list
  (the generic path with a GPU in it);
* for each, cpu_merge True/False x cpu_relocation False/True: which path is taken, where
  the template lives and where outputs land; forward equality on uneven batches (7 rows,
  fewer rows than replicas, 0 rows, 2N+1 rows); gradients of the template's parameters and
  of the input; no_grad; five SGD-with-momentum steps; state_dict keys;
* dict / tuple inputs and outputs, keyword and 0-dim tensor arguments;
* the merge rule against the plain model: per-sample lists (a detection-style list of
  per-image dicts for 4 images, entries moved to the merge device), dataclass and
  namedtuple outputs, an int count refused with MergeError naming output[1] and summed by
  a merge= function, a 0-dim loss and a string refused;
* BatchNorm: after one training call the running statistics equal a plain model run on
  the first chunk and num_batches_tracked is 1 (nn.DataParallel's count is printed for
  comparison); in training no replica gets a one-row chunk (5 rows); eval mode equals the
  plain model;
* the wrapper as a view: apply() reaches the template, .training follows it, and forward
  hooks on the template run once per replica;
* timings (medians): training step of the wrapper (cpu_merge True/False, cpu_relocation)
  against nn.DataParallel on the same device ids and against the plain model on one GPU,
  ratios printed (informational; --strict-timing makes a wrapper more than 1.25x slower
  than nn.DataParallel a failure).

Exit status: 0 when every check passed, 1 on any mismatch or error, 2 when there is no
GPU and --require-gpu was given (without it: a note and 0). The whole run stops with a
failure past --budget seconds. `--devices cpu,cpu` runs the same checks on another device
list (how this script itself is tested on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import collections
import copy
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import kparallel as kp

D_IN, HIDDEN, D_OUT = 32, 64, 5
FAILURES: list[str] = []
WARNINGS: list[str] = []
CPU = torch.device("cpu")


class OverBudget(Exception):
    pass


DEADLINE = [float("inf")]


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}{(': ' + detail) if detail else ''}", flush=True)
    if not ok:
        FAILURES.append(name)
    if time.monotonic() > DEADLINE[0]:
        raise OverBudget


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if a.shape != b.shape:
        return float("inf")
    return 0.0 if a.numel() == 0 else float((a - b).abs().max())


def check_close(name: str, a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> None:
    d = diff(a, b)
    check(name, d <= tol, f"max |diff| {d:.2e}, shapes {tuple(a.shape)} / {tuple(b.shape)}")


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D_IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, D_OUT))


class Structured(nn.Module):
    """Tuple and dict in, dict out, keyword and 0-dim tensor arguments, a non-tensor out."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(5, 4)

    def forward(
        self,
        pair: tuple[torch.Tensor, torch.Tensor],
        extra: dict[str, torch.Tensor],
        *,
        scale: float,
        shift: torch.Tensor,
        tag: str,
    ) -> dict[str, Any]:
        u, v = pair
        h = (self.a(u) + self.b(v) + extra["w"]) * scale + shift
        return {"out": h, "aux": (h.sum(1), [v]), "tag": None if tag == "none" else tag}


def home_of(devices: list[torch.device], cpu_relocation: bool, before: torch.device) -> Any:
    """Where multi_gpu_model leaves the template."""
    if cpu_relocation:
        return CPU
    if all(d.type == "cuda" for d in devices):
        return devices[0]
    return before


def check_variant(
    devices: list[str] | None, gpus: Any, cpu_merge: bool, cpu_relocation: bool
) -> None:
    print(f"  -- cpu_merge={cpu_merge}, cpu_relocation={cpu_relocation}", flush=True)
    plain, template = make_mlp(), make_mlp()
    parallel = kp.multi_gpu_model(template, gpus, cpu_merge, cpu_relocation, devices=devices)
    used = parallel.devices
    home = home_of(used, cpu_relocation, CPU)
    plain.to(home)
    merge = CPU if cpu_merge else used[0]
    torch_path = not cpu_relocation and all(d.type == "cuda" for d in used)
    check("replica path", parallel.uses_torch_parallel == torch_path, f"torch={torch_path}")
    check(
        "template placement",
        all(p.device == home for p in template.parameters()),
        f"expected {home}, got {next(template.parameters()).device}",
    )
    check(
        "state_dict keys are the template's",
        list(parallel.state_dict()) == list(template.state_dict()),
    )
    n = len(used)
    for rows in (7, 1, 0, 2 * n + 1):
        x = torch.randn(rows, D_IN)
        out = parallel(x)
        check(f"{rows} rows: output on {merge}", out.device == merge, str(out.device))
        check_close(f"{rows} rows: forward equals plain", out, plain(x.to(home)))
    x = torch.randn(7, D_IN, requires_grad=True)
    y = torch.randint(0, D_OUT, (7,))
    nn.functional.cross_entropy(parallel(x), y.to(merge)).backward()
    xp = x.detach().clone().requires_grad_()
    nn.functional.cross_entropy(plain(xp.to(home)), y.to(home)).backward()
    worst = max(
        diff(p.grad, q.grad) if p.grad is not None else float("inf")
        for p, q in zip(template.parameters(), plain.parameters(), strict=True)
    )
    check("template gradients equal plain", worst <= 1e-4, f"max |diff| {worst:.2e}")
    check(
        "gradients stay with the template",
        all(p.grad is not None and p.grad.device == home for p in template.parameters()),
    )
    check_close("input gradient equals plain", x.grad, xp.grad)  # type: ignore[arg-type]
    with torch.no_grad():
        out = parallel(torch.randn(5, D_IN))
    check("no_grad: output has no graph", not out.requires_grad)
    g = torch.Generator().manual_seed(2)
    batches = [
        (torch.randn(9, D_IN, generator=g), torch.randint(0, D_OUT, (9,), generator=g))
        for _ in range(5)
    ]
    for net, x_dev, y_dev in ((parallel, CPU, merge), (plain, home, home)):
        net.zero_grad(set_to_none=True)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        for bx, by in batches:
            opt.zero_grad()
            nn.functional.cross_entropy(net(bx.to(x_dev)), by.to(y_dev)).backward()
            opt.step()
    worst = max(diff(p, q) for p, q in zip(template.parameters(), plain.parameters(), strict=True))
    check("five SGD steps match plain", worst <= 1e-4, f"max |diff| {worst:.2e}")


def check_structures(devices: list[str] | None, gpus: Any) -> None:
    print("  -- structured inputs and outputs", flush=True)
    template = Structured()
    parallel = kp.multi_gpu_model(template, gpus, devices=devices)
    home = next(template.parameters()).device
    reference = copy.deepcopy(template)
    u, v, w = torch.randn(7, 3), torch.randn(7, 5), torch.randn(7, 4)
    shift = torch.tensor(0.25)
    got = parallel((u, v), {"w": w}, scale=2.0, shift=shift, tag="none")
    want = reference(
        (u.to(home), v.to(home)), {"w": w.to(home)}, scale=2.0, shift=shift.to(home), tag="none"
    )
    check("dict output keys", set(got) == {"out", "aux", "tag"}, str(sorted(got)))
    check_close("dict/tuple inputs: out equals plain", got["out"], want["out"])
    check(
        "tuple/list output types kept",
        isinstance(got["aux"], tuple) and isinstance(got["aux"][1], list),
    )
    check_close("tuple output equals plain", got["aux"][0], want["aux"][0])
    check_close("list output equals the input rows", got["aux"][1][0], v)
    check("None output stays None", got["tag"] is None)
    try:
        parallel((u, v), {"w": w}, scale=2.0, shift=shift, tag="t")
        check("string output refused (MergeError)", False, "no error")
    except kp.MergeError as err:
        check("string output refused (MergeError)", err.path == "output['tag']", str(err.path))
    got["out"].sum().backward()
    want["out"].sum().backward()
    worst = max(
        diff(p.grad, q.grad) if p.grad is not None else float("inf")
        for p, q in zip(template.parameters(), reference.parameters(), strict=True)
    )
    check("structured gradients equal plain", worst <= 1e-4, f"max |diff| {worst:.2e}")


class Detector(nn.Module):
    """A list of per-image dicts, a varying number of boxes per image, and an int count."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.head = nn.Linear(6, 5)

    def forward(self, images: torch.Tensor) -> tuple[list[dict[str, torch.Tensor]], int]:
        out = []
        for image in images:
            n = int(image[0].abs() * 10) % 4 + int(image[1] > 0)
            feats = self.head(image).unsqueeze(0).expand(n, 5)
            scale = torch.arange(1.0, n + 1, device=feats.device)[:, None]
            out.append({"boxes": (feats * scale)[:, :4], "scores": feats[:, 4].sigmoid()})
        return out, int(images.shape[0])


class Heads(nn.Module):
    """A namedtuple holding a list of two heads, or (logits, a 0-dim loss)."""

    def __init__(self, with_loss: bool) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.lin = nn.Linear(3, 4)
        self.with_loss = with_loss

    def forward(self, x: torch.Tensor) -> Any:
        h = self.lin(x)
        if self.with_loss:
            return h, h.pow(2).mean()
        return kp_pair(h, [h.relu(), h.tanh()])


kp_pair = collections.namedtuple("kp_pair", ["logits", "heads"])


def check_merge_rule(devices: list[str] | None, gpus: Any) -> None:
    print("  -- merge rule: per-sample lists, counts, structures", flush=True)
    template = Detector()
    reference = copy.deepcopy(template)
    parallel = kp.multi_gpu_model(template, gpus, devices=devices)
    home = next(template.parameters()).device
    merge_device = parallel.output_device
    images = torch.randn(4, 6)
    want, want_count = reference.to(home)(images.to(home))
    try:
        parallel(images)
        check("int count refused (MergeError)", False, "no error")
    except kp.MergeError as err:
        check("int count refused (MergeError)", err.path == "output[1]", str(err.path))
    summed = kp.multi_gpu_model(
        template, gpus, devices=devices, merge=lambda path, values, sizes: sum(values)
    )
    got, count = summed(images)
    check("merge= sums the count like the plain model", count == want_count == 4, str(count))
    check("4 images give 4 per-image dicts", len(got) == 4, str(len(got)))
    worst = max(
        max(diff(a["boxes"], b["boxes"]), diff(a["scores"], b["scores"]))
        for a, b in zip(got, want, strict=True)
    )
    check("per-image dicts equal plain", worst <= 1e-4, f"max |diff| {worst:.2e}")
    check(
        "per-image tensors on the merge device",
        all(d["boxes"].device == merge_device for d in got),
        str({str(d["boxes"].device) for d in got}),
    )
    sum(d["boxes"].sum() for d in got).backward()
    sum(d["boxes"].sum() for d in want).backward()
    worst = max(
        diff(p.grad, q.grad) if p.grad is not None else float("inf")
        for p, q in zip(template.parameters(), reference.parameters(), strict=True)
    )
    check("per-image gradients equal plain", worst <= 1e-4, f"max |diff| {worst:.2e}")
    heads = Heads(with_loss=False)
    heads_ref = copy.deepcopy(heads)
    x = torch.randn(4, 3)
    out = kp.multi_gpu_model(heads, gpus, devices=devices)(x)
    ref = heads_ref.to(next(heads.parameters()).device)(x.to(next(heads.parameters()).device))
    check("namedtuple kept", type(out) is kp_pair and len(out.heads) == 2)
    check_close("list of heads kept as structure", out.heads[1], ref.heads[1])
    try:
        kp.multi_gpu_model(Heads(with_loss=True), gpus, devices=devices)(x)
        check("0-dim loss refused (MergeError)", False, "no error")
    except kp.MergeError as err:
        check("0-dim loss refused (MergeError)", err.path == "output[1]", str(err.path))


def check_view(devices: list[str] | None, gpus: Any) -> None:
    print("  -- the wrapper as a view of the template", flush=True)
    template = nn.Linear(3, 2)
    parallel = kp.multi_gpu_model(template, gpus, devices=devices)
    parallel.apply(lambda m: nn.init.zeros_(m.weight) if isinstance(m, nn.Linear) else None)
    check("apply() reaches the template", int(torch.count_nonzero(template.weight)) == 0)
    template.eval()
    check(".training follows the template", parallel.training is False)
    parallel.train()
    check("train() reaches the template", template.training is True)
    seen: list[int] = []
    template.register_forward_hook(lambda m, i, o: seen.append(int(o.shape[0])))
    parallel(torch.randn(7, 3))
    sizes = kp.split_sizes(7, len(parallel.devices))
    check("template hooks run once per replica", sorted(seen) == sorted(sizes), str(seen))


def check_batchnorm(devices: list[str] | None, gpus: Any, cpu_relocation: bool) -> None:
    print(f"  -- BatchNorm buffers (cpu_relocation={cpu_relocation})", flush=True)
    torch.manual_seed(3)
    template = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6))
    reference = copy.deepcopy(template)
    parallel = kp.multi_gpu_model(template, gpus, cpu_relocation=cpu_relocation, devices=devices)
    home = next(template.parameters()).device
    reference.to(home)
    x = torch.randn(8, 4)
    parallel(x)
    first_rows = kp.split_sizes(8, len(parallel.devices), min_rows=2)[0]
    reference(x[:first_rows].to(home))
    bn, ref = template[1], reference[1]
    check(
        "num_batches_tracked counts the call once",
        int(bn.num_batches_tracked) == 1,
        str(int(bn.num_batches_tracked)),
    )
    check_close("running_mean = first chunk's update", bn.running_mean, ref.running_mean, 1e-5)
    check_close("running_var = first chunk's update", bn.running_var, ref.running_var, 1e-5)
    try:
        out = parallel(torch.randn(5, 4))  # a 1-row chunk would raise in BatchNorm1d
        check("training: 5 rows, no one-row chunk", tuple(out.shape) == (5, 6))
    except Exception as exc:
        check("training: 5 rows, no one-row chunk", False, repr(exc))
    parallel.eval()
    check("eval() reaches the template", not template.training and not bn.training)
    xe = torch.randn(8, 4)
    check_close("eval: output equals plain", parallel(xe), template(xe.to(home)))
    ids = [d.index for d in parallel.devices if d.type == "cuda"]
    if not cpu_relocation and len(ids) == len(parallel.devices):
        torch.manual_seed(3)
        dp_model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6)).to(parallel.devices[0])
        nn.DataParallel(dp_model, device_ids=ids)(x.to(parallel.devices[0]))
        print(
            f"       (nn.DataParallel on {ids}: num_batches_tracked "
            f"{int(dp_model[1].num_batches_tracked)})"
        )


def correctness(devices: list[str] | None, gpus: Any, label: str) -> None:
    print(f"\n== {label}", flush=True)
    for cpu_merge in (True, False):
        for cpu_relocation in (False, True):
            try:
                check_variant(devices, gpus, cpu_merge, cpu_relocation)
            except OverBudget:
                raise
            except Exception:
                traceback.print_exc()
                check(f"{label} cpu_merge={cpu_merge} cpu_relocation={cpu_relocation}", False)
    for step in (
        lambda: check_structures(devices, gpus),
        lambda: check_merge_rule(devices, gpus),
        lambda: check_view(devices, gpus),
        lambda: check_batchnorm(devices, gpus, False),
        lambda: check_batchnorm(devices, gpus, True),
    ):
        try:
            step()
        except OverBudget:
            raise
        except Exception:
            traceback.print_exc()
            check(f"{label}: raised", False)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(step: Callable[[], None], steps: int) -> float:
    for _ in range(3):
        step()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def big_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 100)
    )


def timing(devices: list[str], steps: int, batch: int, strict: bool) -> None:
    resolved = [torch.device(d) for d in devices]
    first = resolved[0]
    print(f"\n== step time, devices {devices}, batch {batch}, MLP 1024-4096-4096-100", flush=True)
    x = torch.randn(batch, 1024)
    y = torch.randint(0, 100, (batch,))

    def stepper(net: nn.Module, x_dev: torch.device) -> Callable[[], None]:
        opt = torch.optim.SGD(net.parameters(), lr=1e-4)
        xs = x.to(x_dev)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            out = net(xs)
            nn.functional.cross_entropy(out, y.to(out.device)).backward()
            opt.step()

        return step

    rows: list[tuple[str, float]] = []

    def add(name: str, step: Callable[[], None]) -> float:
        t = timed(step, steps)
        rows.append((name, t))
        print(f"  {name:<44} {t * 1e3:9.2f} ms", flush=True)
        if time.monotonic() > DEADLINE[0]:
            raise OverBudget
        return t

    t_plain = add(f"plain model on {first}", stepper(big_mlp().to(first), first))
    t_cpu = add(
        "multi_gpu_model cpu_merge=True (Keras default)",
        stepper(kp.multi_gpu_model(big_mlp(), devices=devices), CPU),
    )
    t_gpu = add(
        "multi_gpu_model cpu_merge=False",
        stepper(kp.multi_gpu_model(big_mlp(), devices=devices, cpu_merge=False), first),
    )
    t_rel = add(
        "multi_gpu_model cpu_relocation=True",
        stepper(kp.multi_gpu_model(big_mlp(), devices=devices, cpu_relocation=True), CPU),
    )
    ids = [d.index for d in resolved]
    dp = nn.DataParallel(big_mlp().to(first), device_ids=ids, output_device=ids[0])
    t_dp = add(f"nn.DataParallel(device_ids={ids})", stepper(dp, first))
    print(f"  ratio cpu_merge=False / DataParallel: {t_gpu / t_dp:.2f} (same merge device)")
    print(f"  ratio cpu_merge=True  / DataParallel: {t_cpu / t_dp:.2f}")
    print(f"  ratio cpu_relocation  / DataParallel: {t_rel / t_dp:.2f}")
    print(
        f"  ratio vs plain: cpu_merge=False {t_gpu / t_plain:.2f}, cpu_merge=True "
        f"{t_cpu / t_plain:.2f}, DataParallel {t_dp / t_plain:.2f}"
    )
    if t_gpu / t_dp > 1.25:
        message = f"cpu_merge=False is {t_gpu / t_dp:.2f}x nn.DataParallel's step on {devices}"
        print(f"  [slow] {message}")
        (FAILURES if strict else WARNINGS).append(message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--batch", type=int, default=2048, help="batch size for timings")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for the run")
    parser.add_argument("--require-gpu", action="store_true", help="exit 2 without a GPU")
    parser.add_argument("--strict-timing", action="store_true", help="slow is a failure")
    parser.add_argument("--no-timing", action="store_true", help="correctness only")
    parser.add_argument("--devices", help="check this comma-separated device list only")
    args = parser.parse_args()
    DEADLINE[0] = time.monotonic() + args.budget
    count = kp.visible_gpus()
    print(f"gpu_check: torch {torch.__version__}, {count} GPU(s)", flush=True)
    for i in range(count):
        print(f"  cuda:{i}: {torch.cuda.get_device_name(i)}")
    if torch.cuda.is_available():
        # TF32 would make split and unsplit matmuls differ at the 1e-3 level.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    configs: list[tuple[list[str] | None, Any, str]] = []
    timing_sets: list[list[str]] = []
    if args.devices:
        chosen = [d.strip() for d in args.devices.split(",")]
        configs.append((chosen, None, f"devices={chosen}"))
        if all(torch.device(d).type == "cuda" for d in chosen):
            timing_sets.append(chosen)
    elif count == 0:
        print("gpu_check: no CUDA GPU is visible; nothing to check on a GPU.")
        return 2 if args.require_gpu else 0
    else:
        configs.append((["cuda:0", "cuda:0"], None, "two replicas on cuda:0"))
        configs.append((["cuda:0", "cpu"], None, "mixed devices ['cuda:0', 'cpu']"))
        timing_sets.append(["cuda:0", "cuda:0"])
        if count >= 2:
            configs.append((None, count, f"gpus={count} (every GPU)"))
            reverse = list(range(count))[::-1]
            configs.append((None, reverse, f"gpus={reverse} (template off the current GPU)"))
            timing_sets.append([f"cuda:{i}" for i in range(count)])
    start = time.monotonic()
    try:
        for devices, gpus, label in configs:
            correctness(devices, gpus, label)
        if not args.no_timing:
            for devices in timing_sets:
                try:
                    timing(devices, args.steps, args.batch, args.strict_timing)
                except OverBudget:
                    raise
                except Exception:
                    traceback.print_exc()
                    FAILURES.append(f"timing {devices}: raised")
    except OverBudget:
        FAILURES.append(f"ran past the budget of {args.budget:.0f} s")
    print(f"\ngpu_check: {time.monotonic() - start:.1f} s")
    for message in WARNINGS:
        print(f"gpu_check: warning: {message}")
    if FAILURES:
        print(f"gpu_check: {len(FAILURES)} check(s) FAILED: {FAILURES}")
        return 1
    print("gpu_check: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
