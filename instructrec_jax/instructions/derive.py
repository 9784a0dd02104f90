"""Explicit preferences (P2) and intentions (I1, I2) derived from the data, without a teacher LLM.

The paper asked GPT-3.5 to write these; here they are read off item metadata and the user's own
reviews by fixed rules, so they are reproducible and need no network. Every function is
deterministic: ties are broken by documented orders, never by hash or set iteration order.

What each derivation may look at (so that no answer leaks into an input):
- P2 (`explicit_preference`) and `common_traits` see only the history shown to the model and the
  user's reviews of those history items.
- I1 (`vague_intention`) and I2 (`specific_intention`) describe the target item, as the paper's
  intentions do, but never repeat the target's title words in text taken from free fields
  (review sentences, description keywords); category names are kept even where they coincide with
  a title word, because the category path is the paper's own I2.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
import zlib
from typing import Mapping, Sequence

from instructrec_jax.data.types import Item

# A category carried by more than this share of the catalogue (the root of an Amazon path such as
# "Video Games") says nothing about a user, so taste descriptions skip it.
UNINFORMATIVE_SHARE = 0.5
MAX_PREFERENCE_CATEGORIES = 3
MAX_QUERY_KEYWORDS = 3
SENTENCE_WORDS = (4, 24)  # a review sentence is quoted only if it has this many words

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each even ever every few for
from further get gets got had has have having he her here hers him his how i if in into is it its
itself just me more most my no nor not now of off on once only or other our ours out over own
same she should so some such than that the their theirs them then there these they this those
through to too under until up upon us very was we were what when where which while who whom why
will with would you your yours one two new edition game games version set pack item items
""".split())

OPINION_WORDS = frozenset("""
love loved loves lovely great fun enjoy enjoyed enjoyable favorite favourite best awesome
excellent amazing beautiful boring recommend recommended addictive fantastic perfect wonderful
like liked hate hated disappointing disappointed good nice solid brilliant masterpiece gorgeous
terrible awful superb fantastic classic charming hilarious gripping relaxing challenging
""".split())

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")


@dataclasses.dataclass(frozen=True)
class CatalogueFacts:
    """Dataset-wide facts the derivations consult: category shares and keyword rarity."""

    category_share: Mapping[str, float]
    keyword_idf: Mapping[str, float]
    # item id -> informative categories, filled for the catalogue (a hot path of every P2).
    informative_by_item: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def informative(self, item: Item) -> tuple[str, ...]:
        """The item's categories minus the near-universal ones, in the item's own order."""
        cached = self.informative_by_item.get(item.item_id)
        if cached is not None:
            return cached
        return tuple(c for c in item.categories
                     if self.category_share.get(c, 0.0) <= UNINFORMATIVE_SHARE)


def catalogue_facts(items: Mapping[str, Item]) -> CatalogueFacts:
    """Counts category shares and description-keyword document frequencies over the catalogue."""
    n = max(len(items), 1)
    category_counts: collections.Counter[str] = collections.Counter()
    keyword_counts: collections.Counter[str] = collections.Counter()
    for item in items.values():
        category_counts.update(set(item.categories))
        if item.description:
            keyword_counts.update(set(_content_words(item.description)))
    facts = CatalogueFacts(
        category_share={c: k / n for c, k in category_counts.items()},
        keyword_idf={w: math.log(n / k) for w, k in keyword_counts.items()},
    )
    facts.informative_by_item.update((i, facts.informative(item)) for i, item in items.items())
    return facts


def _content_words(text: str) -> list[str]:
    return [w for w in (m.group(0).lower().strip("'-") for m in _WORD.finditer(text))
            if len(w) >= 4 and w not in STOPWORDS]


def title_words(item: Item) -> frozenset[str]:
    """Lower-cased words of the title that free-text derivations must not repeat (len ≥ 3)."""
    return frozenset(w for w in (m.group(0).lower().strip("'-") for m in _WORD.finditer(item.title))
                     if len(w) >= 3 and w not in STOPWORDS)


def decade(year: int | None) -> str | None:
    return None if year is None else f"{year // 10 * 10}s"


def _join_words(words: Sequence[str], last: str = "and") -> str:
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {last} {words[-1]}"


def salient_sentence(review: str | None, avoid: frozenset[str] = frozenset()) -> str | None:
    """The review sentence most worth quoting, or None.

    Candidates are sentences of 4–24 words that contain an opinion word (OPINION_WORDS) and none
    of the words in `avoid` (the title words of the reviewed item, when the quote stands for an
    intention). The sentence with the most opinion words wins; ties go to the earliest sentence.
    Trailing punctuation is dropped so that the quote can sit inside a longer sentence.
    """
    if not review:
        return None
    best, best_score = None, 0
    for sentence in _SENTENCE_END.split(review.strip()):
        words = [m.group(0).lower() for m in _WORD.finditer(sentence)]
        if not SENTENCE_WORDS[0] <= len(words) <= SENTENCE_WORDS[1]:
            continue
        if avoid and any(w.strip("'-") in avoid for w in words):
            continue
        score = sum(w in OPINION_WORDS for w in words)
        if score > best_score:
            best, best_score = " ".join(sentence.split()).rstrip(".!?;:, "), score
    return best


