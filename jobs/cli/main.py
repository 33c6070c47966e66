"""``facerec``: the single entry point for users, assembled here and only here."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from jobs.cli import (
    api,
    demo,
    evidence,
    index,
    ingest,
    job,
    keys,
    people,
    replay,
    retention,
    sightings,
    tools,
)
from jobs.cli.stack import app as stack_app

app = typer.Typer(help="facerec: real-time face recognition on Apache Flink.", no_args_is_help=True)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


app.command("config")(tools.show_config)
app.command("analyze")(tools.analyze)
app.command("eval")(tools.evaluate)
app.command("demo")(demo.demo)
app.command("api")(api.serve)
app.command("ingest")(ingest.ingest)
app.command("sightings")(sightings.sightings)
app.add_typer(job.app, name="job")
app.add_typer(index.app, name="index")
app.add_typer(people.app, name="people")
app.add_typer(keys.app, name="keys")
app.add_typer(evidence.app, name="evidence")
app.add_typer(retention.app, name="retention")
app.add_typer(replay.app, name="replay")
app.add_typer(stack_app, name="stack")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
