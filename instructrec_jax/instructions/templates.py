"""The 39 instruction templates (17 preference, 9 intention, 13 combined), written for this project.

Each template is bound to one instruction type (format.py) and has an input text and a target
pattern, both Python format strings over the fields of `TemplateSlots`. The generator fills the
slots from a prepared example; a template may use only the slots its type provides
(`SLOTS_BY_TYPE`), which the tests check for every template.

The proportions follow the paper (PAPER.md, "The 39 templates"); every evaluated scenario type has
at least two templates, so per-template results and best-on-validation selection are meaningful.
"""

from __future__ import annotations

import dataclasses
import functools
import string

from instructrec_jax.instructions.format import (INSTRUCTION_TYPES, Intention, Output, Preference,
                                                 TaskForm)


@dataclasses.dataclass(frozen=True, slots=True)
class TemplateSlots:
    """The typed values a template may refer to; empty string means "not available for this type".

    Input slots: `history` (the P1 items, oldest first, joined by "; "), `preference` (P2
    sentence), `intention` (I1 phrase or I2 query), `candidates` (the T3 list, joined by "; "),
    `item` (the single item an instruction is about), `item_a`/`item_b` (T1).
    Target slots: `target` (the answer item's text), `answer` (yes/no), `query` (the I2 query of
    the target), `common`, `recent` (the last history items), `explanation`.
    """

    history: str = ""
    preference: str = ""
    intention: str = ""
    candidates: str = ""
    item: str = ""
    item_a: str = ""
    item_b: str = ""
    target: str = ""
    answer: str = ""
    query: str = ""
    common: str = ""
    recent: str = ""
    explanation: str = ""


SLOT_NAMES = frozenset(f.name for f in dataclasses.fields(TemplateSlots))


def _fields(text: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in string.Formatter().parse(text) if name is not None)


@dataclasses.dataclass(frozen=True)
class Template:
    """One phrasing of an instruction type: input text and target pattern over `TemplateSlots`."""

    template_id: str
    family: str  # 'preference' | 'intention' | 'combined'
    instruction_type: str
    text: str
    target: str = "{target}"

    @functools.cached_property
    def placeholders(self) -> frozenset[str]:
        """Slot names the input text refers to."""
        return _fields(self.text)

    @functools.cached_property
    def target_placeholders(self) -> frozenset[str]:
        return _fields(self.target)

    @property
    def num_words(self) -> int:
        """Words in the input text, a placeholder counting as one word."""
        return len(self.text.split())

    @functools.cached_property
    def _used(self) -> tuple[str, ...]:
        return tuple(sorted(self.placeholders | self.target_placeholders))

    def render(self, slots: TemplateSlots) -> tuple[str, str]:
        """Returns (inputs, targets); a used slot left empty is a ValueError naming the template."""
        values = {name: getattr(slots, name) for name in self._used}
        if not all(values.values()):
            empty = next(name for name, value in values.items() if not value)
            raise ValueError(f"template {self.template_id}: slot {{{empty}}} is empty")
        return self.text.format_map(values), self.target.format_map(values)

    def render_target(self, slots: TemplateSlots, target: str) -> str:
        """The target string if `target` (an item's text) were the answer: used for candidates."""
        values = {name: getattr(slots, name) for name in self.target_placeholders}
        values["target"] = target
        return self.target.format_map(values)


