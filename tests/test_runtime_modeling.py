"""AlignEZForCausalLM on tiny random models: where edits land, batching, save/load, dtypes."""

import os

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import alignez_hf  # noqa: F401  (registers the Auto classes)
from alignez_hf import AlignEZConfig, AlignEZForCausalLM
from alignez_hf.runtime.layers import find_decoder_layers

GEN = {"max_new_tokens": 6, "do_sample": False}


def _steered(base, layers=(1, 2), rule="additive", strength=4.0, **kwargs):
    torch.manual_seed(123)
    hidden = base.config.get_text_config().hidden_size
    model = AlignEZForCausalLM.from_base(base, **kwargs)
    model.add_axis("a", {layer: torch.randn(2, hidden) for layer in layers}, rule=rule, strength=strength)
    return model


def _ids(rows=3, length=7, vocab=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (rows, length), generator=g)


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gpt2", "tiny_qwen2"])
def test_strength_zero_and_disabled_equal_base_exactly(family, request):
    base = request.getfixturevalue(family)
    model = _steered(base, layers=(0, 1))
    ids = _ids()
    expected = base.generate(ids, attention_mask=torch.ones_like(ids), **GEN)
    with model.steering_disabled():
        assert torch.equal(model.generate(ids, attention_mask=torch.ones_like(ids), **GEN), expected)
    assert torch.equal(model.generate(ids, attention_mask=torch.ones_like(ids), steering={"a": 0}, **GEN), expected)
    steered = model.generate(ids, attention_mask=torch.ones_like(ids), **GEN)
    assert not torch.equal(steered, expected)
    # the caller's model carries no hooks once a call returns
    assert torch.equal(base.generate(ids, attention_mask=torch.ones_like(ids), **GEN), expected)


def _record(base):
    """Record what each decoder layer outputs, after any edit, as the input of the module that follows it."""
    _, layers = find_decoder_layers(base, base.config.num_hidden_layers)
    followers = list(layers[1:]) + [base.model.norm]
    seen = {}

    def grab(i):
        return lambda module, args, kwargs: seen.__setitem__(i, (args[0] if args else kwargs["hidden_states"]).clone())

    handles = [m.register_forward_pre_hook(grab(i), with_kwargs=True) for i, m in enumerate(followers)]
    return seen, handles


def test_edits_touch_only_chosen_layers_and_last_position(tiny_llama):
    model = _steered(tiny_llama, layers=(2,))
    ids = _ids(rows=2)
    seen, handles = _record(tiny_llama)
    with torch.no_grad():
        with model.steering_disabled():
            model(input_ids=ids)
        base_states = dict(seen)
        model(input_ids=ids)
    for handle in handles:
        handle.remove()
    for layer in (0, 1):
        assert torch.equal(seen[layer], base_states[layer])
    for layer in (2, 3):
        # earlier positions never see the edit (causal attention); the last one does
        assert torch.equal(seen[layer][:, :-1], base_states[layer][:, :-1])
        assert not torch.allclose(seen[layer][:, -1], base_states[layer][:, -1])
    delta = seen[2][:, -1] - base_states[2][:, -1]
    tensors = model.axis_tensors("a")
    expected = 4.0 * (tensors["scales"][2] @ tensors["directions"][2])
    assert torch.allclose(delta, expected.expand_as(delta), atol=1e-5)


def test_positions_all_edits_every_position(tiny_llama):
    model = _steered(tiny_llama, layers=(0,))
    ids = _ids(rows=1)
    seen, handles = _record(tiny_llama)
    with torch.no_grad():
        with model.steering_disabled():
            model(input_ids=ids)
        base0 = seen[0].clone()
        model(input_ids=ids)
        last_only = seen[0].clone()
        with model.steering_options(positions="all"):
            assert model.steering_option("positions") == "all"
            model(input_ids=ids)
    for handle in handles:
        handle.remove()
    assert model.steering_option("positions") == "last" == model.config.positions  # the pack is unchanged
    assert not torch.isclose(seen[0], base0).all(dim=-1).any()
    assert torch.isclose(last_only[:, :-1], base0[:, :-1]).all()


