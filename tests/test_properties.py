"""Property tests over what a user can hand us: arguments, config files, result files.

Each either answers or raises the project's one-line error, never anything else. Small budgets
keep the suite fast; hypothesis finds the odd cases (binary, deep nesting, huge numbers, types).
"""
from __future__ import annotations

import contextlib
import io
import json
import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.lib import estimator
from experiments.lib.model_shapes import ModelShape, ShapeError, load_config, shape_from_config
from generator import envelope
from generator.errors import ResultError
from generator.estimate import main as estimate_main

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    derandomize=True)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
CONFIG_KEYS = ["model_type", "n_embd", "n_layer", "n_head", "vocab_size", "n_positions", "n_inner",
               "tie_word_embeddings", "resid_pdrop", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "intermediate_size", "max_position_embeddings", "type_vocab_size",
               "attention_dropout", "head_dim", "rms_norm_eps"]
VALUES = (st.sampled_from(["gpt2", "bert", "llama", "mistral", "qwen2", "mixtral", "gemma2", "mamba", "false"]) | st.booleans()
          | st.integers(min_value=-2, max_value=10**12) | st.floats(allow_nan=True) | st.none()
          | st.lists(st.integers(), max_size=2) | st.text(max_size=4))
CONFIGS = st.dictionaries(st.sampled_from(CONFIG_KEYS), VALUES, max_size=12)
TOKENS = st.sampled_from(["--model", "--config", "--params", "--family", "--hidden", "--layers", "--heads",
                          "--vocab", "--kv-heads", "--intermediate", "--batch", "--seq", "--zero", "--gpus",
                          "--optimizer", "--precision", "--checkpointing", "--json", "--untied", "--tied",
                          "llama-2-7b", "gpt2", "llama", "7e9", "-7e9", "1e400", "0", "-1", "nan", "inf", "3",
                          "4096", "adamw", "sgd", "bf16-mixed", "full", "x" * 3, str(10**30)])


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1


@SETTINGS
@given(st.lists(TOKENS | st.text(alphabet=string.printable, max_size=6), max_size=8))
def test_estimate_answers_or_says_one_line(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = estimate_main(argv)
        except SystemExit as exc:  # --help prints usage and exits 0
            code = exc.code
    assert code in (0, 2), (argv, err.getvalue())
    if code == 2:
        assert one_line(err.getvalue()) and err.getvalue().startswith("handbook estimate: error:"), err.getvalue()


@SETTINGS
@given(CONFIGS | JSON)
def test_any_config_gives_a_shape_or_one_line(cfg) -> None:
    try:
        shape = shape_from_config(cfg, where="config.json")
    except ShapeError as exc:
        assert one_line(str(exc)) and str(exc).startswith("config.json")
        return
    assert isinstance(shape, ModelShape)
    try:
        result = estimator.estimate(estimator.Setup(seq=8), shape=shape)
    except estimator.EstimateError as exc:
        assert one_line(str(exc))
        return
    assert result["parameters"] > 0


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_as_a_config_file_are_read_or_refused(tmp_path_factory, data: bytes) -> None:
    path = Path(tmp_path_factory.mktemp("cfg")) / "config.json"
    path.write_bytes(data)
    try:
        load_config(path)
    except ShapeError as exc:
        assert one_line(str(exc)) and str(path) in str(exc)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_as_a_result_file_are_loaded_or_refused(tmp_path_factory, data: bytes) -> None:
    path = Path(tmp_path_factory.mktemp("res")) / "alpha.json"
    path.write_bytes(data)
    try:
        loaded = envelope.load(path)
    except ResultError as exc:
        assert one_line(str(exc)) and str(path) in str(exc)
        return
    assert loaded["status"] in envelope.STATUSES


def test_deep_nesting_in_a_result_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alpha.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    try:
        envelope.load(path)
    except ResultError as exc:
        assert one_line(str(exc)) and str(path) in str(exc)
    else:
        raise AssertionError("a 100,000-deep list is not a result")
