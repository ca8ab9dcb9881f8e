"""What every page shares: session-state keys, cached resources, widget memory, the attached run.

Not a page itself (``app.py`` registers only the four page files).
"""
from __future__ import annotations

import contextlib
import logging
import os
import runpy
import threading
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from core.data import ImageDataset, load_dataset
from core.embed import BackgroundProjector
from core.launch import active_run_ids
from core.repro import describe_device, resolve_device
from core.runs import RunIdError, RunStore, default_runs_dir

# -- session-state keys (one place, so pages cannot drift apart) ------------------------------------
DATA = "data"                  # built-in name or path of the uploaded npz chosen on the Data page
ACTIVE_RUN = "active_run"      # id of the run the Train page and the sidebar follow
EXPLORE_RUN = "explore.run"    # id of the run shown on Explore
TRAIN_CONFIG = "train.config"  # the RunConfig dict the Train page's widgets currently describe
FOLLOW = "explore.follow"      # Explore shows the followed run's newest epoch as it arrives (class demo)
TRAILS = "explore.trails"      # Explore draws each centroid's path over the epochs
RUN_QUERY = "run"              # ?run=<id> in the URL: a reload re-attaches to the same run
SWEEP_CELL = "runs.sweep_cell" # {sweep, label, runs}: the sweep cell whose runs the Runs page shows

DEFAULT_DATA = "digits"
APP_SCRIPT = Path(__file__).resolve().parents[1] / "app.py"

log = logging.getLogger(__name__)


# -- the app shell around every page ----------------------------------------------------------------
_shell = threading.local()  # Streamlit runs each session's script in its own thread


@contextlib.contextmanager
def app_shell():
    """Context in which ``app.py`` runs the chosen page (sidebar drawn, pages registered)."""
    _shell.active = True
    try:
        yield
    finally:
        _shell.active = False


def run_page(render: Callable[[], None]) -> None:
    """Draw a page, through ``app.py`` when Streamlit started the page file on its own.

    Because a ``pages/`` folder exists, Streamlit's first session after a server start runs in the
    legacy multipage mode until ``app.py`` has called ``st.navigation`` once; if that session opens
    ``/train`` directly (a bookmarked or reloaded tab), Streamlit runs ``pages/train.py`` without
    ``app.py``: no sidebar, and every module in ``pages/`` listed as a page. Running ``app.py``
    from here registers the real pages, which then draws this one.
    """
    if getattr(_shell, "active", False):
        with unexpected_errors_shown_briefly():
            render()
    else:
        runpy.run_path(str(APP_SCRIPT), run_name="__main__")


UNEXPECTED_ERROR = ("Something went wrong on this page. The details are in the app's log; reloading the page "
                    "or choosing other settings may help.")


@contextlib.contextmanager
def unexpected_errors_shown_briefly():
    """An error nobody planned for becomes one sentence on the page and a traceback in the log, never a
    traceback (with server paths) in the browser. Streamlit's own rerun and stop signals are not errors
    (``BaseException``s) and pass through."""
    try:
        yield
    except Exception:
        log.exception("unexpected error while drawing a page")
        st.error(UNEXPECTED_ERROR)


# -- resources shared by every session ------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def projector() -> BackgroundProjector:
    """The frame worker process; started (and UMAP warmed up) once, when the app starts."""
    return BackgroundProjector(warm_up=os.environ.get("CLUSTERLAB_UMAP_WARMUP", "1") != "0")


@st.cache_resource(show_spinner=False)
def device_name() -> str:
    """The device ``auto`` resolves to, in words (GPU name or CPU)."""
    return describe_device(resolve_device("auto"))


@st.cache_resource(show_spinner="Loading the data set…", max_entries=4)
def load_data(name: str) -> ImageDataset:
    """The data set, shared read-only by all sessions (a copy per rerun would cost 200 MB for MNIST)."""
    return load_dataset(name)


def runs_dir() -> Path:
    """``$CLUSTERLAB_RUNS`` or ``./runs``, read on every call (tests change it per test)."""
    return default_runs_dir()


