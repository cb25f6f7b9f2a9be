"""The labeling UI's HTTP API against a PostgreSQL server, plus concurrent answers.

``PBRL_TEST_POSTGRES_URL`` names a server (``postgresql+psycopg://user@host:port/db``; the
role must be allowed to create databases). Each test creates its own database there and drops
it afterwards. Unset, the PostgreSQL tests are skipped (a laptop without a server); set (as
``.ci/run`` does after starting one) and unreachable, they FAIL.

The API tests are those of tests/test_ui_api.py, run here on PostgreSQL through this module's
``ui_world`` fixture; the concurrency tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip("sqlalchemy")

from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from test_ui_api import (  # noqa: E402, F401  (the imported tests run here on PostgreSQL)
    UiWorld,
    make_world,
    test_a_loop_posts_pairs_of_its_own_data_to_an_empty_project,
    test_an_answer_and_a_release_of_the_same_pair_never_both_land,
    test_annotators_per_query_and_gold_for_everyone,
    test_answer_undo_and_answer_again,
    test_bad_answers_are_refused_and_write_nothing,
    test_export_keeps_every_annotator_and_aggregates,
    test_pairs_left_unanswered_go_back_to_the_queue,
    test_rank_mode_places_four_segments_and_exports_derived_pairs,
    test_rank_mode_with_hidden_gold_pairs,
    test_revoked_tokens_get_401_and_their_answers_stay,
    test_sides_are_random_per_query_and_annotator_and_answers_map_back,
    test_tokens_projects_and_owner_actions,
    test_training_loop_posts_queries_and_reads_answers,
    upgrade_from_0002,
    write_tiny_dataset,
)

from pbrl.ui.db import Answer, Assignment  # noqa: E402
from pbrl.ui.service import (  # noqa: E402
    UiError,
    authenticate,
    next_query,
    submit_answer,
)

PG_URL = os.environ.get("PBRL_TEST_POSTGRES_URL")


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh database on the server of PBRL_TEST_POSTGRES_URL, dropped afterwards."""
    if not PG_URL:
        pytest.skip("PBRL_TEST_POSTGRES_URL is not set (no PostgreSQL server for this run)")
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"pbrl_ui_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as c:  # unreachable server: this raises, and the test fails
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # noqa: BLE001
        admin.dispose()
        pytest.fail(f"PBRL_TEST_POSTGRES_URL is set but the server is unusable: {e}")
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture()
def ui_world(tmp_path, minari_home, pg_url) -> Iterator[UiWorld]:
    w = make_world(tmp_path, pg_url)
    yield w
    w.sessions.kw["bind"].dispose()  # type: ignore[attr-defined]


def test_the_server_is_postgresql(ui_world):
    with ui_world.sessions() as s:
        assert "PostgreSQL" in s.execute(text("SELECT version()")).scalar()
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"


def test_a_0002_database_is_upgraded_in_place_on_postgresql(pg_url, minari_home):
    upgrade_from_0002(pg_url, write_tiny_dataset())


def _concurrent_annotators(w: UiWorld, n_people: int) -> None:
    w.create(queries=12, per_query=2)
    secrets = {}
    for i in range(n_people):
        head = w.token("p", f"a{i}")
        secrets[f"a{i}"] = head["Authorization"].split()[1]
    errors: list[BaseException] = []

    def work(secret: str) -> None:
        try:
            who = authenticate(w.sessions, secret, "p")
            while (r := next_query(w.sessions, who))["state"] == "ready":
                qid = r["query"]["query_id"]
                submit_answer(w.sessions, who, qid, "left")
                # a double submit (a second tab, a retried request) is refused
                with pytest.raises(UiError) as e:
                    submit_answer(w.sessions, who, qid, "right")
                assert e.value.status == 409
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in secrets.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with w.sessions() as s:
        answers = list(s.scalars(select(Answer)))
        per_query = dict(
            s.execute(select(Answer.query_id, func.count()).group_by(Answer.query_id)).all()
        )
        shown = s.scalar(select(func.count()).select_from(Assignment))
    # every query answered by exactly two people, nobody twice, nothing lost
    assert len({(a.query_id, a.annotator_id) for a in answers}) == len(answers) == 24
    assert set(per_query.values()) == {2} and len(per_query) == 12
    assert shown == 24
    # everyone pressed "left": stored as prefer_b 0 where a was on the left, 1 where b was
    assert all(a.prefer_b == (1.0 if a.swapped else 0.0) for a in answers)


def test_concurrent_annotators_on_postgresql(ui_world):
    _concurrent_annotators(ui_world, 6)


def test_concurrent_annotators_on_sqlite(tmp_path, minari_home):
    _concurrent_annotators(make_world(tmp_path), 6)
