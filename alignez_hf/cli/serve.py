"""``alignez serve PACK``: vLLM's OpenAI-compatible server on a pack's base model, steered by the pack.

Every option ``alignez serve`` does not know goes to ``vllm serve`` unchanged (``--tensor-parallel-size``,
``--max-model-len``, ``--dtype`` ...). Needs vLLM in the same environment (``make serve-env`` makes one).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

# vLLM options steering fixes (see alignez_hf.vllm.REQUIRED_ENGINE_ARGS); a user's contrary flag is refused.
FIXED_FLAGS = ("--enforce-eager", "--no-enable-prefix-caching")
CONTRARY_FLAGS = ("--no-enforce-eager", "--enable-prefix-caching")
SERVER_MODULES = ("vllm.entrypoints.launchers.api_server.entry", "vllm.entrypoints.openai.api_server")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="Serve a pack with vLLM's OpenAI-compatible server (other options go to `vllm serve`).",
        description=__doc__,
    )
    p.add_argument("pack", help="Local folder of the steering pack (download a Hub pack with snapshot_download).")
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    p.add_argument("--port", type=int, default=8000, help="Port (default 8000).")
    p.add_argument("--served-model-name", default=None, help="Model name clients ask for (default: the PACK argument).")
    return p


def vllm_command(args: argparse.Namespace, passthrough: list[str]) -> list[str]:
    """The ``vllm serve`` command line for ``args`` (the pack's base, its tokenizer, the fixed flags, the rest)."""
    from ..vllm import engine_args

    bad = [flag for flag in passthrough if flag.split("=")[0] in CONTRARY_FLAGS]
    if bad:
        raise ValueError(f"{', '.join(bad)}: steering needs {' and '.join(FIXED_FLAGS)}; leave these out.")
    engine = engine_args(args.pack)
    return [
        sys.executable,
        "-m",
        server_module(),
        "--model",
        engine["model"],
        "--tokenizer",
        engine["tokenizer"],
        "--served-model-name",
        args.served_model_name or args.pack,
        "--host",
        args.host,
        "--port",
        str(args.port),
        *FIXED_FLAGS,
        *passthrough,
    ]


def server_module() -> str:
    """vLLM's OpenAI-compatible server module (run as ``python -m``; the ``vllm`` script of the CPU build looks up
    a distribution named ``vllm`` and fails)."""
    for name in SERVER_MODULES:
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(
        "alignez serve needs vLLM in this environment: `make serve-env` builds .venv-vllm with it "
        "(on a GPU machine: pip install 'alignez-hf[vllm]')."
    )


def run(args: argparse.Namespace, passthrough: list[str] | None = None) -> int:
    """Replace this process with ``vllm serve`` steered by the pack."""
    from ..vllm.pack import PACK_ENV

    command = vllm_command(args, list(passthrough or []))
    env = {**os.environ, PACK_ENV: str(Path(args.pack).resolve()), "VLLM_USE_V2_MODEL_RUNNER": "0"}
    print("Starting: " + " ".join(command), flush=True)
    os.execve(command[0], command, env)
    return 0  # not reached