# -- widget memory ---------------------------------------------------------------------------------
def remember(widget, key: str, default, **kwargs):
    """Draw ``widget`` under ``key`` and keep its value when the user visits another page.

    Streamlit forgets the state of widgets that were not drawn in a run; a plain session-state copy
    (``_`` + key) survives and restores the widget when the page comes back. A widget whose default
    moved since it was last drawn starts again from the new default: another data set can bring its
    own value for a knob (CDC pretrains Fashion-MNIST with SGD at lr 0.1), and a user's setting for
    the set before must not silently replace it.
    """
    drawn_default = f"_{key}.default"
    if key not in st.session_state or st.session_state.get(drawn_default, default) != default:
        st.session_state[key] = shown_value(key, default)
    st.session_state[drawn_default] = default
    options, value = kwargs.get("options"), st.session_state[key]
    chosen = value if isinstance(value, (list, tuple)) else [value]  # a multiselect's or a range slider's values
    if options is not None and value is not None and any(v not in list(options) for v in chosen):
        st.session_state[key] = default  # the options changed under it, e.g. a preset of the method chosen before
    value = widget(key=key, **kwargs)
    st.session_state[f"_{key}"] = value
    return value


def shown_value(key: str, default):
    """The value ``remember`` draws the widget under ``key`` with: ``default`` if the default moved since
    it was last drawn, else the widget's value, its backup, or ``default`` (the first time)."""
    if st.session_state.get(f"_{key}.default", default) != default:
        return default
    return st.session_state.get(key, st.session_state.get(f"_{key}", default))


def restore(key: str, value) -> None:
    """Make the widget under ``key`` show ``value`` the next time ``remember`` draws it, whatever its
    default is then (the record of the default it was last drawn with is dropped)."""
    st.session_state[key] = st.session_state[f"_{key}"] = value
    st.session_state.pop(f"_{key}.default", None)


# -- the data set and the run the pages follow ------------------------------------------------------
def chosen_data() -> str:
    """The data set chosen on the Data page (digits until then)."""
    return st.session_state.get(DATA, DEFAULT_DATA)


def data_label(name: str) -> str:
    """``digits`` → ``digits``; ``/…/uploads/my_set.npz`` → ``my_set (upload)``."""
    return f"{Path(name).stem} (upload)" if name.endswith(".npz") else name


def attach(run_id: str) -> None:
    """Follow ``run_id`` on Train and in the sidebar, and put it in the URL for reloads."""
    st.session_state[ACTIVE_RUN] = run_id
    st.query_params[RUN_QUERY] = run_id


def attached_run() -> RunStore | None:
    """The followed run: the one this session started or chose, else the one the URL names (after a reload).

    Never another session's run uninvited: ``other_live_runs`` lists those, to be followed on purpose.
    An id that names no run (or is not an id at all: ``?run=../elsewhere``) is dropped.
    """
    run_id = st.session_state.get(ACTIVE_RUN) or st.query_params.get(RUN_QUERY)
    if not run_id:
        return None
    try:
        store = run_store(run_id)
    except RunIdError:
        st.session_state.pop(ACTIVE_RUN, None)
        if st.query_params.get(RUN_QUERY) == run_id:
            del st.query_params[RUN_QUERY]
        return None
    st.session_state[ACTIVE_RUN] = run_id
    return store


def other_live_runs(followed: RunStore | None) -> list[str]:
    """Ids of the runs training now (queued or running, process alive) that this session does not follow."""
    return [run_id for run_id in active_run_ids(runs_dir()) if followed is None or run_id != followed.id]


def run_store(run_id: str) -> RunStore:
    """The run ``run_id`` of the runs folder; ``RunIdError`` for anything else (the pages' one way to a run)."""
    return RunStore.open(runs_dir(), run_id)


def format_duration(seconds: float | None) -> str:
    """``83`` → ``1:23``; ``None`` or NaN → ``—``."""
    if seconds is None or seconds != seconds:
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


STATE_BADGES = {"queued": ("queued", "gray"), "running": ("running", "blue"), "finished": ("finished", "green"),
                "stopped": ("stopped", "orange"), "failed": ("failed", "red"), "died": ("process died", "red"),
                "unknown": ("unknown", "gray")}


def state_badge(state: str) -> None:
    """A coloured badge for a run state."""
    label, colour = STATE_BADGES.get(state, (state, "gray"))
    st.badge(label, color=colour)
