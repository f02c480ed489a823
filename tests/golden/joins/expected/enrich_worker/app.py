"""The enrich app: its name is the consumer group and prefixes every internal topic."""

from streamc_runtime import App

app = App("enrich")
