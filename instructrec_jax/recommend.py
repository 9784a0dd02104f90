"""`instructrec recommend`: rank items for a user's history and/or request with a trained checkpoint.

What was given decides the instruction type (the paper's format):

| given | type (candidates listed) | type (catalogue-wide) |
|---|---|---|
| history (--user or --history) | p1_i0_t3 | p1_i0_t2 |
| history + --request (vague, I1) | p1_i1_t3 | p1_i1_t2 |
| history + --query (keywords, I2) | p1_i2_t3 | p1_i2_t2 |
| history + --preference (P2) | p1p2_i0_t3 | – |
| --preference only | p2_i0_t3 | p2_i0_t2 |
| --query only | p0_i2_t3 | p0_i2_t2 |
| --request only | p0_i1_t3 | – |

Candidates: `catalogue` (every item), `baseline:NAME:N` (the top N of popularity, itemknn or sasrec
for the history), or `list:ID1,ID2,...`. Items of the history are left out unless
--include-seen. Up to --list-max candidates are listed in one reranking (T3) instruction, as in
training; more are scored with the type's matching (T2) instruction, which names no candidates, or,
where the format has no T2 type, in consecutive T3 instructions of --list-max candidates each
whose scores are pooled. Every candidate is scored by the likelihood of its text as the target
(`ranking.CandidateScorer`: one encoder pass per instruction), so only catalogue items can come out.
With --candidate-orders K (as `instructrec eval --gin.CANDIDATE_ORDERS=K`), every listing (T3)
instruction is also scored with its list in K - 1 seeded shuffles and each item's log-likelihood is
the mean over the K orders; a matching (T2) instruction has no list and is scored once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Sequence

import gin
import numpy as np

from instructrec_jax import ranking

# (P1 history?, P2 preference?, intention) -> (reranking type, matching type or None)
_TYPES = {
    (True, False, "i0"): ("p1_i0_t3", "p1_i0_t2"),
    (True, False, "i1"): ("p1_i1_t3", "p1_i1_t2"),
    (True, False, "i2"): ("p1_i2_t3", "p1_i2_t2"),
    (True, True, "i0"): ("p1p2_i0_t3", None),
    (False, True, "i0"): ("p2_i0_t3", "p2_i0_t2"),
    (False, False, "i2"): ("p0_i2_t3", "p0_i2_t2"),
    (False, False, "i1"): ("p0_i1_t3", None),
}


@dataclasses.dataclass(frozen=True)
class Request:
    """What the user gave: history items (ids and texts), an explicit preference, an intention."""

    history_ids: tuple[str, ...] = ()
    history_texts: tuple[str, ...] = ()
    preference: str = ""
    request: str = ""  # vague intention (I1)
    query: str = ""  # specific keyword query (I2)

    @property
    def intention(self) -> str:
        if self.request and self.query:
            raise ValueError("give either a vague --request or a keyword --query, not both")
        return "i1" if self.request else "i2" if self.query else "i0"


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One ranked item."""

    rank: int
    item_id: str
    text: str
    score: float
    log_likelihood: float


def instruction_types(request: Request) -> tuple[str, str | None]:
    """(reranking type, matching type or None) for what the request holds (module docstring table)."""
    key = (bool(request.history_texts), bool(request.preference), request.intention)
    if key not in _TYPES:
        raise ValueError("nothing to recommend from: give a history (--user/--history), a --preference, "
                         "a --request or a --query (a preference cannot be combined with a request here)")
    return _TYPES[key]


def _template(type_name: str, template_id: str | None):
    from instructrec_jax.instructions.templates import templates_for

    templates = templates_for(type_name)
    if template_id is None:
        return templates[0]
    for template in templates:
        if template.template_id == template_id:
            return template
    raise ValueError(f"template {template_id!r} is not one of {type_name}'s: {[t.template_id for t in templates]}")


