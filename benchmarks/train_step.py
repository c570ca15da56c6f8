"""Step-time benchmark: ratios measured in one run, on whatever backend JAX picks.

Two modes.

**Preset mode** (no model flag): an experiment's preset as it trains.

    python -m benchmarks.train_step [--experiment bigram_backcopy|lm_sinks] [--preset NAME]
                                    [--microbatches K] [--repeats N] [--out DIR]

Reports (in results/bench/<experiment>_<preset>/bench.json): seconds per train step (tokens per
second), per forward pass with no capture vs `Capture.all()`, and for Bigram-Backcopy per batch
sampled, with their ratios. The capture ratio shows what the observables cost when asked for; the
no-capture forward is the program the train step runs. The small-GPT model trains on random tokens
of its vocabulary (the step time does not depend on the text). The step uses the preset's
`train.microbatches` (gradient accumulation; 16 for the small-GPT `paper` preset) unless
`--microbatches` overrides it. `--precision` and `--profile` (below) apply here too.

**Model mode** (any of the flags below): the model on flags, the benchmark a user runs.

    python -m benchmarks.train_step --d-model 256 --n-layers 1 --seq-len 256 --batch 64 \\
        [--n-heads 1] [--d-mlp 4d] [--vocab 67] [--precision float32|bfloat16] \\
        [--steps 3] [--repeats 5] [--torch] [--profile DIR] [--out DIR]

The model is Guo et al.'s Bigram-Backcopy model (`experiments.bigram_backcopy.PRESETS["paper"]`:
pre-LN, ReLU MLP, learned positions, final LN, untied head, torch-style init, AdamW lr 3e-4,
betas (0.9, 0.99), weight decay 1e-4 on every parameter) with the flags' shapes (`max_len` =
`--seq-len`), trained with the library's own `make_optimizer` / `init_state` /
`make_train_step` on random token batches. `--precision bfloat16` sets
`ModelConfig.compute_dtype="bfloat16"` (bf16 matmuls, fp32 parameters and optimiser).
Results go to results/bench/model_d<d>_L<L>_H<H>_T<T>_B<B>_<precision>/bench.json (or `--out`).

Timing. The step is compiled ahead of time (`jit(...).lower(...).compile()`: `lower_s` is
tracing + lowering, `compile_s` the XLA compile) and the compiled executable is what is timed.
After `--warmup` steps, each repeat runs `--steps` steps back to back and waits for the result;
the step time is the median over `--repeats` of (repeat time / steps); tokens/s = B·T / step
time. Every timed thing (the JAX step, the matmul peak, each torch variant) runs once per round,
in turn, so a change of machine load touches them alike and the ratios stay fair.

FLOPs of one train step (matmul FLOPs only; a multiply-add is 2 FLOPs):

    FLOP/token = 6·N_dense + 12·L_attn·T·d
    N_dense    = L_attn·4·d² + L_mlp·2·d·d_mlp + d·V      (Q, K, V, O; MLP in and out; head)

`6·N_dense` is the forward (2 FLOPs per parameter per token) and backward (4) of every dense
weight; the token and position embeddings are gathers, not matmuls, and are not in N_dense
(nor are biases, LayerNorm, softmax, the loss or the optimiser update, all O(N) or O(T) per
token). `12·L·T·d` is attention's two matmuls per layer (q·kᵀ and weights·v: 2·T·d FLOPs each
per token forward, ×3 for forward + backward); the causal mask is applied to the full T×T scores,
so the masked half is computed and counted (PaLM's appendix B convention). Achieved FLOP/s =
FLOP/token × tokens/s; MFU = achieved / the peak of a jitted n×n matmul in the precision's dtype
(2n³ FLOPs; `--peak-size`, default 2048 on CPU and 4096 on a GPU) timed in the same rounds.

`--torch` also times the PyTorch eager twin (`benchmarks.torch_gpt`: same shapes and
architecture, three separate Q/K/V Linear layers, explicit causal softmax attention, AdamW), on
the device JAX uses and, on the CPU, with as many threads as JAX's CPU client (the CPUs this
process may run on; `--torch-threads` overrides it); on a CUDA machine also a TF32 variant
(`allow_tf32`, as JAX's default fp32 matmul precision on a GPU is). It prints the ratio
sinks_jax tokens/s ÷ torch tokens/s.
`--profile DIR` writes a `jax.profiler` trace (TensorBoard / XProf and a Perfetto trace) of
`--profile-steps` steps there. Bad flags end in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import bigram_backcopy, lm_sinks
from sinks_jax.batch import Batch
from sinks_jax.cli import environment
from sinks_jax.config import ModelConfig, OptimConfig, to_dict
from sinks_jax.errors import ConfigError
from sinks_jax.forward import apply
from sinks_jax.model import GPT, Capture
from sinks_jax.run_dir import atomic_write_json
from sinks_jax.tasks.bigram_backcopy.data import batch_for_step, make_task
from sinks_jax.train import check_microbatches, init_state, make_optimizer, make_train_step


def seconds_per_call(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn()` (blocked until ready) after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def median(xs: Sequence[float]) -> float:
    return float(np.median(np.asarray(xs)))


EXPERIMENTS = {"bigram_backcopy": bigram_backcopy.PRESETS, "lm_sinks": lm_sinks.PRESETS}


def run(
    experiment: str,
    preset: str,
    repeats: int,
    microbatches: int | None = None,
    precision: str | None = None,
    profile: Path | None = None,
    profile_steps: int = 3,
) -> dict[str, object]:
    cfg = EXPERIMENTS[experiment][preset]
    if precision is not None:
        cfg = dataclasses.replace(cfg, model=with_precision(cfg.model, precision))
    b, t = cfg.data.batch_size, cfg.data.seq_len
    microbatches = cfg.train.microbatches if microbatches is None else microbatches
    check_microbatches(b, microbatches)
    if experiment == "bigram_backcopy":
        task = make_task(cfg.data, cfg.seed)
        batch = batch_for_step(task, 0, 0, b, t)
    else:
        tokens = jax.random.randint(jax.random.key(0), (b, t + 1), 0, cfg.model.vocab_size)
        batch = Batch(inputs=tokens[:, :-1], targets=tokens[:, 1:])
    model = GPT(cfg.model, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(cfg.optim, cfg.train.steps)
    graphdef, state = init_state(model, optimizer, 0)
    step_fn = make_train_step(graphdef, optimizer, microbatches=microbatches)
    holder = {"state": state}

    def train_step():
        holder["state"], metrics = step_fn(holder["state"], batch)
        return metrics["loss"]

    params = nnx.state(model, nnx.Param)
    rows = max(1, b // microbatches)  # forward passes on one micro-batch
    plain = seconds_per_call(lambda: apply(model, batch.inputs[:rows]), repeats)
    full = seconds_per_call(
        lambda: apply(model, batch.inputs[:rows], capture=Capture.all()), repeats
    )
    step = seconds_per_call(train_step, repeats)
    result: dict[str, object] = {
        "experiment": experiment,
        "preset": preset,
        "parameters": sum(x.size for x in jax.tree.leaves(params)),
        "batch": [b, t],
        "microbatches": microbatches,
        "train_step_s": step,
        "tokens_per_s": b * t / step,
        "forward_no_capture_s": plain,
        "forward_capture_all_s": full,
        "ratio_capture_all_over_no_capture": full / plain,
    }
    if precision is not None:
        result["precision"] = precision
    if experiment == "bigram_backcopy":
        data = seconds_per_call(lambda: batch_for_step(task, 0, 1, b, t).inputs, repeats)
        result |= {"sample_batch_s": data, "ratio_sample_over_train_step": data / step}
    if profile is not None:
        write_profile(profile, lambda: jax.block_until_ready(train_step()), profile_steps)
        result["profile"] = str(profile)
    return result | {"environment": environment()}


# ---------------------------------------------------------------------------------------------
# Model mode


@dataclasses.dataclass(frozen=True)
class Shape:
    d_model: int = 256
    n_layers: int = 1
    n_heads: int = 1
    d_mlp: int | None = None  # None: 4 · d_model
    vocab: int = 67  # the Bigram-Backcopy vocabulary
    seq_len: int = 256
    batch: int = 64


def with_precision(cfg: ModelConfig, precision: str) -> ModelConfig:
    """`cfg` computing in `precision` (`ModelConfig.compute_dtype`)."""
    return dataclasses.replace(cfg, compute_dtype=precision)


def model_config(shape: Shape, precision: str, fused_attention: bool = False) -> ModelConfig:
    """Guo et al.'s Bigram-Backcopy model (the `paper` preset) with these shapes."""
    base = bigram_backcopy.PRESETS["paper"].model
    cfg = dataclasses.replace(
        base,
        vocab_size=shape.vocab,
        max_len=shape.seq_len,
        d_model=shape.d_model,
        n_layers=shape.n_layers,
        n_heads=shape.n_heads,
        d_mlp=4 * shape.d_model if shape.d_mlp is None else shape.d_mlp,
    )
    return with_precision(dataclasses.replace(cfg, fused_attention=fused_attention), precision)


