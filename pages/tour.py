"""A teaching tour: the five papers' stories, one step at a time, each told on a built-in example
with short text beside the live figures (offline: built-in samples and committed fits only)."""
import streamlit as st

from explainers.errors import ExplainerError
from ui import page, tour

st.title("Teaching tour")
st.caption(
    "What each method answers, and where each one misleads — the papers' figures re-told on the built-in "
    "shapes. Every step picks its own classifier and image (the sidebar's upload is not used); results are "
    "cached, so going back to a step is instant."
)

TITLES = [f"{i + 1} · {s.title}" for i, s in enumerate(tour.STEPS)]
if st.session_state.get("tour.step") not in TITLES:  # first visit, or back from another page
    st.session_state["tour.step"] = st.session_state.get("tour.last", TITLES[0])


def _move(delta: int) -> None:
    i = TITLES.index(st.session_state["tour.step"])
    st.session_state["tour.step"] = TITLES[max(0, min(len(TITLES) - 1, i + delta))]


nav, prev, nxt = st.columns([5, 1, 1], vertical_alignment="bottom")
with nav:
    choice = st.selectbox("Step", TITLES, key="tour.step")
i = TITLES.index(choice)
st.session_state["tour.last"] = choice  # widget state is dropped on other pages; this is not
prev.button("Previous", key="tour.prev", on_click=_move, args=(-1,), disabled=i == 0, width="stretch")
nxt.button("Next", key="tour.next", on_click=_move, args=(1,), disabled=i == len(TITLES) - 1, width="stretch")
st.progress((i + 1) / len(TITLES), text=f"step {i + 1} of {len(TITLES)}")

step = tour.STEPS[i]
text_col, fig_col = st.columns([1, 2.4], gap="large")
with text_col:
    st.subheader(step.title)
    st.caption(f"Mirrors: {step.figures}")
    st.markdown(step.text)
    st.caption(f"Classifier **{step.model}** · image `{step.sample}`")
with fig_col:
    try:
        tour.draw(step, page.sidebar_device())  # the sidebar's device choice (its image is not used here)
    except ExplainerError as e:
        st.error(page.failure(e))
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        st.error(page.failure(e, "This step"))
