"""Create the Unity Catalog schemas, Volumes and grants the bundle's job uses (idempotent; run once per target).

    python scripts/databricks_setup.py -t dev                       # with the Databricks SDK (auth as the CLI:
                                                                    # DATABRICKS_HOST/DATABRICKS_TOKEN, ~/.databrickscfg)
    python scripts/databricks_setup.py -t prod --var service_principal=<application-id> --sql   # the same as SQL

Names come from databricks.yml: the variables' defaults, overridden by the target's, then by --var (as the CLI's
`bundle deploy --var`); --catalog / --schema win. Creates:
- the target's schema (tables: items, interactions, quarantine, captions, item_features, ...; the registered model)
  with the source Volume (`volume`: videos/, the CSVs, and _ready/, the marker folder the prod file-arrival
  trigger watches: the uploader drops one marker file there after each complete upload batch) and the cache
  Volume (`cache_volume`, with petastorm/);
- the models schema (`models_schema`, shared by every target) with the models Volume (`models_volume`, with hf/
  for HF_HOME); fill it with scripts/stage_models.py;
- grants for the principal the job runs as (prod: the `service_principal` variable; dev runs as the deploying
  user, who needs them only when not the owner: --principal <user>): USE CATALOG; on the target's schema USE
  SCHEMA, CREATE TABLE, SELECT, MODIFY and CREATE MODEL (the Unity Catalog model registry); READ VOLUME on the
  source, READ/WRITE VOLUME on the cache; on the models schema only USE SCHEMA and READ VOLUME (read-only).
The schemas are not bundle resources on purpose: `databricks bundle destroy` must not drop the tables or weights.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

BUNDLE = Path(__file__).resolve().parents[1] / "databricks.yml"


def bundle_variables(target: str, bundle: Path = BUNDLE, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's variables for `target`: defaults, overridden by the target's `variables`, then `overrides`."""
    doc = yaml.safe_load(bundle.read_text())
    if target not in doc.get("targets", {}):
        raise SystemExit(f"unknown target {target!r}; databricks.yml has {sorted(doc.get('targets', {}))}")
    values = {k: v.get("default") for k, v in doc["variables"].items()}
    values.update((doc["targets"][target] or {}).get("variables") or {})
    unknown = sorted(set(overrides or {}) - set(values))
    if unknown:
        raise SystemExit(f"unknown variable(s) {unknown}; databricks.yml defines {sorted(values)}")
    values.update(overrides or {})
    return values


def run_as(target: str, values: dict[str, Any], bundle: Path = BUNDLE) -> str | None:
    """The service principal `target` runs as (its run_as, variables resolved), or None (the deploying user)."""
    doc = yaml.safe_load(bundle.read_text())
    ref = ((doc["targets"][target] or {}).get("run_as") or doc.get("run_as") or {}).get("service_principal_name")
    if ref is None:
        return None
    m = re.fullmatch(r"\$\{var\.(\w+)\}", str(ref))
    principal = str(values[m.group(1)]) if m else str(ref)
    if not principal:
        raise SystemExit(
            f"target {target!r} runs as a service principal, but variable "
            f"{m.group(1) if m else 'run_as'!r} is empty: pass --var {m.group(1) if m else 'service_principal'}"
            f"=<application-id> (the same value `databricks bundle deploy -t {target} --var ...` gets)"
        )
    return principal


def _ident(key: str, value: Any) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(value)):
        raise SystemExit(f"{key}={value!r} is not a plain identifier")
    return str(value)


def plan(values: dict[str, Any], principal: str | None = None) -> dict[str, Any]:
    """What to create and grant, from the bundle variables (and the job's principal, if any)."""
    cat = _ident("catalog", values["catalog"])
    sch = _ident("schema", values["schema"])
    msch = _ident("models_schema", values.get("models_schema") or sch)
    vol, cache = _ident("volume", values["volume"]), _ident("cache_volume", values["cache_volume"])
    models = _ident("models_volume", values["models_volume"])
    if principal is not None and (not principal or "`" in principal):
        raise SystemExit(f"principal {principal!r}: give a user name, group or service principal application ID")
    grants: list[tuple[str, str, list[str]]] = []
    if principal:
        grants = [
            ("catalog", cat, ["USE_CATALOG"]),
            ("schema", f"{cat}.{sch}", ["USE_SCHEMA", "CREATE_TABLE", "SELECT", "MODIFY", "CREATE_MODEL"]),
            ("volume", f"{cat}.{sch}.{vol}", ["READ_VOLUME"]),
            ("volume", f"{cat}.{sch}.{cache}", ["READ_VOLUME", "WRITE_VOLUME"]),
        ]
        if msch != sch:
            grants.append(("schema", f"{cat}.{msch}", ["USE_SCHEMA"]))
        grants.append(("volume", f"{cat}.{msch}.{models}", ["READ_VOLUME"]))
    return {
        "catalog": cat,
        "schema": sch,
        "models_schema": msch,
        "schemas": list(dict.fromkeys([sch, msch])),
        # (schema, volume)
        "volumes": [(sch, vol), (sch, cache), (msch, models)],
        "directories": [
            f"/Volumes/{cat}/{sch}/{vol}/videos",
            f"/Volumes/{cat}/{sch}/{vol}/_ready",
            f"/Volumes/{cat}/{msch}/{models}/hf",
            f"/Volumes/{cat}/{sch}/{cache}/petastorm",
        ],
        "principal": principal,
        "grants": grants,
    }


