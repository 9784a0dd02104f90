"""The instruction format registry and the 39 templates."""

import collections
import re
import statistics

import pytest

from instructrec_jax.instructions.format import (INSTRUCTION_TYPES, SCENARIOS, Intention, Output,
                                                 Preference, TaskForm, base_type, neg99_types)
from instructrec_jax.instructions.templates import (SLOT_NAMES, TEMPLATES, TEMPLATES_BY_ID,
                                                    TemplateSlots, slots_for_type, templates_for)

ITEM_SLOTS = ("history", "candidates", "item", "item_a", "item_b", "target")


def test_scenarios_name_the_paper_settings():
    assert SCENARIOS == {"sequential": "p1_i0_t3", "product_search": "p0_i2_t3",
                         "personalized_p2": "p1p2_i0_t3", "personalized_i1": "p1_i1_t3",
                         "personalized_i2": "p1_i2_t3"}
    for type_name in SCENARIOS.values():
        itype = INSTRUCTION_TYPES[type_name]
        assert itype.task_form is TaskForm.T3 and itype.evaluated and not itype.reversed


def test_type_names_spell_their_parts():
    for name, itype in INSTRUCTION_TYPES.items():
        assert itype.name == name
        if itype.reversed:
            assert name.startswith("rev_")
            continue
        code = "".join(p.value for p in itype.preferences)
        code += f"_{itype.intention.value}_{itype.task_form.value}"
        assert name.split("_cot")[0] == code
    assert INSTRUCTION_TYPES["p1p2_i0_t3"].preferences == (Preference.P1, Preference.P2)
    assert INSTRUCTION_TYPES["p0_i2_t3"].intention is Intention.I2
    assert INSTRUCTION_TYPES["p1_i0_t2_cot"].output is Output.PREFERENCE_THEN_ITEM


def test_neg99_types_exist_for_every_evaluated_reranking_type():
    expected = {n + "_neg99" for n, t in INSTRUCTION_TYPES.items()
                if t.evaluated and t.task_form is TaskForm.T3}
    assert set(neg99_types()) == expected
    assert set(SCENARIOS.values()) <= {n.removesuffix("_neg99") for n in neg99_types()}
    assert base_type("p1_i0_t3_neg99") is INSTRUCTION_TYPES["p1_i0_t3"]
    with pytest.raises(KeyError, match="p1_i0_t3"):
        base_type("no_such_type")


def test_thirty_nine_templates_in_the_papers_proportions():
    assert len(TEMPLATES) == 39 == len(TEMPLATES_BY_ID)
    families = collections.Counter(t.family for t in TEMPLATES)
    assert families == {"preference": 17, "intention": 9, "combined": 13}
    ids = [t.template_id for t in TEMPLATES]
    assert ids == ([f"pref-{i:02d}" for i in range(1, 18)] + [f"int-{i:02d}" for i in range(1, 10)]
                   + [f"comb-{i:02d}" for i in range(1, 14)])


def test_families_match_the_parts_their_types_use():
    for t in TEMPLATES:
        itype = INSTRUCTION_TYPES[t.instruction_type]
        has_preference = itype.preferences != (Preference.P0,)
        has_intention = itype.intention is not Intention.I0
        expected = ("combined" if has_preference and has_intention else
                    "intention" if has_intention else "preference")
        assert t.family == expected, t.template_id


def test_every_type_has_a_template_and_every_evaluated_one_at_least_two_or_is_not_a_scenario():
    for name, itype in INSTRUCTION_TYPES.items():
        assert templates_for(name), name
    for type_name in SCENARIOS.values():
        assert len(templates_for(type_name)) >= 2, type_name
    assert templates_for("p1_i0_t3_neg99") == templates_for("p1_i0_t3")


def test_templates_cover_every_task_kind_the_paper_lists():
    outputs = {INSTRUCTION_TYPES[t.instruction_type].output for t in TEMPLATES}
    forms = {INSTRUCTION_TYPES[t.instruction_type].task_form for t in TEMPLATES}
    assert outputs == set(Output)
    assert forms == set(TaskForm)


def test_each_template_uses_only_the_slots_its_type_fills_and_all_it_needs():
    for t in TEMPLATES:
        itype = INSTRUCTION_TYPES[t.instruction_type]
        used = t.placeholders | t.target_placeholders
        assert used <= slots_for_type(t.instruction_type), t.template_id
        if itype.uses_history and itype.output is not Output.HISTORY:
            assert "history" in t.placeholders, t.template_id
        if itype.intention is not Intention.I0 and not itype.reversed:
            assert "intention" in t.placeholders, t.template_id
        if Preference.P2 in itype.preferences and not itype.reversed:
            assert "preference" in t.placeholders, t.template_id
        if itype.task_form is TaskForm.T3:
            assert "candidates" in t.placeholders, t.template_id
        if itype.task_form is TaskForm.T1:
            assert {"item_a", "item_b"} <= t.placeholders, t.template_id
        if itype.output is Output.ITEM:
            assert t.target == "{target}", t.template_id


def test_every_template_renders_fully_from_its_declared_slots():
    for t in TEMPLATES:
        used = t.placeholders | t.target_placeholders
        values = {name: f"VALUE_{name.upper()}" for name in used}
        inputs, targets = t.render(TemplateSlots(**values))
        for name in t.placeholders:
            assert f"VALUE_{name.upper()}" in inputs
        for name in t.target_placeholders:
            assert f"VALUE_{name.upper()}" in targets
        assert "{" not in inputs + targets and "}" not in inputs + targets


def test_rendering_with_a_declared_slot_empty_names_the_template():
    template = TEMPLATES_BY_ID["pref-01"]
    with pytest.raises(ValueError, match=r"pref-01.*\{candidates\}"):
        template.render(TemplateSlots(history="a", target="b"))


def test_template_lengths_average_about_forty_words():
    words = [t.num_words for t in TEMPLATES]
    assert 37 <= statistics.mean(words) <= 43
    assert min(words) >= 30 and max(words) <= 50


def test_item_slots_follow_a_space_so_id_tokens_stay_single_pieces():
    # Id tokens are vocabulary pieces with the word-boundary mark: they must start a word.
    for t in TEMPLATES:
        for text in (t.text, t.target):
            for match in re.finditer(r"\{(\w+)\}", text):
                if match.group(1) in ITEM_SLOTS and match.start() > 0:
                    assert text[match.start() - 1] == " ", (t.template_id, match.group(1))


def test_candidate_list_comes_after_the_history():
    # with_candidates() swaps the last occurrence of the candidate list text.
    for t in TEMPLATES:
        if {"candidates", "history"} <= t.placeholders:
            assert t.text.index("{candidates}") > t.text.index("{history}"), t.template_id


def test_template_texts_are_distinct_and_slot_names_are_known():
    assert len({t.text for t in TEMPLATES}) == 39
    for t in TEMPLATES:
        assert (t.placeholders | t.target_placeholders) <= SLOT_NAMES
