"""A run id names one folder inside the runs folder, whichever way it comes in (URL, CLI, pages, projector)."""
import shutil
import signal

import pytest

from core import cli
from core.runs import RunIdError, RunStore, data_token, list_runs, new_run_id, run_path
from conftest import write_synthetic_run


@pytest.mark.parametrize("run_id", ["../victim", "..", ".", "", "/etc", "a/b", "..%2Fvictim", "a\\b", "a b", "ä",
                                    "-starts-with-dash", "x" * 201, None, 7])
def test_run_path_refuses_anything_but_one_folder_name(tmp_path, run_id):
    with pytest.raises(RunIdError, match="not a run id"):
        run_path(tmp_path / "runs", run_id)


def test_run_path_refuses_a_link_that_leads_out_of_the_runs_folder(tmp_path):
    runs = tmp_path / "runs"
    write_synthetic_run(tmp_path / "elsewhere", run_id="victim")
    runs.mkdir()
    (runs / "innocent").symlink_to(tmp_path / "elsewhere" / "victim")
    with pytest.raises(RunIdError, match="inside the runs folder"):
        RunStore.open(runs, "innocent")


def test_open_finds_a_run_and_refuses_a_missing_one(tmp_path, synthetic_run):
    assert RunStore.open(tmp_path / "runs", synthetic_run.id).path == synthetic_run.path
    with pytest.raises(RunIdError, match="no run 20990101"):
        RunStore.open(tmp_path / "runs", "20990101-000000-idec-digits-s0-none")


@pytest.mark.parametrize("data, token", [("digits", "digits"), ("fashion-mnist", "fashion-mnist"),
                                         ("x/../../escaped", "escaped"), ("/home/a/my set.zip", "my_set"),
                                         ("C:\\data\\mine.npz", "mine"), ("../..", "data"), ("uploads/a.b.npz", "a_b")])
def test_data_token_by_hand(data, token):
    assert data_token(data) == token


def test_new_run_ids_are_run_ids(tmp_path):
    run_id = new_run_id("idec", "x/../../escaped.npz", 3)
    assert run_path(tmp_path, run_id).parent == tmp_path and "-idec-escaped-s3-" in run_id


def test_list_runs_skips_folders_that_are_not_runs(tmp_path, synthetic_run):
    shutil.copytree(synthetic_run.path, tmp_path / "runs" / "by hand")
    assert list(list_runs(tmp_path / "runs")["id"]) == [synthetic_run.id]


def test_cli_resume_refuses_an_id_that_leaves_the_runs_folder(tmp_path, capsys):
    victim = write_synthetic_run(tmp_path / "victim", run_id="20260101-000000-idec-digits-s0-vict", state="stopped")
    before = sorted(p.name for p in victim.path.iterdir())
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--resume", f"../victim/{victim.id}"])
    assert exit_.value.code == 2 and "is not a run id" in capsys.readouterr().err
    assert sorted(p.name for p in victim.path.iterdir()) == before


def test_cli_sweep_resume_refuses_an_id_that_leaves_the_sweeps_folder(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sweep", "--resume", "../elsewhere"])
    assert exit_.value.code == 2 and "is not a run id" in capsys.readouterr().err


def test_cli_builds_the_run_id_from_a_cleaned_data_name(tmp_path, monkeypatch):
    import numpy as np
    folder = tmp_path / "x"
    folder.mkdir()
    np.savez(tmp_path / "escaped.npz", x=np.random.default_rng(0).integers(0, 255, (40, 8, 8), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # the CLI's Ctrl-C handler is not for pytest
    assert cli.main(["train", "--method", "kmeans", "--data", "x/../escaped.npz", "--clusters", "2", "--quiet"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert "-kmeans-escaped-s0-" in run.name and (run / "config.json").is_file()
    assert {p.name for p in tmp_path.iterdir()} <= {"cache", "escaped.npz", "runs", "x"}
