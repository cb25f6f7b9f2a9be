"""Preference data (being split into modules; see the next commit)."""

from pbrl.prefs.data import *  # noqa: F403
