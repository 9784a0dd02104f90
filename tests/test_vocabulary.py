"""SentencePiece vocabularies: T5 special ids, sentinels, byte fallback, id tokens as pieces."""

import pytest

from instructrec_jax import vocabulary as vocab
from instructrec_jax.instructions.render import id_tokens

TITLES = ["Toy Story", "Misérables, Les", "Pokémon Red Version", "東京物語", "Café Tycoon",
          "GoldenEye", "Four Rooms", "Get Shorty", "Copycat", "Twelve Monkeys"]
SENTENCES = [f"The user watched {a}; {b}. Which one comes next?" for a in TITLES for b in TITLES]
TOKENS = id_tokens(["1", "22", "B00ABC"])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "spiece.model"
    messages = []
    size = vocab.train_vocabulary(SENTENCES + [" ".join(TOKENS)], path, vocab_size=8000,
                                  user_defined_symbols=TOKENS, log=messages.append)
    return path, size, messages


def test_small_corpus_lowers_the_size_with_a_message(model):
    path, size, messages = model
    assert 300 < size < 8000
    assert any("lowering the requested 8000" in m for m in messages)
    import sentencepiece as spm
    assert spm.SentencePieceProcessor(model_file=str(path)).get_piece_size() == size


def test_t5_special_ids(model):
    import sentencepiece as spm
    processor = spm.SentencePieceProcessor(model_file=str(model[0]))
    ids = (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id())
    assert ids == (0, 1, 2, -1)
    assert processor.id_to_piece(0) == "<pad>" and processor.id_to_piece(1) == "</s>"


def test_seqio_vocabulary_has_100_sentinels_at_the_top(model):
    path, size, _ = model
    v = vocab.load_vocabulary(path)
    assert v.vocab_size == size + 100 and v.extra_ids == 100
    assert (v.pad_id, v.eos_id, v.unk_id) == (0, 1, 2)
    assert v.encode("<extra_id_0>") == [size + 99]
    assert v.decode([size]) == "<extra_id_99>"


@pytest.mark.parametrize("text", ["Misérables, Les", "東京物語", "Zürich ñandú 🎮 Ωmega"])
def test_unicode_titles_round_trip_even_unseen_characters(model, text):
    v = vocab.load_vocabulary(model[0])
    ids = v.encode(text)
    assert v.unk_id not in ids
    assert v.decode(ids) == text


def test_id_tokens_are_single_pieces_in_running_text(model):
    v = vocab.load_vocabulary(model[0])
    import sentencepiece as spm
    processor = spm.SentencePieceProcessor(model_file=str(model[0]))
    for token in TOKENS:
        assert len(v.encode(token)) == 1
        pieces = processor.encode(f"watched {token}; {token}", out_type=str)
        assert pieces.count("\u2581" + token) == 2
    assert v.decode(v.encode("<item_22> Toy Story")) == "<item_22> Toy Story"


def test_given_vocabulary_is_copied_and_id_tokens_checked(model, tmp_path):
    path, size, _ = model
    copied = tmp_path / "out" / "spiece.model"
    assert vocab.copy_vocabulary(path, copied, TOKENS) == size
    assert copied.read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match=r"1 of 1 item id tokens.*<item_999>.*'title'"):
        vocab.copy_vocabulary(path, tmp_path / "x.model", id_tokens(["999"]))


def test_given_vocabulary_must_exist_and_be_a_model(tmp_path):
    with pytest.raises(FileNotFoundError):
        vocab.copy_vocabulary(tmp_path / "none.model", tmp_path / "x.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        vocab.copy_vocabulary(bad, tmp_path / "x.model")


def test_no_text_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no text"):
        vocab.train_vocabulary(["", "  "], tmp_path / "v.model")
