"""The app's edges under AppTest: run ids from the URL, other people's runs, unexpected errors."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

import numpy as np
import pytest

from core.data import DataError
from pages import common
from pages import data as data_page
from conftest import write_synthetic_run
from test_app_pages import app, assert_no_error_hidden, open_page  # noqa: F401 (app is a fixture)


def test_a_url_run_outside_the_runs_folder_is_not_opened(app, tmp_path):
    victim = write_synthetic_run(tmp_path / "victim", run_id="20260101-000000-idec-digits-s0-vict", state="running")
    victim.write_status("running", pid=os.getpid())  # alive: the Stop button would be enabled for it
    for run_id in ("../victim/20260101-000000-idec-digits-s0-vict", str(victim.path), "..%2Fvictim"):
        app.query_params[common.RUN_QUERY] = run_id
        at = open_page(app, "train")
        assert common.ACTIVE_RUN not in at.session_state
        assert at.button(key="train.stop").disabled and not at.button(key="train.start").disabled
        assert not any(victim.id in m.value for m in at.markdown)
    assert not (victim.path / "STOP").exists()


def test_a_new_tab_lists_someone_elses_live_run_and_follows_it_only_on_a_click(app, tmp_path):
    theirs = write_synthetic_run(tmp_path / "runs", state="running")
    theirs.write_status("running", pid=os.getpid())
    at = open_page(app, "train")
    assert common.ACTIVE_RUN not in at.session_state
    assert not at.button(key="train.start").disabled and at.button(key="train.stop").disabled
    follow = at.sidebar.button(key=f"follow.{theirs.id}")
    follow.click().run()
    assert_no_error_hidden(at)
    assert at.session_state[common.ACTIVE_RUN] == theirs.id and at.query_params[common.RUN_QUERY] == theirs.id
    assert at.button(key="train.start").disabled and not at.button(key="train.stop").disabled


def test_the_url_names_the_run_a_reload_follows(app, synthetic_run):
    app.query_params[common.RUN_QUERY] = synthetic_run.id
    at = open_page(app, "train")
    assert at.session_state[common.ACTIVE_RUN] == synthetic_run.id
    assert any(synthetic_run.id in m.value for m in at.markdown)


def test_an_unexpected_error_is_a_sentence_on_the_page_and_a_traceback_in_the_log(app, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("/srv/secret/path exploded")
    monkeypatch.setattr("core.runs.list_runs", broken)
    at = app.switch_page("pages/runs.py").run()
    assert not at.exception
    assert [e.value for e in at.error] == [common.UNEXPECTED_ERROR]
    shown = [element.value for kind in ("markdown", "error", "code", "caption", "text") for element in at.get(kind)]
    assert not any("/srv/secret/path" in str(value) for value in shown)
    assert "/srv/secret/path exploded" in caplog.text


def test_a_single_class_upload_is_refused_and_train_does_not_break_on_it(app, tmp_path):
    content = tmp_path / "one.npz"
    np.savez(content, x=np.zeros((40, 8, 8), np.uint8), y=np.zeros(40, np.int64))
    with pytest.raises(DataError, match="single class"):
        data_page.accept_upload("one.npz", content.read_bytes(), n_clusters=2)
    app.session_state[common.DATA] = str(content)  # e.g. saved before the rule existed
    at = open_page(app, "train")
    (error,) = at.error
    assert "single class" in error.value


def test_the_server_listens_on_this_machine_only_and_hides_error_details():
    settings = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["address"] == "127.0.0.1"
    assert settings["client"]["showErrorDetails"] == "none"
