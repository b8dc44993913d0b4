"""``handbook estimate`` on bad and edge input: one clear line each, and no silently wrong answer."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from generator.estimate import main

REPO = Path(__file__).resolve().parent.parent
GPT2 = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}
LLAMA = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 512}


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def config(tmp_path: Path, content: dict | bytes | str) -> str:
    path = tmp_path / "config.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00binary", "not a config.json (not UTF-8"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (dict(GPT2, resid_pdrop="abc"), "field 'resid_pdrop' must be a probability"),
    (dict(GPT2, n_layer=[12]), "field 'n_layer' must be a non-negative integer"),
    (dict(LLAMA, attention_dropout="x"), "field 'attention_dropout' must be a probability"),
    (dict(GPT2, tie_word_embeddings="false"), "field 'tie_word_embeddings' must be true or false, not 'false'"),
    ({"model_type": "mamba", "hidden_size": 8}, "model_type 'mamba' is not supported"),
])
def test_bad_configs_are_one_line_naming_the_file(tmp_path: Path, capsys, content, message: str) -> None:
    path = config(tmp_path, content)
    code, out, err = run(["--config", path], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and path in err and message in err, err


def test_an_unsupported_model_type_suggests_what_to_do(tmp_path: Path, capsys) -> None:
    _, _, err = run(["--config", config(tmp_path, {"model_type": "mamba"})], capsys)
    assert "--params" in err and "--family" in err


@pytest.mark.parametrize("argv, message", [
    (["--params", "1e308"], "beyond any model"),
    (["--params", "1e400"], "must be a positive whole number, not 1e400"),
    (["--params", "9" * 401], "beyond any model"),
    (["--params", "-7e9"], "must be a positive whole number, not -7e9"),
    (["--model", "llama-2-7b", "--batch", str(10**310)], "batch (a 311-digit number) is beyond any training run"),
    (["--model", "gpt2-xl", "--seq", "2048"], "exceeds the model's 1024 learned positions"),
])
def test_absurd_numbers_are_one_line(capsys, argv: list[str], message: str) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_a_sequence_beyond_a_rotary_models_context_is_refused(tmp_path: Path, capsys) -> None:
    code, _, err = run(["--config", config(tmp_path, LLAMA), "--seq", "513"], capsys)
    assert code == 2 and "context of 512 positions (max_position_embeddings)" in err
    code, out, _ = run(["--config", config(tmp_path, LLAMA), "--seq", "512", "--json"], capsys)
    assert code == 0 and json.loads(out)["setup"]["seq"] == 512


def test_a_typed_llama_is_untied_by_default(capsys) -> None:
    shape = ["--family", "llama", "--hidden", "4096", "--layers", "32", "--heads", "32", "--kv-heads", "8",
             "--intermediate", "14336", "--vocab", "128256", "--json"]
    code, out, _ = run(shape, capsys)
    assert code == 0 and json.loads(out)["parameters"] == 8_030_261_248  # Llama-3-8B
    code, out, _ = run(shape + ["--tied"], capsys)
    assert json.loads(out)["parameters"] == 8_030_261_248 - 128256 * 4096
    code, _, err = run(shape + ["--tied", "--untied"], capsys)
    assert code == 2 and "not both" in err


def test_a_closed_pipe_ends_quietly() -> None:
    proc = subprocess.run(f"{sys.executable} -m generator estimate --list-models --json | head -c 1; "
                          f"{sys.executable} -m generator estimate --model llama-2-7b | head -n 1",
                          shell=True, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
