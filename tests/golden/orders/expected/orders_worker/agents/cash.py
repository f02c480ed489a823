"""Agent "cash": from withdrawals | where atm and amount * 1.0 > 500 - 0.01 | through \"orders.withdrawals.cash\" | items | sink show_withdrawal"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import Withdrawal
from ..hooks.hooks import show_withdrawal


def cash_where(withdrawal: Withdrawal) -> bool:
    """where atm and amount * 1.0 > 500 - 0.01"""
    return withdrawal.atm and withdrawal.amount * 1.0 > 500 - 0.01


@app.agent(topics.withdrawals, name="cash")
async def cash(stream: Stream[Withdrawal]) -> None:
    async for run in (
        stream.filter(cash_where).through(topics.orders_withdrawals_cash).items().runs()
    ):
        for key, withdrawal in run:
            show_withdrawal(key, withdrawal)
