"""The `dicomlake` command line. Every command takes --root (default $DICOMLAKE_ROOT or ./lakehouse)
and --tenant (default 'default'); --json prints one machine-readable JSON document on stdout."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dicomlake.store.lakehouse import DEFAULT_TENANT, Lakehouse, TenantStore, default_root

DEFAULT_DROP_DIR = "./drops"


def _tenant(args: argparse.Namespace) -> TenantStore:
    return Lakehouse(args.root).tenant(args.tenant)


def _print(args: argparse.Namespace, payload: Any, human: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(human)


def cmd_ingest(args: argparse.Namespace) -> int:
    from dicomlake.ingest import IngestOptions, ingest

    bar = None
    progress = None
    if not args.json and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=0, unit="file", desc="ingest", file=sys.stderr)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

    options = IngestOptions(
        workers=args.workers, batch_size=args.batch_size, disposition=args.disposition, move_to=args.move_to
    )
    try:
        summary = ingest(args.paths, _tenant(args), options, progress)
    finally:
        if bar:
            bar.close()
    data = summary.as_dict()
    lines = [
        f"tenant {summary.tenant}: received {summary.received}, created {summary.created}, "
        f"updated {summary.updated}, unchanged {summary.unchanged}, quarantined {summary.quarantined}",
        f"seq {summary.first_seq}..{summary.last_seq}  {summary.seconds:.2f} s  "
        f"{summary.instances_per_second:.1f} instances/s",
    ]
    lines += [f"  quarantined {e['source']}: [{e['code']}] {e['reason']}" for e in summary.errors[:20]]
    _print(args, data, "\n".join(lines))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dicomlake.store.status import tenant_status

    status = tenant_status(_tenant(args))
    human = "\n".join(f"{k:>22}: {v}" for k, v in status.items())
    _print(args, status, human)
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from dicomlake.store.read import scan

    table = scan(_tenant(args).table("quarantine"), order_by="quarantined_at DESC")
    rows = table.slice(0, args.limit).to_pylist()
    human = "\n".join(
        f"{r['quarantined_at']}  [{r['error_code']}] {r['source']}: {r['reason']}" for r in rows
    )
    _print(args, rows, human or "quarantine is empty")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dicomlake.export import Selection, export

    filters = {}
    for item in args.filter:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"filters are KEY=VALUE, not {item!r}")
        filters[key] = value
    selection = Selection(uids=tuple(args.study + args.series), filters=filters, cohort=args.cohort,
                          as_of=args.as_of)  # fmt: skip
    deid_options = None
    if args.deid:
        from dicomlake.deid import DeidOptions

        key = os.environ.get(args.project_key_env or "")
        if not key:
            raise ValueError("--deid needs --project-key-env VAR naming a set environment variable")
        deid_options = DeidOptions(project_key=key)
    bar = None
    progress = None
    if not args.json and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=0, unit="instance", desc="export", file=sys.stderr)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        summary = export(_tenant(args), selection, args.out, args.format, per_frame=args.per_frame,
                         deid_options=deid_options, png_bits=args.png_bits, workers=args.workers,
                         progress=progress, chunk_instances=args.chunk_instances)  # fmt: skip
    finally:
        if bar:
            bar.close()
    human = (f"selected {summary.selected}: exported {summary.exported}, skipped {summary.skipped}, "
             f"failed {summary.failed}; manifest {summary.manifest}")  # fmt: skip
    _print(args, summary.as_dict(), human)
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from dicomlake.samples import generate_bad_inputs, generate_sample_drop

    summary = generate_sample_drop(Path(args.dest), n_instances=args.instances, seed=args.seed)
    payload: dict[str, Any] = {
        "dest": str(summary.dest),
        "instances": summary.n_instances,
        "studies": summary.n_studies,
        "series": summary.n_series,
        "patients": summary.n_patients,
    }
    if args.bad:
        bad = generate_bad_inputs(Path(args.dest) / "bad", seed=args.seed)
        payload["bad_inputs"] = [{"path": str(b.path), "kind": b.kind} for b in bad]
    human = (
        f"wrote {summary.n_instances} instances ({summary.n_studies} studies, {summary.n_series} "
        f"series, {summary.n_patients} patients) to {summary.dest}"
    )
    if args.bad:
        human += f"\nwrote {len(payload['bad_inputs'])} bad inputs to {Path(args.dest) / 'bad'}"
    _print(args, payload, human)
    return 0


def _moment(text: str | None, name: str):
    import datetime as dt

    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{name} {text!r} is not an ISO 8601 date-time") from exc
    if moment.tzinfo is None:
        raise ValueError(f"{name} needs a time zone, e.g. {text}+00:00 or {text}Z")
    return moment


def cmd_changefeed(args: argparse.Namespace) -> int:
    from dicomlake.changefeed import ChangeFeed

    feed = ChangeFeed(_tenant(args))
    if args.which == "latest":
        latest = feed.latest(args.include_metadata)
        entries = [latest] if latest else []
    elif args.start_time or args.end_time:
        start, end = _moment(args.start_time, "--start-time"), _moment(args.end_time, "--end-time")
        if not (start and end):
            raise ValueError("--start-time and --end-time go together")
        entries = feed.read_window(start, end, args.offset, args.limit, args.include_metadata)
    else:
        entries = feed.read(args.offset, args.limit, args.include_metadata)
    payload = [e.as_json() for e in entries]
    if args.which == "latest":
        payload = payload[0] if payload else None
    human = "\n".join(
        f"{e.sequence:>8}  {e.timestamp.isoformat()}  {e.action:<6} {e.state:<8} "
        f"{e.study_instance_uid} / {e.series_instance_uid} / {e.sop_instance_uid}"
        for e in entries
    )
    _print(args, payload, human or "the change feed has no entries there")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from dicomlake.lifecycle import NotFound, delete_instances

    try:
        outcome = delete_instances(_tenant(args), args.study, args.series, args.instance, source="cli")
    except NotFound as exc:
        print(f"dicomlake delete: {exc}", file=sys.stderr)
        return 1
    payload = {"deleted": outcome.deleted, "first_seq": outcome.first_seq, "last_seq": outcome.last_seq}
    _print(
        args, payload, f"deleted {outcome.deleted} instances (seq {outcome.first_seq}..{outcome.last_seq})"
    )
    return 0


def cmd_maintain(args: argparse.Namespace) -> int:
    import datetime as dt

    from dicomlake.maintenance import maintain

    report = maintain(_tenant(args), dt.timedelta(days=args.blob_retention_days), args.vacuum_retention_hours)
    purge = report["purge"]
    human = "\n".join(
        [
            f"{t['table']:>14}: "
            + (f"compaction skipped ({t['busy']}), " if t["busy"] else
               f"compacted {t['files_removed']} -> {t['files_added']} files, ")
            + f"vacuumed {t['vacuumed']}"
            for t in report["tables"]
        ]
        + [
            f"purged {purge['purged']} blobs ({purge['bytes_freed']} bytes); "
            f"{purge['waiting_for_retention']} wait for their retention"
        ]
    )
    _print(args, report, human)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate sample drops, then run the main Dagster job on them (pipelines.demo)."""
    env = dict(
        os.environ,
        DICOMLAKE_ROOT=str(Path(args.root).resolve()),
        DICOMLAKE_DROP_DIR=str(Path(args.drop).resolve()),
        DICOMLAKE_TENANT=args.tenant,
    )
    # The clinical samples go beside the drop folder (the FHIR source of the clinical_fhir asset).
    env.setdefault("DICOMLAKE_FHIR_DIR", str(Path(args.drop).resolve().parent / "clinical"))
    command = [sys.executable, "-m", "pipelines.demo", "--instances", str(args.instances)]
    if args.json:
        command.append("--json")
    try:
        return subprocess.run(command, env=env, check=False).returncode
    except FileNotFoundError:  # pragma: no cover - python itself missing
        print("cannot start Python for the demo", file=sys.stderr)
        return 2


