"""`histocurate export`, `import`, `push-consensus`, `sandbox-server`, `sandbox-user`:
Cytomine campaigns.

Keys come from CYTOMINE_PUBLIC_KEY / CYTOMINE_PRIVATE_KEY (CYTOMINE_CONSENSUS_* for the
consensus layer, or Prefect Secret blocks named in [cytomine]); they are never printed.
Each command prints its run's report, the same one its Prefect flow publishes, and exits
with the run's code (2: input to fix, 1: other failures). Heavy imports happen inside.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from histocurate.cli.base import (
    PrefectOption,
    WorkspaceOption,
    app,
    config_for,
    console,
    err_console,
    finish_run,
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
    indication: Annotated[
        str | None,
        typer.Option(help="Indication to export (required when the selection holds several)."),
    ] = None,
    project: ProjectOption = None,
    annotators: Annotated[
        str | None, typer.Option(help="Comma-separated usernames (default: [cytomine]).")
    ] = None,
    k: Annotated[
        int | None, typer.Option("--k", help="Validation set: annotators per tile (e.g. 3).")
    ] = None,
    isolation: Annotated[
        str | None,
        typer.Option(help="shared (one project) or per-reader (one project per reader)."),
    ] = None,
    host: HostOption = None,
    prefect: PrefectOption = None,
) -> None:
    """Upload one indication's selected tiles to a Cytomine project, with its ontology and
    annotators; the uploaded PNGs are kept in campaigns/<project>/images/.

    Re-running adds only what is missing. Records assignments.parquet.
    """
    config = config_for(workspace)
    options: dict[str, Any] = dict(
        indication=indication,
        project=project,
        annotators=_csv(annotators),
        k=k,
        isolation=isolation,
        host=host,
    )
    if use_prefect(prefect):
        from flows._stage import run_flow
        from flows.annotation import export_flow

        path = None if selection is None else str(selection)
        run = run_flow(export_flow, workspace=str(config.workspace), selection=path, **options)
    else:
        from histocurate.cytomine.stage import run_export

        run = run_export(config, selection=selection, **options)
    finish_run(run)


@app.command("import")
def import_command(
    workspace: WorkspaceOption = Path("."),
    project: ProjectOption = None,
    reviewed: Annotated[
        str | None,
        typer.Option(help="Reviewed annotations: exclude (default), include or only."),
    ] = None,
    label_by: Annotated[
        str | None,
        typer.Option(help="After a relabel by another user: creator's term or reviewer's."),
    ] = None,
    polygons: Annotated[
        str | None, typer.Option(help="Polygons: reject (default) or centroid.")
    ] = None,
    keep_unassigned: Annotated[
        bool | None,
        typer.Option(
            "--keep-unassigned/--reject-unassigned",
            help="Keep points by users not assigned the tile (open campaigns).",
            show_default=False,
        ),
    ] = None,
    host: HostOption = None,
    prefect: PrefectOption = None,
) -> None:
    """Import the campaign's annotations into points.parquet (incremental).

    Edits, relabels and deletions are reflected; annotations that cannot be points (or
    whose author was not assigned the tile) are kept aside in import_rejects.parquet with
    the reason. Only this project's rows are rewritten.
    """
    config = config_for(workspace)
    options: dict[str, Any] = dict(
        project=project,
        host=host,
        reviewed=reviewed,
        label_by=label_by,
        polygons=polygons,
        keep_unassigned=keep_unassigned,
    )
    if use_prefect(prefect):
        from flows._stage import run_flow
        from flows.annotation import import_flow

        run = run_flow(import_flow, workspace=str(config.workspace), **options)
    else:
        from histocurate.cytomine.stage import run_import

        run = run_import(config, **options)
    finish_run(run)


@app.command("push-consensus")
def push_consensus_command(
    workspace: WorkspaceOption = Path("."),
    project: ProjectOption = None,
    shape: Annotated[str | None, typer.Option("--as", help="polygons (default) or points.")] = None,
    host: HostOption = None,
    prefect: PrefectOption = None,
) -> None:
    """Write the campaign's consensus nuclei to Cytomine, in the layer of a dedicated user
    (keys: CYTOMINE_CONSENSUS_PUBLIC_KEY / _PRIVATE_KEY) in the review project 'PROJECT
    (review)', where the readers see it and cannot edit it. Idempotent."""
    config = config_for(workspace)
    options: dict[str, Any] = dict(project=project, shape=shape, host=host)
    if use_prefect(prefect):
        from flows._stage import run_flow
        from flows.annotation import push_consensus_flow

        run = run_flow(push_consensus_flow, workspace=str(config.workspace), **options)
    else:
        from histocurate.cytomine.push_stage import run_push_consensus

        run = run_push_consensus(config, **options)
    finish_run(run)


@app.command("sandbox-server")
def sandbox_server_command(
    db: Annotated[Path, typer.Option(help="SQLite database of the sandbox.")] = Path(
        "cytomine-sandbox.db"
    ),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8765,
    server_version: Annotated[
        str | None,
        typer.Option(
            help="Server build to behave as: 2025-10, 2025-12, 2026-03, 2026-06, "
            "2026-08 (default: the current release)."
        ),
    ] = None,
    import_delay: Annotated[
        float, typer.Option(help="Seconds PIMS takes to import an upload.")
    ] = 0.5,
    faults: Annotated[
        float, typer.Option(help="Fraction of requests that fail (500/503/hang/drop).")
    ] = 0.0,
    hang_s: Annotated[float, typer.Option(help="How long an injected hang lasts.")] = 35.0,
    seed: Annotated[int, typer.Option(help="Seed of the fault draw.")] = 0,
) -> None:
    """Run a local Cytomine-compatible server (for rehearsals and tests) until Ctrl-C."""
    from histocurate.demo.sandbox import FaultInjector
    from histocurate.demo.sandbox.server import serve_forever
    from histocurate.demo.sandbox.versions import profile

    try:
        chosen = profile(server_version)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--server-version") from None
    injector = FaultInjector(rate=faults, hang_s=hang_s, seed=seed)

    def ready(host: str) -> None:
        err_console.print(
            f"sandbox Cytomine ({chosen.build}) at {host} (database {db}); Ctrl-C stops it"
        )
        err_console.print(f"create users with: histocurate sandbox-user --db {db} NAME...")

    serve_forever(
        db,
        port=port,
        faults=injector,
        ready=ready,
        server_version=chosen.name,
        import_delay_s=import_delay,
    )


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
    from histocurate.demo.sandbox import SandboxDB
    from histocurate.demo.sandbox.db import Conflict
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
