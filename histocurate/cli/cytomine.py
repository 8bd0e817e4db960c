"""`histocurate export`, `import`, `sandbox-server` and `sandbox-user`: Cytomine campaigns.

Keys come from CYTOMINE_PUBLIC_KEY / CYTOMINE_PRIVATE_KEY (or Prefect Secret blocks named
in [cytomine]); they are never printed. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from histocurate.cli.base import (
    PrefectOption,
    WorkspaceOption,
    app,
    config_for,
    console,
    err_console,
    use_prefect,
)

HostOption = Annotated[
    str | None, typer.Option(help="Cytomine URL (default: CYTOMINE_HOST, then [cytomine] host).")
]
ProjectOption = Annotated[
    str | None, typer.Option(help="Cytomine project name (default: [cytomine] project).")
]


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@app.command("export")
def export_command(
    workspace: WorkspaceOption = Path("."),
    selection: Annotated[
        Path | None, typer.Option(help="Selection table (default: the workspace's).")
    ] = None,
    project: ProjectOption = None,
    annotators: Annotated[
        str | None, typer.Option(help="Comma-separated usernames (default: [cytomine]).")
    ] = None,
    k: Annotated[
        int | None, typer.Option("--k", help="Validation set: annotators per tile (e.g. 3).")
    ] = None,
    host: HostOption = None,
    prefect: PrefectOption = None,
) -> None:
    """Upload the selected tiles to a Cytomine project, with its ontology and annotators.

    Re-running adds only what is missing. Records assignments.parquet.
    """
    config = config_for(workspace)
    options: dict[str, Any] = dict(
        selection=selection, project=project, annotators=_csv(annotators), k=k, host=host
    )
    if use_prefect(prefect):
        from flows.annotation import export_flow

        summary = export_flow(str(config.workspace), **{**options, "selection": _str(selection)})
        console.print(f"export done: {summary}")
        return
    from histocurate.cytomine.stage import run_export

    result = run_export(config, **options)
    table = Table("project", "id", "uploaded", "already there", "members added", "retries")
    table.add_row(
        result.project_name, str(result.project_id), str(len(result.uploaded)),
        str(len(result.already_there)), ", ".join(result.members_added) or "-", str(result.retries),
    )  # fmt: skip
    console.print(table)
    console.print(f"{len(result.assignments)} assignment(s) recorded")


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


@app.command("import")
def import_command(
    workspace: WorkspaceOption = Path("."),
    project: ProjectOption = None,
    host: HostOption = None,
    prefect: PrefectOption = None,
) -> None:
    """Import the project's point annotations into points.parquet (incremental).

    Edits, relabels and deletions are reflected; annotations that cannot be points are kept
    aside in import_rejects.parquet with the reason.
    """
    config = config_for(workspace)
    if use_prefect(prefect):
        from flows.annotation import import_flow

        summary = import_flow(str(config.workspace), project=project, host=host)
        console.print(f"import done: {summary}")
        return
    from histocurate.cytomine.stage import run_import

    result = run_import(config, project=project, host=host)
    table = Table(*result.counts.columns, title=f"project {result.project}")
    for row in result.counts.itertuples(index=False):
        table.add_row(*map(str, row))
    console.print(table)
    if result.reject_reasons:
        console.print(f"rejected: {result.reject_reasons}")
    console.print("tables updated" if result.written else "no change since the last import")


@app.command("sandbox-server")
def sandbox_server_command(
    db: Annotated[Path, typer.Option(help="SQLite database of the sandbox.")] = Path(
        "cytomine-sandbox.db"
    ),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8765,
    faults: Annotated[
        float, typer.Option(help="Fraction of requests that fail (500/503/hang/drop).")
    ] = 0.0,
    hang_s: Annotated[float, typer.Option(help="How long an injected hang lasts.")] = 35.0,
    seed: Annotated[int, typer.Option(help="Seed of the fault draw.")] = 0,
) -> None:
    """Run a local Cytomine-compatible server (for rehearsals and tests) until Ctrl-C."""
    from histocurate.cytomine.sandbox import FaultInjector
    from histocurate.cytomine.sandbox.server import serve_forever

    injector = FaultInjector(rate=faults, hang_s=hang_s, seed=seed)

    def ready(host: str) -> None:
        err_console.print(f"sandbox Cytomine at {host} (database {db}); Ctrl-C stops it")
        err_console.print(f"create users with: histocurate sandbox-user --db {db} NAME...")

    serve_forever(db, port=port, faults=injector, ready=ready)


@app.command("sandbox-user")
def sandbox_user_command(
    usernames: Annotated[list[str], typer.Argument(help="Usernames to create.")],
    db: Annotated[Path, typer.Option(help="SQLite database of the sandbox.")] = Path(
        "cytomine-sandbox.db"
    ),
    admin: Annotated[bool, typer.Option(help="Create them as administrators.")] = False,
    keys_file: Annotated[
        Path | None,
        typer.Option(help="JSON file (mode 600) receiving the keys (default: <db>.keys.json)."),
    ] = None,
) -> None:
    """Admin: create sandbox users. Their keys go to a private file, never to the screen."""
    from histocurate.cytomine.sandbox import SandboxDB
    from histocurate.cytomine.sandbox.db import Conflict
    from histocurate.io import atomic_write_text

    target = keys_file or db.with_name(db.name + ".keys.json")
    store = SandboxDB(db)
    try:
        known = json.loads(target.read_text()) if target.exists() else {}
        for name in usernames:
            try:
                public, private = store.create_user(name, admin=admin)
            except Conflict:
                err_console.print(f"user {name!r} already exists in {db}: skipped")
                continue
            known[name] = {"public_key": public, "private_key": private}
            console.print(f"created {name}")
    finally:
        store.close()
    atomic_write_text(target, json.dumps(known, indent=2))
    os.chmod(target, 0o600)
    console.print(f"keys written to {target} (readable by you only)")
