"""Shared fixtures: every test writes runs and caches under its own temporary folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLUSTERLAB_RUNS", str(tmp_path / "runs"))
    if "CLUSTERLAB_DATA" not in os.environ and SHARED_DATA.is_dir():
        monkeypatch.setenv("CLUSTERLAB_DATA", str(SHARED_DATA))
    return tmp_path


@pytest.fixture(scope="session")
def shared_data():
    """The benchmark data folder; tests that need real data fail loudly without it."""
    folder = Path(os.environ.get("CLUSTERLAB_DATA", SHARED_DATA))
    assert (folder / "usps.npz").is_file(), f"set CLUSTERLAB_DATA to the folder holding usps.npz (looked in {folder})"
    return folder