def cmd_search(args: argparse.Namespace) -> int:
    from dicomlake.search import SearchIndex
    from dicomlake.search.attributes import BY_KEYWORD, DEFAULT_RETURN, RESOURCE_LEVELS

    params: dict[str, str] = {}
    for pair in args.filter:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"-f {pair!r}: expected KEY=VALUE, e.g. -f PatientID=123")
        if key in params:
            raise ValueError(f"-f {key}: given more than once")
        params[key] = value
    results = SearchIndex(_tenant(args)).search(
        args.level, params, fuzzy=args.fuzzy, include=args.include, limit=args.limit, offset=args.offset
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    keywords = DEFAULT_RETURN[RESOURCE_LEVELS[args.level]]
    tags = [BY_KEYWORD[k].tag for k in keywords]

    def text(element: dict[str, Any] | None) -> str:
        values = (element or {}).get("Value") or []
        return "\\".join(v["Alphabetic"] if isinstance(v, dict) else str(v) for v in values)

    lines = ["\t".join(keywords)] + ["\t".join(text(r.get(t)) for t in tags) for r in results]
    lines.append(f"{len(results)} {args.level} (offset {args.offset}, limit {args.limit})")
    print("\n".join(lines))
    return 0


# -- extended query tags (dicomlake.tags) ---------------------------------------------------------


def _tag_line(tag: Any) -> str:
    creator = f" creator {tag.private_creator!r}" if tag.private_creator else ""
    name = tag.keyword or tag.path
    return (f"{tag.key:<28} {name:<28} {tag.vr}  {tag.level:<8} {tag.status:<8} {tag.query_status:<8} "
            f"indexed through {tag.indexed_through}, {tag.error_count} errors{creator}")


def cmd_tags(args: argparse.Namespace) -> int:
    from dicomlake import tags
    from dicomlake.errors import QueryTagNotFound

    tenant = _tenant(args)
    try:
        if args.tags_command == "add":
            spec = tags.TagSpec(args.tag, args.vr, args.level, args.private_creator)
            added = tags.add_query_tags(tenant, [spec])
            _print(args, [t.as_dict() for t in added], "\n".join(f"added {_tag_line(t)}" for t in added))
        elif args.tags_command == "list":
            listed = tags.list_query_tags(tenant)
            _print(args, [t.as_dict() for t in listed],
                   "\n".join(_tag_line(t) for t in listed) or "no extended query tags")
        elif args.tags_command == "get":
            tag = tags.get_query_tag(tenant, args.key)
            _print(args, tag.as_dict(), _tag_line(tag))
        elif args.tags_command in ("enable", "disable"):
            tag = tags.set_query_status(tenant, args.key, args.tags_command + "d")
            _print(args, tag.as_dict(), _tag_line(tag))
        elif args.tags_command == "delete":
            tag = tags.delete_query_tag(tenant, args.key)
            _print(args, {"deleted": tag.key}, f"deleted {tag.key} and its indexed values")
        elif args.tags_command == "errors":
            rows = tags.tag_errors(tenant, args.key, args.limit, args.offset)
            _print(args, rows, "\n".join(f"{r['seq']:>8}  {r['sop_instance_uid']}  [{r['error_code']}] "
                                         f"{r['message']}" for r in rows) or "no errors")
        elif args.tags_command == "reindex":
            return _tags_reindex(args, tenant)
        elif args.tags_command == "status":
            status = tags.operation_status(tenant, args.operation)
            _print(args, status, f"{status['state']}: {status['percent']}% ({status['processed']} of "
                                 f"{status['total']} instances, {status['errors']} errors)")
    except (QueryTagNotFound, tags.OperationNotFound) as exc:
        print(f"dicomlake tags {args.tags_command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _tags_reindex(args: argparse.Namespace, tenant: TenantStore) -> int:
    from dicomlake import tags

    keys = args.keys or None
    if args.background:
        operation = tags.start_reindex(tenant, keys)
        _print(args, {"operation": operation}, f"reindex started: operation {operation} "
                                               f"(dicomlake tags status {operation})")
        tags.wait(operation)  # the thread runs in this process: the command returns when it is done
        return 0
    bar = None
    progress = None
    if not args.json and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=100.0, unit="%", desc="reindex", file=sys.stderr)

        def progress(p: Any) -> None:
            bar.n = p.percent
            bar.set_postfix(instances=f"{p.processed}/{p.total}", errors=p.errors)
            bar.refresh()

    try:
        summary = tags.reindex(tenant, keys, progress)
    finally:
        if bar:
            bar.close()
    human = (f"reindexed {len(summary.tags)} tags through seq {summary.latest_seq}: {summary.processed} "
             f"instances, {summary.values} values, {summary.errors} errors")
    if summary.ready:
        human += "\nready: " + ", ".join(summary.ready)
    if summary.disabled:
        human += "\nquerying disabled by errors (`dicomlake tags errors KEY`): " + ", ".join(summary.disabled)
    _print(args, summary.as_dict(), human)
    return 0


def _add_tags_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    # --root/--tenant/--json go after the subcommand: `dicomlake tags list --json`.
    tags = commands.add_parser("tags", help="extended query tags: add, list, reindex ...")
    sub = tags.add_subparsers(dest="tags_command", required=True)
    add = sub.add_parser("add", parents=[common], help="add a standard or private tag to the search index")
    add.add_argument("tag", help="keyword (PatientWeight) or hex path (00101030, '(0010,1030)')")
    add.add_argument("--vr", help="value representation (required for private tags)")
    add.add_argument("--level", choices=["study", "series", "instance"],
                     help="default: study for patient/study attributes, series for series, else instance")
    add.add_argument("--private-creator", help="private creator of a private tag's block")
    sub.add_parser("list", parents=[common], help="every tag, its status and progress")
    for name, text in (("get", "one tag"), ("delete", "delete a tag and its values"),
                       ("enable", "allow querying on a tag"), ("disable", "stop querying on a tag")):
        command = sub.add_parser(name, parents=[common], help=text)
        command.add_argument("key", help="key, keyword or hex path")
    errors = sub.add_parser("errors", parents=[common], help="values that could not be indexed")
    errors.add_argument("key", help="key, keyword or hex path")
    errors.add_argument("--limit", type=int, default=100)
    errors.add_argument("--offset", type=int, default=0)
    reindex = sub.add_parser("reindex", parents=[common], help="index tags over existing data (resumable)")
    reindex.add_argument("keys", nargs="*", help="tags to index (default: every adding or lagging tag)")
    reindex.add_argument("--background", action="store_true",
                         help="run as an operation whose status `tags status ID` reads from any process")
    status = sub.add_parser("status", parents=[common], help="status of a background reindex operation")
    status.add_argument("operation")
    tags.set_defaults(func=cmd_tags)


# -- end of extended query tags -------------------------------------------------------------------


# -- the DICOMweb service (dicomlake.web): serve, tokens --------------------------------------------


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


NO_AUTH_WARNING = """
!!! dicomlake serve --no-auth: AUTHENTICATION IS OFF. Every request may read, write and delete !!!
!!! every tenant. For local development only; served on loopback ({host}) and nowhere else.      !!!
"""


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from dicomlake.web.app import ENV_CORS, ENV_NO_AUTH

    if args.no_auth and not _loopback(args.host):
        print(f"dicomlake serve: --no-auth is refused on a non-loopback host ({args.host}); "
              "create a token (dicomlake tokens create) instead", file=sys.stderr)
        return 2
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    if args.no_auth:
        print(NO_AUTH_WARNING.format(host=args.host), file=sys.stderr)
        logging.getLogger("dicomlake.web").warning("authentication is disabled (--no-auth)")
    elif not _loopback(args.host):
        print(f"dicomlake serve: listening on {args.host} (not loopback): put TLS in front of it",
              file=sys.stderr)
    # The app factory reads its settings from the environment (so that every worker builds the same).
    os.environ["DICOMLAKE_ROOT"] = str(args.root)
    os.environ[ENV_NO_AUTH] = "1" if args.no_auth else ""
    os.environ[ENV_CORS] = " ".join(args.cors_origin)
    log_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(message)s"},
            "default": {"format": "%(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "access": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"},
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "dicomlake.web.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "dicomlake": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        },
    }
    # uvicorn's own access log is off: it would write concrete paths and query strings (PHI).
    uvicorn.run("dicomlake.web.app:app_from_environment", factory=True, host=args.host, port=args.port,
                workers=args.workers, access_log=False, log_config=log_config, proxy_headers=False,
                server_header=False)
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    import datetime as dt

    from dicomlake.web.auth import TokenError, TokenStore

    store = TokenStore(Lakehouse(args.root))
    try:
        if args.tokens_command == "create":
            if args.all_tenants == bool(args.tenant):
                raise ValueError("give --tenant T (one or more) or --all-tenants")
            tenants = ["*"] if args.all_tenants else args.tenant
            expires = None
            if args.expires_in_days is not None:
                expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=args.expires_in_days)
            token, record = store.create(args.name, tenants, args.permission, expires)
            _print(args, {"token": token, **record.as_dict()},
                   f"{token}\n(token {record.name!r}: shown once, store it now; only its SHA-256 is kept)")
        elif args.tokens_command == "list":
            records = store.list()
            _print(args, [r.as_dict() for r in records], "\n".join(
                f"{r.name:<24} tenants {','.join(sorted(r.tenants))}  permissions "
                f"{','.join(sorted(r.permissions))}  created {r.created_at:%Y-%m-%d %H:%M}"
                + (f"  expires {r.expires_at:%Y-%m-%d %H:%M}" if r.expires_at else "")
                + ("  EXPIRED" if r.expired() else "")
                for r in records) or "no tokens")
        else:
            record = store.revoke(args.name)
            _print(args, {"revoked": record.name}, f"revoked token {record.name!r}")
    except TokenError as exc:
        print(f"dicomlake tokens {args.tokens_command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_web_parsers(commands: Any) -> None:
    from dicomlake.web.context import PERMISSIONS

    serve = commands.add_parser("serve", help="serve DICOMweb (QIDO, STOW, WADO, delete, change feed, tags)")
    serve.add_argument("--root", default=default_root(), help="lakehouse root: folder or s3://bucket/prefix")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    serve.add_argument("--port", type=int, default=8042)
    serve.add_argument("--no-auth", action="store_true",
                       help="DEVELOPMENT ONLY: no tokens, everything allowed; refused off loopback")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="allow this browser origin (e.g. https://viewer.example.org); repeatable")
    serve.add_argument("--workers", type=int, default=1, help="server processes")
    serve.set_defaults(func=cmd_serve)

    tokens = commands.add_parser("tokens", help="API tokens of the DICOMweb service: create, list, revoke")
    sub = tokens.add_subparsers(dest="tokens_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=default_root(), help="lakehouse root: folder or s3://bucket/prefix")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    create = sub.add_parser("create", parents=[common], help="create a token (printed once)")
    create.add_argument("--name", required=True, help="who or what uses it (shown in access logs)")
    create.add_argument("--tenant", action="append", default=[], help="a tenant it may act in; repeatable")
    create.add_argument("--all-tenants", action="store_true", help="every tenant, present and future")
    create.add_argument("--permission", action="append", required=True, choices=PERMISSIONS,
                        help="read (QIDO, WADO, change feed), write (STOW), delete, "
                             "admin (tags; implies all)")
    create.add_argument("--expires-in-days", type=float, help="default: no expiry")
    sub.add_parser("list", parents=[common], help="tokens (never their secrets)")
    revoke = sub.add_parser("revoke", parents=[common], help="revoke a token by name")
    revoke.add_argument("name")
    tokens.set_defaults(func=cmd_tokens)


# -- end of the DICOMweb service ------------------------------------------------------------------


def cmd_dicomcast(args: argparse.Namespace) -> int:
    import time

    from dicomlake.fhir.rest import FhirServerTarget
    from dicomlake.fhir.sync import DicomCast, check_imaging_studies

    tenant = _tenant(args)
    server = None
    if args.fhir_url:
        server = FhirServerTarget(args.fhir_url, os.environ.get("DICOMLAKE_FHIR_TOKEN") or None)
    cast = DicomCast(tenant, dicomweb_url=args.dicomweb_url, patient_id_system=args.patient_id_system,
                     export_dir=args.export_dir, fhir_server=server)
    while True:
        report = cast.replay_dead_letters() if args.replay else cast.sync()
        payload = {**report.as_json(), "pending_dead_letters": cast.pending_dead_letters()}
        if args.check:
            payload["check"] = check_imaging_studies(tenant)
        human = (
            f"{'replayed' if args.replay else 'applied'} {report.entries} entries: "
            f"{report.studies_written} ImagingStudy written, {report.studies_deleted} deleted, "
            f"{report.dead_lettered} dead-lettered; position {report.position}, lag {report.lag}, "
            f"{payload['pending_dead_letters']} dead letters pending"
        )
        if args.check:
            human += f"; check {'passed' if payload['check']['passed'] else 'FAILED'}"
        _print(args, payload, human)
        if args.once or args.replay:
            return 1 if args.check and not payload["check"]["passed"] else 0
        time.sleep(args.interval)


def _add_dicomcast_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    cast = commands.add_parser(
        "dicomcast", parents=[common],
        help="sync imaging metadata to FHIR (Patient, ImagingStudy, Endpoint) from the change feed",
    )
    cast.add_argument("--once", action="store_true", help="catch up once and exit (default: keep polling)")
    cast.add_argument("--interval", type=float, default=10.0, help="seconds between polls without --once")
    cast.add_argument("--replay", action="store_true", help="apply the dead letters again, then exit")
    cast.add_argument("--check", action="store_true",
                      help="compare ImagingStudy counts with the feed (exit 1 on a mismatch)")
    cast.add_argument("--dicomweb-url", default=None,
                      help="DICOMweb server URL for the Endpoint (default $DICOMLAKE_DICOMWEB_URL or "
                           "http://127.0.0.1:8042); /tenants/<tenant>/dicomweb is appended")
    cast.add_argument("--patient-id-system", default=None,
                      help="identifier system of PatientID (default urn:dicomlake:<tenant>:patient-id)")
    cast.add_argument("--fhir-url", default=os.environ.get("DICOMLAKE_FHIR_URL"),
                      help="also push to this FHIR R4 server (bearer token from $DICOMLAKE_FHIR_TOKEN)")
    cast.add_argument("--export-dir", default=None,
                      help="folder of the NDJSON files (default <tenant>/fhir/export)")
    cast.set_defaults(func=cmd_dicomcast)


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    from dicomlake.sql import query
    from dicomlake.sql.output import render_table, write_table

    try:
        table = query(_tenant(args), args.statement)
    except duckdb.Error as exc:
        print(f"dicomlake sql: {exc}", file=sys.stderr)
        return 2
    if args.parquet:
        write_table(table, args.parquet)
        print(f"wrote {table.num_rows} rows to {args.parquet}", file=sys.stderr)
    elif args.csv:
        sys.stdout.write(render_table(table, "csv"))
    else:
        sys.stdout.write(render_table(table, "json" if args.json else "text", limit=args.max_rows))
    return 0


def cmd_cohort(args: argparse.Namespace) -> int:
    from dicomlake.cohort.cli import run_cohort_command

    return run_cohort_command(_tenant(args), args)


def _add_cohort_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    sql = commands.add_parser("sql", parents=[common], help="SQL (DuckDB) over the tenant's tables and views")
    sql.add_argument("statement", help='e.g. "SELECT modality, count(*) FROM series GROUP BY 1"')
    out = sql.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="print CSV")
    out.add_argument("--parquet", metavar="FILE", help="write the result to a Parquet file")
    sql.add_argument("--max-rows", type=int, default=100, help="rows shown in the text table (default 100)")
    sql.set_defaults(func=cmd_sql)
    cohort = commands.add_parser("cohort", parents=[common],
                                 help="a cohort from a plain-language question or a definition file")
    cohort.add_argument("question", nargs="?",
                        help='e.g. "women over 60 with lung cancer who had a chest CT"')
    cohort.add_argument("--definition", metavar="FILE", help="a cohort definition (YAML or JSON) instead")
    cohort.add_argument("--as-of", metavar="DATE",
                        help="the day ages and time windows count from (default today)")
    cohort.add_argument("--explain", action="store_true", help="show how it was understood and the SQL")
    cohort.add_argument("--no-run", action="store_true", help="only compile (with --explain or --json)")
    cohort.add_argument("--llm-url", default=os.environ.get("DICOMLAKE_LLM_URL"),
                        help="OpenAI-compatible chat-completions URL for questions the parser cannot read "
                             "(default $DICOMLAKE_LLM_URL; off when unset)")
    cohort.add_argument("--llm-model", default=os.environ.get("DICOMLAKE_LLM_MODEL", "gpt-4o-mini"))
    cohort.set_defaults(func=cmd_cohort)
