"""Training-step throughput and memory on one GPU: our JAX step vs transformers' PyTorch T5.

    python tools/bench_gpu.py --models small,base,large,xl --batch 32 --lengths 512/64

The accelerator counterpart of bench_train.py (same synthetic batches with realistic padding,
same FLOP count, same transformers model and Adafactor), for a machine whose image has JAX with
CUDA, PyTorch and transformers but not our data stack (seqio, TensorFlow): it builds our step from
the model, optimiser and train-state modules directly (the trainer's own `make_train_step`,
jitted with the state donated) rather than through `train.state_layout`. Ours runs bfloat16
activations with float32 parameters (T5X's default), transformers runs under bfloat16 autocast.
Each run is a fresh process, so the peak device memory (JAX's allocator statistics;
torch.cuda.max_memory_allocated) is per run. MFU is against a bfloat16 square matmul (8192³ by default) measured in
the same process just before. Each result is printed as a JSON line and a table row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_train  # noqa: E402  (the shared batches and FLOP count)


def _peak(matmul, n, repeats=10) -> float:
    matmul()
    best = min(bench_train.timed(matmul) for _ in range(repeats))
    return 2 * n ** 3 / best


def _jax_peak(n: int) -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.bfloat16)
    mm = jax.jit(lambda x: x @ x)
    return _peak(lambda: mm(a).block_until_ready(), n)


def _torch_peak(n: int) -> float:
    import torch

    a = torch.ones((n, n), dtype=torch.bfloat16, device="cuda")

    def mm():
        a @ a
        torch.cuda.synchronize()

    return _peak(mm, n)


def jax_worker(args) -> dict:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from instructrec_jax import optimizers, train_state
    from instructrec_jax.model.config import preset_config
    from instructrec_jax.model.encoder_decoder import EncoderDecoderModel

    peak = _jax_peak(args.peak_n)  # its operand is freed before the model's memory is counted
    config = preset_config(args.model, vocab_size=args.vocab, dropout_rate=0.1, dtype="bfloat16",
                           remat_policy=args.remat)
    model = EncoderDecoderModel(config)
    optimizer = optimizers.adafactor(1e-3)
    state = jax.jit(lambda: train_state.init_train_state(
        nn.unbox(model.init_params(jax.random.PRNGKey(0), None)), optimizer))()
    inputs_length, targets_length = args.lengths
    examples = bench_train.synthetic_examples(args.batch, inputs_length, targets_length, args.vocab)
    batch = {k: jnp.asarray(v) for k, v in
             bench_train.unpacked_batch(examples, inputs_length, targets_length).items()}
    step = jax.jit(train_state.make_train_step(model.loss_fn, optimizer), donate_argnums=(0,))
    def one_step():
        nonlocal state
        state, metrics = step(state, batch)
        return jax.block_until_ready(metrics)

    compile_s, times, metrics = bench_train.time_steps(one_step, args.steps)
    stats = jax.devices()[0].memory_stats() or {}
    real = bench_train.real_tokens(batch)
    return _result("jax", args, times, real, peak, compile_s=compile_s,
                   peak_device_gib=stats.get("peak_bytes_in_use", float("nan")) / 2**30,
                   device=str(jax.devices()[0].device_kind), loss=float(metrics["loss"]))


def torch_worker(args) -> dict:
    import torch
    import transformers
    from transformers.optimization import Adafactor

    peak = _torch_peak(args.peak_n)
    torch.manual_seed(0)
    d, ff, heads, d_kv, enc, dec = bench_train.SIZES[args.model]
    config = transformers.T5Config(
        vocab_size=args.vocab, d_model=d, d_ff=ff, num_heads=heads, d_kv=d_kv, num_layers=enc,
        num_decoder_layers=dec, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        dropout_rate=0.1, relative_attention_num_buckets=32, relative_attention_max_distance=128,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(config).cuda().train()
    optimizer = Adafactor(model.parameters(), lr=1e-3, scale_parameter=True, relative_step=False,
                          warmup_init=False, decay_rate=-0.8, clip_threshold=1.0)
    inputs_length, targets_length = args.lengths
    examples = bench_train.synthetic_examples(args.batch, inputs_length, targets_length, args.vocab)
    batch = bench_train.unpacked_batch(examples, inputs_length, targets_length)
    input_ids = torch.from_numpy(batch["encoder_input_tokens"]).long().cuda()
    labels = torch.from_numpy(batch["decoder_target_tokens"]).long().cuda()
    decoder_input_ids = torch.from_numpy(batch["decoder_input_tokens"]).long().cuda()
    decoder_attention_mask = (labels > 0).long()
    decoder_attention_mask[:, 0] = 1
    labels = labels.masked_fill(labels == 0, -100)

    def one_step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=input_ids, attention_mask=(input_ids > 0).long(),
                        decoder_input_ids=decoder_input_ids,
                        decoder_attention_mask=decoder_attention_mask, labels=labels)
        out.loss.backward()
        optimizer.step()
        torch.cuda.synchronize()
        return float(out.loss)

    first_s, times, loss = bench_train.time_steps(one_step, args.steps)
    real = bench_train.real_tokens(batch)
    return _result("torch", args, times, real, peak, compile_s=first_s,
                   peak_device_gib=torch.cuda.max_memory_allocated() / 2**30,
                   device=torch.cuda.get_device_name(0), loss=loss)


def _result(framework, args, times, real_tokens, peak, **extra) -> dict:
    inputs_length, targets_length = args.lengths
    step_s = statistics.median(times)
    flops = bench_train.train_flops(args.model, args.batch, inputs_length, targets_length, args.vocab)
    return {"framework": framework, "model": args.model, "batch": args.batch,
            "lengths": list(args.lengths), "step_s": step_s, "steps_per_s": 1 / step_s,
            "tokens_per_s": args.batch * (inputs_length + targets_length) / step_s,
            "real_tokens_per_s": real_tokens / step_s, "matmul_peak_tflops": peak / 1e12,
            "model_tflops_per_s": flops / step_s / 1e12, "mfu": flops / step_s / peak, **extra}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="small,base,large")
    parser.add_argument("--frameworks", default="jax,torch")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lengths", default="512/64", help="inputs/targets")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after one warm-up)")
    parser.add_argument("--vocab", type=int, default=32128)
    parser.add_argument("--remat", default="none")
    parser.add_argument("--peak-n", type=int, default=8192, help="size of the peak matmul probe")
    parser.add_argument("--json-out", default=None, help="append each result as a JSON line")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.lengths = tuple(int(x) for x in args.lengths.split("/"))
    if args.worker:
        print(json.dumps((jax_worker if args.worker == "jax" else torch_worker)(args)))
        return 0
    print(f"{'run':<14}{'batch':>6}{'steps/s':>9}{'tok/s':>10}{'real tok/s':>11}"
          f"{'peak TF/s':>10}{'MFU':>7}{'device GiB':>11}{'compile s':>10}", flush=True)
    failed = 0
    for model in args.models.split(","):
        for framework in args.frameworks.split(","):
            if framework == "torch" and model not in bench_train.SIZES:
                continue
            proc = subprocess.run([sys.executable, __file__, *argv, "--worker", framework,
                                   "--model", model], capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode or not lines:
                failed += 1
                print(f"{framework} {model} failed:\n{proc.stderr[-2000:]}", flush=True)
                continue
            r = json.loads(lines[-1])
            if args.json_out:
                with open(args.json_out, "a") as f:
                    f.write(json.dumps(r) + "\n")
            print(f"{model + ' ' + ('ours' if framework == 'jax' else 'hf'):<14}{r['batch']:>6}"
                  f"{r['steps_per_s']:>9.2f}{r['tokens_per_s']:>10,.0f}{r['real_tokens_per_s']:>11,.0f}"
                  f"{r['matmul_peak_tflops']:>10.0f}{r['mfu']:>7.1%}{r['peak_device_gib']:>11.1f}"
                  f"{r['compile_s']:>10.1f}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
