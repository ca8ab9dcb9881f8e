"""ClusterLab's headless core: data, models, methods, trainer, run store. Never imports streamlit.

``from core import DeepClustering`` loads the scikit-learn estimator (and torch) on first use only, so
``import core`` stays as light as the CLI needs it.
"""
import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str):
    if name == "DeepClustering":
        from core.estimator import DeepClustering
        return DeepClustering
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
