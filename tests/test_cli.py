"""The command line: demo end to end on tiny shapes, clear errors."""

import json
import subprocess
import sys

import pytest

import frugal.iae as iae
from frugal.cli import main


def test_demo_iae_writes_model_figure_and_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "iae", "--epochs", "30", "--spectra", "24", "--channels", "64", "--quiet",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "test NMSE: median" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 30 and summary["nmse_db"]["q25"] <= summary["nmse_db"]["median"]
    assert (out / "iae.png").stat().st_size > 10_000
    model = iae.load(out / "model.frugal")
    assert model.signal_shape == (64,)


def test_bad_arguments_exit_non_zero(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "iae", "--arch", "transformer"])
    assert exc.value.code == 2
    assert main(["demo", "iae", "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert "epochs must be >= 1" in capsys.readouterr().err


def test_console_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "frugal.cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "demo" in res.stdout
