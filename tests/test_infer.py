"""Batched inference to JSONL: input checks, sharding, score numbers, and resume after a real kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from instructrec_jax import infer, ranking
from instructrec_jax.data.types import DataFormatError
from ranking_fixtures import write_model_gin, CharTokenizer, tiny_model_and_params

ROOT = Path(__file__).resolve().parents[1]
VOCAB_SIZE = 400  # 300 SentencePiece pieces + 100 sentinels


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_jsonl_reader_names_the_bad_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"inputs": "a"}\n\n{"inputs": 3}\n', encoding="utf-8")
    with pytest.raises(DataFormatError) as error:
        infer.read_jsonl_examples(path, CharTokenizer())
    assert error.value.line == 3 and "inputs" in error.value.message
    path.write_text('{"inputs": "a", "id": "x"}\n{"inputs": "b", "id": "x"}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match="duplicate id"):
        infer.read_jsonl_examples(path, CharTokenizer())
    path.write_text('{"inputs": "a"\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        infer.read_jsonl_examples(path, CharTokenizer())


def test_jsonl_examples_get_ids_tokens_and_eos(tmp_path):
    path = tmp_path / "in.jsonl"
    _write_jsonl(path, [{"inputs": "ab", "targets": "c"}, {"inputs": "de", "id": "u7"}])
    a, b = infer.read_jsonl_examples(path, CharTokenizer())
    tok = CharTokenizer()
    assert (a.example_id, a.input_tokens, a.target_tokens) == ("0", tuple(tok.encode("ab")) + (1,), tuple(tok.encode("c")) + (1,))
    assert (b.example_id, b.target_tokens) == ("u7", None)


def test_shards_take_every_kth_example_and_cover_all_once():
    examples = [infer.InferenceExample(str(k), (1,)) for k in range(10)]
    shards = [infer.shard_examples(examples, i, 3) for i in range(3)]
    assert [e.example_id for e in shards[1]] == ["1", "4", "7"]
    assert sorted(int(e.example_id) for s in shards for e in s) == list(range(10))
    with pytest.raises(ValueError, match="shard id"):
        infer.InferenceConfig(shard_id=3, num_shards=3)


def test_score_mode_writes_the_models_log_likelihoods(tmp_path):
    model, params = tiny_model_and_params()
    rows = [{"inputs": f"user {k} watched Heat", "targets": t, "id": f"e{k}"}
            for k, t in enumerate(["Casino", "Up", "The Rock", "Her", "Us"])]
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, rows)
    examples = infer.read_jsonl_examples(src, CharTokenizer())
    config = infer.InferenceConfig(mode="score", batch_size=2)
    out = infer.output_path(tmp_path / "out", "in", config)
    summary = infer.run_inference(model, params, CharTokenizer(), examples, out, config, progress=False)
    assert summary.written == 5 and out.name == "in-score-00000-of-00001.jsonl"
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == ["e0", "e1", "e2", "e3", "e4"]
    scorer = ranking.CandidateScorer(model, params, CharTokenizer(), ranking.ScoringConfig(batch_size=2))
    want = scorer.log_likelihoods_full_pass([r["inputs"] for r in rows], [[r["targets"]] for r in rows])
    np.testing.assert_allclose([line["score"] for line in lines], [w[0] for w in want], atol=1e-5)
    assert [line["num_tokens"] for line in lines] == [len(r["targets"]) + 1 for r in rows]
    # a second run finds the complete file and does nothing
    again = infer.run_inference(model, params, CharTokenizer(), examples, out, config, progress=False)
    assert again.written == 0


@pytest.fixture(scope="module")
def checkpoint_setup(tmp_path_factory):
    """A SentencePiece vocabulary, a tiny model gin file and an HF checkpoint of its random weights."""
    from instructrec_jax.checkpoints.hf import save_hf_checkpoint
    from instructrec_jax.vocabulary import load_vocabulary, train_vocabulary

    root = tmp_path_factory.mktemp("infer")
    texts = [f"The user watched film {k} and liked comedies about {w}" for k in range(200)
             for w in ("dogs", "cats", "space")]
    train_vocabulary(texts, root / "spiece.model", vocab_size=300, log=lambda *_: None)
    # the shared tiny model (one object: the in-process runs reuse its compiled functions)
    model, params = tiny_model_and_params()
    config = model.config
    assert config.vocab_size >= VOCAB_SIZE
    save_hf_checkpoint(config, params, root / "hf")
    write_model_gin(config, root / "tiny.gin")
    rows = [{"inputs": f"The user watched film {k}; recommend a comedy", "id": f"q{k:03d}"} for k in range(120)]
    _write_jsonl(root / "requests.jsonl", rows)
    return root, model, load_vocabulary(root / "spiece.model")


def _cli_args(root: Path, out: Path) -> list[str]:
    return [
        f"--gin_file={root / 'tiny.gin'}", "--gin_file=gin/runs/infer.gin",
        f"--gin.CHECKPOINT_PATH='{root / 'hf'}'", f"--gin.INFER_OUTPUT_DIR='{out}'",
        f"--gin.INPUT_JSONL='{root / 'requests.jsonl'}'", f"--gin.VOCABULARY_PATH='{root / 'spiece.model'}'",
        "--gin.DECODE_METHOD='sample'", "--gin.TEMPERATURE=1.0", "--gin.BATCH_SIZE=2",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 12}", "--gin.RANDOM_SEED=7",
    ]


def test_resume_after_a_kill_writes_the_same_bytes_as_an_uninterrupted_run(checkpoint_setup, tmp_path):
    from instructrec_jax.checkpoints.manager import load_params_for_inference

    root, model, vocab = checkpoint_setup
    killed_dir = tmp_path / "killed"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "INSTRUCTREC_DATA_DIR": str(tmp_path / "no-datasets")}
    proc = subprocess.Popen([sys.executable, "-m", "instructrec_jax.infer", *_cli_args(root, killed_dir)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = killed_dir / ("requests-predict-00000-of-00001.jsonl" + infer.IN_PROGRESS)
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if partial.exists() and partial.read_bytes().count(b"\n") >= 7:
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (killed_dir / "requests-predict-00000-of-00001.jsonl").exists()
    lines_before = partial.read_bytes().count(b"\n")
    assert 7 <= lines_before < 120
    with open(partial, "ab") as handle:  # a torn last line, as a kill during a write leaves
        handle.write(b'{"id": "q9')

    # resume and the uninterrupted reference, in this process with one model object (one compile)
    params = load_params_for_inference(str(root / "hf"), model)
    config = infer.InferenceConfig(mode="predict", method="sample", temperature=1.0, batch_size=2,
                                   max_input_length=64, max_target_length=12, seed=7)
    examples = infer.read_jsonl_examples(root / "requests.jsonl", vocab, max_input_length=64, max_target_length=12)
    resumed = infer.run_inference(model, params, vocab, examples, partial.with_name(partial.name[: -len(infer.IN_PROGRESS)]),
                                  config, progress=False)
    assert resumed.resumed_from == (lines_before // 2) * 2 and resumed.resumed_from >= 6
    reference_path = tmp_path / "reference" / "requests-predict-00000-of-00001.jsonl"
    infer.run_inference(model, params, vocab, examples, reference_path, config, progress=False)
    got, want = resumed.path.read_bytes(), reference_path.read_bytes()
    assert got == want
    lines = [json.loads(line) for line in want.splitlines()]
    assert [line["id"] for line in lines] == [f"q{k:03d}" for k in range(120)]
    # sampling really sampled: not every prediction is the same text
    assert len({line["prediction"] for line in lines}) > 10