def optim_config() -> OptimConfig:
    return bigram_backcopy.PRESETS["paper"].optim


def dense_parameters(cfg: ModelConfig) -> int:
    """N_dense of the module docstring: the weights of every matmul (no biases, embeddings)."""
    d = cfg.d_model
    l_attn = cfg.n_layers - len(set(cfg.layers_without_attention))
    l_mlp = cfg.n_layers - len(set(cfg.layers_without_mlp))
    return l_attn * 4 * d * d + l_mlp * 2 * d * cfg.d_mlp + d * cfg.vocab_size


def train_flop_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """6·N_dense + 12·L_attn·T·d (module docstring)."""
    l_attn = cfg.n_layers - len(set(cfg.layers_without_attention))
    return 6 * dense_parameters(cfg) + 12 * l_attn * seq_len * cfg.d_model


def is_gpu() -> bool:
    return jax.default_backend() in ("gpu", "cuda", "rocm")


def cpu_threads() -> int:
    """The CPUs this process may run on: what XLA's CPU client sizes its thread pool to."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def interleaved(runners: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Wall times of each runner over `rounds` rounds, the runners taking turns in each round."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def matmul_runner(n: int, dtype: str, calls: int) -> Callable[[], None]:
    """`calls` jitted n×n @ n×n matmuls in `dtype`, dispatched back to back, then waited for."""
    ka, kb = jax.random.split(jax.random.key(1))
    a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
    mm = jax.jit(jnp.matmul)
    jax.block_until_ready(mm(a, b))  # compile

    def go() -> None:
        out = [mm(a, b) for _ in range(calls)]
        jax.block_until_ready(out)

    go()  # warm-up
    return go


def write_profile(directory: Path, step: Callable[[], object], steps: int) -> None:
    """A `jax.profiler` trace of `steps` calls of `step` (each waited for) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    with jax.profiler.trace(str(directory), create_perfetto_trace=True):
        for i in range(steps):
            with jax.profiler.StepTraceAnnotation("train_step", step_num=i):
                step()


