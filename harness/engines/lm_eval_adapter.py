"""lm-evaluation-harness adapter: any trained run as an lm-eval model, the harness's tasks as lm-eval tasks.

Needs the `lm-eval` extra (`pip install -e '.[lm-eval]' -c requirements-lock.txt`).

The model, `ladir-bench`, is registered in lm-eval's model registry when this module is imported:

    import lm_eval
    import harness.engines.lm_eval_adapter  # noqa: F401  (registers the "ladir-bench" model)
    from lm_eval.tasks import TaskManager

    harness.engines.lm_eval_adapter.export_tasks(["countdown3"], "lm_eval_tasks", limit=100, repeats=4)
    results = lm_eval.simple_evaluate(model="ladir-bench", model_args={"run": "NAME", "steps": 30},
                                      tasks=["ladir_countdown3"],
                                      task_manager=TaskManager(include_path="lm_eval_tasks"))

lm-eval's own `lm_eval` command cannot import it (it loads tasks from `--include_path`, never models),
so this module is also a command: `python -m harness.engines.lm_eval_adapter <lm_eval arguments>` registers the
model and runs lm-eval's CLI, and `python -m harness.engines.lm_eval_adapter export ...` writes the task files.

Sampling: `generate_until` draws every completion through the run's `Method.sample`, so sample i of a
problem depends only on (seed, task_id, i) as in `ladir-bench eval`. lm-eval sends `repeats` copies of
a request; copies of one context become samples 0..n-1 of one problem, i.e. independent samples. The
task_id is the harness's own where the context is a harness problem's prompt unchanged (the exported
tasks' documents carry it), so the completions equal `ladir-bench eval`'s for the same run, seed and
knobs; any other context gets `lm-eval/<sha256 of the context>`.

The methods are generative samplers (LaDiR, latent and masked diffusion have no left-to-right
likelihood of a given continuation), so `loglikelihood` and `loglikelihood_rolling` raise
NotImplementedError: only `output_type: generate_until` tasks run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import BadInput

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import model_registry
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("harness.engines.lm_eval_adapter needs lm-evaluation-harness: "
                      "pip install -e '.[lm-eval]' -c requirements-lock.txt") from error

MODEL_NAME = "ladir-bench"
TASK_PREFIX = "ladir_"  # exported task names: ladir_countdown3 (lm-eval has its own gsm8k, humaneval, ...)
TASK_TAG = "ladir_bench"  # every exported task carries this tag: `--tasks ladir_bench` runs them all
FILTER_NAME = "repeats"  # the exported tasks' filter keeps every repeat: metrics read "exact_match,repeats"
CONTEXT_ID_PREFIX = "lm-eval/"

logger = logging.getLogger(__name__)

# Model arguments that are not sampling knobs (lm-eval itself adds batch_size, max_batch_size, device).
MODEL_ARGS = ("run", "runs_dir", "seed", "batch_size", "max_batch_size", "device")


def register() -> None:
    """Register `ladir-bench` in lm-eval's model registry (idempotent; done when this module is imported).

    Registered by "module:Class" path, so running this file as `python -m` and importing it by name
    resolve to one class."""
    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target="harness.engines.lm_eval_adapter:LadirBenchLM")


# ------------------------------------------------------------------------------------------- model
def context_task_id(context: str) -> str:
    """The task_id of a context that is not a harness problem: a hash of its text."""
    return CONTEXT_ID_PREFIX + hashlib.sha256(context.encode()).hexdigest()[:16]


def cut_at_stops(text: str, until: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    cut = len(text)
    for stop in until:
        if stop:
            at = text.find(stop)
            if 0 <= at < cut:
                cut = at
    return text[:cut]


class LadirBenchLM(LM):
    """A trained ladir-bench run as an lm-eval model (generate_until only).

    model_args: `run` (required), `runs_dir` (default $LADIR_RUNS or ./runs), `seed` (default the run's
    seed, as `ladir-bench eval`), and any of the method's sampling knobs (LaDiR: steps, gamma_max,
    init_noise, cfg_scale, ...), validated by the method: an unknown knob is an error that lists the
    known ones. lm-eval's `batch_size` is the method's batch size (trajectories per forward pass;
    "auto" = the run's eval.batch_size); samples do not depend on it. The run samples on the device
    its config names (like `ladir-bench eval`); lm-eval's `--device` is ignored.

    Knob precedence: the run's eval config < the request's generation_kwargs (`temperature`, `top_p`,
    `do_sample: false` = temperature 0, `max_gen_toks` = the `max_new_tokens` knob, any other key that
    names a knob) < model_args.

    loglikelihood / loglikelihood_rolling raise NotImplementedError: the methods are samplers (LaDiR
    and the diffusion baselines have no likelihood of a given continuation).
    """

    def __init__(self, run: str | None = None, runs_dir: str | None = None, seed: int | str | None = None,
                 batch_size: int | str | None = None, max_batch_size: int | None = None, device: str | None = None,
                 **knobs: Any) -> None:
        super().__init__()
        from harness.evaluate.run import knob_defaults
        from harness.runs import open_run, runs_root

        if not run:
            raise BadInput(f"lm-eval model {MODEL_NAME!r} needs model_args run=NAME (a trained run under runs_dir)")
        self.method, self.ctx = open_run(str(run), runs_root(runs_dir))
        try:
            self.seed = self.ctx.seed if seed is None else int(seed)
        except (TypeError, ValueError):
            raise BadInput(f"model_args seed={seed!r} must be an integer") from None
        self.method.eval_seed = self.seed
        if device is not None and str(device) != str(self.ctx.device):
            logger.info("ladir-bench: run %r samples on %s (its config's device); lm-eval's device %r is ignored",
                        run, self.ctx.device, device)
        self.fields = set(self.method.SampleKnobs.__dataclass_fields__)
        self.defaults = knob_defaults(self.method, self.ctx)  # the run's eval config, as `ladir-bench eval`
        if batch_size is not None and not str(batch_size).startswith("auto") and "batch_size" in self.fields:
            self.defaults["batch_size"] = batch_size
        self.knobs = dict(knobs)
        self._warned: set[str] = set()
        self._resolve({})  # validates the model_args knobs before any request

    # -- knobs --------------------------------------------------------------------------------------
    def _resolve(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        """Every sampling knob for one request: run defaults < generation_kwargs < model_args."""
        requested: dict[str, Any] = {}
        for key, value in gen_kwargs.items():
            if key in ("until", "do_sample"):
                continue
            target = "max_new_tokens" if key == "max_gen_toks" else key
            if target in self.fields and value is not None:
                requested[target] = value
            elif target not in self.fields and key not in self._warned:
                self._warned.add(key)
                logger.warning("ladir-bench: generation kwarg %r ignored (method %r has no knob %r)",
                               key, self.method.name, target)
        greedy = str(gen_kwargs.get("do_sample", True)).lower() == "false"
        if greedy and "temperature" in self.fields:
            requested["temperature"] = 0.0  # as lm-eval's HF model reads do_sample: false
        merged = {**self.defaults, **requested, **self.knobs}
        try:
            settings = self.method.sample_knobs(merged)
        except BadInput as error:
            raise BadInput(f"lm-eval model {MODEL_NAME!r}: {error}; model_args are run, runs_dir, seed and the "
                           f"{self.method.name!r} method's sampling knobs") from None
        return dataclasses.asdict(settings)

    # -- requests -----------------------------------------------------------------------------------
    @staticmethod
    def _task_id(context: str, doc: Any) -> str:
        """The harness's task_id where the context is that problem's prompt unchanged, so the samples are
        `ladir-bench eval`'s; else a hash of the context."""
        if isinstance(doc, dict) and isinstance(doc.get("task_id"), str) and doc.get("prompt") == context:
            return doc["task_id"]
        return context_task_id(context)

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """One completion per request, cut at the first of its `until` strings.

        Requests are grouped by (task_id, context, sampling knobs); the k copies of a group (lm-eval's
        `repeats`) are samples 0..k-1 of one problem. Groups with the same knobs and k share one
        `Method.sample` call, whose batches fill across problems.
        """
        import torch
        from tqdm import tqdm

        groups: dict[tuple[str, str, str], list[int]] = {}
        settings_of: dict[str, dict[str, Any]] = {}
        untils: list[list[str]] = []
        for position, request in enumerate(requests):
            context, gen_kwargs = request.args[0], dict(request.args[1] or {})
            until = gen_kwargs.get("until") or []
            untils.append([until] if isinstance(until, str) else list(until))
            settings = self._resolve(gen_kwargs)
            key = json.dumps(settings, sort_keys=True)
            settings_of[key] = settings
            task_id = self._task_id(context, getattr(request, "doc", None))
            groups.setdefault((task_id, context, key), []).append(position)

        calls: dict[tuple[str, int], list[tuple[str, str, str]]] = {}
        for group_key, positions in groups.items():
            calls.setdefault((group_key[2], len(positions)), []).append(group_key)
        outputs: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="ladir-bench generate_until", disable=disable_tqdm or self.rank != 0)
        for (key, n), members in calls.items():
            # about one sampling batch of trajectories per call, as `ladir-bench eval` (samples do not depend on it)
            step = max(1, int(settings_of[key].get("batch_size", 100)) // n)
            for start in range(0, len(members), step):
                chunk = members[start:start + step]
                problems = [{"task_id": task_id, "prompt": context} for task_id, context, _ in chunk]
                with torch.no_grad():
                    completions = self.method.sample(problems, n, **settings_of[key])
                for member, texts in zip(chunk, completions, strict=True):
                    for position, text in zip(groups[member], texts, strict=True):
                        outputs[position] = cut_at_stops(text, untils[position])
                        self.cache_hook.add_partial("generate_until", requests[position].args, outputs[position])
                bar.update(n * len(chunk))
        bar.close()
        return outputs  # type: ignore[return-value]

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            f"lm-eval model {MODEL_NAME!r} only generates (output_type: generate_until): its methods are samplers "
            "(LaDiR and the diffusion baselines have no likelihood of a given continuation), so loglikelihood "
            "and multiple_choice tasks are not supported")

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(
            f"lm-eval model {MODEL_NAME!r} only generates (output_type: generate_until): "
            "loglikelihood_rolling (perplexity) tasks are not supported")


