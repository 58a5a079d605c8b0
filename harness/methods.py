"""The shared protocol: the `Method` interface and the method registry.

A method is one file: a `Method` subclass that trains through `harness.train.trainer.Trainer` and samples
completions, using only what its `RunContext` (harness.context) gives it, so AR-SFT, LaDiR and the
baselines all start from the same base checkpoint and see the same problems. The protocol, not the
method, owns the run directory, checkpoints and logs (harness.train.trainer) and evaluation
(harness.evaluate.run).

The registry names methods as `"module:Class"` strings, as lm-evaluation-harness does, so listing
them imports nothing (no torch, no import cycle: `ladir` and `baselines` import `harness`, never the
reverse). A method in another package plugs in through the `ladir_bench.methods` entry-point group:

    [project.entry-points."ladir_bench.methods"]
    my-method = "my_package.my_method:MyMethod"
"""

from __future__ import annotations

import functools
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.config import build_dataclass
from harness.errors import BadInput

if TYPE_CHECKING:
    from harness.context import RunContext
    from harness.sampling import Trajectory
    from tasks import Problem

ENTRY_POINT_GROUP = "ladir_bench.methods"


@dataclass(frozen=True)
class MethodEntry:
    target: str  # "module:Class"
    summary: str  # one line for `ladir-bench methods`
    aliases: tuple[str, ...] = ()


BUILTIN_METHODS: dict[str, MethodEntry] = {
    "ar-sft": MethodEntry("baselines.ar_sft:ArSft", "AR fine-tuning on question -> CoT -> answer, temperature sampling",
                          ("ar_sft",)),
    "ladir": MethodEntry("ladir.method:LaDiR", "latent diffusion reasoning: VAE sentence blocks, block flow matching, "
                         "answer on top (Kang et al. 2026)"),
    "coconut": MethodEntry("baselines.coconut:Coconut", "continuous thoughts fed back as input embeddings, staged "
                           "curriculum (Hao et al. 2024)"),
    "ld4lg": MethodEntry("baselines.ld4lg:LD4LG", "latent diffusion over one fixed-size latent of the whole "
                         "completion, decoded to text (Lovelace et al. 2023)"),
    "mdm": MethodEntry("baselines.mdm:MaskedDiffusion", "masked discrete diffusion SFT, unmasking by confidence "
                       "(MGDM, Ye et al. 2025; LLaDA)"),
    "pretrained": MethodEntry("baselines.pretrained:Pretrained", "any pretrained HF / GGUF model, zero- or few-shot "
                              "with its chat template, no training (--model)"),
    "mtp": MethodEntry("baselines.mtp:MultiTokenPrediction", "AR with auxiliary heads predicting tokens t+2..t+m "
                       "(latent tokens, He et al. 2026)"),
}

_registered: dict[str, MethodEntry] = {}


def register_method(name: str, target: str, summary: str = "", aliases: tuple[str, ...] = ()) -> None:
    """Register a method at run time (notebooks, tests); packages use the entry-point group instead."""
    if name in _all_entries():
        raise ValueError(f"method {name!r} registered twice")
    _registered[name] = MethodEntry(target, summary, aliases)