def run_model(
    shape: Shape,
    *,
    precision: str = "float32",
    fused_attention: bool = False,
    microbatches: int = 1,
    steps: int = 3,
    repeats: int = 5,
    warmup: int = 2,
    peak_size: int | None = None,
    torch: bool = False,
    torch_threads: int | None = None,
    profile: Path | None = None,
    profile_steps: int = 3,
) -> dict[str, Any]:
    cfg = model_config(shape, precision, fused_attention)
    optim = optim_config()
    b, t = shape.batch, shape.seq_len
    check_microbatches(b, microbatches)
    tokens = np.asarray(jax.random.randint(jax.random.key(0), (b, t + 1), 0, cfg.vocab_size))
    batch = jax.device_put(Batch(inputs=tokens[:, :-1], targets=tokens[:, 1:]))

    model = GPT(cfg, rngs=nnx.Rngs(0))
    optimizer = make_optimizer(optim, 1000)
    graphdef, state = init_state(model, optimizer, 0)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    step_fn = make_train_step(graphdef, optimizer, microbatches=microbatches)

    t0 = time.perf_counter()
    lowered = step_fn.lower(state, batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    holder = {"state": state}

    def run_steps(k: int) -> None:
        for _ in range(k):
            holder["state"], _metrics = compiled(holder["state"], batch)
        jax.block_until_ready(holder["state"])

    t3 = time.perf_counter()
    run_steps(1)
    first_step_s = time.perf_counter() - t3
    run_steps(max(warmup - 1, 0))

    gpu = is_gpu()
    n = peak_size or (4096 if gpu else 2048)
    runners: dict[str, Callable[[], None]] = {
        "sinks_jax": lambda: run_steps(steps),
        "matmul": matmul_runner(n, precision, calls=10 if gpu else 1),
    }
    threads = cpu_threads()
    torch_info: dict[str, Any] = {}
    if torch:
        torch_info, torch_runners = torch_twins(
            cfg, optim, tokens, precision, torch_threads or threads, warmup, steps
        )
        runners |= {f"torch_{name}": fn for name, fn in torch_runners.items()}
    times = interleaved(runners, repeats)

    step_s = median([x / steps for x in times["sinks_jax"]])
    matmul_s = median([x / (10 if gpu else 1) for x in times["matmul"]])
    peak = 2 * n**3 / matmul_s
    flop_token = train_flop_per_token(cfg, t)
    tokens_per_s = b * t / step_s
    achieved = flop_token * tokens_per_s
    result: dict[str, Any] = {
        "mode": "model",
        "model": to_dict(cfg),
        "precision": precision,
        "batch": [b, t],
        "microbatches": microbatches,
        "parameters": n_params,
        "dense_parameters": dense_parameters(cfg),
        "flop_formula": "6*N_dense + 12*L*T*d per token",
        "flop_per_token": flop_token,
        "flop_per_step": flop_token * b * t,
        "steps_per_repeat": steps,
        "repeats": repeats,
        "train_step_s": step_s,
        "train_step_s_repeats": [x / steps for x in times["sinks_jax"]],
        "tokens_per_s": tokens_per_s,
        "lower_s": t1 - t0,
        "compile_s": t2 - t1,
        "first_step_s": first_step_s,
        "achieved_flop_per_s": achieved,
        "peak_matmul": {"n": n, "dtype": precision, "flop_per_s": peak, "seconds": matmul_s},
        "mfu": achieved / peak,
    }
    if torch:
        for name in torch_info["variants"]:
            s = median([x / steps for x in times[f"torch_{name}"]])
            torch_info["variants"][name] |= {"train_step_s": s, "tokens_per_s": b * t / s}
            result[f"ratio_sinks_jax_over_torch_{name}"] = tokens_per_s / (b * t / s)
        result["torch"] = torch_info
    if profile is not None:
        write_profile(profile, lambda: run_steps(1), profile_steps)
        result["profile"] = str(profile)
    env = environment() | {"cpu_threads": threads, "load_average": list(os.getloadavg())}
    return result | {"environment": env}


def torch_twins(
    cfg: ModelConfig,
    optim: OptimConfig,
    tokens: np.ndarray,
    precision: str,
    threads: int,
    warmup: int,
    steps: int,
) -> tuple[dict[str, Any], dict[str, Callable[[], None]]]:
    """The torch runners (eager; on CUDA also with TF32) and what to report about them."""
    import torch

    from benchmarks import torch_gpt

    device = "cuda" if is_gpu() else "cpu"
    variants = {"eager": False, "eager_tf32": True} if device == "cuda" else {"eager": False}
    if precision != "float32":
        variants = {"eager": False}  # TF32 only changes fp32 matmuls
    info: dict[str, Any] = {
        "version": torch.__version__,
        "device": device,
        "threads": threads,
        "qkv": "three separate nn.Linear (query, key, value), as sinks_jax",
        "variants": {},
    }
    runners: dict[str, Callable[[], None]] = {}
    for name, tf32 in variants.items():
        run_k, n_params = torch_gpt.make_runner(
            tokens=tokens,
            vocab=cfg.vocab_size,
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            d_mlp=cfg.d_mlp,
            precision=precision,
            device=device,
            threads=threads,
            optim={
                "lr": optim.lr,
                "b1": optim.b1,
                "b2": optim.b2,
                "eps": optim.eps,
                "weight_decay": optim.weight_decay,
            },
            tf32=tf32,
        )
        run_k(max(warmup, 1))
        info["variants"][name] = {"tf32": tf32}
        info["parameters"] = n_params
        runners[name] = _bind(run_k, steps)
    return info, runners


def _bind(run_k: Callable[[int], None], k: int) -> Callable[[], None]:
    return lambda: run_k(k)


# ---------------------------------------------------------------------------------------------
# Command line


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit 2) and no traceback."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