def build_instruction(type_name: str, request: Request, candidate_texts: Sequence[str] = (),
                      template_id: str | None = None) -> tuple[str, "object"]:
    """(inputs text, template) of one instruction of `type_name` for the request."""
    from instructrec_jax.instructions.render import join_items
    from instructrec_jax.instructions.templates import TemplateSlots

    template = _template(type_name, template_id)
    slots = TemplateSlots(
        history=join_items(request.history_texts), preference=request.preference,
        intention=request.request or request.query,
        candidates=join_items(candidate_texts) if candidate_texts else "", target="?")
    inputs, _ = template.render(slots)
    return inputs, template


def rank_items(scorer: ranking.CandidateScorer, request: Request, candidates: Sequence[str],
               item_texts: dict[str, str], *, list_max: int = 20, template_id: str | None = None,
               top: int | None = 10) -> list[Recommendation]:
    """Scores `candidates` for the request and returns them best first (see the module docstring)."""
    from instructrec_jax.instructions.templates import TemplateSlots

    if not candidates:
        raise ValueError("no candidate items to rank")
    t3, t2 = instruction_types(request)
    texts = [item_texts[c] for c in candidates]
    chunks: list[tuple[str, list[int]]] = []  # (inputs, candidate indices), each one instruction
    listing = len(candidates) <= list_max or t2 is None  # T3 instructions; else one T2 (no list)
    if listing:
        for start in range(0, len(candidates), list_max):
            idx = list(range(start, min(start + list_max, len(candidates))))
            inputs, template = build_instruction(t3, request, [texts[i] for i in idx], template_id)
            chunks.append((inputs, idx))
    else:
        inputs, template = build_instruction(t2, request, (), None)
        chunks.append((inputs, list(range(len(candidates)))))
    targets = [[template.render_target(TemplateSlots(), texts[i]) for i in idx] for _, idx in chunks]
    orders = None
    if scorer.config.candidate_orders > 1:
        orders = [listing_orders(scorer.config, t3, request, inputs, [texts[i] for i in idx], template_id)
                  if listing else [(inputs, np.arange(len(idx)))] for inputs, idx in chunks]
    scored = scorer.score([inputs for inputs, _ in chunks], targets,
                          [[candidates[i] for i in idx] for _, idx in chunks], orders=orders)
    rows = []
    for (_, idx), (sums, _, _, final) in zip(chunks, scored):
        rows.extend((float(final[k]), float(sums[k]), i) for k, i in enumerate(idx))
    # best score first; equal scores keep the candidates' given order (stable and stated)
    rows.sort(key=lambda r: (-r[0], r[2]))
    return [Recommendation(rank + 1, candidates[i], texts[i], score, ll)
            for rank, (score, ll, i) in enumerate(rows[:top] if top else rows)]


def listing_orders(config: ranking.ScoringConfig, type_name: str, request: Request, inputs: str,
                   texts: Sequence[str], template_id: str | None = None) -> list[tuple[str, np.ndarray]]:
    """(input, order) pairs of one listing instruction for `CandidateScorer.score(orders=...)`: the
    shown input with the identity, then `config.candidate_orders - 1` shuffles seeded by
    `config.candidate_order_seed` and the input text (`ranking.shuffled_orders`, as eval),
    each rebuilt with its list in that order; `order[j]` = index of the candidate listed j-th."""
    shown = [(inputs, np.arange(len(texts)))]
    if config.candidate_orders == 1 or len(texts) < 2:
        return shown
    for order in ranking.shuffled_orders(config, inputs, len(texts)):
        shuffled, _ = build_instruction(type_name, request, [texts[k] for k in order], template_id)
        shown.append((shuffled, order))
    return shown


