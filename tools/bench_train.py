"""Training-step throughput on CPU: our JAX trainer vs transformers' PyTorch T5, side by side.

    python tools/bench_train.py --models tiny,small --batch 32 --lengths 256/32

For each model size it runs, one after the other and each in a fresh process (so that peak RSS
is per run): our train step (the trainer's own jitted, donated step: forward, backward, Adafactor)
and `transformers.T5ForConditionalGeneration` with the same shapes (d_model, d_ff, heads, d_kv,
layers, vocabulary, untied gated-GELU), the same batch, lengths and padding, 2 threads, and
transformers' Adafactor (or AdamW with --torch-optimizer adamw). Batches are synthetic token ids
with realistic padding: each example's real length is drawn uniformly from [length/4, length].

Reported per run: steps/s, tokens/s with and without padding, model FLOPs utilisation against
the square-matmul peak measured in the same process just before (in the dtype the model's
matmuls run in), and peak RSS. `--pack` adds a run of ours with the same examples packed
by the trainer's packer (`--packer first_fit`, the default here, or `seqio`): fewer rows, same
real tokens. `--pack-lengths 512/64` packs those examples into longer rows than the examples' own
maximum (T5X's recipes pack short examples into 512-token rows the same way: the task's feature
lengths are the row lengths); the unpacked runs keep `--lengths`. Machines shared with other jobs are
noisy: compare the ratio of side-by-side runs, not absolute figures across days.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

# name -> (d_model, d_ff, num_heads, d_kv, encoder layers, decoder layers), as model/config.py.
SIZES = {
    "tiny": (256, 1024, 4, 64, 4, 4),
    "small": (512, 1024, 6, 64, 8, 8),
    "base": (768, 2048, 12, 64, 12, 12),
    "large": (1024, 2816, 16, 64, 24, 24),
    "xl": (2048, 5120, 32, 64, 24, 24),
}


def synthetic_examples(num, inputs_length, targets_length, vocab, seed=0):
    """(inputs, targets) token lists with lengths uniform in [L/4, L], EOS (1) last."""
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(num):
        n_in = int(rng.integers(inputs_length // 4, inputs_length + 1))
        n_tg = int(rng.integers(max(targets_length // 4, 2), targets_length + 1))
        inputs = list(rng.integers(3, vocab, size=n_in - 1)) + [1]
        targets = list(rng.integers(3, vocab, size=n_tg - 1)) + [1]
        examples.append((inputs, targets))
    return examples


def unpacked_batch(examples, inputs_length, targets_length):
    """EncDecFeatureConverter(pack=False) features of the examples, one per row."""
    b = len(examples)
    enc = np.zeros((b, inputs_length), np.int32)
    tgt = np.zeros((b, targets_length), np.int32)
    for i, (inputs, targets) in enumerate(examples):
        enc[i, :len(inputs)] = inputs
        tgt[i, :len(targets)] = targets
    dec_in = np.zeros_like(tgt)
    dec_in[:, 1:] = tgt[:, :-1]
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in,
            "decoder_target_tokens": tgt, "decoder_loss_weights": (tgt > 0).astype(np.float32)}


def packed_batch(examples, inputs_length, targets_length, packer="first_fit"):
    """The examples packed as the trainer packs them: `DatasetConfig.packer` 'first_fit' (its
    pool = these examples) or 'seqio' (SeqIO's `EncDecFeatureConverter(pack=True)`)."""
    import seqio
    import tensorflow as tf

    from instructrec_jax.packing import FirstFitEncDecFeatureConverter

    converter = (FirstFitEncDecFeatureConverter(pool_size=len(examples)) if packer == "first_fit"
                 else seqio.EncDecFeatureConverter(pack=True))
    dataset = tf.data.Dataset.from_generator(
        lambda: ({"inputs": np.asarray(i, np.int32), "targets": np.asarray(t, np.int32)} for i, t in examples),
        output_signature={k: tf.TensorSpec([None], tf.int32) for k in ("inputs", "targets")})
    rows = list(converter(dataset, {"inputs": inputs_length, "targets": targets_length}).as_numpy_iterator())
    return {k: np.stack([r[k] for r in rows]).astype(np.float32 if k == "decoder_loss_weights" else np.int32)
            for k in rows[0]}


def train_flops(size, batch, inputs_length, targets_length, vocab):
    """Matmul FLOPs of one training step (forward x 3) on the padded shapes."""
    d, ff, heads, d_kv, enc, dec = SIZES[size]
    inner = heads * d_kv
    li, lt = inputs_length, targets_length
    encoder = enc * li * (2 * 4 * d * inner + 2 * 3 * d * ff + 2 * 2 * li * inner)
    decoder = dec * (lt * (2 * 4 * d * inner + 2 * 2 * lt * inner  # self-attention
                           + 2 * 2 * d * inner + 2 * 2 * li * inner  # cross: q, o, scores
                           + 2 * 3 * d * ff)
                     + li * 2 * 2 * d * inner)  # cross-attention keys/values of the encoder
    logits = lt * 2 * d * vocab
    return 3 * batch * (encoder + decoder + logits)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gib() -> float:
    """Resident memory now (after the timed steps: the steady state, without compile-time peaks)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


# -- workers (one per process) -------------------------------------------------------------


def jax_worker(args) -> dict:
    import jax
    import jax.numpy as jnp

    import seqio  # noqa: F401  (the trainer imports these; their memory counts in its RSS)
    import tensorflow  # noqa: F401

    from instructrec_jax import optimizers, partitioning, train, train_state
    from instructrec_jax.model.config import T5Config
    from instructrec_jax.model.encoder_decoder import EncoderDecoderModel

    inputs_length, targets_length = args.lengths
    row_lengths = args.pack_lengths if args.pack and args.pack_lengths else args.lengths
    peak = matmul_peak_jax(args.dtype)
    d, ff, heads, d_kv, enc, dec = SIZES[args.model]
    config = T5Config(vocab_size=args.vocab, d_model=d, d_ff=ff, num_heads=heads, d_kv=d_kv,
                      num_encoder_layers=enc, num_decoder_layers=dec, dropout_rate=0.1,
                      dtype=args.dtype, remat_policy=args.remat)
    model = EncoderDecoderModel(config)
    partitioner = partitioning.Partitioner()
    optimizer = optimizers.adafactor(1e-3)
    layout = train.state_layout(model, optimizer, partitioner,
                                {"inputs": row_lengths[0], "targets": row_lengths[1]})
    import flax.linen as nn

    init = jax.jit(lambda: train_state.init_train_state(
        nn.unbox(model.init_params(jax.random.PRNGKey(0), None)), optimizer))
    # Placed as the step expects it (as the trainer does), or the second call would recompile.
    state = jax.device_put(init(), layout.shardings)
    examples = synthetic_examples(args.batch, inputs_length, targets_length, args.vocab)
    batch = (packed_batch(examples, *row_lengths, args.packer) if args.pack
             else unpacked_batch(examples, inputs_length, targets_length))
    rows = batch["encoder_input_tokens"].shape[0]
    if args.pack:  # keep the examples-per-step the same; rows pad to a multiple of microbatches
        pad = (-rows) % args.microbatches
        batch = {k: np.concatenate([v, np.zeros((pad, v.shape[1]), v.dtype)]) for k, v in batch.items()}
        rows += pad
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    step = partitioner.jit(
        train_state.make_train_step(model.loss_fn, optimizer, num_microbatches=args.microbatches),
        in_shardings=(layout.shardings, {k: partitioner.batch_sharding(2) for k in batch}),
        out_shardings=(layout.shardings, partitioner.replicated),
        donate_argnums=(0,),
    )
    def one_step():
        nonlocal state
        state, metrics = step(state, batch)
        return jax.block_until_ready(metrics)

    compile_s, times, metrics = time_steps(one_step, args.steps)
    real = real_tokens(batch)
    return _result("jax", args, times, rows, real, peak, compile_s=compile_s,
                   loss=float(metrics["loss"]), row_lengths=row_lengths)


def torch_worker(args) -> dict:
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    inputs_length, targets_length = args.lengths
    matmul_dtype = torch.bfloat16 if args.torch_bf16 else torch.float32
    peak = matmul_peak_torch(matmul_dtype)
    d, ff, heads, d_kv, enc, dec = SIZES[args.model]
    config = transformers.T5Config(
        vocab_size=args.vocab, d_model=d, d_ff=ff, num_heads=heads, d_kv=d_kv, num_layers=enc,
        num_decoder_layers=dec, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        dropout_rate=0.1, relative_attention_num_buckets=32, relative_attention_max_distance=128,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(config)
    model.train()
    if args.torch_optimizer == "adafactor":
        from transformers.optimization import Adafactor

        optimizer = Adafactor(model.parameters(), lr=1e-3, scale_parameter=True, relative_step=False,
                              warmup_init=False, decay_rate=-0.8, clip_threshold=1.0)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    examples = synthetic_examples(args.batch, inputs_length, targets_length, args.vocab)
    batch = unpacked_batch(examples, inputs_length, targets_length)
    input_ids = torch.from_numpy(batch["encoder_input_tokens"]).long()
    attention_mask = (input_ids > 0).long()
    labels = torch.from_numpy(batch["decoder_target_tokens"]).long()
    decoder_input_ids = torch.from_numpy(batch["decoder_input_tokens"]).long()
    decoder_attention_mask = (labels > 0).long()
    decoder_attention_mask[:, 0] = 1
    labels = labels.masked_fill(labels == 0, -100)

    def one_step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.torch_bf16):
            out = model(input_ids=input_ids, attention_mask=attention_mask,
                        decoder_input_ids=decoder_input_ids,
                        decoder_attention_mask=decoder_attention_mask, labels=labels)
        out.loss.backward()
        optimizer.step()
        return float(out.loss)

    first_s, times, loss = time_steps(one_step, args.steps)
    real = real_tokens(batch)
    return _result("torch", args, times, args.batch, real, peak, compile_s=first_s, loss=loss)


def time_steps(one_step, steps: int):
    """(seconds of the first call, seconds of each of `steps` further calls, the last result)."""
    start = time.perf_counter()
    result = one_step()
    first_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        result = one_step()
        times.append(time.perf_counter() - start)
    return first_s, times, result


def real_tokens(batch) -> int:
    """Non-padding input and target tokens of a batch."""
    return int((batch["encoder_input_tokens"] > 0).sum() + (batch["decoder_target_tokens"] > 0).sum())


def _result(framework, args, times, rows, real_tokens, peak, row_lengths=None, **extra) -> dict:
    inputs_length, targets_length = row_lengths or args.lengths
    step_s = statistics.median(times)
    flops = train_flops(args.model, rows, inputs_length, targets_length, args.vocab)
    return {
        "framework": framework, "model": args.model, "rows": rows, "examples": args.batch,
        "step_s": step_s, "steps_per_s": 1 / step_s,
        "tokens_per_s": rows * (inputs_length + targets_length) / step_s,
        "real_tokens_per_s": real_tokens / step_s,
        "examples_per_s": args.batch / step_s,
        "matmul_peak_gflops": peak / 1e9, "model_gflops_per_s": flops / step_s / 1e9,
        "mfu": flops / step_s / peak, "peak_rss_gib": peak_rss_gib(),
        "end_rss_gib": current_rss_gib(), "row_lengths": [inputs_length, targets_length], **extra,
    }


def matmul_peak_jax(dtype: str, n: int = 2048, repeats: int = 5) -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = min(timed(lambda: f(a, a).block_until_ready()) for _ in range(repeats))
    return 2 * n ** 3 / best


def matmul_peak_torch(dtype, n: int = 2048, repeats: int = 5) -> float:
    import torch

    a = torch.ones((n, n), dtype=dtype)
    a @ a
    best = min(timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n ** 3 / best


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- driver ------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,small")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lengths", default="256/32", help="inputs/targets")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    parser.add_argument("--vocab", type=int, default=32128)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--dtype", default="float32", help="our activation/matmul dtype")
    parser.add_argument("--remat", default="none")
    parser.add_argument("--microbatches", type=int, default=1)
    parser.add_argument("--pack", action="store_true", help="also run ours on packed rows")
    parser.add_argument("--pack-only", action="store_true",
                        help="run ours on packed rows only (e.g. with a microbatch count that divides the "
                             "packed rows but not the unpacked ones)")
    parser.add_argument("--packer", choices=("first_fit", "seqio"), default="first_fit",
                        help="how --pack packs the batch's examples (the trainer's DatasetConfig.packer)")
    parser.add_argument("--pack-lengths", default=None,
                        help="inputs/targets row lengths of the packed run (default: --lengths); "
                             "the examples are still drawn with --lengths")
    parser.add_argument("--torch-optimizer", choices=("adafactor", "adamw"), default="adafactor")
    parser.add_argument("--torch-bf16", action="store_true", help="also run torch with bf16 autocast")
    parser.add_argument("--frameworks", default="jax,torch")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the whole list this many times, every other time in reverse order "
                             "(A B, B A, A B, ...), and report each repeat's ratio and the median ones, "
                             "so that drift of the machine during the run weighs on both sides alike")
    parser.add_argument("--xla-flags", default="", help="extra XLA_FLAGS for our runs")
    parser.add_argument("--json-out", default=None, help="append each run's full result (JSON line)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.lengths = _lengths(parser, "--lengths", args.lengths)
    args.pack = args.pack or args.pack_only
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: expected at least 1")
    args.pack_lengths = args.pack_lengths and _lengths(parser, "--pack-lengths", args.pack_lengths)
    if args.pack_lengths and any(p < l for p, l in zip(args.pack_lengths, args.lengths)):
        parser.error(f"--pack-lengths {args.pack_lengths[0]}/{args.pack_lengths[1]} is shorter than "
                     f"--lengths {args.lengths[0]}/{args.lengths[1]}: examples would be truncated")
    return args


def _lengths(parser, flag, text):
    try:
        inputs, targets = (int(x) for x in text.split("/"))
    except ValueError:
        parser.error(f"{flag} {text!r}: expected INPUTS/TARGETS, e.g. 256/32")
    if inputs < 1 or targets < 1:
        parser.error(f"{flag} {text!r}: lengths must be positive")
    return inputs, targets


def planned_runs(args, frameworks) -> list[tuple[str, str, list[str], str]]:
    """(row name, framework, extra worker arguments, XLA flags) of each run, in order."""
    runs = []
    if "jax" in frameworks:
        if not args.pack_only:
            runs.append(("ours", "jax", [], args.xla_flags))
        if args.pack:
            extra = ["--pack", f"--packer={args.packer}"]
            if args.pack_lengths:
                extra.append("--pack-lengths={}/{}".format(*args.pack_lengths))
            runs.append(("ours packed", "jax", extra, args.xla_flags))
    if "torch" in frameworks:
        runs.append(("transformers fp32", "torch", [], ""))
        if args.torch_bf16:
            runs.append(("transformers bf16", "torch", ["--torch-bf16"], ""))
    return runs


def repeated_runs(runs, repeats: int) -> list[tuple[int, tuple]]:
    """(repeat index, run) in the order they are measured: the list forwards, then backwards, ..."""
    return [(i, run) for i in range(repeats) for run in (runs if i % 2 == 0 else runs[::-1])]


def ratios_per_repeat(results: list[tuple[int, str, dict]], name: str) -> list[float]:
    """Each repeat's `name` real tokens/s over that repeat's best transformers run."""
    ratios = []
    for i in sorted({i for i, _, _ in results}):
        rows = [(n, r) for j, n, r in results if j == i]
        ours = [r for n, r in rows if n == name]
        torch_runs = [r for n, r in rows if n.startswith("transformers")]
        if ours and torch_runs:
            best = max(r["real_tokens_per_s"] for r in torch_runs)
            ratios.append(ours[0]["real_tokens_per_s"] / best)
    return ratios


def run_worker(argv, framework, model, extra=(), xla_flags="") -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    if xla_flags:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags).strip()
    proc = subprocess.run([sys.executable, __file__, *argv, "--worker", framework, "--model", model,
                           *extra], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{framework} {model} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        result = (jax_worker if args.worker == "jax" else torch_worker)(args)
        print(json.dumps(result))
        return 0
    frameworks = args.frameworks.split(",")
    base, skip = [], False  # the workers' arguments: the driver-only options left out
    for a in argv:
        if skip or a.startswith(("--pack", "--torch-bf16", "--json-out", "--repeats")):
            skip = a in ("--json-out", "--packer", "--pack-lengths", "--repeats")
            continue
        base.append(a)
    print(f"batch {args.batch}, lengths {args.lengths[0]}/{args.lengths[1]}, vocab {args.vocab}, "
          f"ours: {args.dtype} activations, Adafactor, remat {args.remat}, microbatches "
          f"{args.microbatches}; torch: {args.threads} threads, transformers {args.torch_optimizer}")
    header = (f"{'run':<26}{'steps/s':>9}{'tokens/s':>10}{'real tok/s':>11}{'ex/s':>7}"
              f"{'peak GF/s':>10}{'MFU':>7}{'RSS GiB':>8}{'end RSS':>8}")
    print(header)
    for model in args.models.split(","):
        results = []  # (repeat, row name, result), each row printed as soon as it is measured
        for i, (name, framework, extra, flags) in repeated_runs(planned_runs(args, frameworks), args.repeats):
            r = run_worker(base, framework, model, extra, flags)
            results.append((i, name, r))
            label = f"{model} {name}" + (f" #{i + 1}" if args.repeats > 1 else "")
            print(f"{label:<26}{r['steps_per_s']:>9.3f}{r['tokens_per_s']:>10,.0f}"
                  f"{r['real_tokens_per_s']:>11,.0f}{r['examples_per_s']:>7.1f}"
                  f"{r['matmul_peak_gflops']:>10.0f}{r['mfu']:>7.1%}{r['peak_rss_gib']:>8.2f}"
                  f"{r.get('end_rss_gib', float('nan')):>8.2f}",
                  flush=True)
            if args.json_out:
                with open(args.json_out, "a") as f:
                    f.write(json.dumps({"run": name, "repeat": i, **r}) + "\n")
        for name in ("ours", "ours packed"):
            ratios = ratios_per_repeat(results, name)
            if len(ratios) == 1:
                print(f"  {model}: {name} / best transformers run, real tokens/s: {ratios[0]:.2f}x")
            elif ratios:
                print(f"  {model}: {name} / best transformers run of the same repeat, real tokens/s: "
                      + ", ".join(f"{x:.2f}x" for x in ratios)
                      + f"; median {statistics.median(ratios):.2f}x, min {min(ratios):.2f}x")
        if args.repeats > 1:
            for name in dict.fromkeys(n for _, n, _ in results):
                rates = [r["real_tokens_per_s"] for _, n, r in results if n == name]
                print(f"  {model}: {name}: median {statistics.median(rates):,.0f} real tok/s "
                      f"(min {min(rates):,.0f}, max {max(rates):,.0f}, {len(rates)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
