"""Out-of-tree learner plug-ins used by the runner tests (imported by dotted path)."""