def candidate_pool(spec: str, data, request: Request, *, include_seen: bool = False) -> list[str]:
    """Candidate ids for `catalogue`, `baseline:NAME:N` or `list:ID,...` (history left out unless
    include_seen; a list is taken as given, unknown ids refused)."""
    from instructrec_jax import baselines

    catalogue = sorted(data.items)
    seen = set() if include_seen else set(request.history_ids)
    if spec == "catalogue":
        return [item for item in catalogue if item not in seen]
    if spec.startswith("list:"):
        ids = [part.strip() for part in spec[len("list:"):].split(",") if part.strip()]
        unknown = [i for i in ids if i not in data.items]
        if unknown:
            raise ValueError(f"--candidates list: unknown item ids {unknown[:5]}")
        return ids
    if spec.startswith("baseline:"):
        parts = spec.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(f"--candidates {spec!r}: expected baseline:NAME:N, e.g. baseline:sasrec:50")
        model = baselines.fit_baseline(parts[1], data.train, catalogue)
        return [item for item, _ in baselines.top_items(model, request.history_ids, catalogue, int(parts[2]),
                                                         exclude=seen)]
    raise ValueError(f"--candidates {spec!r}: expected catalogue, baseline:NAME:N or list:ID1,ID2")


def request_from_args(data, item_texts: dict[str, str], *, user: str | None, history: str | None,
                      preference: str = "", request: str = "", query: str = "", max_history: int = 20) -> Request:
    """The Request for command-line arguments: a known user's latest items, or typed titles."""
    if user is not None and history is not None:
        raise ValueError("give --user or --history, not both")
    ids: list[str] = []
    texts: list[str] = []
    if user is not None:
        sequence = next((s for s in data.sequences if s.user_id == user), None)
        if sequence is None:
            raise ValueError(f"unknown user {user!r} in dataset {data.name!r}")
        ids = list(sequence.item_ids[-max_history:])
        texts = [item_texts[i] for i in ids]
    elif history:
        by_text = {}
        for item_id, text in item_texts.items():
            by_text.setdefault(text.lower(), item_id)
        # Catalogue titles too: with id-token renderers the model reads "<item_12>", users type titles.
        for item_id, item in data.items.items():
            by_text.setdefault(item.title.strip().lower(), item_id)
        for title in (t.strip() for t in history.split(";")):
            if title:
                item_id = by_text.get(title.lower())
                # Titles that match the catalogue are written as the model was trained to read them
                # and feed the baselines too; other titles are passed on as typed.
                texts.append(item_texts.get(item_id, title) if item_id is not None else title)
                if item_id is not None:
                    ids.append(item_id)
    return Request(tuple(ids), tuple(texts), preference, request, query)


def load_model(checkpoint: str, gin_files: Sequence[str] = (), gin_bindings: Sequence[str] = ()):
    """(model, params): the model from gin files if given, else from the checkpoint's own config
    (HF config.json, or t5_config.json of a converted checkpoint)."""
    from instructrec_jax.checkpoints.manager import load_params_for_inference
    from instructrec_jax.model.config import T5Config
    from instructrec_jax.model.encoder_decoder import EncoderDecoderModel

    path = Path(checkpoint).expanduser()
    if gin_files:
        from instructrec_jax import gin_flags

        gin.clear_config()
        gin_flags.configure_gin(gin_flags.GinFlags(tuple(gin_files), tuple(gin_bindings) + (
            "instructrec_jax.recommend.configured_model.model = %MODEL",), (str(gin_flags.CHECKOUT_ROOT),)))
        model = configured_model()
    elif (path / "config.json").exists():
        from instructrec_jax.checkpoints.hf import config_from_hf

        model = EncoderDecoderModel(config_from_hf(json.loads((path / "config.json").read_text(encoding="utf-8")),
                                                   dtype="float32"))
    elif (path / "t5_config.json").exists():
        model = EncoderDecoderModel(T5Config(**json.loads((path / "t5_config.json").read_text(encoding="utf-8"))))
    else:
        raise ValueError(f"{path}: no config.json or t5_config.json; give the model's gin file with --gin_file")
    return model, load_params_for_inference(str(path), model)


@gin.configurable(module="instructrec_jax.recommend")
def configured_model(model=None):
    """The gin-built MODEL (bound by `load_model`)."""
    return model


