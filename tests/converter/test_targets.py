"""``edgeopt targets list / show`` and the built-in profiles' measured choices."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from edgeopt.cli import main
from edgeopt.targets import builtin_names, load_target

BUILTIN = ["arm-cpu", "edgetpu", "mobile-gpu"]


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> Result:
    monkeypatch.setattr(sys, "argv", ["edgeopt", *args])  # see test_convert_cli._cli
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_list_json(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _cli(["targets", "list", "--json"], monkeypatch)
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)["targets"]}
    assert sorted(rows) == BUILTIN == builtin_names()
    assert rows["edgetpu"]["formats"] == ["tflite"] and rows["edgetpu"]["io_dtype"] == "uint8"
    assert rows["edgetpu"]["float_fallback"] is False
    assert rows["mobile-gpu"]["scheme"] == "float16"
    assert rows["mobile-gpu"]["extra_variants"] == ["int8"]
    assert rows["arm-cpu"]["formats"] == ["tflite", "onnx"]


def test_list_text_has_one_line_per_target(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _cli(["targets", "list"], monkeypatch)
    lines = result.stdout.strip().splitlines()
    assert result.exit_code == 0 and [ln.split()[0] for ln in lines] == BUILTIN


@pytest.mark.parametrize("name", BUILTIN)
def test_show_json_round_trips_the_profile(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _cli(["targets", "show", name, "--json"], monkeypatch)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == load_target(name).to_dict()
    text = _cli(["targets", "show", name], monkeypatch).stdout
    assert text.startswith(f"{name}: ") and "[quantization]" in text


def test_show_user_toml_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pi5.toml"
    path.write_text('name = "pi5"\nformats = ["onnx"]\n[onnx]\nscheme = "dynamic"\n')
    result = _cli(["targets", "show", str(path), "--json"], monkeypatch)
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["name"] == "pi5" and data["onnx"]["scheme"] == "dynamic"


@pytest.mark.parametrize(("args", "fragment"), [
    (["show", "nope"], "unknown target 'nope'"),
    (["show", "missing.toml"], "not found"),
])
def test_show_errors_exit_2(
    args: list[str], fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _cli(["targets", *args], monkeypatch)
    assert result.exit_code == 2 and fragment in result.stderr
    assert result.stderr.startswith("edgeopt: error: ")


@pytest.mark.parametrize(("body", "fragment"), [
    ('name = "x"\nformats = ["tflite"]\nspeed = 1\n', "unknown key(s) speed"),
    ('name = "x"\nformats = ["tflite"]\n[tflite]\nio_dtype = "int4"\n', "use one of"),
    ('name = "x"\nformats = ["tflite"]\n[runtime]\nthreads = "four"\n', "must be an integer"),
    ('name = "x"\nformats = "tflite"\n', "must be a non-empty list"),
    ('name = "x"\nformats = [\n', "invalid TOML"),
])
def test_bad_user_toml_exit_2(
    body: str, fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    result = _cli(["targets", "show", str(path)], monkeypatch)
    assert result.exit_code == 2 and fragment in result.stderr, result.stderr


def test_arm_cpu_onnx_uses_uint8_activations_as_measured() -> None:
    # design.md / targets/arm-cpu.toml: on this host QDQ U8S8 ran 2.2x faster than float, S8S8
    # only 1.3x; the profile must keep the faster choice.
    onnx = load_target("arm-cpu").onnx
    assert (onnx.activation_type.value, onnx.weight_type.value) == ("uint8", "int8")
    assert onnx.quant_format.value == "qdq" and onnx.scheme.value == "static"
