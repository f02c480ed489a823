"""streamc_runtime: the shared runtime of streamc-generated workers."""
