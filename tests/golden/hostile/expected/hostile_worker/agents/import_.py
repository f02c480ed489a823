"""Agent "import": from def | process print | where `from` == \"\\\"\\\"\\\" ; drop table \\\\ \\n\" or self > -2 and not (match == null) | echo \"echo.1\", app | filter filter | group_by id | items | sink map"""

from streamc_runtime import Stream

from .. import topics
from ..app import app
from ..records import class_
from ..hooks.hooks import filter as filter_, id as id_, map as map_, print as print_


def import_where(value: class_) -> bool:
    """where `from` == \"\\\"\\\"\\\" ; drop table \\\\ \\n\" or self > -2 and not (match == null)"""
    return value.from_ == '""" ; drop table \\ \n' or value.self > -2 and not (value.match_ is None)


@app.agent(topics.def_, name="import")
async def import_(stream: Stream[class_]) -> None:
    async for run in (
        stream.process(print_, returns=(class_,))
        .filter(import_where)
        .echo(topics.echo_1, topics.app_)
        .filter(filter_, returns=bool)
        .group_by(id_, topic=topics.hostile_import_def_id_repartition, returns=str)
        .items()
        .runs()
    ):
        for key, value in run:
            await run.flush()
            await map_(key, value)
