"""Stream worker for the bench_p4 app, written by hand as streamc will generate it from p4.sdl
(STATE.md section 2), until the compiler builds `table` and `aggregate`.

run.py copies this folder as `<app>_worker` with the run's app name and input topic, and
`hooks.py` as `hooks/hooks.py`, as `streamc build` would.
"""
