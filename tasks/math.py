"""Math reasoning: synthetic multi-step arithmetic, GSM8K and MATH-500, with one math-verify checker.

All three share the completion format the methods train on: reasoning sentences, then
`The answer is <answer>.` The checker takes the final answer (after the last `The answer is`, or
the last `\\boxed{...}` when that comes later) and compares it to the reference with math-verify.

math-verify guards its sympy work with `signal.alarm`, which only works on the main thread and
would fight with anything else using SIGALRM; its timeouts are switched off here and every
comparison runs instead in a worker process with our own per-item deadline. A comparison that
outlives it (sympy can stall on adversarial input) is judged incorrect and its worker is killed and
replaced, so one bad sample never stalls or poisons the rest of a scoring run. Plain integers, all
of the synthetic task and most of GSM8K, are compared directly without a worker.

Scoring k=100 samples a problem is mostly the same few answers again and again, so a `check_many`
call judges each distinct (gold, answer) pair once and gives its verdict to every sample that wrote
it; the pairs travel to the workers in batches (still timed one by one), and each worker remembers
what it has parsed, so a gold answer is parsed once for all the answers compared with it.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import os
import random
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from harness.errors import BadInput
from harness.hub import hub_access
from tasks import register_task
from tasks.base import ANSWER_MARKER, SPLIT_SIZE_OPTIONS, Problem, Task, Verdict, read_local_rows

DEFAULT_CHECK_TIMEOUT_S = 5.0
# Final answers are short; anything longer is garbage that is only expensive to parse.
MAX_ANSWER_CHARS = 1000

_ANSWER_MARKER_RE = re.compile(re.escape(ANSWER_MARKER), re.IGNORECASE)
_BOXED = "\\boxed{"
_INTEGER_RE = re.compile(r"[+-]?\d+")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(,\d{3})+")


# --------------------------------------------------------------------------------------------
# Answer extraction
# --------------------------------------------------------------------------------------------


def _boxed_content(text: str, start: int) -> str | None:
    """Content of the `\\boxed{` at `start` up to its balanced closing brace; None if unclosed."""
    depth = 0
    content_start = start + len(_BOXED)
    for position in range(content_start, len(text)):
        char = text[position]
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return text[content_start:position]
            depth -= 1
    return None


def extract_math_answer(completion: str) -> str | None:
    """The final answer: after the last `The answer is`, or the last `\\boxed{}` if that comes later.

    Only the rest of the marker's line counts, so text a model generates after its answer (a new
    question, say) does not spoil it; a trailing period ends the sentence, not the answer.
    """
    markers = list(_ANSWER_MARKER_RE.finditer(completion))
    marker_end = markers[-1].end() if markers else -1
    boxed_start = completion.rfind(_BOXED)
    if boxed_start >= marker_end:  # includes "The answer is \boxed{17}"
        boxed = _boxed_content(completion, boxed_start) if boxed_start >= 0 else None
        if boxed is not None:
            return boxed.strip()
    if not markers:
        return None
    answer = completion[marker_end:].lstrip(" \t:").split("\n", 1)[0].strip()
    if answer.endswith("."):
        answer = answer[:-1].rstrip()
    return answer


def plain_integer(text: str) -> int | None:
    """The integer a plain answer like `42`, `-7`, `1,000` or `$42$` denotes; None for anything else."""
    text = text.strip().strip("$").strip()
    if _THOUSANDS_RE.fullmatch(text):
        text = text.replace(",", "")
    if _INTEGER_RE.fullmatch(text):
        return int(text)
    return None


# --------------------------------------------------------------------------------------------
# math-verify comparison (runs inside worker processes)
# --------------------------------------------------------------------------------------------


def _parse_math(text: str) -> list[Any]:
    from math_verify import parse

    # Bare LaTeX (`\sqrt{2}`, `p - q`, `\text{(C)}`) is only recognised inside math delimiters.
    candidates = [text] if "$" in text or "\\(" in text else [f"${text}$", text]
    for candidate in candidates:
        parsed = parse(candidate, parsing_timeout=None)
        if parsed:
            return parsed
    return []


@functools.lru_cache(maxsize=4096)
def _parsed_answer(text: str) -> tuple[Any, ...]:
    """`_parse_math`, remembered per worker process: a problem's gold answer is parsed once for all
    the distinct answers compared with it, and answers that recur across problems ("2", "\\frac{1}{2}")
    once for all of them. Parsing costs most of a comparison (math-verify's ANTLR LaTeX parser), and
    its results are immutable sympy objects and strings, safe to share between comparisons."""
    return tuple(_parse_math(text))


def _normalised_text(text: str) -> str:
    return re.sub(r"\s+|\$|\\[,;!]|\\text\{|\\mathrm\{|[{}]", "", text).lower()


def _canonical_answer(parsed: list[Any], raw: str) -> str:
    """One spelling per value, so `0.5`, `1/2` and `\\frac{1}{2}` count as one unique answer."""
    if not parsed:
        return _normalised_text(raw)
    value = parsed[0]
    if getattr(value, "is_Float", False):
        import sympy

        # str(Float) is exact decimal text, so this is the rational the model wrote.
        return str(sympy.Rational(str(value)))
    return str(value)


def judge_math_answer(gold: str, predicted: str) -> tuple[bool, str]:
    """(equivalent?, canonical predicted answer) by math-verify, with its signal timeouts off."""
    import logging

    from math_verify import verify

    # math-verify warns once per process that timeouts are off: they are on purpose.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    gold_parsed, predicted_parsed = list(_parsed_answer(gold)), list(_parsed_answer(predicted))
    canonical = _canonical_answer(predicted_parsed, predicted)
    if not gold_parsed or not predicted_parsed:
        # Neither side is mathematics math-verify understands (a name, a word): compare the text.
        return _normalised_text(gold) == _normalised_text(predicted), canonical
    return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=None)), canonical


# --------------------------------------------------------------------------------------------
# Worker pool with per-item deadlines
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobOutcome:
    """What became of one call: status "ok" (value = its return), "timeout" or "error" (value = why)."""

    status: str
    value: Any = None


def _worker_loop(connection: Connection) -> None:
    # A message is a batch of calls; each outcome goes back as soon as it exists, so the parent can
    # time every call on its own even though they travel together.
    while True:
        try:
            batch = connection.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        for function, args in batch:
            try:
                outcome = JobOutcome("ok", function(*args))
            except BaseException as error:  # noqa: BLE001 - a failing item must not end the worker
                outcome = JobOutcome("error", f"{type(error).__name__}: {error}")
            connection.send(outcome)


# Calls per pipe message at most: enough that the round trip stops mattering, few enough that the
# work still spreads evenly over the workers and a killed worker's unstarted calls are few to redo.
MAX_BATCH = 16


class _Worker:
    def __init__(self, context: multiprocessing.context.BaseContext):
        self.connection, child_connection = context.Pipe()
        self.process = context.Process(target=_worker_loop, args=(child_connection,), daemon=True)
        self.process.start()
        child_connection.close()
        self.batch: deque[int] = deque()  # indices of the calls sent and not answered yet, in order
        self.deadline = 0.0

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.connection.close()


class TimeoutWorkerPool:
    """Runs picklable (function, args) calls in worker processes, each under a wall-time deadline.

    Unlike `concurrent.futures`, a call past its deadline is abandoned by killing just its worker,
    which is replaced; the other calls carry on. Calls go to a worker in batches (one pipe message,
    not one per call), and every call still has its own deadline, counted from the moment the call
    before it in the batch answered: a stuck call times out alone, and the calls queued behind it in
    its batch go back to the queue for another worker. Workers start lazily and are reused across
    runs. They come from a forkserver (math-verify and sympy preloaded there once) rather than fork:
    the scoring process may hold torch threads, which fork would copy in an undefined state.
    """

    def __init__(self, preload: Sequence[str] = ("tasks.math", "math_verify")):
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(list(preload))
        self._workers: list[_Worker] = []

    def run(self, calls: Sequence[tuple[Callable[..., Any], tuple]], timeout_s: float,
            max_workers: int | None = None, batch_size: int | None = None) -> list[JobOutcome]:
        """Outcomes in call order. `batch_size`: calls per message (default: the queue split about
        four ways per worker, at most MAX_BATCH, so that small runs still use every worker)."""
        outcomes: list[JobOutcome | None] = [None] * len(calls)
        if not calls:
            return []
        wanted = max(1, min(max_workers or os.cpu_count() or 1, len(calls)))
        if batch_size is None:
            batch_size = min(MAX_BATCH, max(1, len(calls) // (4 * wanted)))
        while len(self._workers) < wanted:
            self._workers.append(_Worker(self._context))
        workers = self._workers[:wanted]
        pending = deque(range(len(calls)))
        busy: dict[Connection, _Worker] = {}

        def retire(worker: _Worker, outcome: JobOutcome) -> None:
            """The worker's current call ends with `outcome`; its unstarted calls go back to the queue."""
            outcomes[worker.batch.popleft()] = outcome
            pending.extendleft(reversed(worker.batch))
            worker.batch.clear()
            busy.pop(worker.connection, None)
            workers[workers.index(worker)] = self._replace(worker)

        while pending or busy:
            for slot, worker in enumerate(workers):
                if not worker.batch and pending:
                    indices = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
                    try:
                        worker.connection.send([calls[index] for index in indices])
                    except (BrokenPipeError, OSError):
                        # The worker died between runs: replace it and try these calls again.
                        workers[slot] = self._replace(worker)
                        pending.extendleft(reversed(indices))
                        continue
                    worker.batch.extend(indices)
                    worker.deadline = time.monotonic() + timeout_s
                    busy[worker.connection] = worker
            if not busy:
                continue
            wait_s = max(0.0, min(w.deadline for w in busy.values()) - time.monotonic())
            for connection in wait(list(busy), timeout=wait_s):
                worker = busy[connection]
                try:
                    # Drain every outcome already in the pipe, not just one per wake-up.
                    while worker.batch and connection.poll():
                        outcomes[worker.batch.popleft()] = connection.recv()
                        worker.deadline = time.monotonic() + timeout_s
                except (EOFError, OSError):
                    # Crashed mid-call (out of memory, a segfault in native code).
                    retire(worker, JobOutcome("error", "worker process died"))
                    continue
                if not worker.batch:
                    del busy[connection]
            now = time.monotonic()
            for worker in list(busy.values()):
                if worker.deadline <= now:
                    retire(worker, JobOutcome("timeout", f"no result within {timeout_s:g}s"))
        return outcomes  # type: ignore[return-value]

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        fresh = _Worker(self._context)
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    @property
    def worker_pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    def close(self) -> None:
        for worker in self._workers:
            try:
                worker.connection.send(None)
            except (BrokenPipeError, OSError):
                pass
            worker.process.join(timeout=1)
            if worker.process.is_alive():
                worker.process.kill()
            worker.connection.close()
        self._workers = []


_SHARED_POOL: TimeoutWorkerPool | None = None


def shared_pool() -> TimeoutWorkerPool:
    """The process-wide pool: workers are kept between scoring calls, since starting them costs most."""
    global _SHARED_POOL
    if _SHARED_POOL is None:
        _SHARED_POOL = TimeoutWorkerPool()
        atexit.register(_SHARED_POOL.close)
    return _SHARED_POOL


# The function workers run for one comparison; a module attribute so tests can substitute a slow one.
_judge_job: Callable[[str, str], tuple[bool, str]] = judge_math_answer


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


def format_question(question: str) -> str:
    return f"Question: {question.strip()}\n"


class MathTask(Task):
    """Shared checker; subclasses supply the problems, each with a string `answer` field."""

    kind = "math"
    option_types = {**SPLIT_SIZE_OPTIONS, "check_timeout": float}
    checker = "final answer (`The answer is` / \\boxed{}) equivalent by math-verify, per-item timeout in workers"

    @property
    def check_timeout_s(self) -> float:
        return float(self.options.get("check_timeout") or DEFAULT_CHECK_TIMEOUT_S)

    def check(self, problem: Problem, completion: str) -> Verdict:
        return self.check_many([(problem, completion)], workers=1)[0]

    def checker_settings(self) -> dict[str, Any]:
        return {**super().checker_settings(), "check_timeout_s": self.check_timeout_s, "workers": os.cpu_count()}

    def check_many(self, items: Sequence[tuple[Problem, str]], workers: int | None = None) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(items)
        # k samples of one problem repeat the same few answers: each distinct (gold, answer) pair is
        # judged once per call and its verdict shared by every sample that gave it.
        waiting: dict[tuple[str, str], list[int]] = {}
        for index, (problem, completion) in enumerate(items):
            gold = str(problem["answer"])
            predicted = extract_math_answer(completion)
            if predicted is None:
                verdicts[index] = Verdict(False, reason="no 'The answer is' or \\boxed{} in completion")
            elif not predicted:
                verdicts[index] = Verdict(False, answer=predicted, reason="empty answer")
            elif len(predicted) > MAX_ANSWER_CHARS:
                verdicts[index] = Verdict(False, answer=predicted[:MAX_ANSWER_CHARS], reason="answer too long")
            else:
                gold_integer, predicted_integer = plain_integer(gold), plain_integer(predicted)
                if gold_integer is not None and predicted_integer is not None:
                    passed = gold_integer == predicted_integer
                    verdicts[index] = Verdict(passed, predicted, str(predicted_integer),
                                              "" if passed else f"{predicted_integer} != {gold_integer}")
                else:
                    waiting.setdefault((gold, predicted), []).append(index)
        if waiting:
            # Pairs of one gold answer travel together (math-verify's small parse cache then keeps the
            # gold's parse between them).
            pairs = sorted(waiting)
            calls = [(_judge_job, pair) for pair in pairs]
            outcomes = shared_pool().run(calls, self.check_timeout_s, max_workers=workers)
            for (gold, predicted), outcome in zip(pairs, outcomes):
                if outcome.status == "ok":
                    passed, canonical = outcome.value
                    verdict = Verdict(passed, predicted, canonical, "" if passed else "not equivalent")
                else:
                    verdict = Verdict(False, predicted, _normalised_text(predicted),
                                      f"comparison {outcome.status}: {outcome.value}")
                for index in waiting[(gold, predicted)]:
                    verdicts[index] = verdict
        return verdicts  # type: ignore[return-value]

    def split_size(self, split: str, default: int) -> int:
        return int(self.options.get(f"{split}_size") or default)


# --------------------------------------------------------------------------------------------
# arith: synthetic multi-step word problems
# --------------------------------------------------------------------------------------------

_ACTORS = [("Ann", "She"), ("Ben", "He"), ("Cara", "She"), ("Dan", "He"), ("Eve", "She"),
           ("Finn", "He"), ("Gia", "She"), ("Hugo", "He"), ("The shop", "It"), ("The class", "It")]
_ITEMS = ["apples", "marbles", "stickers", "coins", "books", "cards", "shells", "pens", "eggs", "beads"]
_PACKS = ["bags", "boxes", "packs", "jars"]
MAX_ARITH_VALUE = 999


def _arith_step(rng: random.Random, pronoun: str, item: str, value: int, budget: int):
    """One story event as (sentence, equations, new value); None if the drawn event does not fit.

    Events cost one or two equations; `budget` is how many the problem may still use.
    """
    kind = rng.choice(["gain", "lose", "gain_packs", "lose_daily", "scale", "share"])
    if kind == "gain":
        amount = rng.randint(1, 30)
        verb = rng.choice(["finds", "gets", "buys", "wins"])
        return f"{pronoun} {verb} {amount} more.", [f"{value}+{amount}={value + amount}."], value + amount
    if kind == "lose" and value >= 1:
        amount = rng.randint(1, min(value, 30))
        verb = rng.choice(["gives away", "loses", "sells", "uses"])
        return f"{pronoun} {verb} {amount}.", [f"{value}-{amount}={value - amount}."], value - amount
    if kind == "gain_packs" and budget >= 2:
        packs, size = rng.randint(2, 9), rng.randint(2, 12)
        total = packs * size
        sentence = f"{pronoun} buys {packs} {rng.choice(_PACKS)} of {size} {item}."
        return sentence, [f"{packs}*{size}={total}.", f"{value}+{total}={value + total}."], value + total
    if kind == "lose_daily" and budget >= 2:
        per_day, days = rng.randint(1, 9), rng.randint(2, 7)
        total = per_day * days
        if total > value:
            return None
        sentence = f"{pronoun} uses {per_day} a day for {days} days."
        return sentence, [f"{per_day}*{days}={total}.", f"{value}-{total}={value - total}."], value - total
    if kind == "scale" and value >= 1:
        factor = rng.choice([2, 3])
        word = {2: "twice", 3: "three times"}[factor]
        return f"Then {pronoun.lower()} has {word} as many.", [f"{value}*{factor}={value * factor}."], value * factor
    if kind == "share":
        divisors = [d for d in (2, 3, 4, 5) if value >= d and value % d == 0]
        if not divisors:
            return None
        parts = rng.choice(divisors)
        sentence = f"{pronoun} splits them into {parts} equal piles and keeps one."
        return sentence, [f"{value}/{parts}={value // parts}."], value // parts
    return None


def generate_arith_problem(rng: random.Random) -> tuple[str, list[str], int]:
    """(question, equation sentences, answer) with 2-6 equations, all intermediates in 0..999."""
    name, pronoun = rng.choice(_ACTORS)
    item = rng.choice(_ITEMS)
    n_equations = rng.randint(2, 6)
    value = rng.randint(2, 30)
    sentences = [f"{name} has {value} {item}."]
    equations: list[str] = []
    while len(equations) < n_equations:
        step = _arith_step(rng, pronoun, item, value, n_equations - len(equations))
        if step is None or step[2] > MAX_ARITH_VALUE:
            continue
        sentence, step_equations, value = step
        sentences.append(sentence)
        equations.extend(step_equations)
    possessive = "it" if pronoun == "It" else pronoun.lower()
    sentences.append(f"How many {item} does {possessive} have now?")
    return " ".join(sentences), equations, value


@register_task("arith")
class Arith(MathTask):
    name = "arith"
    default_sizes = {"train": 20_000, "val": 500, "test": 500}

    def load_split(self, split: str) -> list[Problem]:
        # Same construction as Countdown: held-out splits first, train never repeats their questions,
        # and one random stream per split so resizing one split leaves the others unchanged.
        excluded: set[str] = set()
        if split == "val":
            excluded = {p["prompt"] for p in self.problems("test")}
        elif split == "train":
            excluded = {p["prompt"] for p in self.problems("test") + self.problems("val")}
        rng = random.Random(f"{self.name}/{split}/{self.seed}")
        size = self.split_size(split, self.default_sizes[split])
        problems: list[Problem] = []
        seen: set[str] = set()
        while len(problems) < size:
            question, equations, answer = generate_arith_problem(rng)
            prompt = format_question(question)
            if prompt in excluded or prompt in seen:
                continue
            seen.add(prompt)
            problems.append({
                "task_id": f"{self.name}/{split}/{len(problems)}",
                "prompt": prompt,
                "reference": " ".join(equations) + f" The answer is {answer}.",
                "answer": str(answer),
            })
        return problems


# --------------------------------------------------------------------------------------------
# Real datasets: GSM8K and MATH-500
# --------------------------------------------------------------------------------------------


# Rows, or the message of the failure, so an offline machine does not retry per split.
_HUB_ROWS: dict[tuple[str, str | None, str], list[dict] | str] = {}


def _load_hub_rows(hub_id: str, hub_config: str | None, hub_split: str) -> list[dict]:
    """Rows of a hub dataset (or its local cache), remembered per process, failures included."""
    import datasets

    key = (hub_id, hub_config, hub_split)
    if key not in _HUB_ROWS:
        try:
            with hub_access():
                _HUB_ROWS[key] = list(datasets.load_dataset(hub_id, hub_config, split=hub_split))
        except Exception as error:  # noqa: BLE001 - offline, missing from cache, auth: all the same to the user
            _HUB_ROWS[key] = (
                f"could not load {hub_id} from the Hugging Face hub or cache ({type(error).__name__}); "
                f"pass --data-file with a local JSON/JSONL/parquet copy"
            )
    rows = _HUB_ROWS[key]
    if isinstance(rows, str):
        raise BadInput(rows)
    return rows


def load_rows(data_file: str | None, hub_id: str, hub_config: str | None, hub_split: str) -> list[dict]:
    """Rows from a local JSON/JSONL/parquet file when given, else from the Hugging Face hub or its cache."""
    if not data_file:
        return _load_hub_rows(hub_id, hub_config, hub_split)
    return read_local_rows(data_file)


def _require_fields(row: dict, fields: Sequence[str], source: str, index: int) -> None:
    missing = [f for f in fields if f not in row or row[f] is None]
    if missing:
        raise BadInput(f"{source}: row {index} lacks field(s) {', '.join(missing)}")


_CALCULATOR_RE = re.compile(r"<<[^>]*>>")


def gsm8k_reference(solution: str) -> tuple[str, str]:
    """(reference completion, final answer) from a GSM8K solution `...reasoning...\\n#### 42`.

    Calculator annotations `<<48/2=24>>` are dropped, each reasoning line becomes a sentence
    (a period is added where a line has none, so sentence splitting gives one block a line).
    """
    if "####" not in solution:
        raise ValueError("no '#### <answer>' line")
    reasoning, answer = solution.rsplit("####", 1)
    answer = answer.strip().replace(",", "")
    sentences = []
    for line in _CALCULATOR_RE.sub("", reasoning).splitlines():
        line = line.strip()
        if line:
            sentences.append(line if line[-1] in ".!?" else line + ".")
    return " ".join(sentences + [f"The answer is {answer}."]), answer


@register_task("gsm8k")
class GSM8K(MathTask):
    """GSM8K (openai/gsm8k, config main).

    Hub splits: train = hub train minus its last 500 rows, val = those last 500, test = hub test.
    A local `data_file` takes the place of the hub split the asked split comes from: `test` is the
    whole file (the test file), `train` and `val` are carved from it as from hub train (the training
    file), val its last min(500, n / 10) rows, so a run trained on the training file never validates
    on rows it trained on.
    """

    option_types = {**MathTask.option_types, "data_file": str}

    name = "gsm8k"
    val_size = 500

    def load_split(self, split: str) -> list[Problem]:
        data_file = self.options.get("data_file")
        source = data_file or "openai/gsm8k"
        rows = load_rows(data_file, "openai/gsm8k", "main", "test" if split == "test" else "train")
        if split != "test":
            held_out = min(self.val_size, len(rows) // 10) if data_file else self.val_size
            rows = rows[len(rows) - held_out:] if split == "val" else rows[: len(rows) - held_out]
        problems: list[Problem] = []
        for index, row in enumerate(rows):
            _require_fields(row, ("question", "answer"), source, index)
            try:
                reference, answer = gsm8k_reference(row["answer"])
            except ValueError as error:
                raise BadInput(f"{source}: row {index}: {error}") from None
            problems.append({
                "task_id": f"{self.name}/{split}/{index}",
                "prompt": format_question(row["question"]),
                "reference": reference,
                "answer": answer,
            })
        return problems


@register_task("math500")
class Math500(MathTask):
    """MATH-500 (HuggingFaceH4/MATH-500), evaluation only; `data_file` replaces the hub copy."""

    option_types = {**MathTask.option_types, "data_file": str}

    name = "math500"
    splits = ("test",)

    def load_split(self, split: str) -> list[Problem]:
        data_file = self.options.get("data_file")
        source = data_file or "HuggingFaceH4/MATH-500"
        rows = load_rows(data_file, "HuggingFaceH4/MATH-500", None, "test")
        problems: list[Problem] = []
        for index, row in enumerate(rows):
            _require_fields(row, ("problem", "solution", "answer"), source, index)
            answer = str(row["answer"]).strip()
            problems.append({
                "task_id": f"{self.name}/{split}/{index}",
                "prompt": format_question(row["problem"]),
                "reference": f"{row['solution'].strip()} The answer is {answer}.",
                "answer": answer,
            })
        return problems
