"""User-facing entries: the Streamlit page (ui/app.py) and the query CLI (python -m ui.search)."""
