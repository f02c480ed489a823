"""Stream worker for the counts app, written by hand from counts.sdl as streamc generates it.

`counts_worker.app.app` is the app; importing `counts_worker.agents` registers every agent on it.
"""
