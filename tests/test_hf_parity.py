"""Our Flan-T5 against transformers' PyTorch T5 on a randomly initialised checkpoint saved with
`save_pretrained`: same logits (unpacked and packed), same loss, same greedy tokens; plus sharded
safetensors import and export back to a directory transformers loads."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import save_file

from instructrec_jax.checkpoints import CheckpointFormatError, hf
from instructrec_jax.model.encoder_decoder import EncoderDecoderModel

LOGIT_TOLERANCE = 1e-4
# Few buckets and a short max distance so that these short sequences reach the log-spaced buckets
# of both the bidirectional (encoder) and the causal (decoder) bucketing.
HF_CONFIG = dict(vocab_size=200, d_model=64, d_ff=128, num_heads=4, d_kv=16, num_layers=2,
                 num_decoder_layers=2, relative_attention_num_buckets=16,
                 relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
                 dropout_rate=0.0, tie_word_embeddings=False, decoder_start_token_id=0,
                 pad_token_id=0, eos_token_id=1)

# (encoder tokens, target tokens ending in EOS); lengths chosen to cross bucket boundaries.
EXAMPLES = [
    ([5, 17, 33, 2, 90, 12, 44, 101, 7, 150, 3, 66, 19, 80, 21, 9, 45, 120, 11, 60, 8], [9, 14, 77, 8, 31, 2, 140, 60, 1]),
    ([22, 8, 19, 130, 55, 4, 71, 16, 99], [40, 3, 1]),
    ([61, 27, 3, 88, 120, 14], [7, 56, 23, 190, 11, 1]),
]


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(2)
    config = transformers.T5Config(**HF_CONFIG)
    # transformers 5 ties lm_head to the embedding at construction whatever the config says;
    # Flan-T5 checkpoints are untied, so give the model its own output matrix (and save it as
    # untied), as a real Flan-T5 checkpoint has.
    model = transformers.T5ForConditionalGeneration(config)
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(torch.randn(200, 64) * 0.2)
    model.config.tie_word_embeddings = False
    model.eval()
    directory = tmp_path_factory.mktemp("hf") / "flan"
    model.save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.fixture(scope="module")
def hf_model(hf_model_dir):
    model = transformers.T5ForConditionalGeneration.from_pretrained(hf_model_dir)
    model.eval()
    return model


@pytest.fixture(scope="module")
def ours(hf_model_dir):
    config, params = hf.load_hf_checkpoint(hf_model_dir, dtype="float32", dropout_rate=0.0)
    model = EncoderDecoderModel(config, z_loss=0.0, loss_normalizing_factor="NUM_REAL_TARGET_TOKENS")
    return model, jax.tree_util.tree_map(jnp.asarray, params)


@pytest.fixture(scope="module")
def padded(ours):
    """One compiled forward for the padded batch: (batch, logits, loss, metrics)."""
    model, params = ours
    batch = _padded_batch(EXAMPLES, 24, 10)

    def forward(params, batch):
        loss, metrics = model.loss_fn(params, batch, None)
        return model.logits(params, batch), loss, metrics

    logits, loss, metrics = jax.jit(forward)(params, batch)
    return batch, np.asarray(logits), float(loss), metrics


def _hf_logits(model, inputs, targets):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([inputs]), labels=torch.tensor([targets]))
    return out.logits[0].numpy()


def _padded_batch(examples, input_length, target_length):
    batch = {name: np.zeros((len(examples), length), np.int32) for name, length in
             (("encoder_input_tokens", input_length), ("decoder_target_tokens", target_length),
              ("decoder_input_tokens", target_length))}
    for row, (inputs, targets) in enumerate(examples):
        batch["encoder_input_tokens"][row, :len(inputs)] = inputs
        batch["decoder_target_tokens"][row, :len(targets)] = targets
        batch["decoder_input_tokens"][row, 1:len(targets)] = targets[:-1]
    batch["decoder_loss_weights"] = (batch["decoder_target_tokens"] > 0).astype(np.float32)
    return batch


def test_hf_config_and_untied_head_are_read(ours, hf_model):
    model, params = ours
    assert model.config.d_model == 64 and model.config.num_heads == 4
    assert model.config.relative_attention_num_buckets == 16
    assert not model.config.logits_via_embedding
    np.testing.assert_array_equal(np.asarray(params["decoder"]["logits_dense"]["kernel"]),
                                  hf_model.lm_head.weight.detach().numpy().T)
    np.testing.assert_array_equal(np.asarray(params["encoder"]["relpos_bias"]["rel_embedding"]),
                                  hf_model.encoder.block[0].layer[0].SelfAttention
                                  .relative_attention_bias.weight.detach().numpy().T)


def test_logits_match_transformers_on_padded_batch(padded, hf_model):
    _, logits, _, _ = padded
    worst = 0.0
    for row, (inputs, targets) in enumerate(EXAMPLES):
        expected = _hf_logits(hf_model, inputs, targets)
        got = logits[row, :len(targets)]
        worst = max(worst, float(np.abs(got - expected).max()))
    print(f"padded batch: max |ours - transformers| = {worst:.2e}")
    assert worst < LOGIT_TOLERANCE


def test_packed_segments_match_transformers_on_each_example_alone(ours, hf_model):
    model, params = ours
    # Row 0 packs examples 0 and 1, row 1 holds example 2 then padding.
    rows = [[0, 1], [2]]
    input_length, target_length = 32, 14
    batch = {name: np.zeros((2, length), np.int32) for name, length in (
        ("encoder_input_tokens", input_length), ("encoder_segment_ids", input_length),
        ("encoder_positions", input_length), ("decoder_target_tokens", target_length),
        ("decoder_input_tokens", target_length), ("decoder_segment_ids", target_length),
        ("decoder_positions", target_length))}
    spans = {}
    for row, members in enumerate(rows):
        enc_at = dec_at = 0
        for segment, index in enumerate(members, start=1):
            inputs, targets = EXAMPLES[index]
            enc = slice(enc_at, enc_at + len(inputs))
            dec = slice(dec_at, dec_at + len(targets))
            batch["encoder_input_tokens"][row, enc] = inputs
            batch["encoder_segment_ids"][row, enc] = segment
            batch["encoder_positions"][row, enc] = np.arange(len(inputs))
            batch["decoder_target_tokens"][row, dec] = targets
            batch["decoder_input_tokens"][row, dec] = [0] + targets[:-1]
            batch["decoder_segment_ids"][row, dec] = segment
            batch["decoder_positions"][row, dec] = np.arange(len(targets))
            spans[index] = (row, dec)
            enc_at, dec_at = enc.stop, dec.stop
    logits = np.asarray(jax.jit(model.logits)(params, batch))
    worst = 0.0
    for index, (row, dec) in spans.items():
        inputs, targets = EXAMPLES[index]
        expected = _hf_logits(hf_model, inputs, targets)
        worst = max(worst, float(np.abs(logits[row, dec] - expected).max()))
    print(f"packed batch: max |ours - transformers| = {worst:.2e}")
    assert worst < LOGIT_TOLERANCE


def test_loss_matches_transformers_mean_cross_entropy(padded, hf_model):
    batch, _, loss, metrics = padded
    labels = np.where(batch["decoder_target_tokens"] > 0, batch["decoder_target_tokens"], -100)
    attention_mask = (batch["encoder_input_tokens"] > 0).astype(np.int64)
    with torch.no_grad():
        expected = hf_model(input_ids=torch.tensor(batch["encoder_input_tokens"], dtype=torch.long),
                            attention_mask=torch.tensor(attention_mask),
                            labels=torch.tensor(labels, dtype=torch.long)).loss.item()
    print(f"loss: ours {loss:.6f}, transformers {expected:.6f}")
    assert loss == pytest.approx(expected, rel=1e-5)
    assert float(metrics["num_tokens"]) == sum(len(t) for _, t in EXAMPLES)


def test_greedy_decoding_matches_transformers_generate(ours, hf_model):
    model, params = ours
    max_length = 12
    batch = _padded_batch(EXAMPLES, 24, max_length)
    tokens, _ = model.predict_batch(params, batch, method="greedy", max_decode_length=max_length)
    tokens = np.asarray(tokens)
    for row, (inputs, _) in enumerate(EXAMPLES):
        with torch.no_grad():
            generated = hf_model.generate(torch.tensor([inputs]), do_sample=False, num_beams=1,
                                          max_new_tokens=max_length, min_length=0)
        expected = generated[0, 1:].tolist()  # drop the decoder start token
        if 1 in expected:
            expected = expected[:expected.index(1) + 1]
        assert tokens[row, :len(expected)].tolist() == expected
        assert not tokens[row, len(expected):].any()  # our padding after EOS is 0


def test_sharded_safetensors_load_like_the_single_file(hf_model_dir, tmp_path, ours):
    from safetensors.numpy import load_file

    tensors = load_file(str(hf_model_dir / "model.safetensors"))
    names = sorted(tensors)
    shards = [names[0::3], names[1::3], names[2::3]]
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        filename = f"model-{i:05d}-of-00003.safetensors"
        save_file({name: tensors[name] for name in shard}, str(sharded / filename),
                  metadata={"format": "pt"})
        weight_map.update({name: filename for name in shard})
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (sharded / "config.json").write_text((hf_model_dir / "config.json").read_text())
    config, params = hf.load_hf_checkpoint(sharded, dtype="float32", dropout_rate=0.0)
    model, expected = ours
    assert config == model.config
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, jax.device_get(expected))


def test_sharded_index_naming_a_missing_tensor_is_reported(hf_model_dir, tmp_path):
    directory = tmp_path / "broken"
    directory.mkdir()
    (directory / "config.json").write_text((hf_model_dir / "config.json").read_text())
    save_file({"shared.weight": np.zeros((200, 64), np.float32)},
              str(directory / "model-00001-of-00001.safetensors"))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "shared.weight": "model-00001-of-00001.safetensors",
        "lm_head.weight": "model-00001-of-00001.safetensors"}}))
    with pytest.raises(CheckpointFormatError, match="lacks"):
        hf.load_hf_checkpoint(directory)


@pytest.mark.parametrize("max_shard_bytes", [None, 60_000])
def test_export_loads_in_transformers_with_identical_weights(ours, hf_model, tmp_path,
                                                             max_shard_bytes):
    model, params = ours
    out = hf.save_hf_checkpoint(model.config, params, tmp_path / "export",
                                max_shard_bytes=max_shard_bytes)
    if max_shard_bytes:
        assert (out / "model.safetensors.index.json").is_file()
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(out)
    expected = hf_model.state_dict()
    got = reloaded.state_dict()
    assert not reloaded.config.scale_decoder_outputs
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=name)
    # and back into our tree, bit for bit
    config, params_again = hf.load_hf_checkpoint(out, dtype="float32", dropout_rate=0.0)
    assert config == model.config
    jax.tree_util.tree_map(np.testing.assert_array_equal, params_again, jax.device_get(params))


def test_tied_unscaled_checkpoint_uses_the_embedding_as_output(hf_model_dir, tmp_path):
    from safetensors.numpy import load_file

    tensors = load_file(str(hf_model_dir / "model.safetensors"))
    del tensors["lm_head.weight"]
    directory = tmp_path / "tied"
    directory.mkdir()
    save_file(tensors, str(directory / "model.safetensors"))
    hf_config = json.loads((hf_model_dir / "config.json").read_text())
    hf_config.update(tie_word_embeddings=True, scale_decoder_outputs=False)
    (directory / "config.json").write_text(json.dumps(hf_config))
    config, params = hf.load_hf_checkpoint(directory)
    assert not config.logits_via_embedding
    np.testing.assert_array_equal(params["decoder"]["logits_dense"]["kernel"],
                                  tensors["shared.weight"].T)
    # T5 1.0 style: tied and scaled -> the embedding is the output layer, no logits_dense
    hf_config.pop("scale_decoder_outputs")
    (directory / "config.json").write_text(json.dumps(hf_config))
    config, params = hf.load_hf_checkpoint(directory)
    assert config.logits_via_embedding and "logits_dense" not in params["decoder"]


def test_relu_t5_checkpoint_is_rejected_with_a_clear_error(hf_model_dir, tmp_path):
    directory = tmp_path / "relu"
    directory.mkdir()
    hf_config = json.loads((hf_model_dir / "config.json").read_text())
    hf_config["feed_forward_proj"] = "relu"
    (directory / "config.json").write_text(json.dumps(hf_config))
    with pytest.raises(CheckpointFormatError, match="gated-gelu"):
        hf.load_hf_checkpoint(directory)


def test_corrupt_safetensors_file_is_a_format_error(hf_model_dir, tmp_path):
    directory = tmp_path / "corrupt"
    directory.mkdir()
    (directory / "config.json").write_text((hf_model_dir / "config.json").read_text())
    (directory / "model.safetensors").write_bytes(b"not a safetensors file" * 4)
    with pytest.raises(CheckpointFormatError, match="not a readable safetensors"):
        hf.load_hf_checkpoint(directory)