def _ranked_categories(history: Sequence[Item], facts: CatalogueFacts) -> list[tuple[str, int]]:
    """Informative categories of the history by count; ties go to the one seen most recently,
    then to alphabetical order."""
    counts: dict[str, int] = {}
    last_seen: dict[str, int] = {}
    for position, item in enumerate(history):
        for category in facts.informative(item):
            counts[category] = counts.get(category, 0) + 1
            last_seen[category] = position
    return sorted(counts.items(), key=lambda kv: (-kv[1], -last_seen[kv[0]], kv[0]))


def _dominant(values: Sequence[str | None]) -> tuple[str, int] | None:
    """Most frequent non-empty value and its count (ties: the most recent one), or None."""
    counts: dict[str, int] = {}
    last_seen: dict[str, int] = {}
    for position, value in enumerate(values):
        if value:
            counts[value] = counts.get(value, 0) + 1
            last_seen[value] = position
    if not counts:
        return None
    value = min(counts, key=lambda v: (-counts[v], -last_seen[v], v))
    return value, counts[value]


def explicit_preference(history: Sequence[Item], facts: CatalogueFacts,
                        reviews: Sequence[tuple[float | None, str | None]] = ()) -> str:
    """P2: one sentence about the user's taste, read off the history shown to the model.

    - categories: up to three informative categories, most frequent first (ties: most recently
      seen, then alphabetical); with two or more history items, a category needs two occurrences
      unless none has two, in which case the top one is named;
    - era: the dominant decade of the items' years if it covers more than half of them, otherwise
      the two most frequent decades (ties: the earlier decade);
    - brand: the dominant brand if it appears at least twice;
    - the user's voice: `reviews[k]` is (rating, salient sentence) for `history[k]` (already
      chosen with `salient_sentence`); the sentence from the highest-rated review is quoted, ties
      going to the most recent.

    Example (MovieLens): "Enjoys Drama, Comedy and Romance, mostly from the 1990s."
    """
    n = len(history)
    if n == 0:
        return "Has no recorded choices yet, so any popular item could suit them."
    ranked = _ranked_categories(history, facts)
    named = [c for c, k in ranked if k >= 2 or n == 1][:MAX_PREFERENCE_CATEGORIES]
    if not named and ranked:
        named = [ranked[0][0]]
    parts = []
    if named:
        parts.append(f"Enjoys {_join_words(named)}")
    era = _era_phrase([decade(item.year) for item in history])
    if era:
        parts.append(era if parts else f"Prefers items {era}")
    brand = _dominant([item.brand for item in history])
    if brand and brand[1] >= 2:
        parts.append(f"often by {brand[0]}" if parts else f"Often chooses {brand[0]}")
    if not parts:
        latest = history[-1].title.strip() or "an unnamed item"
        parts.append(f"Has varied taste; lately chose {latest}")
    sentence = ", ".join(parts) + "."
    quote = _best_quote(reviews)
    if quote:
        sentence += f' Once wrote: "{quote}".'
    return sentence


def _era_phrase(decades: Sequence[str | None]) -> str | None:
    known = [d for d in decades if d]
    if not known:
        return None
    counts = collections.Counter(known)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if top[0][1] * 2 > len(known):
        return f"mostly from the {top[0][0]}"
    return f"from the {_join_words(sorted(d for d, _ in top[:2]))}"


def _best_quote(reviews: Sequence[tuple[float | None, str | None]]) -> str | None:
    best, best_key = None, None
    for position, (rating, sentence) in enumerate(reviews):
        if not sentence:
            continue
        key = (rating if rating is not None else -math.inf, position)
        if best_key is None or key > best_key:
            best, best_key = sentence, key
    return best


def common_traits(history: Sequence[Item], facts: CatalogueFacts) -> str:
    """What the history's items share, with counts: the target of the "what do they have in
    common" reversed task. Categories carried by at least two items (up to three), the dominant
    decade and brand if at least two items share them.

    Example: "Drama (9 of 20) and Comedy (6 of 20); 15 of 20 are from the 1990s."
    """
    n = len(history)
    ranked = [(c, k) for c, k in _ranked_categories(history, facts) if k >= 2]
    ranked = ranked[:MAX_PREFERENCE_CATEGORIES]
    parts = []
    if ranked:
        parts.append(_join_words([f"{c} ({k} of {n})" for c, k in ranked]))
    era = _dominant([decade(item.year) for item in history])
    if era and era[1] >= 2:
        parts.append(f"{era[1]} of {n} are from the {era[0]}")
    brand = _dominant([item.brand for item in history])
    if brand and brand[1] >= 2:
        parts.append(f"{brand[1]} of {n} are by {brand[0]}")
    if not parts:
        return "They have little in common: no kind of item appears more than once."
    return "; ".join(parts) + "."


