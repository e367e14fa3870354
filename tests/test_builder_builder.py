import json
import warnings

import pytest
import torch

from alignez_hf import AlignEZForCausalLM
from alignez_hf.builder import RECORDS_FILE, AlignEZBuilder, PackExistsError, SubspaceError
from alignez_hf.builder.strategies import STRATEGIES, band_layers
from alignez_hf.builder.subspace import subspace_cosine

pytestmark = pytest.mark.filterwarnings("ignore:Axis .*likely to do nothing")

QUERIES = ["How do I bake bread?", "Tell me about rivers.", "How can I steal a bike?", "What is a good book?"]
QUIET = dict(progress=False, verbose=False, check_queries=2)


def _build(model, tok, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random tiny model rightly triggers the "does nothing" warning
        return AlignEZBuilder(model, tok, **{**QUIET, **kwargs})


def test_layer_band_is_a_fraction_of_depth():
    assert band_layers(30, (1 / 3, 2 / 3)) == list(range(10, 21))
    assert band_layers(24, (1 / 3, 2 / 3)) == list(range(8, 17))
    assert band_layers(4, None) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        band_layers(4, (0.8, 0.2))


def test_persona_build_records_strategy_and_quality(tiny_chat_llama):
    model, tok = tiny_chat_llama
    builder = _build(model, tok, axes=["cheerful"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aligned = builder.build(QUERIES)
    view = aligned.axes["cheerful"]
    entry = view.metadata
    assert aligned.config.hook_point == "residual" and aligned.config.layer_policy == "static"
    assert entry["strategy"] == "persona" and view.rule == "additive"
    edited = band_layers(model.config.num_hidden_layers, STRATEGIES["persona"].layer_band)
    assert list(view.layers) == edited == [2, 3] and entry["layer_band"] == [2, 3]
    assert entry["persona_system"] == [
        "You are an extremely cheerful assistant.",
        "You are an extremely gloomy assistant.",
    ]
    build = entry["build"]
    assert build["pairs_generated"] == 4 and build["pairs_kept"]["0"] == 4 and build["rank"]["2"] == 1
    assert set(build["quality"]) >= {"shift", "reverse_shift", "random_shift", "effective"}
    assert set(build["seconds"]) >= {"embedding", "subspace", "self_check"}
    # Push size is a fraction of the layer's typical norm, so strength 1.0 means the same on any model.
    tensors = aligned.axis_tensors("cheerful")
    norms = tensors["stats"]["norms"]
    for layer in edited:
        fraction = STRATEGIES["persona"].scale_fraction
        assert float(tensors["scales"][layer][0]) == pytest.approx(fraction * float(norms[layer]), rel=1e-5)
    assert list(aligned.axes) == ["cheerful"]  # the self-check's random controls are gone
    assert "cheerful" in builder.summary() and "self-check" in builder.summary()


def test_two_axes_report_their_subspace_cosine(tiny_chat_llama):
    model, tok = tiny_chat_llama
    builder = _build(model, tok, axes=["cheerful", "simple"], check_queries=0)
    aligned = builder.build(QUERIES)
    cheerful, simple = (aligned.axis_tensors(n)["directions"] for n in ("cheerful", "simple"))
    builds = {name: view.metadata["build"] for name, view in aligned.axes.items()}
    by_layer = builds["cheerful"]["subspace_cosine"]["simple"]
    assert set(by_layer) == {"2", "3"}  # the layers both axes edit
    for layer in (2, 3):
        # Mean-difference axes are rank 1: the cosine is |cos| of their two directions.
        expected = abs(float(cheerful[layer][0] @ simple[layer][0]))
        assert by_layer[str(layer)] == pytest.approx(expected, abs=1e-6)
        assert by_layer[str(layer)] == pytest.approx(subspace_cosine(cheerful[layer], simple[layer]))
    assert builds["simple"]["subspace_cosine"]["cheerful"] == by_layer
    mean = builds["cheerful"]["subspace_cosine_mean"]["simple"]
    assert mean == pytest.approx(sum(by_layer.values()) / len(by_layer))
    assert f"cheerful vs simple: mean {mean:.3f} over layers 2-3" in builder.summary()
    json.dumps(aligned.config.axes)  # saved with the pack


def test_one_axis_has_no_subspace_cosine(tiny_chat_llama):
    model, tok = tiny_chat_llama
    builder = _build(model, tok, axes=["cheerful"], check_queries=0)
    build = next(iter(builder.build(QUERIES).axes.values())).metadata["build"]
    assert build["subspace_cosine"] == {} and build["subspace_cosine_mean"] == {}
    assert "Subspace cosine" not in builder.summary()


def test_paper_strategy_saves_records_and_resumes(tmp_path, tiny_chat_llama):
    model, tok = tiny_chat_llama
    out = tmp_path / "pack"
    kwargs = dict(axes=["harmless"], strategy="paper", max_new_tokens=4, characteristics_tokens=3, do_sample=False)
    _build(model, tok, **kwargs).build(QUERIES[:2], output_dir=out)
    first = (out / RECORDS_FILE).read_text().splitlines()
    aligned = _build(model, tok, **kwargs).build(QUERIES, output_dir=out)
    lines = (out / RECORDS_FILE).read_text().splitlines()
    assert lines[:2] == first and len(lines) == 4
    view = aligned.axes["harmless"]
    assert aligned.config.hook_point == "mlp" and aligned.config.layer_policy == "per_query"
    assert view.rule == "tanh" and view.metadata["strategy"] == "paper"
    loaded = AlignEZForCausalLM.from_pretrained(out, base_model=model)
    assert next(iter(loaded.axes.values())).metadata["build"]["pairs_generated"] == 4
    for layer, d in aligned.axis_tensors("harmless")["directions"].items():
        assert torch.allclose(loaded.axis_tensors("harmless")["directions"][layer], d)


def test_persona_answers_strategy_averages_answer_tokens(tiny_chat_llama):
    model, tok = tiny_chat_llama
    aligned = _build(model, tok, axes=["humor"], strategy="persona_answers", max_new_tokens=3, do_sample=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aligned = aligned.build(QUERIES)
    assert next(iter(aligned.axes.values())).metadata["strategy_settings"]["read"] == "answer_mean"
    assert next(iter(aligned.axes.values())).metadata["build"]["generation"]["new_tokens"] > 0


def test_model_giving_empty_answers_is_a_clear_error(tiny_chat_llama):
    model, tok = tiny_chat_llama
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit ties: greedy emits token 0, a special token that decodes to ""
    builder = _build(
        model, tok, axes=["harmless"], strategy="paper", max_new_tokens=3, characteristics_tokens=2, do_sample=False
    )
    with pytest.raises(SubspaceError, match="empty answer"):
        builder.build(QUERIES[:2])


def test_every_pair_filtered_names_what_to_change(tiny_chat_llama):
    model, tok = tiny_chat_llama
    builder = _build(model, tok, axes=["cheerful"], cos_threshold=-1.0)
    with pytest.raises(SubspaceError, match="more queries, other axis keywords"):
        builder.build(QUERIES)


def test_over_long_queries_warn_and_still_build(tiny_chat_llama):
    model, tok = tiny_chat_llama
    builder = AlignEZBuilder(model, tok, axes=["cheerful"], **QUIET)
    with pytest.warns(UserWarning, match="1 of 3 queries were longer than"):
        builder.build(QUERIES[:2] + ["word " * 400])


def test_tokenizer_without_chat_template_uses_plain_format(tiny_chat_llama):
    import copy

    model, tok = tiny_chat_llama
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    aligned = _build(model, plain, axes=["cheerful"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert next(iter(aligned.build(QUERIES).axes)) == "cheerful"


def test_output_folder_with_another_pack_is_refused_unless_overwrite(tmp_path, tiny_chat_llama):
    model, tok = tiny_chat_llama
    out = tmp_path / "pack"
    _build(model, tok, axes=["cheerful"]).build(QUERIES, output_dir=out)
    _build(model, tok, axes=["cheerful"]).build(QUERIES, output_dir=out)  # the same pack: fine (resume/rebuild)
    with pytest.raises(PackExistsError, match="different steering pack"):
        _build(model, tok, axes=["humor"]).build(QUERIES, output_dir=out)
    _build(model, tok, axes=["humor"]).build(QUERIES, output_dir=out, overwrite=True)
    assert [a["name"] for a in json.loads((out / "config.json").read_text())["axes"]] == ["humor"]
    other = tmp_path / "model"
    model.save_pretrained(other)
    with pytest.raises(PackExistsError, match="not this pack"):
        _build(model, tok, axes=["humor"]).build(QUERIES, output_dir=other)
