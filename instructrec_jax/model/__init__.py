"""The Flan-T5 encoder-decoder in Flax, its losses and decoding."""