MODEL_FLAGS = ("d_model", "n_layers", "n_heads", "d_mlp", "vocab", "seq_len", "batch")
MODEL_ONLY = (
    *MODEL_FLAGS,
    *("steps", "warmup", "peak_size", "torch", "torch_threads", "fused_attention"),
)


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m benchmarks.train_step",
        description=__doc__.split("\n\n")[0],
        epilog="Model mode starts with any model flag; see the module docstring for the FLOPs.",
    )
    preset = parser.add_argument_group("preset mode")
    preset.add_argument("--experiment", choices=list(EXPERIMENTS), default=None)
    preset.add_argument("--preset", default=None, help="a preset of the experiment (quick)")
    model = parser.add_argument_group("model mode (Guo et al.'s Bigram-Backcopy model)")
    model.add_argument("--d-model", type=positive, default=None, help="default 256")
    model.add_argument("--n-layers", type=positive, default=None, help="default 1")
    model.add_argument("--n-heads", type=positive, default=None, help="default 1")
    model.add_argument("--d-mlp", type=positive, default=None, help="default 4 · d-model")
    model.add_argument("--vocab", type=positive, default=None, help="default 67")
    model.add_argument("--seq-len", type=positive, default=None, help="default 256")
    model.add_argument("--batch", type=positive, default=None, help="default 64")
    model.add_argument("--steps", type=positive, default=None, help="steps per repeat (3)")
    model.add_argument("--warmup", type=positive, default=None, help="warm-up steps (2)")
    model.add_argument(
        "--peak-size", type=positive, default=None, help="matmul side (2048 CPU, 4096 GPU)"
    )
    model.add_argument("--torch", action="store_true", help="also time the PyTorch eager twin")
    model.add_argument(
        "--torch-threads", type=positive, default=None, help="torch CPU threads (JAX's count)"
    )
    model.add_argument(
        "--fused-attention", action="store_true", help="ModelConfig.fused_attention=True"
    )
    both = parser.add_argument_group("both modes")
    both.add_argument("--precision", choices=("float32", "bfloat16"), default=None)
    both.add_argument(
        "--microbatches",
        type=positive,
        default=None,
        help="gradient accumulation parts (default: the preset's train.microbatches; 1)",
    )
    both.add_argument("--repeats", type=positive, default=None, help="30 presets, 5 model")
    both.add_argument("--profile", type=Path, default=None, help="write a jax.profiler trace")
    both.add_argument("--profile-steps", type=positive, default=3)
    both.add_argument("--out", type=Path, default=None)
    return parser