@functools.cache
def _plugin_entries() -> dict[str, MethodEntry]:
    """Installed packages' methods, read once per process: scanning every distribution's entry points
    takes ~10 ms, and planning a grid looks methods up hundreds of times."""
    return {ep.name: MethodEntry(ep.value, "") for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _all_entries() -> dict[str, MethodEntry]:
    return {**_plugin_entries(), **BUILTIN_METHODS, **_registered}


def method_entries() -> dict[str, MethodEntry]:
    """name -> entry, sorted by name; nothing is imported."""
    return dict(sorted(_all_entries().items()))


def method_names() -> list[str]:
    return list(method_entries())


def canonical_method_name(name: str) -> str:
    entries = method_entries()
    for canonical, entry in entries.items():
        if name == canonical or name in entry.aliases:
            return canonical
    raise BadInput(f"unknown method {name!r} (known: {', '.join(entries)})")


def get_method_class(name: str) -> type[Method]:
    """Import the method's module and return its class (with `name` set to the canonical name)."""
    canonical = canonical_method_name(name)
    module_name, _, class_name = method_entries()[canonical].target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise BadInput(f"method {canonical!r} points at {module_name}:{class_name}, which is not a Method")
    cls.name = canonical
    return cls


def method_summary(name: str) -> str:
    """The registry's line, or (plug-ins) the first line of the class docstring."""
    entry = method_entries()[canonical_method_name(name)]
    if entry.summary:
        return entry.summary
    return ((get_method_class(name).__doc__ or "").strip().splitlines() or [""])[0]


# ----------------------------------------------------------------------------------------- protocol
@dataclass
class NoOptions:
    """For methods without knobs of their own."""


class Method(ABC):
    """A training method under the shared protocol.

    `Options` holds the method's training knobs (paper defaults), validated from `method_options`;
    `SampleKnobs` the knobs `sample` accepts (`ladir-bench eval --knob name=value`).
    """

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    SampleKnobs: ClassVar[type] = NoOptions
    # Training phases in order; `ladir-bench train --stage S` runs the phases up to and including S.
    stages: ClassVar[tuple[str, ...]] = ()
    # The family whose base this method starts from (`ctx.backbone.base_model()`): "ar", a base trained
    # with the next-token objective, or another family's registered in harness.backbone.BASE_OBJECTIVES
    # (masked diffusion: "masked-diffusion"). Every family's base sees the same text for the same budget.
    base_objective: ClassVar[str] = "ar"

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.options = build_dataclass(self.Options, ctx.config.method_options, "method_options")
        self.eval_seed = ctx.seed  # evaluation sets it to the --seed it samples with

    @abstractmethod
    def train(self, stage: str | None = None) -> Path:
        """Train (resuming from the last checkpoint) and return the final checkpoint directory.

        `stage` stops after that phase (e.g. LaDiR's "vae"); None runs every phase.
        """

    @abstractmethod
    def load(self) -> None:
        """Load the trained weights for sampling."""

    @abstractmethod
    def sample(self, problems: list[Problem], n: int, **knobs) -> list[list[str]]:
        """n completions per problem, full text: reasoning, then `The answer is ...`.

        Sample i of a problem must depend only on (`eval_seed`, its task_id, i), never on the batch
        size or on which other problems share the call: `self.sample_batched` fills batches across
        problems and hands each trajectory its own random stream (harness.sampling).
        """

    def load_untrained(self) -> None:
        """Freshly initialised weights where `load` puts trained ones, so the method samples without a
        run (throughput benchmarks and sampling tests). Methods with other parts override it."""
        self.model = self.ctx.backbone.fresh_model().to(self.ctx.device).eval()

    def sample_knobs(self, knobs: dict[str, Any]) -> Any:
        return build_dataclass(self.SampleKnobs, knobs, "knob")

    def check_stage(self, stage: str | None) -> None:
        """`train(stage=...)` names one of the method's phases (or None: all of them)."""
        if stage is not None and stage not in self.stages:
            known = ", ".join(self.stages) or "none"
            raise BadInput(f"method {self.ctx.config.method!r} has no stage {stage!r} (stages: {known})")

    def shared_phases(self) -> dict[str, tuple[Path, int]]:
        """Phases this run adopts when another run with the same settings has finished them, apart from
        the base LM: phase -> (the shared folder, its steps). `reproduce --dry-run` counts each once."""
        return {}

    def finished(self, phase: str) -> Path | None:
        """The final checkpoint of a phase already trained to its end, else None: `train` on a finished
        run returns it without building the phase's starting point (nor training a missing base)."""
        from harness.train.checkpoint import final_checkpoint, phase_done

        directory = self.ctx.run_dir / phase
        return final_checkpoint(directory)[1] if phase_done(directory) else None

    def sample_batched(self, problems: list[Problem], n: int, batch_size: int,
                       run_batch: Callable[[list[Trajectory]], list[str]], whole_problems: bool = False) -> list[list[str]]:
        """`harness.sampling.sample_batched` under this evaluation's seed: `run_batch` gets up to
        `batch_size` trajectories (any mix of problems; `whole_problems` keeps each problem's samples
        together) and returns one completion each, drawn with `RowNoise.of(trajectories)`."""
        from harness.sampling import sample_batched

        return sample_batched(problems, n, self.eval_seed, batch_size, run_batch, whole_problems)


class AutoregressiveMethod(Method):
    """A method that writes its completion left to right with one Hugging Face causal LM (AR-SFT, MTP's
    next-token head, a pretrained model), so either engine of `ladir-bench eval` can sample it: this
    class (`--engine hf`) or vLLM (`--engine vllm`, harness.engines.vllm_engine). What it samples from is defined
    here once for both: the prompt text, whether `<s>` goes before it, what is kept of a completion,
    and the weights (`hf_model_path`). `self.model` is the loaded LM; `SampleKnobs` has `temperature`,
    `top_p`, `max_new_tokens` and `batch_size`."""

    @property
    def add_bos(self) -> bool:
        """False for prompts that carry their own special tokens (a rendered chat template)."""
        return True

    def prompt(self, problem: Problem) -> str:
        return problem["prompt"]

    def finish(self, completion: str) -> str:
        """What is scored of a decoded completion."""
        return completion

    @abstractmethod
    def hf_model_path(self) -> str:
        """The Hugging Face folder (or hub id) of the weights sampled, loadable without this package
        (vLLM's `model`); FileNotFoundError if the run has no checkpoint yet."""

    def sample(self, problems: list[Problem], n: int, **knobs) -> list[list[str]]:
        from harness.lm import sample_completions
        from harness.sampling import RowNoise

        settings = self.sample_knobs(knobs)
        prompts = [self.prompt(problem) for problem in problems]

        def run_batch(rows: list[Trajectory]) -> list[str]:
            texts = sample_completions(self.model, self.ctx.tokenizer, [prompts[r.problem] for r in rows],
                                       RowNoise.of(rows), settings.temperature, settings.top_p,
                                       settings.max_new_tokens, add_bos=self.add_bos)
            return [self.finish(text) for text in texts]

        return self.sample_batched(problems, n, settings.batch_size, run_batch)
