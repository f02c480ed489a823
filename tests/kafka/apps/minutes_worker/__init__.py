"""Stream worker for a windowed count, written by hand as streamc generates it (TIME.md
section 2): per account, 1-minute tumbling windows over the orders' `at` field, emit final.

`minutes_worker.app.app` is the app; importing `minutes_worker.agents` registers every agent.
"""