def test_mlp_hook_point_edits_mlp_output(tiny_llama):
    # tanh reads x: on the MLP output it gives another edit than on the layer output (an additive push would not)
    model = _steered(tiny_llama, layers=(1,), hook_point="mlp", rule="tanh", strength=50.0)
    mlp_out, layer_out = [], []
    handles = [
        tiny_llama.model.layers[1].mlp.register_forward_hook(lambda m, a, out: mlp_out.append(out.clone())),
        tiny_llama.model.layers[1].register_forward_hook(lambda m, a, out: layer_out.append(_plain(out).clone())),
    ]
    ids = _ids(rows=2)
    with torch.no_grad():
        with model.steering_disabled():
            model(input_ids=ids)
        model(input_ids=ids)
    for handle in handles:
        handle.remove()
    tensors = model.axis_tensors("a")
    directions = tensors["directions"][1]

    def tanh_edit(x):
        return 50.0 * torch.tanh(x @ directions.T) @ directions

    delta = layer_out[1] - layer_out[0]
    assert torch.allclose(delta[:, :-1], torch.zeros_like(delta[:, :-1]))  # only the last position
    assert torch.allclose(delta[:, -1], tanh_edit(mlp_out[0][:, -1]), atol=1e-5)
    assert not torch.allclose(delta[:, -1], tanh_edit(layer_out[0][:, -1]), atol=1e-3)


def _plain(output):
    return output[0] if isinstance(output, tuple) else output


def test_right_padding_edits_each_rows_last_real_token(tiny_llama):
    model = _steered(tiny_llama, layers=(1,))
    ids = _ids(rows=2, length=6)
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask).logits
        alone = model(input_ids=ids[:1, :4]).logits
    assert torch.allclose(batch[0, :4], alone[0], atol=1e-4)


@pytest.mark.parametrize("policy", ["static", "per_query"])
def test_batch_with_left_padding_and_per_row_strengths_matches_rows_alone(tiny_llama, policy):
    model = _steered(tiny_llama, layers=(0, 1, 2), rule="tanh", strength=3.0, layer_policy=policy, top_n=2)
    prompts = [_ids(1, 5, seed=1)[0], _ids(1, 7, seed=2)[0], _ids(1, 3, seed=3)[0]]
    strengths = [{"a": 3.0}, {"a": 0.0}, {"a": -2.0}]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = p
        mask[i, width - len(p) :] = 1
    batch = model.generate(ids, attention_mask=mask, steering=strengths, **GEN)
    for i, p in enumerate(prompts):
        alone = model.generate(
            p[None], attention_mask=torch.ones(1, len(p), dtype=torch.long), steering=strengths[i], **GEN
        )
        assert torch.equal(batch[i, width:], alone[0, len(p) :]), f"row {i}"


def test_beam_search_and_multiple_returns_follow_their_row(tiny_llama):
    model = _steered(tiny_llama, layers=(1,), strength=5.0)
    ids = _ids(rows=2, length=5)
    kwargs = {"max_new_tokens": 5, "num_beams": 3, "num_return_sequences": 2, "do_sample": False}
    batch = model.generate(ids, attention_mask=torch.ones_like(ids), steering=[{"a": 5.0}, {"a": 0.0}], **kwargs)
    first = model.generate(ids[:1], attention_mask=torch.ones_like(ids[:1]), steering={"a": 5.0}, **kwargs)
    second = model.generate(ids[1:], attention_mask=torch.ones_like(ids[1:]), steering={"a": 0.0}, **kwargs)
    assert torch.equal(batch[:2], first)
    assert torch.equal(batch[2:], second)
    with model.steering_disabled():
        assert torch.equal(second, model.generate(ids[1:], attention_mask=torch.ones_like(ids[1:]), **kwargs))


def test_per_query_policy_reads_unedited_prompt(tiny_llama):
    model = _steered(tiny_llama, layers=(0, 1, 2, 3), rule="tanh", layer_policy="per_query", top_n=1)
    ids = _ids(rows=2)
    queries = model.query_embeddings(ids, torch.ones_like(ids))
    assert set(queries) == {0, 1, 2, 3} and queries[0].shape == (2, 32)
    with torch.no_grad():
        outputs = tiny_llama(input_ids=ids, output_hidden_states=True)
    # residual hook point: decoder layer i's output is hidden_states[i + 1] (the last one is normed in Llama)
    assert torch.allclose(queries[1], outputs.hidden_states[2][:, -1], atol=1e-5)
    steered = model.generate(ids, attention_mask=torch.ones_like(ids), **GEN)
    with model.steering_disabled():
        assert not torch.equal(steered, model.generate(ids, attention_mask=torch.ones_like(ids), **GEN))


