"""Print the parameter count of every Flan-T5 size next to T5X's published figure.

    python tools/count_params.py [--vocab_size 32128]

Counts come from `num_params(T5Config.preset(name))` (shapes only, nothing is allocated); the test
suite checks that they equal the initialised trees' sizes.
"""

from __future__ import annotations

import argparse

from instructrec_jax.model.config import PUBLISHED_PARAMS, T5Config, num_params, preset_names


def table(vocab_size: int) -> str:
    lines = ["| size | d_model | d_ff | heads | d_kv | layers | parameters | T5X.md | difference |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in preset_names():
        config = T5Config.preset(name, vocab_size=vocab_size)
        count = num_params(config)
        published = PUBLISHED_PARAMS.get(name)
        reference = f"{published / 1e6:,.0f}M" if published else "-"
        difference = f"{100 * (count - published) / published:+.1f}%" if published else "-"
        lines.append(f"| {name} | {config.d_model} | {config.d_ff} | {config.num_heads} | "
                     f"{config.d_kv} | {config.num_encoder_layers}+{config.num_decoder_layers} | "
                     f"{count:,} | {reference} | {difference} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab_size", type=int, default=32128)
    args = parser.parse_args(argv)
    print(table(args.vocab_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