# -- FHIR import (dicomlake.fhir.importer) --------------------------------------------------------


def cmd_fhir(args: argparse.Namespace) -> int:
    if args.fhir_command == "samples":
        from dicomlake.fhir.clinical_samples import generate_clinical_data

        summary = generate_clinical_data(args.dest, n_instances=args.instances, seed=args.seed)
        payload = {"dest": str(summary.dest), "counts": summary.counts, "invalid": summary.invalid,
                   "osteosarcoma_patients": summary.osteosarcoma_patients}
        _print(args, payload, f"wrote {sum(summary.counts.values())} resources and {summary.invalid} "
                              f"invalid lines to {summary.dest}")
        return 0
    from dicomlake.fhir.importer import ImportOptions, import_sources

    tenant = _tenant(args)
    options = ImportOptions(patient_identifier_system=args.patient_identifier_system)
    if not args.paths and not args.url:
        raise ValueError("give PATH... or --url")
    token = (os.environ.get(args.token_env) or None) if args.url else None
    # Files and server in one import: one upsert, one view rebuild, one relink.
    summary = import_sources(tenant, args.paths, args.url, token, options=options)
    _print(args, summary.as_json(),
           f"read {summary.read}: {summary.inserted} inserted, {summary.updated} updated, "
           f"{summary.unchanged} unchanged, {summary.stale} stale, {summary.quarantined} quarantined; "
           f"unlinked {summary.links.get('unlinked', 0)} ({summary.seconds} s)")
    return 0


