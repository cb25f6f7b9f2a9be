"""End to end in a real headless Chromium (Debian's ``chromium`` driven by Playwright with
``executable_path``): open the annotator page with a token, check that both videos play
(their ``currentTime`` advances), answer with the keyboard and the mouse, undo one answer,
rank four segments, and find exactly those answers in the database and in the export.

Skipped where Chromium or Playwright is missing, unless ``PBRL_REQUIRE_BROWSER=1`` (set by
``.ci/run``), where a missing browser fails the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from sqlalchemy import select  # noqa: E402
from test_ui_api import UiWorld, make_world  # noqa: E402

from pbrl.ui.db import Answer, Assignment, UndoneAnswer  # noqa: E402
from pbrl.ui.service import answer_prefer_b, export_preferences  # noqa: E402

CHROMIUM = os.environ.get("PBRL_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.slow


def _browser_or_skip() -> None:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install playwright)")
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        missing.append(f"chromium at {CHROMIUM} (apt-get install chromium)")
    if missing:
        if os.environ.get("PBRL_REQUIRE_BROWSER"):
            pytest.fail(f"browser test required but missing: {', '.join(missing)}")
        pytest.skip(f"missing: {', '.join(missing)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def served(tmp_path, minari_home) -> Iterator[tuple[UiWorld, str]]:
    """The UI on a loopback port, in a thread of this process."""
    _browser_or_skip()
    import uvicorn

    w = make_world(tmp_path)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(w.client.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield w, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _secret(head: dict[str, str]) -> str:
    return head["Authorization"].split()[1]


def _wait_query_change(page, old: str | None) -> str:
    page.wait_for_function(
        "old => document.body.dataset.query && document.body.dataset.query !== old "
        "&& !document.getElementById('work').hidden",
        arg=old,
        timeout=20000,
    )
    return page.evaluate("document.body.dataset.query")


def test_label_with_keyboard_and_mouse_undo_and_rank_in_chromium(served, tmp_path):
    from playwright.sync_api import sync_playwright

    w, base = served
    w.create("p", queries=8, segment=12, width=96, height=96, fps=10)
    w.create("r", queries=4, segment=12, width=96, height=96, mode="rank")
    alice = w.token("p", "alice")
    rita = w.token("r", "rita")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{base}/?project=p&token={_secret(alice)}")
            q = _wait_query_change(page, None)

            # both videos play: their time advances
            page.wait_for_function(
                "[...document.querySelectorAll('video')].every(v => v.readyState >= 2)",
                timeout=20000,
            )
            samples = []
            for _ in range(10):
                samples.append(
                    page.evaluate("[...document.querySelectorAll('video')].map(v => v.currentTime)")
                )
                page.wait_for_timeout(100)
            for side in (0, 1):
                times = [s[side] for s in samples]
                assert len(set(times)) >= 5, times  # the clip plays (and loops)
            assert page.evaluate("document.getElementById('left').videoWidth") == 96

            pressed: dict[int, str] = {}  # query -> the side pressed
            # keyboard: left better, right better
            page.keyboard.press("ArrowLeft")
            pressed[int(q)] = "left"
            q2 = _wait_query_change(page, q)
            page.keyboard.press("ArrowRight")
            pressed[int(q2)] = "right"
            q3 = _wait_query_change(page, q2)
            # mouse: the Equal button, then a click on the right video
            page.click("#btn-equal")
            pressed[int(q3)] = "equal"
            q4 = _wait_query_change(page, q3)
            page.click("#right-card")
            pressed[int(q4)] = "right"
            q5 = _wait_query_change(page, q4)
            # undo (keyboard) brings back q4; answer it differently with the mouse
            page.keyboard.press("u")
            assert _wait_query_change(page, q5) == q4
            del pressed[int(q4)]
            page.click("#btn-left")
            pressed[int(q4)] = "left"
            q5b = _wait_query_change(page, q4)
            page.keyboard.press("ArrowDown")  # skip
            pressed[int(q5b)] = "skip"
            _wait_query_change(page, q5b)
            page.wait_for_function(
                "document.getElementById('stats').textContent.startsWith('5 answered')"
            )

            # rank four segments
            page.goto(f"{base}/?project=r&token={_secret(rita)}")
            comparisons = 0
            old = None
            while True:
                page.wait_for_function(
                    "document.getElementById('message').textContent.includes('complete') || "
                    "(!document.getElementById('work').hidden && document.body.dataset.query)",
                    timeout=20000,
                )
                if not page.evaluate("document.getElementById('message').hidden"):
                    if "complete" in page.text_content("#message"):
                        break
                qid = page.evaluate("document.body.dataset.query")
                if qid == old:
                    page.wait_for_timeout(50)
                    continue
                page.keyboard.press("ArrowLeft" if comparisons % 2 == 0 else "ArrowRight")
                comparisons += 1
                old = qid
            assert 3 <= comparisons <= 5
        finally:
            browser.close()

    with w.sessions() as s:
        got = {
            a.query_id: a.prefer_b for a in s.scalars(select(Answer).where(Answer.project_id == 1))
        }
        sides = dict(s.execute(select(Assignment.query_id, Assignment.swapped)).all())
        undone = s.scalars(select(UndoneAnswer)).one()
    # the side pressed, in the query's own a/b order (b was on the left where swapped)
    expected = {q: answer_prefer_b(c, sides[q]) for q, c in pressed.items()}
    assert got == expected
    assert undone.query_id == int(q4) and undone.prefer_b == answer_prefer_b(
        "right", sides[int(q4)]
    )
    data = export_preferences(w.sessions, "p", "none")
    exported = {int(f.query_id.split("/")[1]): f.prefer_b for f in data.feedback}
    assert exported == expected
    assert {f.labeler for f in data.feedback} == {"human:alice"}
    ranked = export_preferences(w.sessions, "r", "none")
    assert sum(len(g) for g in ranked.meta["rankings"]["rita"]) == 4
    assert ranked.num_queries == 6 and ranked.meta["comparisons"] == comparisons
