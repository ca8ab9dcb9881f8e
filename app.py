"""ClusterLab's Streamlit entry point (placeholder until the app issue lands)."""
import streamlit as st

st.title("ClusterLab")
st.write("Deep clustering you can watch. Train from the command line: `python -m core train --method idec`.")