register()


# ------------------------------------------------------------------------------------- task export
_UTILS_TEMPLATE = '''"""{lm_name}: the harness checker scores it (from `python -m harness.engines.lm_eval_adapter export`)."""

from harness.engines.lm_eval_adapter import check_doc

TASK = {spec}


def process_results(doc, results):
    """exact_match: the share of the document's repeats the checker passes (pass@1)."""
    return check_doc(TASK, doc, results)


def keep_all(resps, docs):
    """The filter: keep every repeat (lm-eval's default keeps only the first)."""
    return resps
'''


@lru_cache(maxsize=32)
def _checker(spec_json: str):
    from tasks import get_task

    spec = json.loads(spec_json)
    return get_task(spec["name"], seed=spec.get("seed", 0), **(spec.get("options") or {}))


def check_doc(spec: dict[str, Any], doc: dict[str, Any], results: Iterable[Any]) -> dict[str, float]:
    """`process_results` of an exported task: the harness task's verdict on each completion of the
    document; exact_match = the fraction that pass (pass@1 averaged over the repeats)."""
    completions = [c for r in results for c in (r if isinstance(r, (list, tuple)) else [r])]
    if not completions:
        return {"exact_match": 0.0}
    task = _checker(json.dumps(spec, sort_keys=True))
    problem = json.loads(doc["problem"])
    verdicts = task.check_many([(problem, str(c)) for c in completions])
    return {"exact_match": sum(v.passed for v in verdicts) / len(verdicts)}


