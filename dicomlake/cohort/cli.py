"""`dicomlake cohort "QUESTION" | --definition FILE [--as-of DATE] [--explain] [--json]`."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from dicomlake.store.lakehouse import TenantStore

SHOWN_ROWS = 20


def run_cohort_command(tenant: TenantStore, args: argparse.Namespace) -> int:
    from dicomlake.cohort.compile import compile_definition
    from dicomlake.cohort.definition import CohortDefinitionError
    from dicomlake.cohort.llm import ChatCompletionsBackend, LlmError
    from dicomlake.cohort.runner import resolve, run

    if bool(args.question) == bool(args.definition):
        print("dicomlake cohort: give a QUESTION or --definition FILE (one of them)", file=sys.stderr)
        return 2
    try:
        as_of = datetime.date.fromisoformat(args.as_of) if args.as_of else None
    except ValueError:
        print(f"dicomlake cohort: --as-of {args.as_of!r} is not a date YYYY-MM-DD", file=sys.stderr)
        return 2
    subject = Path(args.definition) if args.definition else args.question
    llm = ChatCompletionsBackend.from_env(args.llm_url, args.llm_model)
    try:
        if args.no_run:
            definition, understood, unrecognized, question = resolve(tenant, subject, as_of, llm)
            compiled = compile_definition(definition)
            payload = {
                "question": question,
                "as_of": compiled.as_of.isoformat(),
                "definition": definition.as_json(),
                "understood": understood,
                "unrecognized": unrecognized,
                "sql": compiled.script(),
            }
            print(json.dumps(payload, indent=2, ensure_ascii=False) if args.json else _explain(payload))
            return 0
        result = run(tenant, subject, as_of=as_of, llm=llm)
    except (CohortDefinitionError, LlmError) as exc:
        print(f"dicomlake cohort: {exc}", file=sys.stderr)
        return 2
    payload = result.as_json()
    payload["studies"] = payload.get("studies", [])
    payload["series"] = payload.get("series", [])
    if args.json:
        print(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
        return 0
    lines = [_explain(payload)] if args.explain else []
    if result.unrecognized and not args.explain:
        lines.append("not understood: " + ", ".join(repr(u) for u in result.unrecognized))
    lines.append(f"{len(result.patients)} patients: {', '.join(result.patients) or '-'}")
    if result.unlinked_fhir_patients:
        lines.append(f"  (+{result.unlinked_fhir_patients} FHIR patients without linked imaging)")
    for name, rows in result.rows.items():
        if name == "patients":
            continue
        if name == "studies":
            owners = result.patients_with_studies
            lines.append(f"{len(rows)} studies (of {len(owners)} patients: {', '.join(owners) or '-'})")
        else:
            lines.append(f"{len(rows)} {name}")
        lines += [f"  {_row_line(name, row)}" for row in rows[:SHOWN_ROWS]]
        if len(rows) > SHOWN_ROWS:
            lines.append(f"  ... {len(rows) - SHOWN_ROWS} more (--json for all)")
    print("\n".join(lines))
    return 0


def _row_line(name: str, row: dict) -> str:
    if name == "studies":
        return (
            f"{row['patient_id']}  {row['study_date']}  {'/'.join(row['modalities_in_study'] or [])}  "
            f"{row['study_description']}  {row['study_instance_uid']}"
        )
    if name == "series":
        return (f"{row['study_instance_uid']}  {row['modality']}  {row['body_part_examined']}  "
                f"{row['series_description']}")
    if name == "medications":
        return (f"{row['patient_id']}  {str(row['date'])[:10]}  {row['display'] or row['text']}  "
                f"({row['resource_type']})")
    if name == "reports":
        return (
            f"{row['patient_id']}  {str(row['effective'])[:10]}  {row['display']}  "
            f"study {row['study_instance_uid']}"
        )
    if name == "documents":
        return (
            f"{row['patient_id']}  {str(row['date'])[:10]}  {row['type_display'] or row['description']}  "
            f"study {row['study_instance_uid']}"
        )
    return json.dumps(row, default=str)


def _explain(payload: dict) -> str:
    lines = []
    if payload.get("question"):
        lines.append(f"question: {payload['question']}")
    lines.append(f"as of: {payload['as_of']}")
    if payload["understood"]:
        lines.append("understood:")
        lines += [f"  {u}" for u in payload["understood"]]
    lines.append("not understood: " + (", ".join(repr(u) for u in payload["unrecognized"]) or "(nothing)"))
    lines.append("definition:")
    lines += [
        "  " + line for line in json.dumps(payload["definition"], indent=2, ensure_ascii=False).splitlines()
    ]
    lines.append("sql:")
    lines += ["  " + line for line in payload["sql"].splitlines()]
    return "\n".join(lines)
