"""Preference data: labelled segment pairs by reference into an offline dataset.

- :mod:`pbrl.prefs.data`: the type (:class:`PreferenceData`, :func:`make_preference_data`,
  :func:`from_feedback`) and its tensors for learners (:meth:`PreferenceData.to_batch`);
- :mod:`pbrl.prefs.io`: preference files (:func:`save_preferences`, :func:`load_preferences`)
  and the tie to their dataset (:func:`dataset_fingerprint`, :func:`check_prefs_dataset`);
- :mod:`pbrl.prefs.label`: labelling with a synthetic teacher (:func:`label_dataset`) and
  statistics (:func:`preference_stats`);
- :mod:`pbrl.prefs.select`: segment sampling and query selectors;
- :mod:`pbrl.prefs.formats`: published label formats (one module each, reader and writer).

The file format and its conventions: docs/preferences.md.
"""

from __future__ import annotations

from pbrl.prefs.data import PreferenceData, from_feedback, make_preference_data
from pbrl.prefs.formats import FORMATS, export_labels, import_labels, resolve_qlearning_refs
from pbrl.prefs.io import (
    FINGERPRINT_PREFIX,
    FORMAT_NAME,
    FORMAT_VERSION,
    check_prefs_dataset,
    dataset_fingerprint,
    dataset_mismatch,
    load_preferences,
    save_preferences,
)
from pbrl.prefs.label import (
    MAX_LABEL_STEPS,
    check_label_options,
    label_dataset,
    preference_stats,
)
from pbrl.prefs.select import SELECTORS, check_selector, sample_segments, select_queries

__all__ = [
    "FINGERPRINT_PREFIX",
    "FORMATS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_LABEL_STEPS",
    "SELECTORS",
    "PreferenceData",
    "check_label_options",
    "check_prefs_dataset",
    "check_selector",
    "dataset_fingerprint",
    "dataset_mismatch",
    "export_labels",
    "from_feedback",
    "import_labels",
    "label_dataset",
    "load_preferences",
    "make_preference_data",
    "preference_stats",
    "resolve_qlearning_refs",
    "sample_segments",
    "save_preferences",
    "select_queries",
]
