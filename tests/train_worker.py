"""Runs trainer scenarios in a fresh process and writes what they produced as JSON for the tests.

The trainer's tests need a JAX configured differently from the pytest process (8 host devices for
the mesh scenarios, a persistent compilation cache shared by the runs), so each group of
scenarios runs here, once per test module: `python tests/train_worker.py GROUP OUT.json WORKDIR`.
Each scenario records observations only (losses, shardings, file contents, error messages); the
assertions live in the test modules. A scenario that raises records the error instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import traceback
from pathlib import Path

import jax
import numpy as np

import train_fixtures as fx
from instructrec_jax import data_pipeline, optimizers, partitioning, train
from instructrec_jax.checkpoints import manager


def _train(model_dir, partitioner, *, steps=20, model=None, optimizer=None, period=None, **kw):
    return train.train(
        model=model or fx.tiny_model(),
        train_dataset_cfg=data_pipeline.DatasetConfig(fx.TASK, fx.LENGTHS, batch_size=8),
        partitioner=partitioner,
        optimizer=optimizer or optimizers.adafactor(1e-3),
        model_dir=str(model_dir),
        total_steps=steps,
        checkpoint_cfg=manager.CheckpointConfig(period=period or steps, async_save=True),
        log_every=10,
        write_summaries=False,
        **kw,
    )


def _specs(tree) -> dict[str, list]:
    return {name: [None if a is None else (list(a) if isinstance(a, tuple) else a)
                   for a in leaf.sharding.spec]
            for name, leaf in manager.named_leaves(tree)}


def _values(tree) -> dict[str, np.ndarray]:
    return {name: np.asarray(jax.device_get(leaf)) for name, leaf in manager.named_leaves(tree)}


def _cli(argv) -> dict:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train.main(argv)
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


# -- 8 host devices ---------------------------------------------------------------------------


def mesh_group(work: Path) -> dict:
    assert jax.device_count() == 8, jax.devices()
    results: dict = {}
    meshes = {
        "1x1": partitioning.Partitioner(devices=jax.devices()[:1]),
        "4x2": partitioning.Partitioner(2),
        "2x4": partitioning.Partitioner(4),
    }
    # Adafactor slots of a matrix big enough to be factored, on the 4x2 mesh.
    p = meshes["4x2"]
    abstract = {"wi": jax.ShapeDtypeStruct((256, 512), np.float32),
                "bias": jax.ShapeDtypeStruct((512,), np.float32)}
    shardings = {"wi": p.sharding(("embed", "mlp")), "bias": p.sharding(("mlp",))}
    adafactor = optimizers.adafactor().transform
    slots = p.optimizer_state_shardings(adafactor, jax.eval_shape(adafactor.init, abstract),
                                        abstract, shardings)
    results["factored_slots"] = {name: [None if a is None else a for a in s.spec]
                                 for name, s in manager.named_leaves(slots)}
    # 2-D (FSDP) parameter shardings of the test model on the 4x2 mesh.
    fsdp_layout = train.state_layout(fx.tiny_model(), optimizers.adafactor(1e-3),
                                     partitioning.Partitioner(2, fsdp=True), fx.LENGTHS)
    results["fsdp_param_specs"] = {name: list(s.spec) for name, s in
                                   manager.named_leaves(fsdp_layout.shardings.params)}
    finals = {}
    for name, partitioner in meshes.items():
        summary = _train(work / name, partitioner, period=10)
        finals[name] = summary.state
        results[name] = {
            "losses": [loss for _, loss in summary.losses],
            "param_specs": _specs(summary.state.params),
            "opt_state_specs": _specs(summary.state.opt_state),
            "model_info": (work / name / "model-info.txt").read_text(),
        }
    # Restore the 4x2 checkpoint onto the 2x4 mesh and onto one device.
    saved = _values(finals["4x2"].params)
    restored = {}
    for name in ("2x4", "1x1"):
        partitioner = meshes[name]
        layout = train.state_layout(fx.tiny_model(), optimizers.adafactor(1e-3), partitioner,
                                    fx.LENGTHS)
        checkpointer = manager.TrainCheckpointer(str(work / "4x2"))
        state, data_state, metadata = checkpointer.restore(20, layout.abstract_state)
        checkpointer.close()
        values = _values(state.params)
        restored[name] = {
            "equal": all(np.array_equal(values[k], saved[k]) for k in saved),
            "mesh_shape": dict(next(iter(jax.tree_util.tree_leaves(state.params))).sharding.mesh.shape),
            "param_specs": _specs(state.params),
            "step": int(state.step),
            "data_state": data_state,
            "metadata_mesh": metadata["mesh"],
        }
    results["restored"] = restored
    # Resume the 4x2 run's step-10 checkpoint on the 2x4 mesh and train to step 20 again.
    (work / "4x2-then-2x4" / "checkpoints").mkdir(parents=True)
    shutil.copytree(work / "4x2" / "checkpoints" / "10", work / "4x2-then-2x4" / "checkpoints" / "10")
    other = _train(work / "4x2-then-2x4", meshes["2x4"], period=10)
    results["continued_on_2x4"] = {"resumed_from": other.resumed_from, "losses": other.losses}
    return results


# -- one device ----------------------------------------------------------------------------


def single_group(work: Path) -> dict:
    results: dict = {}
    gin_file = fx.write_model_gin(work)
    run_dir = work / "run"
    base = fx.train_command(gin_file, run_dir, steps=8)[3:]  # drop "python -m module"

    def scenario(name, fn):
        try:
            results[name] = fn()
        except Exception as error:  # recorded for the test to show
            results[name] = {"error": f"{type(error).__name__}: {error}",
                             "traceback": traceback.format_exc()}

    def gin_run():
        out = _cli(base + ["--gin.SAVE_PERIOD=4", "--gin.LOG_EVERY=4", "--gin.EVAL_PERIOD=8",
                           "--gin.EVAL_STEPS=2"])
        out["config_gin"] = (run_dir / "config.gin").read_text()
        out["model_info"] = (run_dir / "model-info.txt").read_text()
        out["checkpoints"] = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
        out["summaries"] = {sub: _read_scalars(run_dir / sub) for sub in ("train", "training_eval")}
        return out

    scenario("gin_run", gin_run)

    def incomplete():
        copy = work / "incomplete"
        shutil.copytree(run_dir, copy)
        broken = copy / "checkpoints" / "12"
        (broken / "params").mkdir(parents=True)
        (broken / "params" / "_METADATA").write_text("{")  # a crash mid-copy
        (copy / "checkpoints" / "16.orbax-checkpoint-tmp-1234" / "params").mkdir(parents=True)
        latest_before = manager.TrainCheckpointer(str(copy)).latest_step()
        argv = fx.train_command(gin_file, copy, steps=12)[3:] + ["--gin.SAVE_PERIOD=4",
                                                                 "--gin.EVAL_PERIOD=0"]
        out = _cli(argv)
        out["latest_before"] = latest_before
        out["entries_after"] = sorted(p.name for p in (copy / "checkpoints").iterdir())
        out["final_step"] = manager.TrainCheckpointer(str(copy)).latest_step()
        return out

    scenario("incomplete", incomplete)

    scenario("unknown_task", lambda: _cli(
        fx.train_command(gin_file, work / "unknown", steps=2)[3:]
        + ['--gin.MIXTURE_OR_TASK_NAME="no_such_task"']))
    scenario("vocabulary_too_large", lambda: _cli(
        fx.train_command(gin_file, work / "vocab", steps=2)[3:] + ["--gin.NUM_EMBEDDINGS=128"]))

    def nan():
        # A sane rate for 4 steps, then an injected NaN: the update of step 5 poisons the
        # parameters, so the loss of step 6 is the first NaN.
        schedule = lambda step: jax.numpy.where(step < 4, 1e-3, jax.numpy.nan)  # noqa: E731
        try:
            _train(work / "nan", partitioning.Partitioner(), steps=12, period=2,
                   optimizer=optimizers.adafactor(schedule))
        except train.NonFiniteLossError as error:
            message = str(error)
        else:
            message = None
        checkpointer = manager.TrainCheckpointer(str(work / "nan"))
        kept = checkpointer.latest_step()
        checkpointer.close()
        params = manager.load_weights(str(work / "nan"), _abstract_params()).params
        finite = all(bool(np.isfinite(v).all()) for v in _values(params).values())
        return {"message": message, "kept_step": kept, "kept_params_finite": finite}

    scenario("nan", nan)

    hf_weights = None

    def hf_initial():
        from instructrec_jax.checkpoints import hf

        model = fx.tiny_model()
        params = jax.tree_util.tree_map(
            lambda x: np.asarray(x) + np.float32(0.5),  # unlike any random init
            jax.device_get(model.init_params(jax.random.PRNGKey(7), None)))
        params = _unboxed(params)
        hf.save_hf_checkpoint(model.config, params, work / "hf")
        nonlocal hf_weights
        hf_weights = params
        # With an initializer configured too: the initial checkpoint wins, with a warning.
        record = work / "hf_initial_init_calls.txt"
        (work / "hf_initial_gin").mkdir(exist_ok=True)
        out = _cli(fx.train_command(gin_file, work / "from_hf", steps=2)[3:] + [
            f"--gin_file={fx.param_init_gin(work / 'hf_initial_gin', 0.125, record)}",
            "--gin.LEARNING_RATE=0.0", "--gin.EVAL_PERIOD=0",
            f'--gin.INITIAL_CHECKPOINT_PATH="{work / "hf"}"'])
        out["initializer_calls"] = record.read_text(encoding="utf-8").count("ran") if record.exists() else 0
        trained = manager.load_weights(str(work / "from_hf"), _abstract_params())
        original = _values(params)
        after = _values(trained.params)
        out["step"] = trained.step
        out["identical"] = sorted(original) == sorted(after) and all(
            np.array_equal(original[k], after[k]) for k in original)
        return out

    scenario("hf_initial", hf_initial)

    def hf_initial_new_head():
        # the HF weights of hf_initial, fine-tuned with a copy head they do not have
        extra = ["--gin.LEARNING_RATE=0.0", "--gin.EVAL_PERIOD=0",
                 "--gin.config.T5Config.pointer_generator=True",
                 f'--gin.INITIAL_CHECKPOINT_PATH="{work / "hf"}"']
        refused = _cli(fx.train_command(gin_file, work / "new_head_strict", steps=2)[3:] + extra)
        out = _cli(fx.train_command(gin_file, work / "new_head", steps=2)[3:] + extra + [
            "--gin.manager.CheckpointConfig.initial_checkpoint_strict=False"])
        out["refused"] = {k: refused[k] for k in ("code", "stderr")}
        trained = _values(manager.load_weights(
            str(work / "new_head"), manager.abstract_params_for(fx.tiny_model(pointer_generator=True))
        ).params)
        original = _values(_unboxed(jax.device_get(hf_weights)))
        out["plain_identical"] = all(np.array_equal(original[k], trained[k]) for k in original)
        out["new"] = sorted(set(trained) - set(original))
        # as the head initialises them: random query and key, a zero gate (g = 0.5)
        out["new_max_abs"] = {k: float(np.abs(trained[k]).max()) for k in out["new"]}
        return out

    scenario("hf_initial_new_head", hf_initial_new_head)

    def param_init():
        record = work / "param_init_calls.txt"
        extra = [f"--gin_file={fx.param_init_gin(work, 0.125, record)}", "--gin.LEARNING_RATE=0.0",
                 "--gin.EVAL_PERIOD=0", "--gin.SAVE_PERIOD=2"]
        first = _cli(fx.train_command(gin_file, work / "param_init", steps=2)[3:] + extra)
        again = _cli(fx.train_command(gin_file, work / "param_init", steps=4)[3:] + extra)
        trained = manager.load_weights(str(work / "param_init"), _abstract_params())
        embedding = _values(trained.params)["token_embedder/embedding"]
        return {"codes": [first["code"], again["code"]], "stderr": first["stderr"] + again["stderr"],
                "resumed": "resumed from" in again["stdout"], "step": trained.step,
                "embedding_values": sorted({float(v) for v in np.unique(embedding)}),
                "calls": record.read_text(encoding="utf-8").count("ran")}

    scenario("param_init", param_init)

    def t5x_initial():
        from test_t5x_import import write_t5x_checkpoint

        model = fx.tiny_model()
        params = _unboxed(jax.device_get(model.init_params(jax.random.PRNGKey(8), None)))
        flat = {name: np.asarray(value) - np.float32(0.25) for name, value in _values(params).items()}
        write_t5x_checkpoint(work / "checkpoint_1000", flat, step=1000)
        out = _cli(fx.train_command(gin_file, work / "from_t5x", steps=1002)[3:] + [
            "--gin.LEARNING_RATE=0.0", "--gin.EVAL_PERIOD=0",
            f'--gin.INITIAL_CHECKPOINT_PATH="{work / "checkpoint_1000"}"'])
        trained = manager.load_weights(str(work / "from_t5x"), _abstract_params())
        after = _values(trained.params)
        out["step"] = trained.step
        out["checkpoints"] = sorted(p.name for p in (work / "from_t5x" / "checkpoints").iterdir())
        out["identical"] = sorted(flat) == sorted(after) and all(
            np.array_equal(flat[k], after[k]) for k in flat)
        return out

    scenario("t5x_initial", t5x_initial)

    def microbatches():
        from instructrec_jax import train_state

        model = fx.tiny_model(loss_normalizing_factor="NUM_REAL_TARGET_TOKENS")
        params = _unboxed(model.init_params(jax.random.PRNGKey(0), None))
        layout = partitioning.Partitioner().data_layout(8)
        cfg = data_pipeline.DatasetConfig(fx.TASK, fx.LENGTHS, batch_size=8)
        batch = next(data_pipeline.local_batches(cfg, layout).as_numpy_iterator())
        outs = {}
        for m in (1, 4):
            fn = jax.jit(lambda p, b, m=m: train_state.loss_and_grads(
                model.loss_fn, p, b, None, num_microbatches=m,
                loss_normalizing_factor=model.loss_normalizing_factor))
            outs[m] = jax.device_get(fn(params, batch))
        grads1 = _values(outs[1][1])
        grads4 = _values(outs[4][1])
        worst = max(float(np.max(np.abs(grads1[k] - grads4[k])) / (np.max(np.abs(grads1[k])) + 1e-12))
                    for k in grads1)
        return {"loss": [float(outs[1][0]), float(outs[4][0])], "worst_grad_rel_diff": worst,
                "accuracy": [float(outs[1][2]["accuracy"]), float(outs[4][2]["accuracy"])]}

    scenario("microbatches", microbatches)
    return results


def _unboxed(tree):
    import flax.linen as nn

    return nn.unbox(tree)


def _abstract_params():
    return manager.abstract_params_for(fx.tiny_model())


def _read_scalars(directory: Path) -> dict[str, list]:
    import tensorflow as tf

    scalars: dict[str, list] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append([event.step, value.simple_value])
    return scalars


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


if __name__ == "__main__":
    group, out_path, workdir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    workdir.mkdir(parents=True, exist_ok=True)
    result = {"mesh": mesh_group, "single": single_group}[group](workdir)
    out_path.write_text(json.dumps(_jsonable(result), indent=1))
