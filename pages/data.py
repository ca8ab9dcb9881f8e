"""Data page: pick a built-in data set or upload one; see counts, image size and a preview per class."""
from __future__ import annotations

import streamlit as st

from core.data import BUILTINS, DataError, ImageDataset, read_upload, save_upload
from core.gallery import class_preview
from pages import common

UPLOAD_DONE = "data.upload_done"  # file_id of the upload already accepted (reruns must not redo it)
SOURCES = ("Built-in", "Upload")
BUILTIN_HELP = {"digits": "scikit-learn's 8×8 handwritten digits, 1,797 images: always available offline",
                "usps": "16×16 postal digits, 9,298 images", "mnist": "28×28 handwritten digits, 70,000 images",
                "mnist-test": "MNIST's 10,000 test images", "fashion-mnist": "28×28 clothing photos, 70,000 images"}


# -- ui -------------------------------------------------------------------------------------------
def source_ui() -> str:
    """Built-in or upload; an upload already chosen keeps the radio on Upload."""
    default = "Upload" if common.chosen_data().endswith(".npz") else "Built-in"
    return common.remember(st.radio, "data.source", default, label="Source", options=SOURCES, horizontal=True)


def builtin_ui() -> str:
    """The built-in data set's name (digits, the offline default, pre-selected)."""
    names = list(BUILTINS)
    current = common.chosen_data()
    return common.remember(st.selectbox, "data.builtin", current if current in names else common.DEFAULT_DATA,
                           label="Built-in data set", options=names,
                           format_func=lambda n: f"{n} — {BUILTIN_HELP.get(n, '')}")


def upload_ui():
    """The uploaded file and the K it must support, or None before a file is given."""
    uploaded = st.file_uploader("An .npz with arrays x (and y), or a .zip of images (one folder per class)",
                                type=["npz", "zip"], key="data.file")
    clusters = st.number_input("Clusters you intend to look for (K)", min_value=2, max_value=100, value=10,
                               key="data.upload_k", help="an upload needs at least 2·K images")
    return uploaded, int(clusters)


# -- compute --------------------------------------------------------------------------------------
def accept_upload(filename: str, content: bytes, n_clusters: int) -> tuple[str, str]:
    """Validate and store an upload; returns (path to train on, a sentence describing it)."""
    dataset, report = read_upload(filename, content, n_clusters)
    path = save_upload(dataset)
    channels, height, width = report.image_shape
    kind = f"{dataset.n_classes} classes" if report.labelled else "no labels"
    sentence = (f"{filename}: {report.n_images:,} images of {height}×{width}"
                f"{'' if channels == 1 else f'×{channels}'}, {kind}")
    if report.n_skipped:
        sentence += f"; {report.n_skipped} unreadable files were skipped"
    return str(path), sentence


# -- draw -----------------------------------------------------------------------------------------
def draw_summary(dataset: ImageDataset) -> None:
    """Counts, image size, classes."""
    channels, height, width = dataset.shape
    columns = st.columns(4)
    columns[0].metric("Images", f"{len(dataset):,}")
    columns[1].metric("Image size", f"{height}×{width}" + ("" if channels == 1 else f"×{channels}"))
    columns[2].metric("Classes", dataset.n_classes if dataset.y is not None else "unlabelled")
    columns[3].metric("Channels", "grey" if channels == 1 else "colour")


def draw_preview(dataset: ImageDataset) -> None:
    """A strip of random images per class (or random strips for unlabelled data)."""
    rows = class_preview(dataset, per_class=12, seed=0)
    st.subheader("Preview" + (" by class" if dataset.y is not None else ""))
    for row in rows:
        left, right = st.columns([1, 6], vertical_alignment="center")
        left.markdown(f"**{row.title}**  \n{row.count:,} images")
        right.image(row.picture, width="content")


def render() -> None:
    """The page: source → data set (or upload) → summary and preview."""
    st.title("Data")
    st.caption("Choose what to cluster. The choice carries over to Train.")
    source = source_ui()
    if source == "Built-in":
        name = builtin_ui()
        st.session_state[common.DATA] = name
    else:
        uploaded, clusters = upload_ui()
        if uploaded is not None and st.session_state.get(UPLOAD_DONE) != uploaded.file_id:
            try:
                path, sentence = accept_upload(uploaded.name, uploaded.getvalue(), clusters)
            except DataError as err:
                st.error(f"This upload cannot be used: {err}")
                return
            st.session_state[common.DATA] = path
            st.session_state[UPLOAD_DONE] = uploaded.file_id
            st.success(f"Accepted {sentence}.")
        if not common.chosen_data().endswith(".npz"):
            st.info("No upload yet: Train still uses "
                    f"**{common.data_label(common.chosen_data())}**.")
            return
    name = common.chosen_data()
    try:
        dataset = common.load_data(name)
    except DataError as err:
        st.error(f"{common.data_label(name)} cannot be loaded: {err}")
        return
    st.markdown(f"Training will use **{common.data_label(name)}**.")
    draw_summary(dataset)
    draw_preview(dataset)


if __name__ == "__main__":
    common.run_page(render)