def check_torch(parser: Parser) -> None:
    if importlib.util.find_spec("torch") is None:
        parser.error(
            "--torch needs PyTorch: pip install -e '.[torch]' (a CPU-only build will do on CPU)"
        )
    import torch

    if is_gpu() and not torch.cuda.is_available():
        parser.error("--torch: JAX runs on a GPU but this torch has no CUDA; install a CUDA torch")


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    model_mode = any(getattr(args, f) not in (None, False) for f in MODEL_ONLY)
    if model_mode and (args.experiment is not None or args.preset is not None):
        parser.error("--experiment/--preset and the model flags are two modes; give one")
    if args.torch_threads is not None and not args.torch:
        parser.error("--torch-threads needs --torch")
    try:
        if model_mode:
            if args.torch:
                check_torch(parser)
            given = {f: getattr(args, f) for f in MODEL_FLAGS if getattr(args, f) is not None}
            shape = Shape(**given)
            precision = args.precision or "float32"
            steps = args.steps or 3
            result = run_model(
                shape,
                precision=precision,
                fused_attention=args.fused_attention,
                microbatches=args.microbatches or 1,
                steps=steps,
                repeats=args.repeats or 5,
                warmup=args.warmup or 2,
                peak_size=args.peak_size,
                torch=args.torch,
                torch_threads=args.torch_threads,
                profile=args.profile,
                profile_steps=args.profile_steps,
            )
            name = (
                f"model_d{shape.d_model}_L{shape.n_layers}_H{shape.n_heads}_T{shape.seq_len}"
                f"_B{shape.batch}_{precision}"
            )
        else:
            experiment = args.experiment or "bigram_backcopy"
            preset = args.preset or "quick"
            presets = EXPERIMENTS[experiment]
            if preset not in presets:
                parser.error(f"unknown preset {preset!r} for {experiment}: {sorted(presets)}")
            result = run(
                experiment,
                preset,
                args.repeats or 30,
                args.microbatches,
                args.precision,
                args.profile,
                args.profile_steps,
            )
            name = f"{experiment}_{preset}"
    except ConfigError as e:
        parser.error(str(e))
    out = args.out or Path("results") / "bench" / name
    atomic_write_json(out / "bench.json", result)  # writes only this file, never moves any
    report(result)
    print(f"{'written':36s} {out / 'bench.json'}")


def report(result: dict[str, Any]) -> None:
    for key, value in result.items():
        if key in ("environment", "model", "torch", "train_step_s_repeats"):
            continue
        print(f"{key:36s} {value}")
    torch_info = result.get("torch")
    if torch_info:
        print(f"{'torch_parameters':36s} {torch_info['parameters']}")
        for name, v in torch_info["variants"].items():
            print(f"{'torch_' + name + '_tokens_per_s':36s} {v['tokens_per_s']}")
    env = result["environment"]
    print(f"{'backend':36s} {env['backend']} {env['devices']}")
    if "load_average" in env:
        print(f"{'cpu_threads / load_average':36s} {env['cpu_threads']} / {env['load_average']}")


if __name__ == "__main__":
    sys.exit(main())
