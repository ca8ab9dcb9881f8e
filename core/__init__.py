"""ClusterLab's headless core: data, models, methods, trainer, run store. Never imports streamlit."""
import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
