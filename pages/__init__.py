"""The app's pages (registered by app.py with st.navigation) and what they share."""
