"""Create the Unity Catalog schema and Volumes the bundle's job uses (idempotent; run once per target).

    python scripts/databricks_setup.py -t dev          # creates them with the Databricks SDK (auth as the CLI:
                                                       # DATABRICKS_HOST/DATABRICKS_TOKEN, or ~/.databrickscfg)
    python scripts/databricks_setup.py -t prod --sql   # prints the same as SQL (a SQL warehouse or notebook)

Names come from databricks.yml: the variables' defaults, overridden by the target's; --catalog / --schema win.
Creates: the schema (tables: items, interactions, quarantine, captions, item_features, ...), the source Volume
(`volume`, with videos/ for the file-arrival trigger), the models Volume (`models_volume`, with hf/ for
HF_HOME) and the cache Volume (`cache_volume`, with petastorm/ for the training data cache). Copy the MicroLens
files into /Volumes/<catalog>/<schema>/<volume>/ and the model weights into
/Volumes/<catalog>/<schema>/<models_volume>/ (the job passes that folder as storage.models_dir; the model
names under it are the ones in conf/databricks.yaml) before the first run.
The schema is not a bundle resource on purpose: `databricks bundle destroy` must not drop the tables.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

BUNDLE = Path(__file__).resolve().parents[1] / "databricks.yml"


def bundle_variables(target: str, bundle: Path = BUNDLE) -> dict[str, Any]:
    """The bundle's variables for `target`: defaults, overridden by the target's `variables`."""
    doc = yaml.safe_load(bundle.read_text())
    if target not in doc.get("targets", {}):
        raise SystemExit(f"unknown target {target!r}; databricks.yml has {sorted(doc.get('targets', {}))}")
    values = {k: v.get("default") for k, v in doc["variables"].items()}
    values.update((doc["targets"][target] or {}).get("variables") or {})
    return values


def plan(values: dict[str, Any]) -> dict[str, Any]:
    """What to create, from the bundle variables."""
    for key in ("catalog", "schema", "volume", "models_volume", "cache_volume"):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(values[key])):
            raise SystemExit(f"{key}={values[key]!r} is not a plain identifier")
    cat, sch = values["catalog"], values["schema"]
    return {
        "catalog": cat,
        "schema": sch,
        "volumes": [values["volume"], values["models_volume"], values["cache_volume"]],
        "directories": [f"/Volumes/{cat}/{sch}/{values['volume']}/videos",
                        f"/Volumes/{cat}/{sch}/{values['models_volume']}/hf",
                        f"/Volumes/{cat}/{sch}/{values['cache_volume']}/petastorm"],
    }


def sql(p: dict[str, Any]) -> list[str]:
    cat, sch = p["catalog"], p["schema"]
    out = [f"CREATE SCHEMA IF NOT EXISTS `{cat}`.`{sch}` COMMENT 'captionrec tables';"]
    out += [f"CREATE VOLUME IF NOT EXISTS `{cat}`.`{sch}`.`{v}`;" for v in p["volumes"]]
    out += [f"-- then create the folder {d} (Catalog Explorer, or: databricks fs mkdirs dbfs:{d})" for d in p["directories"]]
    return out


def apply(p: dict[str, Any]) -> None:  # pragma: no cover - needs a workspace
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.errors import NotFound
    from databricks.sdk.service.catalog import VolumeType

    w = WorkspaceClient()
    cat, sch = p["catalog"], p["schema"]
    try:
        w.schemas.get(f"{cat}.{sch}")
        print(f"schema {cat}.{sch} exists")
    except NotFound:
        w.schemas.create(name=sch, catalog_name=cat, comment="captionrec tables")
        print(f"created schema {cat}.{sch}")
    for v in p["volumes"]:
        try:
            w.volumes.read(f"{cat}.{sch}.{v}")
            print(f"volume {cat}.{sch}.{v} exists")
        except NotFound:
            w.volumes.create(catalog_name=cat, schema_name=sch, name=v, volume_type=VolumeType.MANAGED)
            print(f"created volume {cat}.{sch}.{v}")
    for d in p["directories"]:
        w.files.create_directory(d)
        print(f"folder {d}")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--target", default="dev")
    ap.add_argument("--catalog")
    ap.add_argument("--schema")
    ap.add_argument("--sql", action="store_true", help="print SQL instead of calling the workspace")
    args = ap.parse_args(argv)
    values = bundle_variables(args.target)
    values.update({k: v for k, v in (("catalog", args.catalog), ("schema", args.schema)) if v})
    p = plan(values)
    if args.sql:
        print("\n".join(sql(p)))
    else:
        apply(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
