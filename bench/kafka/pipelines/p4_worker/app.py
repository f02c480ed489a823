"""The bench_p4 app: its name is the consumer group and prefixes every internal topic."""

from streamc_runtime import App

app = App("bench_p4")
