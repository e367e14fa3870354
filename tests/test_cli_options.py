"""The options generator: dataclass fields -> argparse options, and the CLI generated from BuildConfig."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from alignez_hf.builder import BuildConfig
from alignez_hf.cli import build_parser, main
from alignez_hf.cli.options import add_config_arguments, config_from_args, flag_of, help_default

ROOT = Path(__file__).resolve().parents[1]


def _even(text: str) -> int:
    value = int(text)
    if value % 2:
        raise ValueError(f"expected an even number, got {value}")
    return value


@dataclass(frozen=True)
class Toy:
    flag: bool = field(default=False, metadata={"help": "A switch."})
    on: bool = field(default=True, metadata={"help": "On unless --no-on."})
    maybe: bool | None = field(default=None, metadata={"help": "Tri-state.", "unset": "the server's"})
    sample: bool = field(default=True, metadata={"help": "Sample.", "negative_flag": "greedy"})
    count: int = field(default=3, metadata={"help": "How many."})
    ratio: float | None = field(default=None, metadata={"help": "A ratio."})
    name: str = field(default="x", metadata={"help": "A name.", "choices": ("x", "y"), "flag": "the_name"})
    band: tuple[float, float] | None = field(default=None, metadata={"help": "Two numbers."})
    sizes: tuple[int, ...] = field(default=(1, 2), metadata={"help": "Some sizes."})
    weights: list[float] = field(default_factory=lambda: [0.5], metadata={"help": "Weights."})
    even: int = field(default=2, metadata={"help": "An even number (100%).", "parse": _even})


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Toy)
    return parser.parse_args(list(argv))


def test_defaults_and_types():
    args = _parse()
    assert config_from_args(Toy, args) == Toy()
    args = _parse("--flag", "--no-on", "--maybe", "--greedy", "--count", "5", "--ratio", "0.25", "--the-name", "y",
                  "--band", "0.1,0.9", "--sizes", "4,5,6", "--weights", "1,-2", "--even", "8")  # fmt: skip
    assert config_from_args(Toy, args) == Toy(
        flag=True, on=False, maybe=True, sample=False, count=5, ratio=0.25, name="y", band=(0.1, 0.9),
        sizes=(4, 5, 6), weights=[1.0, -2.0], even=8,
    )  # fmt: skip
    assert _parse("--sample").sample is True and _parse("--on").on is True
    assert config_from_args(Toy, _parse(), count=9).count == 9


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--band", "0.1"], "expected 2 comma-separated values"),
        (["--sizes", "a,b"], "expected comma-separated int values"),
        (["--even", "3"], "expected an even number, got 3"),
        (["--the-name", "z"], "invalid choice"),
        (["--count", "1.5"], "invalid int value"),
        (["--sample", "--greedy"], "not allowed with argument"),
    ],
)
def test_bad_values_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(*argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_help_shows_each_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: nothing to unwrap
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Toy)
    text = " ".join(parser.format_help().split())
    for expected in ("--flag A switch. (default: off)", "--on, --no-on", "On unless --no-on. (default: on)",
                     "Tri-state. (default: the server's)", "--greedy", "A ratio. (default: None)",
                     "--the-name {x,y}", "--band X,X", "(default: 1,2)", "Weights. (default: 0.5)",
                     "An even number (100%). (default: 2)"):  # fmt: skip
        assert expected in text, expected
    assert text.count("(default:") == len(dataclasses.fields(Toy))  # BooleanOptionalAction adds none of its own


def test_unsupported_type_needs_a_parser():
    @dataclass
    class Bad:
        where: dict = field(default_factory=dict)

    with pytest.raises(TypeError, match="metadata\\['parse'\\]"):
        add_config_arguments(argparse.ArgumentParser(), Bad)


def _build_help(capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_every_build_option_is_in_build_help_with_its_default(capsys, monkeypatch):
    text = _build_help(capsys, monkeypatch)
    for f in dataclasses.fields(BuildConfig):
        assert flag_of(f) in text, f.name
        assert f"{' '.join(f.metadata['help'].split())} (default: {help_default(f)})" in text, f.name
    for literal in ("--batch-size BATCH_SIZE Prompts per generation batch. (default: 8)", "(default: persona)",
                    "--greedy Greedy self-generation", "--gate-answered-fire", "(default: 0.3)",
                    "--strategy {paper,persona,persona_answers}"):  # fmt: skip
        assert literal in text, literal


def test_build_parser_defaults_are_build_config():
    args = build_parser().parse_args(["build", "--axis", "cheerful", "--out", "o"])
    assert config_from_args(BuildConfig, args) == BuildConfig()
    argv = ["build", "--axis", "a", "--out", "o", "--greedy", "--layer-band", "0.25,0.5", "--cos-threshold", "off",
            "--no-orient", "--strategy", "paper", "--gate-answered-fire", "youden", "--energy", "0.8"]  # fmt: skip
    parsed = config_from_args(BuildConfig, build_parser().parse_args(argv))
    assert parsed == BuildConfig(do_sample=False, layer_band=(0.25, 0.5), cos_threshold=math.inf, orient=False,
                                 strategy="paper", gate_answered_fire=None, energy=0.8)  # fmt: skip
    with pytest.raises(SystemExit):
        build_parser().parse_args(["build", "--axis", "a", "--out", "o", "--strategy", "nope"])


def test_option_modules_import_without_torch():
    """The option dataclasses and the generator need only the standard library (checked in a fresh interpreter,
    with the packages above them stubbed: their __init__ files import the runtime)."""
    code = textwrap.dedent(
        f"""
        import importlib, json, sys, types
        root = {str(ROOT / "alignez_hf")!r}
        for name in ("alignez_hf", "alignez_hf.builder", "alignez_hf.cli", "alignez_hf.evaluation", "alignez_hf.hub"):
            stub = types.ModuleType(name)
            stub.__path__ = [root + name[len("alignez_hf"):].replace(".", "/")]
            sys.modules[name] = stub
        import argparse
        options = importlib.import_module("alignez_hf.cli.options")
        for module, cls in (("alignez_hf.builder.config", "BuildConfig"), ("alignez_hf.evaluation.config",
                            "EvalConfig"), ("alignez_hf.hub.config", "PushConfig")):
            parser = argparse.ArgumentParser()
            options.add_config_arguments(parser, getattr(importlib.import_module(module), cls))
            parser.parse_args([])
        print(json.dumps(sorted(m for m in ("torch", "transformers", "huggingface_hub") if m in sys.modules)))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
