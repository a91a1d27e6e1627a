"""The ``gamma train`` / ``gamma unmix`` / ``demo gamma`` command handlers on tiny inputs."""

import csv
import json

import numpy as np
import pytest

import frugal.iae as iae
from frugal.data import line_family
from frugal.cli import main
from frugal.gamma.report import counting_error_table
from frugal.gamma.io import Spectrum, write_spe

N_RAW = 72  # raw channels: 4 dropped, pairs summed, 32 bins kept
BINS = 32
TINY = ["--epochs", "25", "--latent-dim", "4", "--width", "16", "--depth", "2", "--quiet",
        "--offset", "4", "--rebin", "2", "--bins", str(BINS)]


def _write_family(folder, spectra, params):
    folder.mkdir(parents=True)
    np.save(folder / "spectra.npy", spectra)
    with open(folder / "manifest.csv", "w") as fh:
        fh.write("thickness_mm\n" + "".join(f"{p:.6g}\n" for p in params))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two tiny 'radionuclide' families in the generic layout sharing their parameter, a background."""
    root = tmp_path_factory.mktemp("families")
    fam = line_family(14, N_RAW, seed=3)
    a = 1e5 * fam.spectra
    b = 1e5 * fam.spectra[:, ::-1] * np.linspace(1.5, 0.5, N_RAW)
    _write_family(root / "A", a, 30 * fam.params[:, 0])
    _write_family(root / "B", b, 30 * fam.params[:, 0])
    background = np.exp(-np.arange(N_RAW) / 30.0) + 0.3
    np.savetxt(root / "background.txt", 1e5 * background / background.sum(), fmt="%.1f")
    return root, fam, a, b, background


@pytest.fixture(scope="module")
def joint_model(data, tmp_path_factory):
    root = data[0]
    out = tmp_path_factory.mktemp("model") / "joint.frugal"
    rc = main(["gamma", "train", str(root), "--nuclide", "A", "--nuclide", "B", "--joint", "-o", str(out)] + TINY)
    assert rc == 0
    return out


def test_train_joint_checkpoint_holds_the_preprocessing(joint_model):
    model = iae.load(joint_model)
    assert model.config.joint and model.signal_shape == (2, BINS)
    meta = model.info["gamma"]
    assert meta["names"] == ["A", "B"]
    assert (meta["offset_channels"], meta["rebin"], meta["bins"]) == (4, 2, BINS)
    assert len(meta["energies"]) == BINS
    # the training spectra were preprocessed to unit sum per radionuclide
    np.testing.assert_allclose(np.asarray(model.anchors).sum(-1), 1.0, rtol=1e-5)
    assert set(meta["test_nmse_db"]) == {"A", "B"}


def test_train_several_individual_models_into_a_folder(data, tmp_path, capsys):
    root = data[0]
    rc = main(["gamma", "train", str(root / "A"), str(root / "B"), "-o", str(tmp_path / "models")] + TINY)
    assert rc == 0
    for name in ("A", "B"):
        model = iae.load(tmp_path / "models" / f"{name}.frugal")
        assert not model.config.joint and model.info["gamma"]["names"] == [name]
    assert "test NMSE" in capsys.readouterr().out


def _mixture(data, counts, seed):
    """Raw-channel Poisson mixtures of background + A + B at the family's member 5."""
    _, _, a, b, background = data
    rows = np.stack([background / background.sum(), a[5] / a[5].sum(), b[5] / b[5].sum()])
    return np.random.default_rng(seed).poisson(np.asarray(counts) @ rows)


