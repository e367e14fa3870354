import pytest

from alignez_hf.builder.axes import PRESETS, Axis, parse_axis


def test_presets_are_the_papers_keyword_pairs():
    assert parse_axis("harmless") == Axis("harmless", "safety-first", "malicious", behaviour="refusal")
    assert parse_axis("helpful") == Axis("helpful", "helpful", "useless")
    assert parse_axis("humor") == Axis("humor", "humorous", "dull and boring")
    assert {"cheerful", "simple"} <= set(PRESETS)
    assert PRESETS["cheerful"].behaviour == "sentiment" and PRESETS["helpful"].behaviour is None


def test_custom_axis_from_keyword_pair():
    assert parse_axis(" polite = polite , rude ") == Axis("polite", "polite", "rude")
    axis = Axis("x", "a", "b")
    assert parse_axis(axis) is axis
    assert parse_axis("safe=careful,reckless@refusal") == Axis("safe", "careful", "reckless", behaviour="refusal")


def test_unknown_behaviour_names_the_known_ones():
    with pytest.raises(ValueError, match="'refusal', 'sentiment'"):
        parse_axis("x=a,b@politeness")


@pytest.mark.parametrize("spec", ["nonsense", "x=a", "x=a,b,c", "bad name=a,b", "x=a,A", "x=,b"])
def test_bad_axis_specs_are_refused(spec):
    with pytest.raises(ValueError):
        parse_axis(spec)