def _quoted(full_name: str) -> str:
    return ".".join(f"`{part}`" for part in full_name.split("."))


def sql(p: dict[str, Any]) -> list[str]:
    cat = p["catalog"]
    comments = {p["schema"]: "captionrec tables", p["models_schema"]: "captionrec model weights (read-only to jobs)"}
    out = [f"CREATE SCHEMA IF NOT EXISTS `{cat}`.`{s}` COMMENT '{comments[s]}';" for s in p["schemas"]]
    out += [f"CREATE VOLUME IF NOT EXISTS `{cat}`.`{s}`.`{v}`;" for s, v in p["volumes"]]
    out += [
        f"-- then create the folder {d} (Catalog Explorer, or: databricks fs mkdirs dbfs:{d})" for d in p["directories"]
    ]
    if not p["principal"]:
        out.append("-- no grants: the job runs as the deploying user (pass --principal <user> to grant to another)")
    for kind, name, privileges in p["grants"]:
        out.append(
            f"GRANT {', '.join(x.replace('_', ' ') for x in privileges)} ON {kind.upper()} {_quoted(name)} "
            f"TO `{p['principal']}`;"
        )
    return out


def apply(p: dict[str, Any]) -> None:  # pragma: no cover - needs a workspace
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.errors import NotFound
    from databricks.sdk.service.catalog import PermissionsChange, Privilege, VolumeType

    w = WorkspaceClient()
    cat = p["catalog"]
    comments = {p["schema"]: "captionrec tables", p["models_schema"]: "captionrec model weights (read-only to jobs)"}
    for sch in p["schemas"]:
        try:
            w.schemas.get(f"{cat}.{sch}")
            print(f"schema {cat}.{sch} exists")
        except NotFound:
            w.schemas.create(name=sch, catalog_name=cat, comment=comments[sch])
            print(f"created schema {cat}.{sch}")
    for sch, v in p["volumes"]:
        try:
            w.volumes.read(f"{cat}.{sch}.{v}")
            print(f"volume {cat}.{sch}.{v} exists")
        except NotFound:
            w.volumes.create(catalog_name=cat, schema_name=sch, name=v, volume_type=VolumeType.MANAGED)
            print(f"created volume {cat}.{sch}.{v}")
    for d in p["directories"]:
        w.files.create_directory(d)
        print(f"folder {d}")
    for kind, name, privileges in p["grants"]:
        w.grants.update(
            kind, name, changes=[PermissionsChange(principal=p["principal"], add=[Privilege[x] for x in privileges])]
        )
        print(f"granted {', '.join(privileges)} on {kind} {name} to {p['principal']}")


def _var(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise argparse.ArgumentTypeError(f"--var {item!r}: expected name=value")
    key, value = item.split("=", 1)
    return key.strip(), value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--target", default="dev")
    ap.add_argument(
        "--var",
        action="append",
        type=_var,
        default=[],
        metavar="NAME=VALUE",
        help="a bundle variable, as `databricks bundle deploy --var` (e.g. service_principal=<app-id>)",
    )
    ap.add_argument("--catalog")
    ap.add_argument("--schema")
    ap.add_argument(
        "--principal",
        help="grant to this principal (default: the target's run_as service principal; dev has none, so no grants)",
    )
    ap.add_argument("--sql", action="store_true", help="print SQL instead of calling the workspace")
    args = ap.parse_args(argv)
    values = bundle_variables(args.target, overrides=dict(args.var))
    values.update({k: v for k, v in (("catalog", args.catalog), ("schema", args.schema)) if v})
    principal = args.principal or run_as(args.target, values)
    p = plan(values, principal)
    if args.sql:
        print("\n".join(sql(p)))
    else:
        apply(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
