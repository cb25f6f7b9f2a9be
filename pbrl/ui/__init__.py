"""The labeling web UI (optional extra ``ui``): people compare and rank rendered segments.

Pieces (docs/ui.md):

- :mod:`pbrl.ui.db`: the database schema (SQLAlchemy 2; SQLite in WAL mode by default, any
  SQLAlchemy URL such as PostgreSQL) and its Alembic migrations (``pbrl/ui/migrations``);
- :mod:`pbrl.ui.service`: projects, tokens, the query queue, answers, undo, ranking by binary
  insertion, status and export to a pbrl preference file; the web app and the CLI both call it;
- :mod:`pbrl.ui.video`: segments rendered offscreen from stored qpos/qvel, encoded once to
  H.264 MP4, cached, rendered ahead by a background worker;
- :mod:`pbrl.ui.crowd`: agreement between annotators (pairwise agreement, Krippendorff's
  alpha, Fleiss' kappa), gold accuracy, majority and Dawid-Skene aggregation;
- :mod:`pbrl.ui.web`: the FastAPI app (annotator page, owner dashboard, JSON API).

Nothing here is imported by the core: ``import pbrl`` works without the extra installed.
"""
