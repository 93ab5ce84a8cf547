"""``polysemy run``: every method on every target of every track, scored by every metric.

Work is split into units (track x method x target; detection: track x method). Each
finished unit's rows are written atomically to ``RUN_DIR/parts/<unit>.csv``, so a run killed
part-way resumes where it stopped and ends with the same table as an uninterrupted run.
At the end this run's parts are assembled into the tidy ``results.csv`` (sorted,
deterministic), ``run.json`` (provenance), leaderboards and figures. The folder's rules
(identity, lock, resume, atomic overwrite) are those of :mod:`benchmark.run.folder`;
everything is validated (:mod:`benchmark.run.preflight`) before anything is written.
Units run in this process or in ``workers`` forked processes (:mod:`benchmark.run.workers`),
always on one torch thread each, so the worker count never changes a number. A finished
unit is also kept in the cache (:mod:`benchmark.run.unit_store`): a run of the same
configuration and code into another folder reads it instead of computing it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from benchmark.core.budget import StageTimer, prepare_units
from benchmark.core.config import RunConfig
from benchmark.core.errors import plugin_code
from benchmark.core.finite import bad_rows
from benchmark.core.forked import run_groups
from benchmark.core.registry import METHODS, METRICS
from benchmark.core.threads import single_threaded
from benchmark.core.types import NotApplicable, Split, Target
from benchmark.engine.environment import Environment
from benchmark.engine.memo import memoized
from benchmark.run import unit_store, warmup
from benchmark.run.folder import RunDirectoryError, RunFolder, plugin_code_fingerprint  # noqa: F401 (RunDirectoryError: re-exported)
from benchmark.run.plugin_set import Plugin, resolve
from benchmark.run.preflight import check_environment, check_plugins
from benchmark.run.workers import resolve_workers
from benchmark.storage.cache import Cache, atomic_write, atomic_write_text
from benchmark.tracks import TRACKS, TrackPlan

RESULT_COLUMNS = ["track", "model", "layer", "dataset", "target", "method", "method_params", "metric",
                  "column", "value", "higher_is_better", "main", "status", "reason", "seed",
                  "data_seed", "model_seed", "method_seed"]  # seed = method_seed (kept for tables)
SORT_COLUMNS = ["track", "method", "method_params", "target", "model", "layer", "dataset", "model_seed",
                "data_seed", "method_seed", "metric", "column"]


def _non_finite(split: Split, context) -> str:
    """Why the split is broken ("" if it is not): NaN or inf virtual neurons (or residual) on
    the first batch of held-out images."""
    n = min(len(context.heldout), context.batch_size)
    with torch.no_grad():
        images = context.heldout.images(range(n)).to(context.device)
        outputs = [("virtual neurons", split.activations(images))]
        if split.residual_fn is not None:
            outputs.append(("residual", split.residual_fn(images)))
    for what, values in outputs:
        bad = int(bad_rows(values).sum())
        if bad:
            return f"non-finite values: the method's {what} are NaN or inf on {bad} of {n} held-out images"
    return ""


def unit_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


class Runner:
    """Executes a config into a run folder (see module docstring)."""

    def __init__(self, config: RunConfig, output_dir: str | Path | None = None, overwrite: bool = False,
                 cache: Cache | None = None, progress: bool = True, workers: int | str = 1):
        self.config = config
        self.workers = resolve_workers(workers, config.device)  # processes of the units (benchmark.run.workers)
        self.out = Path(output_dir or config.output_dir)
        self.progress = progress
        self.cache = cache or Cache()
        check_environment(config, self.cache, self.out)  # cheap checks first; nothing is written yet
        self.methods = resolve(METHODS, config.methods, dict(config.method_params), seed=config.seeds.method)
        self.metrics = resolve(METRICS, config.metrics, dict(config.metric_params))
        for name in TRACKS:
            getattr(config.tracks, name)  # every track has a config section
        check_plugins(config, self.metrics)  # methods declare no components to check
        self.folder = RunFolder(self.out, config.to_dict(), overwrite)
        self.work = self.out
        self.keys: list[str] = []
        self.timings: dict[str, float] = {}
        self.timer = StageTimer(self.timings)
        self.kept_splits: dict[tuple[str, str], Split] = {}  # first target's split per (track, method): figures

    # -- execution -----------------------------------------------------------------------
    def run(self) -> Path:
        from benchmark.core.progress import progress_bars

        self.work = self.folder.open()  # locked until finished or failed
        try:
            with progress_bars(self.progress):  # also for work started deep inside metrics
                self._execute()
            return self.folder.finish()
        finally:
            self.folder.close()
            self.work = self.out

    def _execute(self) -> None:
        start = self._start = time.perf_counter()
        warm = warmup.start(self.metrics, self.workers, self.config.device)  # the judge trains beside the set-up
        try:
            self._execute_with(warm, start)
        finally:
            warm.stop()

    def _execute_with(self, warm: warmup.Warmup, start: float) -> None:
        env = Environment(self.config, self.cache, self.progress, workers=self.workers)
        self.timings["setup_s"] = time.perf_counter() - start
        plans = []
        for name, build in TRACKS.items():
            if getattr(self.config.tracks, name).enabled:
                t0 = time.perf_counter()
                plans.append(build(env, self.config))
                self.timings[f"plan_{name}_s"] = time.perf_counter() - t0
        # target-major: every method of a target runs back to back, so the per-target memos
        # (reference pool, PURE crops and their embeddings, original channel, planted parts)
        # are computed once per target and not once per (method, target)
        units = [(plan, method, target) for plan in plans
                 for target in (plan.targets if plan.kind == "split" else (None,)) for method in self.methods]
        t0 = time.perf_counter()
        self.keys = [self._key(plan, method, target) for plan, method, target in units]
        warm.join()
        prepare_units(units, self._unit_done, self.timer)
        self._run_units(units)
        self.timings["units_s"] = time.perf_counter() - t0
        self.folder.remove_stale(self.keys)  # parts of other identities or units: never mixed in
        from benchmark.engine.cards import prune_thumbnails

        prune_thumbnails(self.work / "cards", self.work / "thumbs")  # thumbnails no card shows
        results = self.assemble(self.keys)
        self._write_provenance(env, plans, start)
        self._render(results, plans, env)
        self.timings["total_s"] = time.perf_counter() - start
        self._write_provenance(env, plans, start)

    def _run_units(self, units: list[tuple]) -> None:
        """The pending units, in this process or in worker processes grouped by target."""
        pending = [u for u in units if not self._unit_done(*u)]
        groups: dict[tuple, list[tuple]] = {}
        for unit in pending:  # unit = (plan, method, target): every method of a target together
            groups.setdefault((id(unit[0]), unit[2].model if unit[2] else "", unit[2].key if unit[2] else "*"),
                              []).append(unit)
        workers = min(self.workers, len(groups))
        if workers <= 1:
            for unit in tqdm(pending, desc="benchmark", unit="unit", disable=not self.progress):
                self._timed_unit(unit)
            return
        parts = [self._part(*u) for u in units]
        added = run_groups(list(groups.values()), self._timed_unit, workers, self._counters,
                           done=lambda: sum(p.exists() for p in parts), total=len(units), progress=self.progress)
        self._add_counters(added)

    def _add_counters(self, added: dict[str, float]) -> None:
        for name, value in added.items():  # "time:<stage>" seconds, "cache:hits" / "cache:misses"
            kind, _, key = name.partition(":")
            if kind == "time":
                self.timings[key] = self.timings.get(key, 0.0) + value
            else:
                setattr(self.cache, key, getattr(self.cache, key) + int(value))

    def _timed_unit(self, unit: tuple) -> None:
        with single_threaded(), self.timer("units", unit[0].track):  # the same numbers for any --workers
            self._run_unit(*unit)

    def _counters(self) -> dict[str, float]:
        return {**{f"time:{k}": v for k, v in self.timings.items()},
                "cache:hits": self.cache.hits, "cache:misses": self.cache.misses}

    def _key(self, plan: TrackPlan, method: Plugin, target: Target | None) -> str:
        """The unit's file stem: its id within this run's identity (seeds, config, harness
        code) and the code of its method and metrics (with everything they import)."""
        metrics = sorted(type(m.instance).__module__ for m in self.metrics if m.instance.scope == plan.kind)
        code = plugin_code_fingerprint(type(method.instance).__module__, *metrics)
        return self.folder.part_key(unit_id(plan.track, method.name, method.params_json,
                                            f"{target.model}/{target.key}" if target else "*", code))

    def _part(self, plan: TrackPlan, method: Plugin, target: Target | None) -> Path:
        return self.work / "parts" / f"{self._key(plan, method, target)}.csv"

    def _unit_done(self, plan: TrackPlan, method: Plugin, target: Target | None) -> bool:
        return self._part(plan, method, target).exists()

    def _run_unit(self, plan: TrackPlan, method: Plugin, target: Target | None) -> None:
        part = self._part(plan, method, target)
        key = part.stem
        if part.exists() or unit_store.restore(self.cache, self.work, key):  # an earlier run's unit of this key
            return
        torch.manual_seed(self.config.seeds.method)
        executors = {"split": self._split_rows, "detection": self._detection_rows}
        rows = executors[plan.kind](plan, method, target, key)
        frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
        atomic_write(part, lambda p: frame.to_csv(p, index=False))
        unit_store.store(self.cache, self.work, key)

    def _row(self, plan: TrackPlan, method: Plugin, target: Target | None, metric: Plugin, column: str,
             value: float, status: str = "ok", reason: str = "") -> dict:
        declared = {c.name: c for c in metric.instance.columns}
        direction = declared[column].higher_is_better if column in declared else None
        seeds = self.config.seeds
        return dict(track=plan.track, model=target.model if target else plan.pooled("model", self.config.model.name),
                    layer=target.layer if target else plan.pooled("layer", plan.context.layer),
                    dataset=self.config.data.dataset, target=target.key if target else "*", method=method.name,
                    method_params=method.params_json, metric=metric.label, column=column,
                    value=float(value), higher_is_better="" if direction is None else str(direction).lower(),
                    main=column in declared, status=status, reason=reason, seed=seeds.method,
                    data_seed=seeds.data, model_seed=plan.model_seed_of(target, seeds.model),
                    method_seed=seeds.method)

    def _not_applicable(self, plan, method, target, metric, reason, status="not_applicable") -> list[dict]:
        return [self._row(plan, method, target, metric, c.name, float("nan"), status, reason)
                for c in metric.instance.columns]

    def _value_rows(self, plan, method, target, metric, values: dict) -> list[dict]:
        """A metric's rows; a NaN or inf among its main values makes it not applicable."""
        bad = sorted(c.name for c in metric.instance.columns if not math.isfinite(float(values.get(c.name, 0.0))))
        if bad:
            return self._not_applicable(plan, method, target, metric,
                                        f"non-finite values: {', '.join(bad)} of {metric.label} is NaN or inf")
        return [self._row(plan, method, target, metric, col, val) for col, val in sorted(values.items())]

    def _split_rows(self, plan: TrackPlan, method: Plugin, target: Target, key: str) -> list[dict]:
        metrics = [m for m in self.metrics if m.instance.scope == "split"]
        context = plan.context_of(target)
        try:
            with self.timer("fit", method.name), plugin_code("method", method.name, method.instance):
                split = method.instance.fit(context, target)
            # metrics + trace share activations; the unit key lets metrics cache per-unit work
            split = memoized(dataclasses.replace(split, info={**split.info, "unit_key": key}))
        except NotApplicable as why:
            self._write_card(plan, method, target, None, context, metrics, key, unavailable=str(why))
            return [r for m in metrics for r in self._not_applicable(plan, method, target, m, str(why))]
        broken = _non_finite(split, context)
        if broken:  # the method failed on this target: every metric says so, none averages a NaN
            self._write_card(plan, method, target, None, context, metrics, key, unavailable=broken)
            return [r for m in metrics for r in self._not_applicable(plan, method, target, m, broken, "error")]
        if target == plan.targets[0]:
            self.kept_splits[(plan.track, method.name)] = split
        rows = []
        for metric in metrics:
            try:
                with self.timer("metric", metric.label), plugin_code("metric", metric.name, metric.instance):
                    values = metric.instance.score(split, context)
            except NotApplicable as why:
                rows += self._not_applicable(plan, method, target, metric, str(why))
                continue
            rows += self._value_rows(plan, method, target, metric, values)
        with self.timer("card"):
            self._write_card(plan, method, target, split, context, metrics, key)
        from benchmark.engine.traces import SUFFIX, TRACED_TRACKS, save_trace

        if plan.track in TRACED_TRACKS and target == plan.targets[0]:  # what the figures read
            with self.timer("trace"):
                save_trace(self.work / "traces" / f"{key}{SUFFIX}", split, plan, context)
        return rows

    def _write_card(self, plan: TrackPlan, method: Plugin, target: Target, split: Split | None, context,
                    metrics: list[Plugin], key: str, unavailable: str = "") -> None:
        """The unit's split card (:mod:`benchmark.engine.cards`), written before its part; a
        method that does not apply to the target gets a card saying why."""
        from benchmark.engine.cards import CARD_VERSION, compute_card, save_card

        about = {"track": plan.track, "unit": key, "method_params": json.loads(method.params_json),
                 "model_seed": plan.model_seed_of(target, self.config.seeds.model)}
        card = None
        if split is not None:
            images: dict = {}
            for metric in metrics:
                with plugin_code("metric", metric.name, metric.instance):
                    try:
                        images.update(metric.instance.card_images(split, context))
                    except NotApplicable:
                        continue
            try:
                card = compute_card(split, context, self.work / "thumbs", extra_images=images, about=about)
            except NotApplicable as why:
                unavailable = str(why)
        if card is None:
            card = {"version": CARD_VERSION, **about, "model": target.model, "layer": target.layer,
                    "channel": target.channel, "target": target.key, "method": method.name,
                    "unavailable": unavailable}
        save_card(self.work / "cards" / f"{key}.json", card)

    def _detection_rows(self, plan: TrackPlan, method: Plugin, _target: None, key: str) -> list[dict]:
        metrics = [m for m in self.metrics if m.instance.scope == "detection"]
        if not method.instance.scores_polysemanticity():
            reason = f"{method.name} has no polysemanticity score"
            return [r for m in metrics for r in self._not_applicable(plan, method, None, m, reason)]
        records, skipped = [], 0
        for t in tqdm(plan.targets, desc=f"detection {method.name}", leave=False, disable=not self.progress):
            try:
                with plugin_code("method", method.name, method.instance):
                    value = float(method.instance.polysemanticity(plan.context_of(t), t.channel, t.concepts[0],
                                                                  t.concepts[1]))
            except NotApplicable:  # e.g. a cosine of an all-zero vector: the pair is left out
                skipped += 1
                continue
            if not math.isfinite(value):  # a NaN score is never ranked: left out and counted
                skipped += 1
                continue
            records.append(dict(channel=t.channel, concept_a=t.concepts[0], concept_b=t.concepts[1], score=value,
                                model=t.model, layer=t.layer))
        table = pd.DataFrame(records, columns=["channel", "concept_a", "concept_b", "score", "model", "layer"])
        atomic_write(self.work / "detection" / f"{method.name}-{key}.csv", lambda p: table.to_csv(p, index=False))
        rows = []
        for metric in metrics:
            try:
                with plugin_code("metric", metric.name, metric.instance):
                    values = metric.instance.score(table, plan.context)
            except NotApplicable as why:
                rows += self._not_applicable(plan, method, None, metric, str(why))
                continue
            rows += self._value_rows(plan, method, None, metric, values)
            rows.append(self._row(plan, method, None, metric, "pairs_unscored", float(skipped)))
        return rows

    # -- outputs -------------------------------------------------------------------------
    def assemble(self, keys: list[str] | None = None) -> pd.DataFrame:
        """results.csv from the parts of ``keys`` (default: every part in the folder)."""
        folder = self.work / "parts"
        parts = sorted(folder / f"{k}.csv" for k in set(keys)) if keys is not None else sorted(folder.glob("*.csv"))
        frames = [pd.read_csv(p, keep_default_na=False, na_values=[""], dtype={"reason": str, "higher_is_better": str})
                  for p in parts]
        results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RESULT_COLUMNS)
        results["reason"] = results["reason"].fillna("")
        results["higher_is_better"] = results["higher_is_better"].fillna("")
        # every identity column: the order (and so every bootstrap over it) never depends on
        # the part files' names, which are hashes of the code
        results = results.sort_values(SORT_COLUMNS, kind="stable").reset_index(drop=True)
        atomic_write(self.work / "results.csv", lambda p: results.to_csv(p, index=False))
        return results

    def _write_provenance(self, env: Environment, plans: list[TrackPlan], start: float) -> None:
        from benchmark.run.provenance import provenance

        info = provenance(self.config, env.device)
        info.update(identity={"id": self.folder.id, "code": self.folder.identity["code"]},
                    skipped_images=getattr(env, "skipped_images", {}),
                    tau_calibration=getattr(env, "calibrations", {}),
                    timings=self.timings, tracks={p.track: {"targets": len(p.targets), **p.info} for p in plans},
                    cache={"root": str(self.cache.root), "hits": self.cache.hits, "misses": self.cache.misses})
        atomic_write_text(self.work / "run.json", json.dumps(info, indent=2, sort_keys=True, default=str))

    def _render(self, results: pd.DataFrame, plans: list[TrackPlan], env: Environment) -> None:
        """Tables, statistics and figures, then the HTML report that shows them. With more than
        one worker the statistics and the figures are drawn side by side in two forked
        processes (they write disjoint files; neither changes a number of results.csv)."""
        t0 = time.perf_counter()
        self.folder.clear_figures()  # first: the report below draws its CD diagrams into figures/
        jobs = {"statistics": lambda: self._write_statistics(results),
                "figures": lambda: self._write_figures(results, plans, env)}
        if self.workers > 1:
            added = run_groups([[name] for name in jobs], lambda name: jobs[name](), 2, self._counters,
                               done=lambda: 0, total=0, progress=False)
            self._add_counters(added)
        else:
            for job in jobs.values():
                job()
        with self.timer("report"):
            from benchmark.reporting.html_report import write_report as write_html_report

            self._write_provenance(env, plans, self._start)  # the report shows it
            write_html_report(self.work, seed=self.config.seeds.method)
        self.timings["render_s"] = time.perf_counter() - t0

    def _write_statistics(self, results: pd.DataFrame) -> None:
        from benchmark.evaluation.meta_evaluation import write_meta_evaluation
        from benchmark.reporting.headline import evidence, headline_sections
        from benchmark.reporting.leaderboards import normalise
        from benchmark.reporting.statistical_report import write_report
        from benchmark.reporting.table_formats import write_leaderboards

        with self.timer("statistics"):
            spec, meta, calib = evidence(results, seed=self.config.seeds.method,  # meta-evaluation, headline rule
                                         evidence_run=self.config.evidence)
            write_leaderboards(results, self.work, preface=headline_sections(normalise(results), spec))
            write_report(results, self.work)  # per-target values, paired comparisons, CD diagrams, detection table
            eligibility = spec.eligibility  # evidence() always computes it
            atomic_write(self.work / "headline_eligibility.csv", lambda p: eligibility.to_csv(p, index=False))
            write_meta_evaluation(results, self.work, seed=self.config.seeds.method, table=meta, calib=calib,
                                  eligibility=eligibility)

    def _write_figures(self, results: pd.DataFrame, plans: list[TrackPlan], env: Environment) -> None:
        from benchmark.reporting.run_figures import write_figures

        # side by side with the statistics, the worker process runs on one thread already
        write_figures(self.work, results, plans, self.methods, env, splits=self.kept_splits, timer=self.timer)