_VAGUE_PHRASES = (
    "something in the {} vein",
    "a pick from the {} shelf",
    "something along the lines of {}",
)


def vague_intention(target: Item, facts: CatalogueFacts, review_sentence: str | None = None) -> str:
    """I1: a loose description of what the user wants, derived from the target item.

    If the user's own review of the target gives a salient sentence (chosen by `salient_sentence`
    with the target's title words avoided), the intention quotes it: 'something I would describe
    as "<sentence>"'. Otherwise it names up to two of the target's informative categories from the
    general end (for MovieLens: the first two genres; for an Amazon path: the first levels below
    the root), in one of three phrasings picked by a stable checksum of the item id (CRC-32), e.g.
    "something in the Comedy and Romance vein". Falls back to the decade, then to "something new".
    """
    if review_sentence:
        return f'something I would describe as "{review_sentence}"'
    categories = facts.informative(target)[:2] or target.categories[-1:]
    if categories:
        phrase = _VAGUE_PHRASES[zlib.crc32(target.item_id.encode("utf-8")) % len(_VAGUE_PHRASES)]
        return phrase.format(_join_words(list(categories)))
    era = decade(target.year)
    return f"something from the {era}" if era else "something new to try"


def query_keywords(target: Item, facts: CatalogueFacts,
                   limit: int = MAX_QUERY_KEYWORDS) -> list[str]:
    """Up to `limit` description keywords of the target ranked by tf·idf (ties alphabetical),
    excluding the target's title words, category words and stopwords."""
    if not target.description:
        return []
    banned = title_words(target) | {w.lower() for c in target.categories for w in c.split()}
    counts = collections.Counter(w for w in _content_words(target.description) if w not in banned)
    ranked = sorted(counts, key=lambda w: (-counts[w] * facts.keyword_idf.get(w, 0.0), w))
    return ranked[:limit]


def specific_intention(target: Item, facts: CatalogueFacts) -> str:
    """I2: a keyword query for the target, the paper's method plus metadata keywords.

    The full category path joined by ", " (the paper's I2), then up to three description
    keywords (`query_keywords`), the brand unless one of its words is in the title, and the
    decade of the year. For MovieLens: "Comedy, Romance, 1990s".
    """
    parts = list(target.categories)
    parts += query_keywords(target, facts)
    if target.brand and not ({w.lower() for w in target.brand.split()} & title_words(target)):
        parts.append(target.brand)
    era = decade(target.year)
    if era:
        parts.append(era)
    if not parts:
        return "items like the most popular ones"
    return ", ".join(parts)


def preference_explanation(target: Item, target_text: str, history: Sequence[Item],
                           facts: CatalogueFacts) -> str:
    """Why the target suits the user: which of the history's traits it shares.

    Names the target category most frequent in the history (ties: as in `explicit_preference`)
    with its count ("often choose" from 3 items or a quarter of the history, else "have
    chosen"), and adds the decade or brand when the target shares the history's dominant one. When the target shares nothing, says that it departs from the
    user's usual categories.
    Example: "They often choose Comedy (7 of their last 20 items), and Toy Story is Comedy too;
    it is also from the 1990s, like most of their picks."
    """
    n = len(history)
    ranked = _ranked_categories(history, facts)
    target_categories = set(facts.informative(target))
    shared = [(c, k) for c, k in ranked if c in target_categories]
    sentences = []
    if shared:
        category, count = shared[0]
        how = "often choose" if count >= 3 or count * 4 >= n else "have chosen"
        sentences.append(f"They {how} {category} ({count} of their last {n} items), "
                         f"and {target_text} is {category} too")
    era = _dominant([decade(item.year) for item in history])
    target_era = decade(target.year)
    if era and target_era == era[0] and era[1] * 2 >= n:
        also = " also" if sentences else ""
        sentences.append(f"it is{also} from the {era[0]}, like most of their picks")
    brand = _dominant([item.brand for item in history])
    if brand and target.brand == brand[0] and brand[1] >= 2:
        sentences.append(f"it is by {brand[0]}, a brand they return to")
    if not sentences:
        usual = _join_words([c for c, _ in ranked[:2]]) or "usual choices"
        kind = _join_words(sorted(target_categories)) or "something different"
        return (f"{target_text} departs from their usual {usual}: it is {kind}, "
                "a new direction for them.")
    text = "; ".join(sentences)
    return text[0].upper() + text[1:] + "."
