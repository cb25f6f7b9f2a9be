"""Dataset sources: Minari, original D4RL HDF5 files, and local generators."""
