"""Agent "suspicious": from withdrawals | filter is_suspicious | group_by account_of | enumerate 1 | sink print_numbered"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Withdrawal
from ..hooks.hooks import account_of, is_suspicious, print_numbered


@app.agent(topics.withdrawals, name="suspicious")
async def suspicious(stream: Stream[Withdrawal]) -> None:
    async for run in (
        stream.filter(is_suspicious, returns=bool)
        .group_by(
            account_of,
            topic=topics.orders_suspicious_withdrawals_account_of_repartition,
            returns=str,
        )
        .runs(counters=(1,))
    ):
        for withdrawal in run:
            i = run.count(0)
            print_numbered(i, withdrawal)