def slots_for_type(type_name: str) -> frozenset[str]:
    """The slots the generator fills for an instruction type (inputs and targets together)."""
    itype = INSTRUCTION_TYPES[type_name]
    slots: set[str] = set()
    if itype.uses_history and itype.output is not Output.HISTORY:  # else the history is the answer
        slots.add("history")
    if Preference.P2 in itype.preferences:
        slots.add("preference")
    if itype.intention is not Intention.I0:
        slots.add("intention")
    if itype.task_form is TaskForm.T3:
        slots.add("candidates")
    if itype.task_form is TaskForm.T0:
        slots.add("item")
    if itype.task_form is TaskForm.T1:
        slots |= {"item_a", "item_b"}
    output_slots = {
        Output.ITEM: {"target"},
        Output.YES_NO: {"answer"},
        Output.PREFERENCE: {"preference"},
        Output.COMMON: {"common"},
        Output.QUERY: {"query", "item"},
        Output.HISTORY: {"recent", "item"},
        Output.QUERY_AND_ITEM: {"query", "target"},
        Output.EXPLANATION: {"explanation", "item"},
        Output.PREFERENCE_THEN_ITEM: {"preference", "target"},
    }[itype.output]
    return frozenset(slots | output_slots)


def _t(template_id: str, type_name: str, text: str, target: str = "{target}") -> Template:
    prefix = template_id.split("-")[0]
    family = {"pref": "preference", "int": "intention", "comb": "combined"}[prefix]
    return Template(template_id, family, type_name, text, target)