def _target(problem: dict[str, Any]) -> str:
    for key in ("reference", "answer", "canonical_solution"):
        if isinstance(problem.get(key), str):
            return problem[key]
    return ""


def _yaml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def export_tasks(task_names: Sequence[str], out_dir: str | Path, split: str = "test", limit: int | None = None, *,
                 seed: int = 0, task_options: dict[str, Any] | None = None, repeats: int = 1,
                 until: Sequence[str] = (), temperature: float = 1.0, do_sample: bool = True,
                 max_gen_toks: int | None = None, prefix: str = TASK_PREFIX) -> list[Path]:
    """Write each harness task as an lm-eval task under `out_dir/<prefix><task>/`: the problems of
    `split` (first `limit`) as JSONL, a task YAML (`dataset_path: json`, generate_until, `repeats`
    samples per problem) and a utils.py whose `process_results` calls the task's checker. Returns the
    YAML paths; pass `out_dir` to lm-eval as `--include_path` (the YAML names the JSONL by absolute path).

    `seed` and `task_options` build the task as a run would (`get_task(name, seed, **options)`): use the
    run's, or `run_task_spec`, to export the problems that run's `ladir-bench eval` scores.
    `max_gen_toks` None leaves the run's max_new_tokens in force.
    """
    from tasks import get_task

    if repeats < 1:
        raise BadInput(f"repeats must be >= 1, got {repeats}")
    if limit is not None and limit < 1:
        raise BadInput(f"limit must be >= 1, got {limit}")
    out = Path(out_dir).expanduser().resolve()
    written = []
    for name in task_names:
        task = get_task(name, seed=seed, **(task_options or {}))
        problems = task.problems(split)[: limit]
        if not problems:
            raise BadInput(f"task {name!r} split {split!r} has no problems")
        lm_name = prefix + task.name
        folder = out / lm_name
        folder.mkdir(parents=True, exist_ok=True)
        data_path = folder / f"{lm_name}.jsonl"
        rows = [{"task_id": p["task_id"], "prompt": p["prompt"], "target": _target(p),
                 "problem": json.dumps(p, ensure_ascii=False)} for p in problems]
        data_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        spec = {"name": task.name, "seed": seed, "options": dict(task_options or {})}
        (folder / "utils.py").write_text(_UTILS_TEMPLATE.format(lm_name=lm_name, spec=repr(spec)), encoding="utf-8")
        generation = [f"  until: {json.dumps(list(until))}", f"  do_sample: {str(bool(do_sample)).lower()}",
                      f"  temperature: {float(temperature)}"]
        if max_gen_toks is not None:
            generation.append(f"  max_gen_toks: {int(max_gen_toks)}")
        yaml_text = "\n".join([
            f"# Written by `python -m harness.engines.lm_eval_adapter export`: ladir-bench task {task.name}, split {split},",
            f"# {len(problems)} problems (seed {seed}, options {json.dumps(spec['options'])}); scored by its checker.",
            f"task: {lm_name}",
            f"tag: {TASK_TAG}",
            "dataset_path: json",
            "dataset_kwargs:",
            "  data_files:",
            f"    {split}: {_yaml_string(str(data_path))}",
            f"test_split: {split}",
            "output_type: generate_until",
            'doc_to_text: "{{prompt}}"',
            'doc_to_target: "{{target}}"',
            'target_delimiter: ""',
            f"repeats: {int(repeats)}",
            "generation_kwargs:",
            *generation,
            "filter_list:",
            f"  - name: {FILTER_NAME}",
            "    filter:",
            "      - function: custom",
            "        filter_fn: !function utils.keep_all",
            "process_results: !function utils.process_results",
            "metric_list:",
            "  - metric: exact_match",
            "    aggregation: mean",
            "    higher_is_better: true",
            "metadata:",
            "  version: 1.0",
            "",
        ])
        yaml_path = folder / f"{lm_name}.yaml"
        yaml_path.write_text(yaml_text, encoding="utf-8")
        written.append(yaml_path)
    return written


