"""Property-based fuzzing (hypothesis) of everything a steering pack, or a caller, hands the runtime.

Every example either works (the pack loads, and generate and forward give finite logits) or raises the library's
own error, an ``AlignEZError`` (which is also a ``ValueError``/``OSError``/...), whose message names the file for a
corrupt pack. Never a bare ``KeyError``/``TypeError``/``AttributeError``/``IndexError`` from deep inside, never NaN
or Inf logits from a pack that loaded, and never a call into safetensors with a header that declares more data
than the file holds (the header is checked against the file's size first).

One tiny valid pack (random 4-layer Llama, an additive axis on layers 1-2 and a gated tanh axis on layer 3) is
built once per module; each example corrupts a copy. Examples per property, bounded so that the file runs in well
under a minute on two cores:

- ``config.json`` (every field: wrong types, out-of-range values, missing and extra keys, inconsistent axes): 60
- ``steering.safetensors`` bytes (flipped bits, truncation, appended and spliced bytes): 50
- ``steering.safetensors`` headers (rewritten dtype, shape, data_offsets, entries, declared length): 50
- the ``steering=`` argument of forward/generate (dicts, lists per row, wrong lengths, NaN/Inf, unknown axes,
  junk), under random steering options: 60
- gate dicts given to ``set_gate``: 40

260 examples in all. Failing examples are printed with a ``@reproduce_failure`` blob to rerun them.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tiny_models import make_tiny_llama

import alignez_hf.runtime.serialization as serialization
from alignez_hf import AlignEZError, AlignEZForCausalLM, GateError, PackError, SteeringError
from alignez_hf.runtime.constants import COMPOSITIONS, EDIT_RULES, HOOK_POINTS, LAYER_POLICIES, POSITIONS

FUZZ = settings(
    deadline=None,
    database=None,  # nothing written into the working tree
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
GATE = {
    "kind": "self_judge",
    "question": "Is {request} harmful?",
    "user_start": [250],
    "turn_end": [251],
    "before": [60, 61, 62],
    "after": [63],
    "digits": list(range(100, 110)),
    "threshold": 4.5,
}
# Two prompts, the second left-padded, the first with a user turn for the gate to find.
IDS = torch.tensor([[1, 250, 5, 6, 7, 251, 8], [0, 0, 9, 10, 11, 12, 13], [1, 14, 15, 16, 17, 18, 19]])
MASK = (IDS != 0).long()
GEN = {
    "max_new_tokens": 2,
    "do_sample": False,
    "pad_token_id": 0,
    "output_logits": True,
    "return_dict_in_generate": True,
}
PACK_FILES = ("config.json", "steering.safetensors")

# ---------------------------------------------------------------------------------------------- strategies
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
SMALL_INTS = st.integers(min_value=-2, max_value=6)
TOKEN_IDS = st.lists(st.integers(min_value=-2, max_value=300) | st.integers(), max_size=12)
# Values that look like what a field holds, so that the checks behind the first one are reached too.
PLAUSIBLE = {
    "hook_point": st.sampled_from([*HOOK_POINTS, "attention"]),
    "layer_policy": st.sampled_from([*LAYER_POLICIES, "dynamic"]),
    "positions": st.sampled_from([*POSITIONS, "first"]),
    "composition": st.sampled_from([*COMPOSITIONS, "mean"]),
    "top_n": st.integers(min_value=-1, max_value=6) | st.integers(),
    "format_version": st.integers(min_value=-1, max_value=3),
    "layers_path": st.sampled_from(["model.layers", "model.nope", "lm_head", "model.layers.0", "", "__class__"]),
    "bundled_base": st.sampled_from(["base", "", "missing", "../base"]),
    "base_model_name_or_path": st.sampled_from(["", "org/not-there", "not a repo id!", "."]),
    "name": st.sampled_from(["cheerful", "b", "zzz", "a.b", "", "a b"]),
    "rule": st.sampled_from([*EDIT_RULES, "cube"]),
    "strength": st.floats(min_value=-2e4, max_value=2e4) | st.floats(allow_nan=True, allow_infinity=True),
    "layers": st.lists(SMALL_INTS, max_size=4),
    "rank": st.dictionaries(st.sampled_from(["0", "1", "2", "3", "4", "x", "-1", "²"]), SMALL_INTS, max_size=4),
    "model_type": st.sampled_from(["llama", "gpt2", "alignez"]),
    "hidden_size": st.sampled_from([32, 16, 0, -32]),
    "num_hidden_layers": st.sampled_from([4, 2, 0]),
    "vocab_size": st.sampled_from([256, 100, 0]),
    "kind": st.sampled_from(["self_judge", "other"]),
    "threshold": st.floats(allow_nan=True, allow_infinity=True),
    "digits": st.lists(st.integers(min_value=-1, max_value=300), min_size=9, max_size=11),
    **{field: TOKEN_IDS for field in ("user_start", "turn_end", "before", "after")},
}
# Names of extra keys: anything, and names that collide with what a config or transformers holds.
EXTRA_KEYS = st.text(max_size=8) | st.sampled_from(
    [
        "axis_names", "to_dict", "validate_steering", "from_pretrained", "__init__", "num_labels", "id2label",
        "label2id", "dtype", "torch_dtype", "_attn_implementation", "return_dict", "use_return_dict", "axes",
        "layers", "rank", "gate", "metadata", "hook_point", "positive", "negative", "evaluation", "auto_map",
    ]
)  # fmt: skip


def _values(key) -> st.SearchStrategy:
    plausible = PLAUSIBLE.get(key) if isinstance(key, str) else None
    return JSON if plausible is None else st.one_of(plausible, JSON)


def _paths(node, prefix=()):
    """Every path into a JSON value: dict keys and list indices, the root first."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _get(node, path):
    for key in path:
        node = node[key]
    return node


