"""The instruction format of InstructRec: preference × intention × task form, and the record type.

An instruction type is one combination of the paper's three parts (PAPER.md, "The instruction
format") plus what the model must produce. `INSTRUCTION_TYPES` is the stable registry that the
generator, the storage and the SeqIO tasks iterate; its names never change once published, since
task names and prepared datasets on disk are built from them.
"""

from __future__ import annotations

import dataclasses
import enum


class Preference(enum.Enum):
    """What the instruction says about the user's taste."""

    P0 = "p0"  # nothing: a cold-start request
    P1 = "p1"  # implicit: the interaction history, items written out as text
    P2 = "p2"  # explicit: a sentence about the user's taste (derived, see derive.py)


class Intention(enum.Enum):
    """What the instruction says about the user's current need."""

    I0 = "i0"  # none: the user is browsing
    I1 = "i1"  # vague: "something in the comedy and romance vein"
    I2 = "i2"  # specific: a keyword query (the target's category path and keywords)


class TaskForm(enum.Enum):
    """How the model answers."""

    T0 = "t0"  # pointwise: yes/no for one item
    T1 = "t1"  # pairwise: the better of two items
    T2 = "t2"  # matching: generate an item from the whole catalogue
    T3 = "t3"  # reranking: choose from a listed candidate set


class Output(enum.Enum):
    """What the target string of a record holds (reversed types produce text, not items)."""

    ITEM = "item"  # the target item's text
    YES_NO = "yes_no"  # "yes" or "no"
    PREFERENCE = "preference"  # the derived explicit preference sentence
    COMMON = "common"  # what the history's items have in common
    QUERY = "query"  # the specific query (I2) a user would type for the item
    HISTORY = "history"  # the most recent items of the history
    QUERY_AND_ITEM = "query_and_item"  # the next query, then the next item
    EXPLANATION = "explanation"  # which of the user's preferences the target satisfies
    PREFERENCE_THEN_ITEM = "preference_then_item"  # chain-of-thought: taste first, then the item


class ExampleSource(enum.Enum):
    """Which prepared examples a type is instantiated from."""

    SEQUENTIAL = "sequential"  # PreparedData.train/valid/test (leave-one-out per user)
    SEARCH = "search"  # PreparedData.search (items split 80/10/10; test items unseen in training)


@dataclasses.dataclass(frozen=True)
class InstructionType:
    """One kind of instruction: its format parts, its output and the examples it is built from.

    `evaluated` types also get validation/test records (one per evaluation example and template);
    the others are training-only (pointwise, pairwise, reversed). T3 evaluated types get `_neg99`
    companions holding the 99-negative candidate sets.
    """

    name: str
    preferences: tuple[Preference, ...]
    intention: Intention
    task_form: TaskForm
    reversed: bool
    description: str
    output: Output = Output.ITEM
    source: ExampleSource = ExampleSource.SEQUENTIAL
    evaluated: bool = False

    @property
    def uses_history(self) -> bool:
        return Preference.P1 in self.preferences

    @property
    def has_candidates(self) -> bool:
        return self.task_form in (TaskForm.T0, TaskForm.T1, TaskForm.T3) and not self.reversed


P0, P1, P2 = Preference.P0, Preference.P1, Preference.P2
I0, I1, I2 = Intention.I0, Intention.I1, Intention.I2
T0, T1, T2, T3 = TaskForm.T0, TaskForm.T1, TaskForm.T2, TaskForm.T3
_SEARCH = ExampleSource.SEARCH


def _types(*types: InstructionType) -> dict[str, InstructionType]:
    return {t.name: t for t in types}