def test_strength_controls(tiny_llama):
    model = _steered(tiny_llama)
    assert model.axes["a"].strength == 4.0 and model.axes["a"].layers == (1, 2) and model.axes["a"].rank == {1: 2, 2: 2}
    model.set_strength("a", 0.5)
    assert model.axes["a"].strength == 0.5
    with pytest.raises(TypeError):
        model.axes["b"] = None
    with pytest.raises(KeyError, match="this model's axes: a"):
        model.set_strength("nope", 1.0)
    for bad in (float("nan"), float("inf"), "1", None, True):
        with pytest.raises(ValueError, match="finite number"):
            model.set_strength("a", bad)
    ids = _ids(rows=1)
    with pytest.raises(KeyError, match="Unknown axis 'b'"):
        model.generate(ids, steering={"b": 1.0}, **GEN)
    with pytest.raises(ValueError, match="finite number"):
        model.generate(ids, steering={"a": float("nan")}, **GEN)
    with pytest.raises(ValueError, match="2 entries but the batch has 1"):
        model.generate(ids, steering=[{}, {}], **GEN)


def test_add_axis_rejects_bad_directions(tiny_llama):
    model = AlignEZForCausalLM.from_base(tiny_llama)
    with pytest.raises(ValueError, match=r"shape \[k, 32\]"):
        model.add_axis("a", {0: torch.randn(2, 31)})
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.add_axis("a", {0: torch.full((1, 32), float("nan"))})
    with pytest.raises(ValueError, match="out of range; the base has 4 layers"):
        model.add_axis("a", {4: torch.randn(32)})
    with pytest.raises(ValueError, match="letters, digits"):
        model.add_axis("a.b", {0: torch.randn(32)})
    with pytest.raises(ValueError, match="known rules"):
        model.add_axis("a", {0: torch.randn(32)}, rule="boost")
    model.add_axis("a", {0: torch.randn(32)})
    with pytest.raises(ValueError, match="replace=True"):
        model.add_axis("a", {0: torch.randn(32)})


def test_save_and_load_give_identical_generations(tiny_llama, tiny_base_dir, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    model = _steered(base, layers=(1, 3), rule="tanh")
    ids = _ids()
    expected = model.generate(ids, attention_mask=torch.ones_like(ids), **GEN)
    model.save_pretrained(tmp_path / "pack")
    files = {p.name for p in (tmp_path / "pack").iterdir()}
    assert {"config.json", "steering.safetensors", "modeling_alignez.py", "configuration_alignez.py"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    assert (tmp_path / "pack" / "steering.safetensors").stat().st_size < 100_000
    loaded = AlignEZForCausalLM.from_pretrained(tmp_path / "pack")
    assert loaded.config.base_model_name_or_path == tiny_base_dir
    assert torch.equal(loaded.generate(ids, attention_mask=torch.ones_like(ids), **GEN), expected)
    auto = AutoModelForCausalLM.from_pretrained(tmp_path / "pack")
    assert isinstance(auto, AlignEZForCausalLM)
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "pack"), AlignEZConfig)
    assert torch.equal(auto.generate(ids, attention_mask=torch.ones_like(ids), **GEN), expected)


def test_bundle_holds_the_base_weights(tiny_llama, tmp_path):
    model = _steered(tiny_llama)
    ids = _ids()
    expected = model.generate(ids, attention_mask=torch.ones_like(ids), **GEN)
    model.save_pretrained(tmp_path / "bundle", include_base=True)
    assert (tmp_path / "bundle" / "base" / "model.safetensors").is_file()
    loaded = AlignEZForCausalLM.from_pretrained(tmp_path / "bundle")
    assert torch.equal(loaded.generate(ids, attention_mask=torch.ones_like(ids), **GEN), expected)


def test_axes_that_share_tensors_save_and_load(tiny_llama, tmp_path):
    model = _steered(tiny_llama)
    tensors = model.axis_tensors("a")
    for name in ("b", "c"):  # two axes holding the same tensor objects
        model.add_axis(name, tensors["directions"], scales=tensors["scales"], strength=0.5)
    model.save_pretrained(tmp_path / "pack")
    loaded = AlignEZForCausalLM.from_pretrained(tmp_path / "pack", base_model=tiny_llama)
    for name in ("a", "b", "c"):
        for field in ("directions", "scales"):
            for layer, value in model.axis_tensors(name)[field].items():
                assert torch.equal(loaded.axis_tensors(name)[field][layer], value)