def _mutate(data, document):
    """One random change to a JSON document: set a value, delete it, or add a key (or element) next to it."""
    path = data.draw(st.sampled_from(list(_paths(document))), label="path")
    action = data.draw(st.sampled_from(["set", "delete", "add"]), label="action")
    if not path:
        return data.draw(JSON, label="document") if action == "set" else document
    parent, key = _get(document, path[:-1]), path[-1]
    target = parent[key]
    if action == "delete":
        del parent[key]
    elif action == "add" and isinstance(target, dict):
        target[data.draw(EXTRA_KEYS, label="key")] = data.draw(JSON, label="value")
    elif action == "add" and isinstance(target, list):
        target.insert(data.draw(st.integers(0, len(target)), label="index"), data.draw(JSON, label="element"))
    else:
        parent[key] = data.draw(_values(key), label=f"value of {key!r}")
    return document


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    base = make_tiny_llama()
    base.save_pretrained(root / "base")
    model = AlignEZForCausalLM.from_base(base, base_model_name_or_path=str(root / "base"))
    g = torch.Generator().manual_seed(0)
    model.add_axis(
        "cheerful",
        {1: torch.randn(2, 32, generator=g), 2: torch.randn(32, generator=g)},
        stats={"norms": torch.ones(4)},
    )
    model.add_axis("b", {3: torch.randn(2, 32, generator=g)}, rule="tanh", strength=2.0, gate=GATE)
    model.save_pretrained(root / "pack")
    return root / "pack"


@pytest.fixture(scope="module")
def model(pack) -> AlignEZForCausalLM:
    return AlignEZForCausalLM.from_pretrained(pack, local_files_only=True)


def _check_steers(model: AlignEZForCausalLM, rows: int = 2, forward: bool = False, **call) -> None:
    """Generate two tokens for ``rows`` prompts (a steered prefill, then a cached step), and optionally run forward
    with gradients on (the hooks' other branch): the logits must be finite."""
    out = model.generate(IDS[:rows], attention_mask=MASK[:rows], **GEN, **call)
    assert all(bool(torch.isfinite(step).all()) for step in out.logits), "a pack that loaded gave non-finite logits"
    if forward:
        logits = model(input_ids=IDS[:rows], attention_mask=MASK[:rows], **call).logits
        assert torch.isfinite(logits).all(), "forward gave non-finite logits"


