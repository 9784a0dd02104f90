"""Many short sequential-recommendation trainings from one exported bundle (issue 6, exploration).

    # here (needs the data stack): tokenise a prepared dataset's sequential task once
    python tools/sweep.py export --data-dir demo_output/prepared --dataset ml100kdemo3p \
        --seeds 0,1,2 --out /tmp/bundle.npz
    # anywhere JAX, flax, optax and gin run (e.g. a GPU machine without seqio or TensorFlow)
    python tools/sweep.py run --bundle /tmp/bundle.npz --configs configs.json --out results.jsonl
    # several processes sharing one GPU (a small model leaves it mostly idle): --shard 0/4 ... 3/4;
    # --steps-per-call K runs K optimiser steps per device call (lax.scan; the same steps)

`tools/ablate.py` measures a row with the real commands (seqio pipeline, Orbax checkpoints, the
evaluator); that costs minutes per run on this CPU. This tool trades fidelity for speed so that
many levers can be screened: the same model (`EncoderDecoderModel`), loss, Adafactor, schedule and
train step as the trainer, fed from arrays tokenised exactly as the SeqIO task does (inputs
trimmed, EOS appended, padded), the initial parameters of the demo recipe (random, then the
next-item PPMI item factors of `item_init`), and candidate scoring as the evaluator does it for
one-token item targets: log p(item) + log p(EOS | item) + w · log popularity, w chosen on
validation by NDCG@5 over every template, pessimistic ties, test reported for the template with
the best validation NDCG@5 (as `ablate.py`'s table rows), for all templates and without the prior;
the validation figures (all templates, with the chosen weight) are the ones to choose levers by. What differs from the trainer: the
data order (a seeded permutation per pass instead of SeqIO's shuffle buffer) and the random
initialisation's seed derivation. Rows for BENCHMARKS.md come from `ablate.py`; this tool's
numbers say which rows are worth that cost.

A config is a JSON object; keys (defaults): name, seed (0), steps (6000), batch (32),
lr (3e-3), schedule ('constant * linear_decay'), warmup (0), dropout (0.0), passes (1: the
training records of the first pass only; k: the first k passes of `prepare --train-passes`, read
pass after pass, each permuted; runs longer than that go on with permutations of all of them),
logits_via_embedding (false), label_smoothing (0.0), eval_every (0: only at the end),
pointer_generator (false: the copy head of `T5Config.pointer_generator`; its few parameters are
initialised from the seed at run time, the rest come from the bundle), candidate_orders (1: K
scores every evaluation instruction with its listed candidates and K - 1 seeded shuffles of the
list, ranking by the mean, as `instructrec eval --gin.CANDIDATE_ORDERS=K`; the one-order figures
are reported beside them under "one_order"), and the model shape: any of
`DEMO_MODEL`'s keys (d_model, d_ff, num_heads, d_kv, num_encoder_layers, num_decoder_layers;
default the demo's). A shape other than the demo's needs initial parameters of its own in the
bundle: `export --shapes '[{"d_model": 256, "d_ff": 1024, "d_kv": 64}]'` adds them (random + PPMI,
per seed, as for the demo shape); a config asking for a shape the bundle lacks is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEMO_MODEL = {"d_model": 128, "d_ff": 512, "num_heads": 4, "d_kv": 32, "num_encoder_layers": 2,
              "num_decoder_layers": 1}
PRIOR_GRID = (0.0, -0.1, -0.25, -0.5, -0.75, -1.0, -1.5, -2.0)  # as ml100k_demo_eval.gin
EOS = 1


def _model(config: dict, vocab_size: int):
    from instructrec_jax.model.config import T5Config
    from instructrec_jax.model.encoder_decoder import EncoderDecoderModel

    shape = shape_of(config)
    return EncoderDecoderModel(T5Config(
        vocab_size=vocab_size, dropout_rate=config.get("dropout", 0.0), dtype="float32",
        logits_via_embedding=config.get("logits_via_embedding", False),
        pointer_generator=bool(config.get("pointer_generator", False)), **shape), z_loss=1e-4,
        label_smoothing=config.get("label_smoothing", 0.0))


CONFIG_KEYS = ("name", "seed", "steps", "batch", "lr", "schedule", "warmup", "dropout", "passes",
               "logits_via_embedding", "label_smoothing", "eval_every", "pointer_generator",
               "candidate_orders", *DEMO_MODEL)


def check_configs(configs) -> None:
    """Refuses, before anything runs, a config list with a misspelt key (which would otherwise
    silently train with the default)."""
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise SystemExit("configs: expected a JSON list of objects")
    for i, config in enumerate(configs):
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if unknown:
            raise SystemExit(f"config {i} ({config.get('name')!r}): unknown keys {unknown}; "
                             f"known: {', '.join(CONFIG_KEYS)}")
        orders = config.get("candidate_orders", 1)
        if not isinstance(orders, int) or isinstance(orders, bool) or orders < 1:
            raise SystemExit(f"config {i} ({config.get('name')!r}): candidate_orders must be an "
                             f"integer >= 1 (1: the shown order only), got {orders!r}")


def parse_shard(value: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N: this process runs configs I, I + N, I + 2N, ..."""
    try:
        index, count = (int(x) for x in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 0/4), got {value!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected 0 <= I < N in I/N, got {value!r}")
    return index, count


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def shard_configs(configs: list, shard: tuple[int, int]) -> list:
    """The configs one of N processes sharing a device runs: every N-th, starting at I, so the
    list's first configs (the most wanted ones) start first in every process."""
    index, count = shard
    return configs[index::count]


def shape_of(config: dict) -> dict:
    """The model shape a config asks for: DEMO_MODEL with the config's overrides."""
    return {k: int(config.get(k, v)) for k, v in DEMO_MODEL.items()}


def init_prefix(seed: int, shape: dict) -> str:
    """Where the bundle keeps a seed's initial parameters for a shape ("init0/" for the demo's)."""
    if shape == DEMO_MODEL:
        return f"init{seed}/"
    return f"init{seed}@" + ",".join(f"{k}={shape[k]}" for k in DEMO_MODEL) + "/"


def _tokens(vocab, text: str, length: int) -> list[int]:
    ids = list(vocab.encode(text))[: length - 1] + [EOS]  # seqio: trim, then EOS after the trim
    return ids + [0] * (length - len(ids))


# -- export ----------------------------------------------------------------------------------------
def export(args) -> None:
    import flax.linen as nn
    import jax

    from instructrec_jax.baselines.popularity import fit_popularity
    from instructrec_jax.data.preprocess import load_prepared
    from instructrec_jax.instructions import storage
    from instructrec_jax.item_init import CooccurrenceItemInit
    from instructrec_jax.ranking import popularity_log_prior
    from instructrec_jax.vocabulary import load_vocabulary

    if not isinstance(args.shapes, list) or not all(isinstance(x, dict) for x in args.shapes):
        raise SystemExit(f"--shapes: expected a JSON list of objects, got {args.shapes!r}")
    unknown = [k for shape in args.shapes for k in shape if k not in DEMO_MODEL]
    if unknown:  # refused before minutes of tokenising
        raise SystemExit(f"--shapes: unknown keys {sorted(set(unknown))}; expected some of {list(DEMO_MODEL)}")
    path = os.path.join(args.data_dir, args.dataset)
    manifest = storage.read_manifest(path)
    vocab = load_vocabulary(os.path.join(path, manifest.get("vocabulary", "spiece.model")))
    type_name = manifest["scenarios"][args.scenario]
    li, lt = args.lengths
    out = {}
    train = list(storage.read_instructions(path, type_name, "train"))
    out["train_inputs"] = np.array([_tokens(vocab, r.inputs, li) for r in train], np.int16)
    out["train_targets"] = np.array([_tokens(vocab, r.targets, lt) for r in train], np.int16)
    out["train_pass"] = np.array([int(r.example_id.rsplit("/pass", 1)[1]) if "/pass" in r.example_id
                                  else 0 for r in train], np.int8)
    data = load_prepared(path)
    prior = popularity_log_prior(fit_popularity(data.train).counts, data.items)
    for split in ("validation", "test"):
        records = list(storage.read_instructions(path, type_name, split))
        out[f"{split}_inputs"] = np.array([_tokens(vocab, r.inputs, li) for r in records], np.int16)
        ids = []
        for r in records:
            row = [list(vocab.encode(t)) for t in r.candidate_targets]
            if any(len(t) != 1 for t in row):
                raise SystemExit(f"{r.example_id}: a candidate target is not one token; this tool "
                                 "needs a dataset prepared with --renderer id_token")
            ids.append([t[0] for t in row])
        out[f"{split}_candidates"] = np.array(ids, np.int32)
        out[f"{split}_labels"] = np.array([r.label_index for r in records], np.int32)
        templates = sorted({r.template_id for r in records})
        out[f"{split}_template"] = np.array([templates.index(r.template_id) for r in records],
                                            np.int8)
        out[f"{split}_prior"] = np.array([[prior[c] for c in r.candidates] for r in records],
                                         np.float32)
    # The model's embedding rows: the vocabulary with its sentinels, padded to a multiple of 128
    # (how the experiment gin files set NUM_EMBEDDINGS), unless given.
    vocab_size = int(args.vocab_size or -(-vocab.vocab_size // 128) * 128)
    out["vocab_size"] = np.array(vocab_size)
    for shape in [DEMO_MODEL] + [shape_of(s) for s in args.shapes]:
        for seed in args.seeds:
            model = _model(shape, vocab_size)
            params = nn.unbox(model.init_params(jax.random.PRNGKey(seed), None))
            params = CooccurrenceItemInit(dataset=path)(jax.device_get(params))
            for key, value in _flatten(params).items():
                out[f"{init_prefix(seed, shape)}{key}"] = np.asarray(value, np.float32)
    tmp = args.out + ".tmp.npz"
    try:
        np.savez_compressed(tmp, **out)
        os.replace(tmp, args.out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    print(f"export: {len(train)} training records, "
          f"{len(out['validation_labels'])}/{len(out['test_labels'])} validation/test, "
          f"seeds {args.seeds} -> {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB)")


def _flatten(tree) -> dict:
    from flax import traverse_util

    return traverse_util.flatten_dict(tree, sep="/")


def _unflatten(flat: dict) -> dict:
    from flax import traverse_util

    return traverse_util.unflatten_dict(flat, sep="/")


# -- run -------------------------------------------------------------------------------------------
def candidate_scores(model, params, enc: np.ndarray, cands: np.ndarray, batch: int = 64) -> np.ndarray:
    """[N, C] log p(item) + log p(EOS | item) of one-token item candidates: the evaluator's
    repeated-encoder path (`ranking._repeated_encoder_scores`), in fixed-size batches."""
    import jax.numpy as jnp

    from instructrec_jax.ranking import _repeated_encoder_scores

    rows = len(enc)
    pad = (-rows) % batch  # one compiled shape
    enc = np.concatenate([enc, np.zeros((pad, enc.shape[1]), enc.dtype)])
    cands = np.concatenate([cands, np.full((pad, cands.shape[1]), EOS, cands.dtype)])
    targets = np.stack([cands, np.full_like(cands, EOS)], axis=-1)
    out = [np.asarray(_repeated_encoder_scores(model, params, jnp.asarray(enc[i:i + batch], jnp.int32),
                                               jnp.asarray(targets[i:i + batch], jnp.int32)))
           for i in range(0, len(enc), batch)]
    return np.concatenate(out)[:rows].astype(np.float64)


def candidate_orders(enc: np.ndarray, cands: np.ndarray, orders: int, seed: int = 0
                     ) -> tuple[list[np.ndarray], int]:
    """The evaluation inputs re-listed in `orders` orders: the first is `enc` itself, each further
    one moves every row's candidate tokens (one token each, id_token renderer) among the positions
    the list holds them at, in a shuffle seeded by (seed, order, row); every other token stays.
    A row whose candidates do not each occur exactly once in its input (a truncated list, or an
    item also in the history) keeps its order in every copy; their number is returned."""
    out = [enc] + [enc.copy() for _ in range(orders - 1)]
    kept = 0
    for row in range(len(enc)):
        where = [np.flatnonzero(enc[row] == c) for c in cands[row]]
        if any(len(w) != 1 for w in where):
            kept += 1
            continue
        positions = np.array([w[0] for w in where])
        for k in range(1, orders):
            shuffled = np.random.default_rng([seed, k, row]).permutation(cands[row])
            out[k][row, np.sort(positions)] = shuffled
    return out, kept


def ranking_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """HR@1 and NDCG@5 through the project's one evaluation path (pessimistic ties)."""
    from instructrec_jax import metrics

    values = metrics.evaluate_rankings(list(scores), [int(x) for x in labels],
                                       tie_rule="pessimistic").values
    return {"HR@1": values["HR@1"], "NDCG@5": values["NDCG@5"]}


def make_multi_step(step_fn):
    """(state, batches stacked [K, ...]) -> (state after K steps, the K losses): `lax.scan` of the
    train step, so a call runs K optimiser steps with one dispatch. A demo-sized model leaves a
    GPU idle between per-step calls; the steps and their order are the same."""
    import jax

    def multi_step(state, batches):
        state, metrics = jax.lax.scan(step_fn, state, batches)
        return state, metrics["loss"]

    return multi_step


def run_config(config: dict, bundle, log=print, steps_per_call: int = 1, final_state: list | None = None) -> dict:
    import jax
    import jax.numpy as jnp

    from instructrec_jax import optimizers, train_state

    vocab_size = int(bundle["vocab_size"])
    model = _model(config, vocab_size)
    seed, steps, batch = config.get("seed", 0), config.get("steps", 6000), config.get("batch", 32)
    shape = shape_of(config)
    prefix = init_prefix(seed, shape)
    init = {k[len(prefix):]: bundle[k] for k in bundle.files if k.startswith(prefix)}
    if not init:
        extra = {k: v for k, v in shape.items() if v != DEMO_MODEL[k]}
        raise SystemExit(f"{config.get('name')}: the bundle has no initial parameters for seed {seed} "
                         f"and model shape {shape}" + (f"; export it with --shapes '[{json.dumps(extra)}]'"
                                                       if extra else ""))
    if config.get("pointer_generator"):  # the copy head's parameters: from the seed, not the bundle
        import flax.linen as nn

        fresh = _flatten(nn.unbox(model.init_params(jax.random.PRNGKey(seed))))
        init.update({k: v for k, v in fresh.items() if k not in init})
    params = jax.tree_util.tree_map(jnp.asarray, _unflatten(init))
    if config.get("logits_via_embedding"):
        params["decoder"].pop("logits_dense", None)
    schedule = optimizers.learning_rate_schedule(
        config.get("schedule", "constant * linear_decay"), config.get("lr", 3e-3),
        warmup_steps=config.get("warmup", 0), total_steps=steps)
    optimizer = optimizers.adafactor(schedule)
    state = train_state.init_train_state(params, optimizer)
    one_step = train_state.make_train_step(model.loss_fn, optimizer, dropout_seed=seed)
    step_fn = jax.jit(one_step, donate_argnums=(0,))
    multi_fn = jax.jit(make_multi_step(one_step), donate_argnums=(0,)) if steps_per_call > 1 else None
    keep = bundle["train_pass"] < config.get("passes", 1)
    inputs, targets = bundle["train_inputs"][keep], bundle["train_targets"][keep]
    passes = bundle["train_pass"][keep]
    rng = np.random.default_rng(seed)
    # Pass-major order, each pass permuted: with k passes exported the run reads pass 0, 1, ...
    order = np.concatenate([rng.permutation(np.flatnonzero(passes == p)) for p in np.unique(passes)])
    need = steps * batch
    while len(order) < need:
        order = np.concatenate([order, rng.permutation(len(inputs))])

    def features(enc, tgt):  # [batch, length], or [K, batch, length] for K steps
        dec_in = np.zeros_like(tgt)
        dec_in[..., 1:] = tgt[..., :-1]
        return {"encoder_input_tokens": jnp.asarray(enc, jnp.int32),
                "decoder_input_tokens": jnp.asarray(dec_in, jnp.int32),
                "decoder_target_tokens": jnp.asarray(tgt, jnp.int32),
                "decoder_loss_weights": jnp.asarray(tgt > 0, jnp.float32)}

    orders = int(config.get("candidate_orders", 1))
    relisted, unshuffled = {}, {}
    for split in ("validation", "test"):
        relisted[split], unshuffled[split] = candidate_orders(
            bundle[f"{split}_inputs"], bundle[f"{split}_candidates"], orders, seed=0)
    if orders > 1 and any(unshuffled.values()):
        log(f"  {config.get('name')}: kept the shown order of {unshuffled} instructions whose "
            "candidates are not each listed exactly once")

    def evaluate(params) -> dict:
        per_order = {split: [candidate_scores(model, params, enc, bundle[f"{split}_candidates"])
                             for enc in relisted[split]] for split in relisted}
        result = metrics_of({split: np.mean(s, axis=0) for split, s in per_order.items()})
        if orders > 1:
            one = metrics_of({split: s[0] for split, s in per_order.items()})
            result["one_order"] = {k: one[k] for k in ("valid_HR@1", "valid_NDCG@5", "HR@1", "NDCG@5",
                                                        "prior_weight")}
        return result

    def metrics_of(scored: dict) -> dict:
        valid = {w: ranking_metrics(scored["validation"] + w * bundle["validation_prior"],
                                    bundle["validation_labels"])["NDCG@5"] for w in PRIOR_GRID}
        best = min(valid, key=lambda w: (-valid[w], abs(w), w))
        valid_scores = scored["validation"] + best * bundle["validation_prior"]
        test_scores = scored["test"] + best * bundle["test_prior"]
        # The template with the best validation NDCG@5 (ties: the first), as the table reports.
        by_template = {t: ranking_metrics(valid_scores[bundle["validation_template"] == t],
                                          bundle["validation_labels"][bundle["validation_template"] == t])
                       for t in np.unique(bundle["validation_template"])}
        template = min(by_template, key=lambda t: (-by_template[t]["NDCG@5"], t))
        chosen = bundle["test_template"] == template
        test = ranking_metrics(test_scores[chosen], bundle["test_labels"][chosen])
        every = ranking_metrics(test_scores, bundle["test_labels"])
        plain = ranking_metrics(scored["test"], bundle["test_labels"])
        overall = ranking_metrics(valid_scores, bundle["validation_labels"])
        return {"prior_weight": best, "template": int(template),
                "valid_HR@1": overall["HR@1"], "valid_NDCG@5": overall["NDCG@5"], "HR@1": test["HR@1"],
                "NDCG@5": test["NDCG@5"], "HR@1_all_templates": every["HR@1"],
                "NDCG@5_all_templates": every["NDCG@5"], "HR@1_likelihood": plain["HR@1"],
                "NDCG@5_likelihood": plain["NDCG@5"]}

    start, curve, losses, eval_s = time.perf_counter(), [], [], 0.0
    every = config.get("eval_every", 0)
    step = 0
    while step < steps:
        # K steps per call where K whole steps fit before the next evaluation and the end; the
        # remainder one step per call (same steps, same order, same data either way).
        stop = min(steps, (step // every + 1) * every) if every else steps
        count = steps_per_call if multi_fn is not None and stop - step >= steps_per_call else 1
        idx = order[step * batch:(step + count) * batch]
        if count > 1:
            idx = idx.reshape(count, batch)
            state, chunk = multi_fn(state, features(inputs[idx], targets[idx]))
            chunk = np.asarray(chunk)
        else:
            state, metrics = step_fn(state, features(inputs[idx], targets[idx]))
            chunk = [metrics["loss"]]
        for i, loss in enumerate(chunk):
            if (step + i + 1) % 500 == 0:
                losses.append((step + i + 1, float(loss)))
        step += count
        if every and step % every == 0 and step < steps:
            tick = time.perf_counter()
            curve.append({"step": step, **evaluate(state.params)})
            eval_s += time.perf_counter() - tick
            log(f"  {config.get('name')}: step {step} {curve[-1]}")
    train_s = time.perf_counter() - start - eval_s
    result = {"config": config, "train_s": round(train_s, 1), "examples": need,
              "distinct_training_records": int(len(inputs)), **evaluate(state.params),
              "curve": curve, "loss": losses, "device": str(jax.devices()[0].platform),
              "steps_per_call": steps_per_call, "unshuffled": unshuffled if orders > 1 else {}}
    if final_state is not None:  # for tests: the trained state itself
        final_state.append(state)
    return result


def run(args) -> None:
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")  # float32 as on the CPU
    bundle = np.load(args.bundle)
    with contextlib.suppress(OSError):
        args.configs = open(args.configs, encoding="utf-8").read()
    configs = json.loads(args.configs)
    check_configs(configs)
    for config in shard_configs(configs, args.shard):
        result = run_config(config, bundle, steps_per_call=args.steps_per_call)
        line = json.dumps(result)
        print(f"{config.get('name')}: validation HR@1 {result['valid_HR@1']:.4f} NDCG@5 "
              f"{result['valid_NDCG@5']:.4f}; test HR@1 {result['HR@1']:.4f} NDCG@5 {result['NDCG@5']:.4f} "
              f"(likelihood only {result['HR@1_likelihood']:.4f} / {result['NDCG@5_likelihood']:.4f}, "
              f"w {result['prior_weight']}) in {result['train_s']} s"
              + ("; one order: test {HR@1:.4f} / {NDCG@5:.4f}, validation {valid_HR@1:.4f} / "
                 "{valid_NDCG@5:.4f}".format(**result["one_order"]) if "one_order" in result else ""),
              flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(line + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("--data-dir", required=True)
    e.add_argument("--dataset", required=True, help="the prepared dataset's folder name")
    e.add_argument("--scenario", default="sequential")
    e.add_argument("--lengths", default="144/4", type=lambda v: tuple(int(x) for x in v.split("/")))
    e.add_argument("--vocab-size", default=None, type=int,
                   help="NUM_EMBEDDINGS of the model (default: the vocabulary padded to 128)")
    e.add_argument("--seeds", default="0", type=lambda v: [int(x) for x in v.split(",")])
    e.add_argument("--shapes", default="[]", type=json.loads,
                   help="JSON list of model shapes besides the demo's to export initial parameters for")
    e.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--bundle", required=True)
    r.add_argument("--configs", required=True, help="a JSON list of configs, or a file holding one")
    r.add_argument("--out", help="JSON lines file the results are appended to")
    r.add_argument("--steps-per-call", default=1, type=_positive_int,
                   help="K optimiser steps per device call (lax.scan over K batches; same steps)")
    r.add_argument("--shard", default=(0, 1), type=parse_shard,
                   help="I/N: run every N-th config starting at I (N processes sharing one device)")
    args = parser.parse_args(argv)
    if args.command == "export":
        export(args)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