def test_resave_is_atomic_and_keeps_foreign_files(tiny_llama, tmp_path):
    model = _steered(tiny_llama)
    pack = tmp_path / "pack"
    model.save_pretrained(pack)
    (pack / "notes.txt").write_text("mine")
    model.set_strength("a", 0.25)
    model.save_pretrained(pack)
    assert (pack / "notes.txt").read_text() == "mine"
    assert AlignEZConfig.from_pretrained(pack).axes[0]["strength"] == 0.25
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left behind
    umask = os.umask(0)
    os.umask(umask)
    assert (pack.stat().st_mode & 0o777) == 0o777 & ~umask  # an ordinary folder, not mkdtemp's private one
    assert ((pack / "steering.safetensors").stat().st_mode & 0o777) == 0o666 & ~umask


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(tiny_llama, dtype):
    base = tiny_llama.to(dtype)
    model = _steered(base, layers=(1,))
    ids = _ids()
    with torch.no_grad():
        with model.steering_disabled():
            plain = model(input_ids=ids).logits
        steered = model(input_ids=ids).logits
    assert steered.dtype == dtype and torch.isfinite(steered).all()
    assert torch.equal(plain[:, :-1], steered[:, :-1]) and not torch.equal(plain[:, -1], steered[:, -1])


def test_load_with_dtype_and_device_map(tiny_llama, tiny_base_dir, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    _steered(base).save_pretrained(tmp_path / "pack")
    loaded = AlignEZForCausalLM.from_pretrained(tmp_path / "pack", dtype=torch.bfloat16, device_map="cpu")
    assert loaded.base.dtype == torch.bfloat16 and loaded.device.type == "cpu"
    ids = _ids(rows=1)
    out = loaded.generate(ids, attention_mask=torch.ones_like(ids), **GEN)
    assert out.shape == (1, ids.shape[1] + GEN["max_new_tokens"])


def test_gradients_flow_through_edits(tiny_llama):
    model = _steered(tiny_llama, layers=(1,), rule="tanh")
    ids = _ids(rows=1)
    with model.steering_disabled():
        plain = model(input_ids=ids, labels=ids).loss
    with model.steering_options(positions="all"):  # the loss never reads the last position's prediction
        steered = model(input_ids=ids, labels=ids)
    assert steered.logits.requires_grad and not torch.isclose(steered.loss, plain)
    steered.loss.backward()
    grad = tiny_llama.model.layers[0].mlp.down_proj.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_per_query_prefill_reuse_matches_a_separate_prompt_pass(tiny_llama, monkeypatch):
    model = _steered(tiny_llama, layers=(0, 1, 2, 3), rule="tanh", strength=3.0, layer_policy="per_query", top_n=2)
    ids = _ids(rows=3, length=6)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    import alignez_hf.runtime.modeling_alignez as modeling

    decided, real = [], modeling.can_reuse_prefill
    monkeypatch.setattr(modeling, "can_reuse_prefill", lambda *args: decided.append(real(*args)) or decided[-1])
    reused = model.generate(ids, attention_mask=mask, **GEN)
    assert decided == [True]  # the prompt pass did double as the prefill
    monkeypatch.setattr(modeling, "can_reuse_prefill", lambda *args: False)
    separate = model.generate(ids, attention_mask=mask, **GEN)
    assert torch.equal(reused, separate)


def test_random_control_has_the_same_size_and_is_seeded(tiny_llama):
    model = _steered(tiny_llama, layers=(1, 2))
    with model.random_control("a", seed=1) as name:
        real, control = model.axis_tensors("a"), model.axis_tensors(name)
        view = model.axes[name]
        assert (view.layers, view.rank, view.rule) == (model.axes["a"].layers, model.axes["a"].rank, "additive")
        assert view.strength == 0.0 and view.metadata["random_control_of"] == "a"
        for layer, directions in control["directions"].items():
            gram = directions @ directions.T
            assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-5)
            assert torch.equal(control["scales"][layer], real["scales"][layer])
            assert not torch.allclose(directions, real["directions"][layer])
        first = control["directions"]
        with model.steering_options(rules={"a": "tanh"}), model.random_control("a", seed=1, name="again") as again:
            assert model.axes[again].rule == "tanh"  # the control follows the rule in force
            assert all(torch.equal(model.axis_tensors(again)["directions"][k], v) for k, v in first.items())
    assert list(model.axes) == ["a"]