def format_table(recommendations: Sequence[Recommendation], titles: dict[str, str] | None = None) -> str:
    """A markdown table; `titles` (item id -> catalogue title) adds a title column, useful when the
    model's item text is an id token."""
    titles = titles or {}
    head = "| rank | item | text | score | log-likelihood |" + (" title |" if titles else "")
    lines = [head, "|---:|---|---|---:|---:|" + ("---|" if titles else "")]
    lines += [f"| {r.rank} | {r.item_id} | {r.text} | {r.score:.4f} | {r.log_likelihood:.4f} |"
              + (f" {titles.get(r.item_id, '')} |" if titles else "")
              for r in recommendations]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from instructrec_jax import gin_flags
    from instructrec_jax.data.preprocess import load_prepared
    from instructrec_jax.evaluate import resolve_dataset
    from instructrec_jax.instructions.storage import read_item_texts, read_manifest
    from instructrec_jax.vocabulary import load_vocabulary

    parser = argparse.ArgumentParser(prog="instructrec recommend", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, action="append",
                        help="Orbax step dir, HF dir or T5X checkpoint; repeated: an ensemble of models of "
                             "one shape, ranked by their mean log-likelihood (the first names the shape)")
    parser.add_argument("--dataset", required=True, help="prepared dataset folder or name (e.g. ml100k)")
    parser.add_argument("--user", help="a user id of the dataset: their latest items are the history")
    parser.add_argument("--history", help='titles separated by ";" (oldest first)')
    parser.add_argument("--request", default="", help="a vague request, e.g. 'a light comedy' (I1)")
    parser.add_argument("--query", default="", help="a keyword query (I2)")
    parser.add_argument("--preference", default="", help="an explicit preference sentence (P2)")
    parser.add_argument("--candidates", default="catalogue", help="catalogue | baseline:NAME:N | list:ID1,ID2")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--list-max", type=int, default=20, help="most candidates listed in one instruction")
    parser.add_argument("--template", default=None, help="template id of the reranking type (default: its first)")
    parser.add_argument("--scoring", default="sum", choices=ranking.REDUCTIONS)
    parser.add_argument("--without-eos", action="store_true",
                        help="score candidates without their EOS (models trained with prepare --train-next-items)")
    parser.add_argument("--include-seen", action="store_true", help="keep the history's items as candidates")
    parser.add_argument("--candidate-orders", type=int, default=1,
                        help="K: mean log-likelihood over the listed order and K - 1 shuffles of each list")
    parser.add_argument("--candidate-order-seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    gin_flags.add_gin_arguments(parser)
    args = parser.parse_args(gin_flags.rewrite_gin_args(list(sys.argv[1:] if argv is None else argv)))
    try:
        path, _ = resolve_dataset(args.dataset, None)
        data = load_prepared(path)
        item_texts = read_item_texts(path)
        request = request_from_args(data, item_texts, user=args.user, history=args.history,
                                    preference=args.preference, request=args.request, query=args.query)
        candidates = candidate_pool(args.candidates, data, request, include_seen=args.include_seen)
        model, params = load_model(args.checkpoint[0], args.gin_file, args.gin_bindings)
        if len(args.checkpoint) > 1:
            from instructrec_jax.checkpoints.manager import load_ensemble_params

            params = [params, *load_ensemble_params(args.checkpoint[1:], model, start=1)]
        tokenizer = load_vocabulary(path / read_manifest(path).get("vocabulary", "spiece.model"))
        scorer = ranking.CandidateScorer(model, params, tokenizer, ranking.ScoringConfig(
            reduction=args.scoring, score_eos=not args.without_eos, candidate_orders=args.candidate_orders,
            candidate_order_seed=args.candidate_order_seed), item_texts=item_texts)
        ranked = rank_items(scorer, request, candidates, item_texts, list_max=args.list_max,
                            template_id=args.template, top=args.top)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"instructrec recommend: {error}", file=sys.stderr)
        return 1
    if args.json:
        for r in ranked:
            print(json.dumps(dataclasses.asdict(r), ensure_ascii=False))
    else:
        t3, t2 = instruction_types(request)
        print(f"{len(candidates)} candidates ({args.candidates}); instruction type "
              f"{t3 if len(candidates) <= args.list_max or t2 is None else t2}")
        print(format_table(ranked, {i: item.title for i, item in data.items.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