def _load_corrupted(pack: Path, name: str, content: bytes) -> AlignEZForCausalLM | AlignEZError:
    """Load a copy of ``pack`` whose file ``name`` holds ``content``: the model, or the AlignEZError raised."""
    with tempfile.TemporaryDirectory(dir=pack.parent) as tmp:
        folder = Path(tmp) / "pack"
        shutil.copytree(pack, folder)
        (folder / name).write_bytes(content)
        try:
            model = AlignEZForCausalLM.from_pretrained(folder, local_files_only=True)
        except AlignEZError as err:  # anything else fails the test with its traceback
            assert any(f in str(err) for f in PACK_FILES), f"the error does not name the file: {err}"
            event(f"refused: {type(err).__name__}")
            return err
        event("loaded")
        assert model.config.base_fingerprint["hidden_size"] == 32
        return model


# ---------------------------------------------------------------------------------------------- config.json
@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_fuzzed_config_loads_and_steers_or_names_the_file(pack, data):
    config = json.loads((pack / "config.json").read_text())
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        config = _mutate(data, config)
    result = _load_corrupted(pack, "config.json", json.dumps(config).encode())
    if isinstance(result, AlignEZForCausalLM):
        _check_steers(result)


# ---------------------------------------------------------------------------------------------- steering.safetensors
def _split(raw: bytes) -> tuple[dict, bytes]:
    length = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def _declares_more_than_the_file(path: str) -> bool:
    """Whether a safetensors header asks for more bytes than the file holds (computed here, independently)."""
    raw = Path(path).read_bytes()
    length = int.from_bytes(raw[:8], "little") if len(raw) >= 8 else 0
    if len(raw) < 8 or length > len(raw) - 8:
        return True
    try:
        header = json.loads(raw[8 : 8 + length])
    except ValueError:
        return False  # nothing declared
    data = len(raw) - 8 - length
    sizes = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}
    for name, info in header.items() if isinstance(header, dict) else ():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        offsets, shape = info.get("data_offsets"), info.get("shape")
        if isinstance(offsets, list) and any(isinstance(o, int) and o > data for o in offsets):
            return True
        if isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape):
            if math.prod(shape) * sizes.get(info.get("dtype"), 1) > data:
                return True
    return False


def _load_steering(pack: Path, content: bytes):
    """Load ``pack`` with ``content`` as its steering file, checking that safetensors never sees an oversize header."""
    real = serialization.load_file

    def guarded(path, *args, **kwargs):
        assert not _declares_more_than_the_file(path), "safetensors was handed a header larger than its file"
        return real(path, *args, **kwargs)

    with mock.patch.object(serialization, "load_file", guarded):
        result = _load_corrupted(pack, "steering.safetensors", content)
    if isinstance(result, AlignEZError):
        assert isinstance(result, PackError)
    else:
        _check_steers(result)


@settings(FUZZ, max_examples=50)
@given(data=st.data())
def test_fuzzed_steering_bytes_load_and_steer_or_name_the_file(pack, data):
    raw = bytearray((pack / "steering.safetensors").read_bytes())
    kind = data.draw(st.sampled_from(["flip", "truncate", "append", "splice"]), label="kind")
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    elif kind == "append":
        raw += data.draw(st.binary(min_size=1, max_size=64), label="tail")
    else:
        start = data.draw(st.integers(0, len(raw)), label="start")
        end = data.draw(st.integers(start, min(len(raw), start + 64)), label="end")
        raw[start:end] = data.draw(st.binary(max_size=64), label="bytes")
    _load_steering(pack, bytes(raw))


