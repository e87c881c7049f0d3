"""Small helpers shared by the Streamlit pages (widgets, cached engine calls, plots)."""