def _add_fhir_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    fhir = commands.add_parser("fhir", help="import clinical FHIR data (NDJSON, Bundles, a server)")
    sub = fhir.add_subparsers(dest="fhir_command", required=True)
    imp = sub.add_parser("import", parents=[common], help="import NDJSON/Bundle files, folders, a server")
    imp.add_argument("paths", nargs="*")
    imp.add_argument("--url", default=None, help="a FHIR server's base URL (search API, paged)")
    imp.add_argument("--token-env", default="DICOMLAKE_FHIR_TOKEN",
                     help="environment variable holding the bearer token (default DICOMLAKE_FHIR_TOKEN)")
    imp.add_argument("--patient-identifier-system", default=None,
                     help="link Patients to DICOM only through identifiers of this system")
    samples = sub.add_parser("samples", parents=[common], help="write sample clinical NDJSON")
    samples.add_argument("dest")
    samples.add_argument("--instances", type=int, default=300, help="as for `dicomlake samples`")
    samples.add_argument("--seed", type=int, default=0)
    fhir.set_defaults(func=cmd_fhir)


def _add_export_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    export = commands.add_parser("export", parents=[common],
                                 help="export for AI/ML: Parquet, DICOM, NIfTI or PNG")  # fmt: skip
    what = export.add_mutually_exclusive_group(required=True)
    what.add_argument("--study", nargs="+", default=[], metavar="UID",
                      help="study UIDs (or study/series/sop)")
    what.add_argument("--series", nargs="+", default=[], metavar="STUDY/SERIES")
    what.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                      help="QIDO-RS instance filter, e.g. -f Modality=CT")
    what.add_argument("--cohort", metavar="QUESTION_OR_FILE", help="a cohort question or definition file")
    export.add_argument("--as-of", metavar="DATE", help="with --cohort: the day ages count from")
    export.add_argument("--format", choices=["parquet", "dicom", "nifti", "png"], required=True,
                        help="parquet tensors, DICOM files, one NIfTI volume per series, one PNG per frame")
    export.add_argument("--out", required=True,
                        help="output folder or s3://bucket/prefix (AWS_* settings); rerun into it to resume")
    export.add_argument("--per-frame", action="store_true", help="parquet: one row per frame")
    export.add_argument("--png-bits", type=int, choices=[8, 16], default=8,
                        help="png: 8 = windowed for display (default), 16 = stored values, no window")
    export.add_argument("--deid", action="store_true",
                        help="de-identify (PS3.15 E.1): dicom copies; UIDs, PatientID, dates elsewhere")
    export.add_argument("--project-key-env", metavar="VAR", help="environment variable holding the de-id key")
    export.add_argument("--workers", type=int, default=1, help="decoder processes")
    export.add_argument("--chunk-instances", type=int, default=256,
                        help="instances per output chunk (progress is recorded after each)")
    export.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomlake", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=default_root(), help="lakehouse root: folder or s3://bucket/prefix")
    common.add_argument("--tenant", default=os.environ.get("DICOMLAKE_TENANT", DEFAULT_TENANT))
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser(
        "ingest", parents=[common], help="ingest files, folders, zips or s3:// prefixes"
    )
    ingest.add_argument("paths", nargs="+")
    ingest.add_argument("--workers", type=int, default=None, help="parser processes (default: one per core)")
    ingest.add_argument("--batch-size", type=int, default=1000, help="instances per Delta commit")
    ingest.add_argument(
        "--disposition",
        choices=["keep", "delete", "move"],
        default="keep",
        help="what to do with a drop file once it is committed",
    )
    ingest.add_argument("--move-to", help="destination folder for --disposition move")
    ingest.set_defaults(func=cmd_ingest)

    status = commands.add_parser("status", parents=[common], help="tables, versions, counts, latest seq")
    status.set_defaults(func=cmd_status)

    quarantine = commands.add_parser("quarantine", parents=[common], help="list quarantined inputs and why")
    quarantine.add_argument("--limit", type=int, default=50)
    quarantine.set_defaults(func=cmd_quarantine)

    samples = commands.add_parser("samples", parents=[common], help="write deterministic sample DICOM drops")
    samples.add_argument("dest")
    samples.add_argument("--instances", type=int, default=200)
    samples.add_argument("--seed", type=int, default=0)
    samples.add_argument("--bad", action="store_true", help="also write one file of each kind of bad input")
    samples.set_defaults(func=cmd_samples)

    changefeed = commands.add_parser("changefeed", parents=[common], help="read the change feed")
    changefeed.add_argument("which", nargs="?", choices=["latest"], help="only the latest entry")
    changefeed.add_argument("--offset", type=int, default=0, help="the last sequence already seen")
    changefeed.add_argument("--limit", type=int, default=100)
    changefeed.add_argument("--start-time", help="ISO 8601 with a time zone; inclusive")
    changefeed.add_argument("--end-time", help="ISO 8601 with a time zone; exclusive")
    changefeed.add_argument("--include-metadata", action="store_true", help="DICOM JSON of each version")
    changefeed.set_defaults(func=cmd_changefeed)

    delete = commands.add_parser("delete", parents=[common], help="delete a study, series or instance")
    delete.add_argument("study")
    delete.add_argument("series", nargs="?")
    delete.add_argument("instance", nargs="?")
    delete.set_defaults(func=cmd_delete)

    maintain = commands.add_parser(
        "maintain", parents=[common], help="compact, checkpoint and vacuum tables; purge expired blobs"
    )
    maintain.add_argument(
        "--blob-retention-days",
        type=float,
        default=7.0,
        help="keep replaced/deleted versions' bytes this long after the change",
    )
    maintain.add_argument("--vacuum-retention-hours", type=int, default=168)
    maintain.set_defaults(func=cmd_maintain)

    search = commands.add_parser(
        "search", parents=[common], help="QIDO-RS search for studies, series or instances"
    )
    search.add_argument("level", choices=["studies", "series", "instances"])
    search.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="match an attribute (keyword or tag), e.g. -f StudyDate=20200101-20201231")
    search.add_argument("--include", action="append", default=[], metavar="FIELD",
                        help="also return this attribute (keyword, tag or 'all')")
    search.add_argument("--limit", type=int, default=100)
    search.add_argument("--offset", type=int, default=0)
    search.add_argument("--fuzzy", action="store_true", help="fuzzy person-name matching")
    search.set_defaults(func=cmd_search)

    demo = commands.add_parser("demo", parents=[common], help="sample drops + the main Dagster job")
    demo.add_argument("--drop", default=os.environ.get("DICOMLAKE_DROP_DIR", DEFAULT_DROP_DIR))
    demo.add_argument("--instances", type=int, default=300)
    demo.set_defaults(func=cmd_demo)
    _add_tags_parser(commands, common)
    _add_dicomcast_parser(commands, common)
    _add_cohort_parsers(commands, common)
    _add_fhir_parser(commands, common)
    _add_export_parser(commands, common)
    _add_web_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"dicomlake {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
