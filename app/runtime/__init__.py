"""Process plumbing: the garbage collector's tuning, background tasks, child processes."""