def run_task_spec(run: str, runs_dir: str | Path | None = None) -> tuple[str, int, dict[str, Any]]:
    """(task, seed, task_options) of a run's config: what its `ladir-bench eval` scores."""
    import yaml

    from harness.runs import runs_root

    path = runs_root(runs_dir) / run / "config.yaml"
    if not path.is_file():
        raise BadInput(f"no run named {run!r} under {runs_root(runs_dir)} (expected {path})")
    config = yaml.safe_load(path.read_text()) or {}
    return str(config["task"]), int(config.get("seed", 0)), dict(config.get("task_options") or {})


# --------------------------------------------------------------------------------------------- CLI
def _export_main(argv: list[str]) -> None:
    from harness.config import parse_override

    parser = argparse.ArgumentParser(
        prog="python -m harness.engines.lm_eval_adapter export",
        description="Write harness tasks as lm-eval task YAML (+ JSONL + utils.py) for --include_path.")
    parser.add_argument("--tasks", help="comma-separated harness tasks (default: the --run's task)")
    parser.add_argument("--out", required=True, type=Path, help="folder to pass to lm-eval as --include_path")
    parser.add_argument("--run", help="take the task, seed and task options from this run's config")
    parser.add_argument("--runs-dir", help="where runs live (default: $LADIR_RUNS or ./runs)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, help="first N problems")
    parser.add_argument("--seed", type=int, help="task seed (default: the run's, else 0)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="task option, e.g. test_size=200 or data_file=gsm8k.jsonl (repeatable)")
    parser.add_argument("--repeats", type=int, default=1, help="samples per problem (exact_match = pass@1 over them)")
    parser.add_argument("--until", action="append", default=[], metavar="STOP", help="stop string (repeatable)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--greedy", action="store_true", help="do_sample: false (temperature 0)")
    parser.add_argument("--max-gen-toks", type=int, help="max_new_tokens (default: the run's)")
    parser.add_argument("--prefix", default=TASK_PREFIX, help=f"lm-eval task name prefix (default {TASK_PREFIX})")
    args = parser.parse_args(argv)
    seed, options = 0, {}
    names = [n.strip() for n in (args.tasks or "").split(",") if n.strip()]
    if args.run:
        task, seed, options = run_task_spec(args.run, args.runs_dir)
        names = names or [task]
    if not names:
        raise BadInput("export needs --tasks or --run")
    for text in args.option:
        options.update(parse_override(text))
    paths = export_tasks(names, args.out, args.split, args.limit, seed=seed if args.seed is None else args.seed,
                         task_options=options, repeats=args.repeats, until=args.until, temperature=args.temperature,
                         do_sample=not args.greedy, max_gen_toks=args.max_gen_toks, prefix=args.prefix)
    for path in paths:
        print(path)
    print(f"lm-eval: --include_path {Path(args.out).expanduser().resolve()} --tasks "
          + ",".join(p.stem for p in paths))


def main(argv: list[str] | None = None) -> None:
    """`export ...` writes tasks; anything else is lm-eval's CLI with the `ladir-bench` model registered."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["export"]:
            _export_main(argv[1:])
            return
        from lm_eval.__main__ import cli_evaluate

        register()
        sys.argv = ["lm-eval", *argv]
        cli_evaluate()
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    from harness.engines.lm_eval_adapter import (
        main as _main,  # the registered class lives in the named module
    )

    _main()