def test_unmix_writes_csv_json_and_figure(data, joint_model, tmp_path):
    root = data[0]
    truth = np.array([4e4, 3e4, 2e4])
    batch = np.stack([_mixture(data, truth, s) for s in range(3)])
    np.save(tmp_path / "batch.npy", batch)
    np.savetxt(tmp_path / "one.txt", batch[0], fmt="%d")
    write_spe(tmp_path / "one.spe", Spectrum(batch[1].astype(float), np.arange(N_RAW) + 0.5, 100.0, {}))
    out = tmp_path / "out"
    rc = main(["gamma", "unmix", str(tmp_path / "batch.npy"), str(tmp_path / "one.txt"), str(tmp_path / "one.spe"),
               "-m", str(joint_model), "-b", str(root / "background.txt"), "--start", "first", "-o", str(out)])
    assert rc == 0
    with open(out / "unmix.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5
    assert {"background", "background_sigma", "A", "A_sigma", "B", "B_sigma", "deviance"} <= set(rows[0])
    report = json.loads((out / "unmix.json").read_text())
    assert report["sources"] == ["background", "A", "B"]
    assert len(report["spectra"]) == 5
    for rec in report["spectra"]:
        # at the Poisson maximum likelihood with unit-sum signatures, the fitted counts add
        # up to the measured total (the stationarity condition of the background's count)
        assert sum(rec["counts"].values()) == pytest.approx(rec["total_counts"], rel=2e-3)
        assert all(s > 0 for s in rec["sigma"].values())
    # the same counts read from .npy, .txt and .spe give the same answer
    c = [report["spectra"][i]["counts"]["A"] for i in (0, 3)]
    assert c[0] == pytest.approx(c[1], rel=1e-5)
    assert report["spectra"][1]["counts"]["B"] == pytest.approx(report["spectra"][4]["counts"]["B"], rel=1e-5)
    assert (out / "fit.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["gamma", "unmix", "{tmp}/missing.txt", "-m", "{model}"], "missing.txt"),
        (["gamma", "unmix", "{spec}", "-m", "{tmp}/nope.frugal"], "--model"),
        (["gamma", "unmix", "{spec}", "-m", "{model}", "--names", "x"], "--names"),
        (["gamma", "unmix", "{spec}", "-m", "{model}", "-b", "{tmp}/bkg.txt"], "--background"),
        (["gamma", "train", "{root}/A", "--bins", "999", "--epochs", "2", "--offset", "4"], "--bins"),
        (["gamma", "train", "{root}/A", "--joint", "--epochs", "2"], "--joint"),
        (["gamma", "train", "{tmp}/nodir"], "nodir"),
        (["gamma", "train", "{root}/A", "--epochs", "0"], "--epochs"),
        (["demo", "gamma", "--thickness", "80"], "--thickness"),
    ],
)
def test_bad_arguments_give_a_clear_error(argv, message, data, joint_model, tmp_path, capsys):
    root = data[0]
    spec = tmp_path / "spec.txt"
    np.savetxt(spec, _mixture(data, [1e4, 1e4, 1e4], 0), fmt="%d")
    fill = {"tmp": str(tmp_path), "model": str(joint_model), "spec": str(spec), "root": str(root)}
    rc = main([a.format(**fill) for a in argv])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("frugal: error:") and message in err


def test_argparse_errors_exit_with_status_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["gamma", "unmix", "spec.txt"])  # no --model
    assert exc.value.code == 2
    assert "--model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["gamma", "unmix", "spec.txt", "-m", "x.frugal", "--solver", "lbfgs"])
    assert exc.value.code == 2


def test_counting_error_table_reports_median_quartiles_and_coverage():
    class R:  # the two fields the table reads
        counts = np.array([[90.0, 200.0], [100.0, 210.0], [110.0, 190.0]])
        stderr = np.full((3, 2), 10.0)

    text = counting_error_table({"m": R}, [100.0, 200.0], ["x", "y"])
    lines = text.splitlines()
    assert lines[1].split()[:4] == ["m", "0.0", "[-5.0,", "5.0]"]
    assert lines[1].split()[-1] == "1.00"


def test_demo_gamma_runs_end_to_end_on_a_small_setting(tmp_path, capsys):
    rc = main(["demo", "gamma", "--out", str(tmp_path), "--epochs", "20", "--draws", "8", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "SEMSUN-j" in out and "Oracle" in out and "NMF" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["methods"]) == {"SEMSUN-j", "Oracle", "fixed", "NMF"}
    # fixed signatures at 0.001 mm for a 7.3 mm steel shield undercount Ba-133 badly
    assert summary["methods"]["fixed"]["rel_err_pct_median"]["Ba133"] < -30
    assert (tmp_path / "gamma_fit.png").exists() and (tmp_path / "joint.frugal").exists()