TEMPLATES: tuple[Template, ...] = (
    # ---- preference (17): the user's taste, no stated intention ----
    _t("pref-01", "p1_i0_t3",
       "A shopper has interacted with these items, oldest first: {history}. From the candidate "
       "list that follows, pick the single item this shopper is most likely to choose next, and "
       "answer with its name only, exactly as written. Candidates: {candidates}."),
    _t("pref-02", "p1_i0_t3",
       "Here is someone's recent activity, in the order it happened: {history}. We can show them "
       "only one of these options next: {candidates}. Judging by how their choices have evolved "
       "so far, which option would they most probably pick? Reply with the chosen item only."),
    _t("pref-03", "p1_i0_t3",
       "You act as a recommender system. The user's past interactions were {history}. Rank the "
       "following candidates by how well each one continues that sequence and return only the "
       "top one: {candidates}. Give just the item as it is listed, with no explanation."),
    _t("pref-04", "p1_i0_t2",
       "Given a user's interaction history, listed from earliest to latest as {history}, suggest "
       "the one item from the whole catalogue that they are most likely to engage with next. "
       "Answer with the name of the item and nothing else, please."),
    _t("pref-05", "p1_i0_t2",
       "Look at the items this person chose over time: {history}. Their next choice has not been "
       "made yet. Considering the themes and the direction of these choices, which item should "
       "the store put in front of them right now? Name one item."),
    _t("pref-06", "p1_i0_t0",
       "A user's history, oldest to newest: {history}. We are thinking of recommending {item} to "
       "them as their very next item. Based on the pattern of their past choices, will they pick "
       "it, or will they skip it? Answer yes or no.",
       "{answer}"),
    _t("pref-07", "p1_i0_t0",
       "Consider this sequence of items a person interacted with: {history}. Is {item} the item "
       "they go on to choose immediately afterwards? Think about what they tend to like and "
       "reply with a single word, either yes or no, nothing else.",
       "{answer}"),
    _t("pref-08", "p1_i0_t1",
       "Someone has recently engaged with {history}. Only two options are left for their next "
       "pick: {item_a} or {item_b}. Which one matches the way their taste has been developing "
       "more closely? Respond with the name of that option, nothing else."),
    _t("pref-09", "p2_i0_t3",
       "We know the following about a user's taste: {preference} Among these candidate items, "
       "{candidates}, which single one suits that taste best? Reply with the item exactly as it "
       "is written in the list, without any extra words."),
    _t("pref-10", "p2_i0_t2",
       "A new visitor describes their taste like this: {preference} Without any record of what "
       "they have used before, propose one item from the catalogue that they would probably "
       "enjoy, and answer only with the name of that one item."),
    _t("pref-11", "p1p2_i0_t3",
       "Profile of the user: {preference} Their most recent items, oldest first: {history}. "
       "Taking both the profile and the recent items into account, choose the candidate they "
       "will most likely select next from {candidates}. Answer with the item as listed."),
    _t("pref-12", "p1p2_i0_t3",
       "Use two clues to decide. Clue one, the stated taste: {preference} Clue two, what they "
       "actually chose lately: {history}. Which of the following items fits both clues best: "
       "{candidates}? Write only the name of the winning item, as it is listed."),
    _t("pref-13", "p1_i0_t2_cot",
       "Here are the items a user went through, in order: {history}. First describe in one "
       "sentence what this user seems to like, then, building on that description, name the item "
       "they are most likely to pick after these ones.",
       "{preference} So the next item is: {target}"),
    _t("pref-14", "rev_history_to_preference",
       "Below is the list of items one person interacted with, earliest first: {history}. Write "
       "a short sentence that captures their taste: which kinds of items they gravitate towards, "
       "and anything else that clearly stands out about the choices they made.",
       "{preference}"),
    _t("pref-15", "rev_history_to_preference",
       "Pretend you are writing a user profile for a recommendation team. The only evidence you "
       "have is this interaction log: {history}. Summarise the person's preferences in a single "
       "sentence that a colleague could act on when choosing what to show them.",
       "{preference}"),
    _t("pref-16", "rev_history_to_common",
       "Study these items that the same user picked one after another: {history}. What do most "
       "of them have in common? Point out the shared kinds of items and any other traits that "
       "several of them share, in one or two sentences.",
       "{common}"),
    _t("pref-17", "rev_item_to_preference",
       "A user with this history, {history}, then went on to choose {item}. Explain briefly "
       "which part of their taste most likely led them to that choice, referring to what the new "
       "item shares with the things they chose before.",
       "{explanation}"),
    # ---- intention (9): a need, no knowledge of the user ----
    _t("int-01", "p0_i2_t3",
       "Act as the search engine of a large online store. A customer typed the query "
       "\"{intention}\". Out of the following results, return the one that answers the query best: "
       "{candidates}. Give the name of the best item only."),
    _t("int-02", "p0_i2_t3",
       "Search request typed by a shopper: {intention}. Several matching items were retrieved "
       "for it: {candidates}. Decide which retrieved item is the most relevant to the request, "
       "as a careful shop assistant would, and reply with the name of that item and nothing "
       "more."),
    _t("int-03", "p0_i2_t3",
       "A first-time visitor to the store, about whom nothing is known, searches for "
       "{intention}. Choose, from these candidate items, the single item that should be shown at "
       "the top of the result page: {candidates}. Answer with its name, as listed."),
    _t("int-04", "p0_i2_t2",
       "You are a product search engine. For the query \"{intention}\", retrieve the one item from "
       "the catalogue that matches it most closely, taking every keyword of the query into "
       "account, and reply with the name of that single item."),
    _t("int-05", "p0_i2_t2",
       "Someone asks the shop assistant: \"Can you find me something matching {intention}?\" They "
       "have never bought anything from us. Which item of the catalogue would the assistant hand "
       "over as the best answer to this question? Name that item."),
    _t("int-06", "p0_i1_t3",
       "A customer we have never seen before says: \"I am looking for {intention}.\" From this "
       "short list of options, which item fits that wish most naturally: {candidates}? Reply "
       "with the name of the item exactly as it is listed."),
    _t("int-07", "p0_i1_t3",
       "A new visitor explains their need in their own words: they want {intention}. Here are "
       "some options we could suggest to them: {candidates}. Pick the option that meets the need "
       "best and answer with the name of that option only."),
    _t("int-08", "rev_item_to_query",
       "A user ended up choosing {item}. Imagine the short search query they typed right before "
       "finding it, the kind of keywords one enters into the search box of a store, and write "
       "that query down without naming the item.",
       "{query}"),
    _t("int-09", "rev_item_to_query",
       "Write the search keywords that would lead a shopper straight to {item}. Describe its "
       "kind and its main features the way a customer would type them into a search bar, without "
       "repeating the name of the item itself.",
       "{query}"),
    # ---- combined (13): taste and need together ----
    _t("comb-01", "p1_i1_t3",
       "The user's past items, oldest first: {history}. Today they say they want {intention}. "
       "Weigh both their history and this request, and choose the best fitting item from these "
       "candidates: {candidates}. Answer with the item name as it is listed."),
    _t("comb-02", "p1_i1_t3",
       "Act as a friendly personal shopping guide in a store. Recently your client picked "
       "{history}. Now they ask for {intention}. Which of the items on the shelf suits them "
       "best: {candidates}? Name just that one item in your answer, nothing more."),
    _t("comb-03", "p1_i1_t3",
       "Given what this person chose before, namely {history}, and the wish they expressed now, "
       "which is {intention}, decide which of the following candidates to recommend to them: "
       "{candidates}. Reply only with the candidate you recommend, written as in the list."),
    _t("comb-04", "p1_i2_t3",
       "A returning customer with the history {history} enters the search query \"{intention}\". "
       "Personalise the results: from the candidates {candidates}, return the single item that "
       "best matches both the query and the history of this customer. Reply with its name."),
    _t("comb-05", "p1_i2_t3",
       "Search query: {intention}. Previous items of the searcher, earliest first: {history}. "
       "Candidate results: {candidates}. Select the result this particular searcher is most "
       "likely to choose, considering the query first and their taste second. Output the name of "
       "the item."),
    _t("comb-06", "p1_i2_t3",
       "As a shopping assistant, you know that your customer recently went for {history}. They "
       "now want an item with these features: {intention}. Pick the one from {candidates} that "
       "fits the features and their habits best, and name it in your reply."),
    _t("comb-07", "p1_i1_t2",
       "Taking into account both that the user already went through {history}, and that right "
       "now they would like {intention}, recommend one item from the entire catalogue that "
       "satisfies this request. Answer with the name of the item only."),
    _t("comb-08", "p1_i2_t2",
       "The user searched for \"{intention}\". Their earlier choices were {history}. Using the "
       "query as the main signal and their history to break ties, name the one catalogue item "
       "that the search should return first for this particular user."),
    _t("comb-09", "p1_i2_t2",
       "A customer describes exactly what they want: {intention}. Looking at their recent "
       "choices, {history}, suggest the item from our whole catalogue that matches the "
       "description and would also suit this customer. Give the name of the item only."),
    _t("comb-10", "rev_query_item_to_history",
       "A user searched for \"{intention}\" and then chose {item} from the results. Guess the "
       "items they interacted with just before this search, with the most recent one last, and "
       "list them separated by semicolons, in the order they happened.",
       "{recent}"),
    _t("comb-11", "rev_query_item_to_history",
       "We know only one search of a customer: the query was {intention}, and the item picked "
       "was {item}. Reconstruct the few items this customer most likely engaged with beforehand, "
       "as a list separated by semicolons, in time order.",
       "{recent}"),
    _t("comb-12", "rev_history_to_next_query",
       "Here is a user's history, earliest first: {history}. Predict what they will search for "
       "next and which item that search will lead them to. Give the query first and then the "
       "item, in that order, as two short parts.",
       "Query: {query}. Item: {target}"),
    _t("comb-13", "rev_history_to_next_query",
       "Based on the items this person engaged with, {history}, anticipate their next move: "
       "write the keywords they are likely to search with next, followed by the item they would "
       "end up choosing as a result of that search.",
       "Search: {query}. Choice: {target}"),
)

TEMPLATES_BY_ID: dict[str, Template] = {t.template_id: t for t in TEMPLATES}


def templates_for(type_name: str) -> tuple[Template, ...]:
    """The templates of an instruction type (a `_neg99` name maps to its base type's templates)."""
    base = type_name.removesuffix("_neg99")
    if base not in INSTRUCTION_TYPES:
        raise KeyError(f"unknown instruction type {type_name!r}; "
                       f"known: {sorted(INSTRUCTION_TYPES)}")
    return tuple(t for t in TEMPLATES if t.instruction_type == base)