def test_steering_options_are_scoped_validated_and_nest(tiny_llama):
    model = _steered(tiny_llama, layers=(1,))
    ids = _ids(rows=2)
    with torch.no_grad():
        additive = model(input_ids=ids).logits
        with model.steering_options(rules={"a": "tanh"}):
            tanh = model(input_ids=ids).logits
            with model.steering_options(rules={"a": "additive"}, composition="paper"):
                assert torch.allclose(model(input_ids=ids).logits, additive)
                assert model.steering_option("composition") == "paper"
            assert model.steering_option("composition") == "sequential"
    assert not torch.allclose(tanh, additive)
    assert model.axes["a"].rule == "additive"
    with pytest.raises(ValueError, match="positions must be one of"):
        with model.steering_options(positions="first"):
            pass
    with pytest.raises(ValueError, match="not a steering option"):
        with model.steering_options(strength=2):
            pass
    with pytest.raises(KeyError, match="Unknown axis"):
        with model.steering_options(rules={"b": "tanh"}):
            pass
    with pytest.raises(ValueError, match="Unknown edit rule"):
        with model.steering_options(rules={"a": "square"}):
            pass


def test_temporary_axis_and_metadata(tiny_llama):
    model = _steered(tiny_llama, layers=(1,))
    with model.temporary_axis("t", {2: torch.randn(32)}, strength=0.5, note="x") as name:
        assert model.axes[name].metadata == {"note": "x"} and model.axes[name].layers == (2,)
    assert "t" not in model.axes
    model.update_axis_metadata("a", build={"queries": 3})
    view = model.axes["a"]
    view.metadata["build"]["queries"] = 99  # a copy: the model is not changed through it
    assert model.axes["a"].metadata["build"] == {"queries": 3}
    with pytest.raises(ValueError, match="may not set"):
        model.update_axis_metadata("a", rule="tanh")


def test_from_pretrained_attaches_the_packs_tokenizer(tiny_chat_llama, tiny_llama, tmp_path):
    base, tokenizer = tiny_chat_llama
    model = AlignEZForCausalLM.from_base(base, tokenizer)
    model.add_axis("a", {1: torch.randn(32)})
    model.save_pretrained(tmp_path / "with")
    loaded = AlignEZForCausalLM.from_pretrained(tmp_path / "with", base_model=base)
    assert loaded.tokenizer is not None and loaded.tokenizer.chat_template == tokenizer.chat_template
    bare = AlignEZForCausalLM.from_base(tiny_llama)
    bare.add_axis("a", {1: torch.randn(32)})
    bare.save_pretrained(tmp_path / "without")
    assert AlignEZForCausalLM.from_pretrained(tmp_path / "without", base_model=tiny_llama).tokenizer is None


def test_a_local_pack_loads_as_remote_code_and_with_a_config_loaded_first(tiny_base_dir, tmp_path):
    """Without alignez_hf installed (as lm-eval's `pretrained=PACK,trust_remote_code=True` does), a local pack loads
    from its own runtime files, and so does one whose config was loaded first and passed as `config=`."""
    import json
    import subprocess
    import sys
    import textwrap

    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    model = AlignEZForCausalLM.from_base(base, base_model_name_or_path=tiny_base_dir)
    model.add_axis("a", {1: torch.randn(32) * 4})
    model.save_pretrained(tmp_path / "pack")
    ids = _ids(rows=2)
    expected = model.generate(ids, attention_mask=torch.ones_like(ids), **GEN).tolist()
    child = textwrap.dedent(
        f"""
        import json, sys
        class NoAlignez:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "alignez_hf":
                    raise ImportError(name)
        sys.meta_path.insert(0, NoAlignez())
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM
        pack, ids = {str(tmp_path / "pack")!r}, torch.tensor({ids.tolist()!r})
        gen = dict(attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
        model = AutoModelForCausalLM.from_pretrained(pack, trust_remote_code=True)
        config = AutoConfig.from_pretrained(pack, trust_remote_code=True)
        again = AutoModelForCausalLM.from_pretrained(pack, config=config, trust_remote_code=True)
        first, second = model.generate(ids, **gen).tolist(), again.generate(ids, **gen).tolist()
        print(json.dumps([type(model).__module__, first, second]))
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    module, tokens, tokens_again = json.loads(done.stdout.strip().splitlines()[-1])
    assert module.startswith("transformers_modules") and tokens == expected == tokens_again