INSTRUCTION_TYPES: dict[str, InstructionType] = _types(
    # Preference-only recommendation.
    InstructionType("p1_i0_t3", (P1,), I0, T3, False,
                    "sequential recommendation: pick the next item from candidates",
                    evaluated=True),
    InstructionType("p1_i0_t2", (P1,), I0, T2, False,
                    "matching: name the next item from the whole catalogue, given the history",
                    evaluated=True),
    InstructionType("p1_i0_t0", (P1,), I0, T0, False,
                    "pointwise: will the user pick this item next? yes/no", output=Output.YES_NO),
    InstructionType("p1_i0_t1", (P1,), I0, T1, False,
                    "pairwise: which of two items will the user pick next"),
    InstructionType("p2_i0_t3", (P2,), I0, T3, False,
                    "explicit preference only: pick the item that fits the stated taste",
                    evaluated=True),
    InstructionType("p2_i0_t2", (P2,), I0, T2, False,
                    "explicit preference only: name an item that fits the stated taste",
                    evaluated=True),
    InstructionType("p1p2_i0_t3", (P1, P2), I0, T3, False,
                    "personalised: history plus stated taste, pick from candidates",
                    evaluated=True),
    InstructionType("p1_i0_t2_cot", (P1,), I0, T2, False,
                    "chain of thought: state the user's taste, then name the next item",
                    output=Output.PREFERENCE_THEN_ITEM),
    # Intention-only (cold start, search).
    InstructionType("p0_i2_t3", (P0,), I2, T3, False,
                    "product search: pick the item matching a keyword query", source=_SEARCH,
                    evaluated=True),
    InstructionType("p0_i2_t2", (P0,), I2, T2, False,
                    "product search: name the item matching a keyword query", source=_SEARCH,
                    evaluated=True),
    InstructionType("p0_i1_t3", (P0,), I1, T3, False,
                    "vague request without history: pick the item that fits", source=_SEARCH,
                    evaluated=True),
    # Preference and intention together (personalised search).
    InstructionType("p1_i1_t3", (P1,), I1, T3, False,
                    "personalised search: history plus a vague request, pick from candidates",
                    evaluated=True),
    InstructionType("p1_i2_t3", (P1,), I2, T3, False,
                    "personalised search: history plus a keyword query, pick from candidates",
                    evaluated=True),
    InstructionType("p1_i1_t2", (P1,), I1, T2, False,
                    "personalised search: history plus a vague request, name an item",
                    evaluated=True),
    InstructionType("p1_i2_t2", (P1,), I2, T2, False,
                    "personalised search: history plus a keyword query, name an item",
                    evaluated=True),
    # Reversed tasks: the usual inputs become outputs (training only).
    InstructionType("rev_history_to_preference", (P1,), I0, T2, True,
                    "from the history, state the user's taste", output=Output.PREFERENCE),
    InstructionType("rev_history_to_common", (P1,), I0, T2, True,
                    "from the history, say what its items share", output=Output.COMMON),
    InstructionType("rev_item_to_query", (P0,), I2, T2, True,
                    "from an item, write the query that finds it", output=Output.QUERY,
                    source=_SEARCH),
    InstructionType("rev_query_item_to_history", (P1,), I2, T2, True,
                    "from a query and the chosen item, guess the recent history",
                    output=Output.HISTORY),
    InstructionType("rev_history_to_next_query", (P1,), I2, T2, True,
                    "from the history, predict the next query and the item it leads to",
                    output=Output.QUERY_AND_ITEM),
    InstructionType("rev_item_to_preference", (P1, P2), I0, T2, True,
                    "explain which of the user's preferences led to the chosen item",
                    output=Output.EXPLANATION),
)

# The paper's evaluation scenarios (all reranking), by the names reports and tasks use.
SCENARIOS: dict[str, str] = {
    "sequential": "p1_i0_t3",
    "product_search": "p0_i2_t3",
    "personalized_p2": "p1p2_i0_t3",
    "personalized_i1": "p1_i1_t3",
    "personalized_i2": "p1_i2_t3",
}

NEG99_SUFFIX = "_neg99"
SPLITS = ("train", "validation", "test")


def neg99_name(type_name: str) -> str:
    """The evaluation-only type holding the 99-negative candidate sets of a T3 type."""
    return type_name + NEG99_SUFFIX


def base_type(type_name: str) -> InstructionType:
    """The registered type a (possibly `_neg99`) type name refers to; KeyError lists the names."""
    name = type_name.removesuffix(NEG99_SUFFIX)
    if name not in INSTRUCTION_TYPES:
        raise KeyError(f"unknown instruction type {type_name!r}; "
                       f"known: {sorted(INSTRUCTION_TYPES)}")
    return INSTRUCTION_TYPES[name]


def neg99_types() -> tuple[str, ...]:
    """Names of the 99-negative evaluation types (one per evaluated T3 type)."""
    return tuple(neg99_name(t.name) for t in INSTRUCTION_TYPES.values()
                 if t.evaluated and t.task_form is T3)


@dataclasses.dataclass(frozen=True, slots=True)
class InstructionRecord:
    """One instantiated instruction: what the encoder reads and what the decoder must write.

    `candidates` are item ids (T0: the one item asked about; T1: the two items; T3: the listed
    set); `candidate_targets[k]` is the exact target string that would be correct if
    `candidates[k]` were the answer, so an evaluator can rank candidates by the likelihood of
    these strings. `label_index` points at the true candidate (-1 when none is, e.g. a pointwise
    "no" or a 99-negative group without the true item). `example_id` is unique and stable:
    `split/type/user/position/template` (plus `/gNN` for a candidate group).
    """

    inputs: str
    targets: str
    instruction_type: str
    template_id: str
    user_id: str
    target_item: str = ""
    candidates: tuple[str, ...] = ()
    candidate_targets: tuple[str, ...] = ()
    label_index: int = -1
    example_id: str = ""
