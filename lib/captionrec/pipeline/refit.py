"""The recommend stage's production refit (`recommend.from_grid`): not a stage of its own, a step of recommend.

The grid's window models end at their t_k and its children need not log a model, so the configuration chosen on
validation (`captionrec.serving.choice.choose_configuration`) is trained once more, on every interaction up to
now, by the train stage: the chosen child's train config (its trial's hyperparameters included) with one rolling
window whose test week starts 1 ms after the newest interaction (empty). The epoch count is chosen on the
validation week (the last 7 days, newest interaction included: the fit phase trains on what came before), then
the retrain phase trains a fresh model on every interaction for that many epochs: that model is logged,
registered and promoted (`captionrec.serving.registry.register_refit`). A refit is keyed by grid, configuration
and refit settings (tag captionrec.refit_key): a re-run reuses a finished one.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from captionrec import contracts as C

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from captionrec.config import Config
    from captionrec.tables import TableStore

log = logging.getLogger("captionrec.recommend")
TAG_REFIT_KEY = "captionrec.refit_key"
# Bumped when what a refit trains on changes (2: every interaction, the newest included), so an older refit
# with the same grid and configuration is not reused.
REFIT_SCHEME = 2


def _typed(text: str) -> Any:
    """A logged param back to a value: "" -> None, Python literals (numbers, True, tuples) as such, else text."""
    if text == "":
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def trial_tree(train_params: dict[str, str], base: Any) -> dict[str, Any]:
    """The chosen child's hyperparameters that differ from `base` (a TrainConfig), as a nested override tree
    (split settings left out: the refit sets its own window)."""
    from captionrec.config.loader import flatten

    flat = {k: ("" if v is None else str(v)) for k, v in flatten(base).items()}
    tree: dict[str, Any] = {}
    for key, text in train_params.items():
        if key.startswith("split.") or flat.get(key) == text:
            continue
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _typed(text)
    return tree


def refit_config(cfg: "Config", choice: dict[str, Any], newest_ms: int) -> "Config":
    """The production refit's config: the chosen child's train config (experiment.child_train_config + its
    trial's hyperparameters) + recommend.refit_overrides, one rolling window whose (empty) test week starts 1 ms
    after the newest interaction, retrain on: the final model trains on every interaction."""
    from captionrec.config.loader import deep_merge, from_dict, parse_overrides, to_plain
    from captionrec.config.train import TrainConfig
    from captionrec.pipeline.experiment import child_train_config

    train = child_train_config(cfg, choice["features"], choice["model"], choice["seed"])
    tree = deep_merge(to_plain(train), trial_tree(choice.get("train_params", {}), train))
    tree = deep_merge(tree, parse_overrides(cfg.recommend.refit_overrides))
    start = dt.datetime.fromtimestamp((newest_ms + 1) / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")
    tree["split"].update(protocol="rolling", num_windows=1, start=start)
    tree.update(retrain=True)
    return dataclasses.replace(cfg, train=from_dict(TrainConfig, tree, prefix="train"))


def refit_key(grid_run_id: str, choice: dict[str, Any], overrides: tuple[str, ...]) -> str:
    blob = [REFIT_SCHEME, grid_run_id, choice["model"], choice["features"], choice.get("train_params"), list(overrides)]
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def refit_from_grid(
    cfg: "Config", spark: "SparkSession", store: "TableStore", client: Any, uri: str
) -> tuple[str, dict[str, Any]]:
    """The refit run of the grid's chosen configuration: reused when one with the same key finished, else trained
    (the train stage), logged as a pyfunc and registered. Returns (run id, choice)."""
    from pyspark.sql import functions as F

    from captionrec.pipeline import train as train_stage
    from captionrec.serving.choice import choose_configuration, newest_grid
    from captionrec.serving.registry import register_refit

    rc = cfg.recommend
    grid = newest_grid(client, cfg.tracking.experiment) if rc.from_grid == "latest" else client.get_run(rc.from_grid)
    choice = choose_configuration(client, grid.info.run_id, rc.select_metric)
    key = choice["refit_key"] = refit_key(grid.info.run_id, choice, rc.refit_overrides)
    found = client.search_runs(
        [grid.info.experiment_id], f"tags.`{TAG_REFIT_KEY}` = '{key}' and attributes.status = 'FINISHED'", max_results=1
    )
    if found:
        log.info("refit %s of %s %s reused (run %s)", key, choice["model"], choice["features"], found[0].info.run_id)
        choice.update(refit="reused", promotion=json.loads(found[0].data.tags.get("captionrec.promotion", "null")))
        choice.pop("train_params", None)
        return found[0].info.run_id, choice
    interactions = store.read(C.INTERACTIONS)  # the version the refit's time cut comes from
    newest = int(interactions.agg(F.max("ts_ms")).first()[0])
    rcfg = refit_config(cfg, choice, newest)
    log.info("refit of %s %s on every interaction (%s)", choice["model"], choice["features"], choice["reason"])
    tags = {
        C.TAG_KIND: C.REFIT_RUN,
        TAG_REFIT_KEY: key,
        "captionrec.choice": choice["reason"][:4000],
        "captionrec.grid_run_id": grid.info.run_id,
    }
    out = train_stage.run(rcfg, spark, store, tags=tags)

    def queries_for(model: Any, item_ids: list[str]) -> Any:  # states of the users the refit trained on
        from captionrec.serving.index import CALIBRATION_QUERIES
        from captionrec.transforms.recommend import calibration_states, user_inputs

        users = interactions.select("user_id").distinct().limit(CALIBRATION_QUERIES)
        inputs = user_inputs(interactions, users, item_ids, item_ids, rcfg.train.max_seq_len)
        return calibration_states(model, inputs)

    promotion = register_refit(
        rc, client, uri, out["run_id"], rcfg.train.features, rcfg.train.max_seq_len, queries_for=queries_for
    )
    choice.update(refit="trained", promotion=promotion, newest_interaction_ms=newest)
    choice.pop("train_params", None)  # in the refit's config and its key; the summary names what varied
    return out["run_id"], choice
