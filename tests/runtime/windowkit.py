"""Hand-written windowed apps for the window tests, as generated code would write them
(TIME.md section 2): a state record, fold, row(key, window, state), merge for sessions."""

from __future__ import annotations

from typing import Any

from streamc_runtime import App, Hopping, Record, Session, Stream, Time, Tumbling, Window
from streamc_runtime.state import Table


class Click(Record, kw_only=True):
    user: str
    at: Time | None = None


class UserWindow(Record, kw_only=True):
    user: str
    window_start: Time
    window_end: Time
    clicks: int


class ClicksState(Record, kw_only=True):
    clicks: int = 0


def fold(state: ClicksState, click: Click) -> ClicksState:
    state.clicks += 1
    return state


def row(key: str, window: Window, state: ClicksState) -> UserWindow:
    return UserWindow(
        user=key, window_start=window.start, window_end=window.end, clicks=state.clicks
    )


def merge(a: ClicksState, b: ClicksState) -> ClicksState:
    return ClicksState(clicks=a.clicks + b.clicks)


def by_user(click: Click) -> str:
    return click.user


def windows_app(
    window: Tumbling | Hopping | Session,
    *,
    emit: str = "updates",
    late_topic: bool = False,
    partitions: int = 2,
    timestamp_field: str | None = None,
    name: str = "clicks",
) -> App:
    """`from clicks | group_by user | aggregate per_user window ... | to user_windows`."""
    app = App(name)
    clicks = app.topic(
        "clicks",
        key_type=str,
        value_type=Click,
        partitions=partitions,
        timestamp_field=timestamp_field,
    )
    repartition = app.topic(
        f"{name}-per_user-clicks-user-repartition",
        key_type=str,
        value_type=Click,
        partitions=partitions,
        internal=True,
        positions=True,
    )
    out = app.topic("user_windows", key_type=str, value_type=UserWindow, partitions=partitions)
    late = app.topic("late_clicks", key_type=str, value_type=Click) if late_topic else None
    table: Table[str, ClicksState] = app.table(
        "per_user",
        key_type=str,
        value_type=UserWindow,
        state_type=ClicksState,
        partitions=partitions,
        window=window,
    )
    session = isinstance(window, Session)

    @app.agent(clicks, name="per_user")
    async def per_user(stream: Stream[Click]) -> None:
        async for _ in (
            stream.group_by(by_user, topic=repartition, returns=str)
            .aggregate(
                table, fold=fold, row=row, emit=emit, late=late, merge=merge if session else None
            )
            .to(out)
        ):
            pass

    return app


def rows(values: list[Any]) -> list[tuple[str, int, int, int]]:
    """(user, start ms, end ms, clicks) of decoded UserWindow rows."""
    return [(r.user, r.window_start.ms, r.window_end.ms, r.clicks) for r in values]
