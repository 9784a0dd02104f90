"""Plans the memory of a full Flan-T5 training step on a mesh, ahead of time, without any accelerator.

    python tools/aot_memory_plan.py --model xl --devices 8 --mesh 8x1 --batch 128 --lengths 512/64
    python tools/aot_memory_plan.py --model xxl --devices 64 --mesh 16x4 --fsdp

It simulates `--devices` CPU devices (XLA_FLAGS, set here before JAX starts), builds the train
state abstractly (`jax.eval_shape`: no parameter is ever allocated) with the shardings the trainer
would use, lowers and compiles the trainer's own jitted step for those shardings, and prints the
parameter count, the optimiser-state size and the per-device memory that the compiled executable
reports (`compiled.memory_analysis()`: arguments, outputs, temporaries, generated code).

The figures come from XLA's CPU compiler: an accelerator compiler fuses and lays out differently,
so treat them as a plan (which mesh fits, what FSDP or remat buys), not a promise to the byte.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="xl", help="tiny, small, base, large, xl or xxl")
    parser.add_argument("--devices", type=int, default=8, help="simulated devices")
    parser.add_argument("--mesh", default=None, help="DATAxMODEL, e.g. 4x2 (default: all data)")
    parser.add_argument("--batch", type=int, default=128, help="global batch size")
    parser.add_argument("--lengths", default="512/64", help="inputs/targets lengths")
    parser.add_argument("--fsdp", action="store_true", help="2-D parameter sharding (embed->data)")
    parser.add_argument("--microbatches", type=int, default=1)
    parser.add_argument("--remat", default="none", help="model remat policy: none, minimal, full")
    parser.add_argument("--dtype", default="bfloat16", help="activation dtype")
    parser.add_argument("--vocab", type=int, default=32128)
    parser.add_argument("--no-pack", dest="pack", action="store_false",
                        help="unpacked batches (no segment ids / positions)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Must happen before JAX initialises its CPU backend.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import jax

    from instructrec_jax import data_pipeline, optimizers, partitioning, train, train_state
    from instructrec_jax.model.config import T5Config, num_params
    from instructrec_jax.model.encoder_decoder import EncoderDecoderModel

    if jax.device_count() != args.devices:
        print(f"asked for {args.devices} devices, JAX sees {jax.device_count()} "
              f"({jax.devices()[0].platform}); was JAX initialised before?", file=sys.stderr)
        return 2
    data, model_axis = (partitioning.mesh_shape_from_string(args.mesh) if args.mesh
                        else (args.devices, 1))
    inputs_length, targets_length = (int(x) for x in args.lengths.split("/"))
    config = T5Config.preset(args.model, vocab_size=args.vocab, dtype=args.dtype,
                             remat_policy=args.remat)
    model = EncoderDecoderModel(config)
    partitioner = partitioning.Partitioner(model_axis, data_axis_size=data, fsdp=args.fsdp)
    optimizer = optimizers.adafactor()
    lengths = {"inputs": inputs_length, "targets": targets_length}
    layout = train.state_layout(model, optimizer, partitioner, lengths)
    shapes = data_pipeline.encdec_batch_shapes(args.batch, inputs_length, targets_length,
                                               pack=args.pack)
    batch = {name: jax.ShapeDtypeStruct(shape, "int32" if "weights" not in name else "float32",
                                        sharding=partitioner.batch_sharding(len(shape)))
             for name, shape in shapes.items()}
    step = partitioner.jit(
        train_state.make_train_step(model.loss_fn, optimizer, num_microbatches=args.microbatches,
                                    loss_normalizing_factor=model.loss_normalizing_factor),
        in_shardings=(layout.shardings, {k: v.sharding for k, v in batch.items()}),
        out_shardings=(layout.shardings, partitioner.replicated),
        donate_argnums=(0,),
    )
    start = time.perf_counter()
    lowered = step.lower(layout.abstract_state, batch)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    memory = compiled.memory_analysis()

    params = layout.abstract_state.params
    param_count = sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
    param_bytes = partitioning.array_bytes(params)
    opt_bytes = partitioning.array_bytes(layout.abstract_state.opt_state)
    gib = 2 ** 30
    print(f"Flan-T5 {args.model}: {args.devices} devices, mesh {data}x{model_axis} (data x model), "
          f"fsdp={args.fsdp}, batch {args.batch}, lengths {inputs_length}/{targets_length}, "
          f"pack={args.pack}, microbatches {args.microbatches}, remat {args.remat}, "
          f"activations {args.dtype}")
    print(f"parameters:          {param_count:,} (num_params(config) = {num_params(config):,}); "
          f"{param_bytes / gib:.2f} GiB float32")
    print(f"optimizer state:     {opt_bytes / gib:.3f} GiB = {opt_bytes / 2**20:,.1f} MiB "
          "(Adafactor, factored second moments)")
    print(f"per-device state:    {_per_device_bytes(layout.abstract_state) / gib:.2f} GiB "
          "(params + optimizer state, as sharded)")
    print("per-device memory of the compiled train step (XLA memory_analysis):")
    rows = [("arguments", memory.argument_size_in_bytes),
            ("outputs", memory.output_size_in_bytes),
            ("aliased (donated)", memory.alias_size_in_bytes),
            ("temporaries", memory.temp_size_in_bytes),
            ("generated code", memory.generated_code_size_in_bytes)]
    for name, value in rows:
        print(f"  {name:<20} {value / gib:9.2f} GiB")
    total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
             - memory.alias_size_in_bytes + memory.temp_size_in_bytes
             + memory.generated_code_size_in_bytes)
    print(f"  {'total per device':<20} {total / gib:9.2f} GiB "
          "(arguments + outputs - aliased + temporaries + code)")
    print(f"lower {lowered_at - start:.1f} s, compile {compiled_at - lowered_at:.1f} s")
    return 0


def _per_device_bytes(abstract_state) -> int:
    import math

    import jax
    import numpy as np

    total = 0
    for leaf in jax.tree_util.tree_leaves(abstract_state):
        shard = leaf.sharding.shard_shape(leaf.shape)
        total += math.prod(shard) * np.dtype(leaf.dtype).itemsize
    return total


if __name__ == "__main__":
    sys.exit(main())
