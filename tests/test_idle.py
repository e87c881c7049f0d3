"""The README's command idles at ~0% CPU: `streamlit run app.py --server.headless true` with the
repository's `.streamlit/config.toml` (no file watcher), one browser session connected, sampled
from /proc over a few seconds. Without the config, Streamlit's watcher walks the .venv and keeps a
core busy (about 65% of one core measured on the project's machine)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from streamlit_server import running_app

STREAMLIT = Path(sys.executable).with_name("streamlit")

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists() or not STREAMLIT.exists(),
                                reason="needs Linux's /proc and the venv's streamlit script")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_the_server_idles_after_start_up(tmp_path):
    from websockets.sync.client import connect

    with running_app(tmp_path / "home") as (url, proc):  # the README's way; the config file supplies the rest
        with connect(url.replace("http", "ws") + "/_stcore/stream", subprotocols=["streamlit"], open_timeout=10):
            time.sleep(2.0)  # a session exists (its file watcher, if any, is running)
            before, start = _cpu_seconds(proc.pid), time.monotonic()
            time.sleep(4.0)
            share = (_cpu_seconds(proc.pid) - before) / (time.monotonic() - start)
    assert share < 0.05, f"the idle server used {share:.0%} of a core"