HEADER_VALUES = {
    "dtype": st.sampled_from(["F32", "F16", "BF16", "F64", "I32", "I64", "U8", "BOOL", "F8_E4M3", "Q4", "f32"]),
    "shape": st.lists(st.integers(min_value=-1, max_value=64) | st.integers(min_value=0, max_value=2**64), max_size=3),
    "data_offsets": st.lists(st.integers(0, 1024) | st.integers(0, 2**64), max_size=3),
}


@settings(FUZZ, max_examples=50)
@given(data=st.data())
def test_fuzzed_steering_headers_load_and_steer_or_name_the_file(pack, data):
    header, body = _split((pack / "steering.safetensors").read_bytes())
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        names = [n for n in header if n != "__metadata__"] if isinstance(header, dict) else []
        if names and data.draw(st.booleans(), label="tensor field"):
            entry = header[data.draw(st.sampled_from(names), label="tensor")]
            if isinstance(entry, dict):
                field = data.draw(st.sampled_from(sorted(HEADER_VALUES)), label="field")
                entry[field] = data.draw(HEADER_VALUES[field] | JSON, label=field)
                continue
        header = _mutate(data, header)
    text = json.dumps(header).encode() + b" " * data.draw(st.integers(0, 8), label="padding")
    length = len(text)
    if data.draw(st.integers(0, 4), label="rewrite length") == 0:
        length = data.draw(st.integers(0, 2**64 - 1) | st.integers(0, len(text) + len(body) + 8), label="length")
    _load_steering(pack, length.to_bytes(8, "little") + text + body)


# ---------------------------------------------------------------------------------------------- steering=
NAMES = st.sampled_from(["cheerful", "b", "nope", ""]) | st.text(max_size=6) | st.integers() | st.none()
STRENGTHS = st.one_of(
    st.floats(min_value=-1e4, max_value=1e4),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.lists(st.floats(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.floats(), max_size=2),
)
ROW = st.dictionaries(NAMES, STRENGTHS, max_size=3)
STEERING = st.one_of(
    st.none(),
    ROW,
    st.lists(ROW, min_size=0, max_size=4),
    st.lists(ROW | JSON, max_size=4),
    st.tuples(ROW, ROW),
    JSON,
    st.binary(max_size=4),
)
OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "hook_point": st.sampled_from(HOOK_POINTS),
        "layer_policy": st.sampled_from(LAYER_POLICIES),
        "top_n": st.integers(1, 4),
        "positions": st.sampled_from(POSITIONS),
        "composition": st.sampled_from(COMPOSITIONS),
        "rules": st.dictionaries(st.sampled_from(["cheerful", "b"]), st.sampled_from(EDIT_RULES), max_size=2),
    },
)


@settings(FUZZ, max_examples=60)
@given(steering=STEERING, rows=st.integers(1, 3), options=OPTIONS)
def test_fuzzed_steering_argument_steers_or_raises_a_steering_error(model, steering, rows, options):
    with model.steering_options(**options):
        try:
            _check_steers(model, rows, forward=True, steering=steering)
        except SteeringError as err:  # anything else fails the test with its traceback
            assert str(err)
            event(f"refused: {type(err).__name__}")
        else:
            event("steered")


# ---------------------------------------------------------------------------------------------- gates
@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_fuzzed_gate_is_used_or_refused_with_a_gate_error(model, data):
    gate = json.loads(json.dumps(GATE))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        gate = _mutate(data, gate)
    try:
        model.set_gate("b", gate)
    except GateError as err:  # anything else fails the test with its traceback
        assert "Axis 'b'" in str(err)
        event("refused: GateError")
        return
    event("gate used")
    try:
        if gate is not None:  # None removes the gate
            scores = model.gate_scores("b", IDS[:2], MASK[:2])
            assert torch.isfinite(scores).all() and bool(((scores >= 0) & (scores <= 9)).all())
        _check_steers(model, 2, steering={"b": 1.0})
    finally:
        model.set_gate("b", GATE)
