"""Evaluation prompt sets: sizes, no overlaps, and the held-out AdvBench split."""

from __future__ import annotations

import pytest

from alignez_hf.evaluation import prompts
from alignez_hf.evaluation.prompts import (
    DATA_DIR,
    PROMPT_FILES,
    advbench_split,
    advbench_split_indices,
    load_advbench,
    load_prompt_set,
)


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.mark.parametrize("name", list(PROMPT_FILES))
def test_own_sets_have_about_forty_distinct_prompts(name):
    items = load_prompt_set(name)
    assert 35 <= len(items) <= 60
    assert len({_normal(p) for p in items}) == len(items)


def test_own_sets_do_not_overlap():
    seen: dict[str, str] = {}
    for name in PROMPT_FILES:
        for p in load_prompt_set(name):
            assert _normal(p) not in seen, f"{p!r} is in {seen.get(_normal(p))} and {name}"
            seen[_normal(p)] = name


def test_limit_and_file_path(tmp_path):
    assert len(load_prompt_set("neutral", limit=3)) == 3
    path = tmp_path / "mine.txt"
    path.write_text("# a comment\nFirst prompt\n\nSecond prompt\n", encoding="utf-8")
    assert load_prompt_set(str(path)) == ["First prompt", "Second prompt"]
    with pytest.raises(ValueError, match="Unknown prompt set"):
        load_prompt_set("no-such-set")


def test_advbench_split_is_disjoint_complete_and_fixed():
    all_prompts = load_advbench()
    assert len(all_prompts) == 520
    split = advbench_split_indices()
    assert set(split["build"]).isdisjoint(split["eval"])
    assert sorted(split["build"] + split["eval"]) == list(range(520))
    assert len(split["eval"]) == 260
    assert split == advbench_split_indices()  # deterministic
    assert load_prompt_set("harmful") == [all_prompts[i] for i in split["eval"]]
    assert set(advbench_split("build")).isdisjoint(advbench_split("eval"))


def test_eval_sets_are_disjoint_from_build_queries():
    build_file = DATA_DIR / "build_queries.txt"
    if not build_file.is_file():
        pytest.skip("alignez_hf/data/build_queries.txt does not exist yet")
    build = {_normal(q) for q in prompts.read_prompt_file(build_file)}
    for name in (*PROMPT_FILES, "harmful"):
        overlap = [p for p in load_prompt_set(name) if _normal(p) in build]
        assert not overlap, f"{name} shares prompts with build_queries.txt: {overlap[:3]}"


def test_prompt_set_slices_and_fresh_sets():
    assert load_prompt_set("harmful[60:120]") == load_prompt_set("harmful")[60:120]
    assert load_prompt_set("neutral[:5]", limit=2) == load_prompt_set("neutral")[:2]
    with pytest.raises(ValueError, match="is empty"):
        load_prompt_set("edgy[500:]")
    for fresh, old in (("ordinary2", "ordinary"), ("edgy2", "edgy")):
        new = load_prompt_set(fresh)
        assert len(new) == 40 and not set(new) & set(load_prompt_set(old))
    assert load_prompt_set("harmful_build[144:260]") == advbench_split("build")[144:260]
    for fresh in ("ordinary4", "edgy4"):
        assert len(load_prompt_set(fresh)) == 40


def test_tuning_files_stay_out_of_the_evaluation_sets():
    evaluation = {_normal(p) for name in PROMPT_FILES for p in load_prompt_set(name)}
    for tuning in ("tune_neutral.txt", "tune_edgy.txt"):
        items = [_normal(p) for p in prompts.read_prompt_file(DATA_DIR / tuning)]
        assert len(items) == 40 and len(set(items)) == 40
        assert not set(items) & evaluation, f"{tuning} shares prompts with an evaluation set"
