"""Countdown (CD-3/4/5): combine the given numbers with + - * / to reach the target.

The planning task of LaDiR's evaluation (following Stream-of-Search): every problem is generated
solvable by construction, and its reference completion is the construction itself, one sentence an
operation (`86+28=114.`), then `The answer is <expression>.`.

The checker never runs the model's text: the answer is parsed with `ast` against a whitelist
(integer literals, + - * /, parentheses), evaluated exactly with `Fraction`, and accepted iff it uses
exactly the given numbers and equals the target. Anything else, however hostile, is just incorrect.

Scoring k=100 samples a problem calls the checker tens of thousands of times, and most answers are
plain arithmetic (digits, + - * /, parentheses, spaces). Those take a fast path: a small
operator-precedence parser accepting exactly the whitelisted subset of Python's grammar, with int
arithmetic until a division is inexact. It gives `ast`'s verdict to the character (tests compare the
two on random and damaged expressions); any text it does not accept goes to `ast`.
"""

from __future__ import annotations

import ast
import random
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from numbers import Integral

from tasks import register_task
from tasks.base import (ANSWER_MARKER, SPLIT_SIZE_OPTIONS, Problem, Task, Verdict, extract_after_answer_marker,
                        read_local_rows)

NUMBER_RANGE = (1, 99)
TARGET_RANGE = (10, 99)
DEFAULT_SIZES = {"train": 50_000, "val": 500, "test": 1_000}

# Bounds that keep hostile answers cheap: a real answer for five two-digit numbers is ~20 chars,
# and no legitimate intermediate comes near these magnitudes.
MAX_EXPRESSION_CHARS = 200
MAX_LITERAL = 10**6
MAX_MAGNITUDE = 10**30

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_AST_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_DECIMAL_LITERAL_RE = re.compile(r"[0-9]+")
_STEP_RE = re.compile(r"([0-9]+)\s*([-+*/])\s*([0-9]+)\s*=\s*([0-9]+)\s*\.?")
_TARGET_IN_TEXT_RE = re.compile(r"\b(?:target|equals?|reach|make|get)\b\D{0,24}?([0-9]+)", re.IGNORECASE)

# An expression tree from the generator: an int leaf, or (operator, left, right).
Tree = int | tuple[str, "Tree", "Tree"]


class _Rejected(Exception):
    """An answer the checker refuses; the message becomes the verdict's reason."""


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def render_expression(tree: Tree) -> str:
    """Infix text with only the parentheses the precedence rules need.

    A right operand of - or / at the same precedence keeps its parentheses (a-(b+c) is not
    a-b+c); everything else that binds at least as tightly goes bare.
    """
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    left_text, right_text = render_expression(left), render_expression(right)
    if not isinstance(left, int) and _PRECEDENCE[left[0]] < _PRECEDENCE[op]:
        left_text = f"({left_text})"
    if not isinstance(right, int):
        right_prec = _PRECEDENCE[right[0]]
        if right_prec < _PRECEDENCE[op] or (right_prec == _PRECEDENCE[op] and op in "-/"):
            right_text = f"({right_text})"
    return f"{left_text}{op}{right_text}"


def _possible_steps(a: int, b: int) -> list[tuple[str, int, int, int]]:
    """Operations on two pool values as (op, left, right, result), all with positive integer results.

    Subtraction and division are written larger-first so every intermediate stays a positive
    integer, the way the Stream-of-Search Countdown data is built.
    """
    big, small = max(a, b), min(a, b)
    steps = [("+", a, b, a + b), ("*", a, b, a * b)]
    if big != small:
        steps.append(("-", big, small, big - small))
    if big % small == 0:
        steps.append(("/", big, small, big // small))
    return steps


def generate_problem(rng: random.Random, n_numbers: int) -> tuple[list[int], int, list[str], Tree]:
    """One solvable problem: (numbers, target, reasoning sentences, solution tree).

    Combine two random pool values with a random valid operation, put the result back, repeat until
    one value is left. The last operation is drawn among those landing in the target range (instead
    of resampling the whole problem whenever it misses), which keeps generation fast.
    """
    low_target, high_target = TARGET_RANGE
    low_number, number_span = NUMBER_RANGE[0], NUMBER_RANGE[1] - NUMBER_RANGE[0] + 1
    # Indices come from rng.random() directly: randint/sample/choice cost several times more,
    # and train sets are tens of thousands of problems.
    draw = rng.random
    while True:
        numbers = [low_number + int(draw() * number_span) for _ in range(n_numbers)]
        pool: list[tuple[int, Tree]] = [(n, n) for n in numbers]
        sentences: list[str] = []
        while len(pool) > 1:
            i = int(draw() * len(pool))
            j = int(draw() * (len(pool) - 1))
            j += j >= i
            (a, tree_a), (b, tree_b) = pool[i], pool[j]
            steps = _possible_steps(a, b)
            if len(pool) == 2:
                steps = [s for s in steps if low_target <= s[3] <= high_target]
                if not steps:
                    break
            op, left, right, result = steps[int(draw() * len(steps))]
            # `left` is a or b; keep each operand's tree with it when the order is swapped.
            tree_left, tree_right = (tree_a, tree_b) if (left, right) == (a, b) else (tree_b, tree_a)
            sentences.append(f"{left}{op}{right}={result}.")
            pool = [p for k, p in enumerate(pool) if k not in (i, j)] + [(result, (op, tree_left, tree_right))]
        if len(pool) == 1:
            target, tree = pool[0]
            return numbers, target, sentences, tree


def _problem_key(numbers: list[int], target: int) -> tuple[tuple[int, ...], int]:
    return tuple(sorted(numbers)), target


def format_prompt(numbers: list[int], target: int) -> str:
    # Short on purpose: character-level models spend their context on it.
    return f"Use {' '.join(map(str, numbers))} to make {target}.\n"


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------


def _answer_expression(completion: str) -> str | None:
    """The expression after the last `The answer is`, on its own line, left of any `=`."""
    answer = extract_after_answer_marker(completion)
    if answer is None:
        return None
    # Text generated past the answer line (a model that keeps going) is not part of the answer.
    answer = answer.split("\n", 1)[0].strip()
    if answer.endswith("."):
        answer = answer[:-1].rstrip()
    return answer.split("=", 1)[0].strip()


def _check_syntax(node: ast.AST, source: str, literals: list[int]) -> None:
    """Reject every node outside the whitelist; collect the integer literals used."""
    if isinstance(node, ast.Constant):
        # bool is an int subclass; hex/octal/underscored literals are not the numbers as written.
        if type(node.value) is not int:
            raise _Rejected(f"literal {node.value!r} is not an integer")
        text = ast.get_source_segment(source, node) or ""
        if not _DECIMAL_LITERAL_RE.fullmatch(text):
            raise _Rejected(f"literal {text!r} is not a plain decimal integer")
        if node.value > MAX_LITERAL:
            raise _Rejected("literal too large")
        literals.append(node.value)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _AST_OPERATORS:
            raise _Rejected(f"operator {type(node.op).__name__} not allowed")
        _check_syntax(node.left, source, literals)
        _check_syntax(node.right, source, literals)
    else:
        raise _Rejected(f"{type(node).__name__} not allowed")


def _apply(op: str, left: Fraction, right: Fraction) -> Fraction:
    """One exact operation; division by zero is rejected."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if right == 0:
        raise _Rejected("division by zero")
    return left / right


def _evaluate(node: ast.AST) -> Fraction:
    """Exact value of a whitelisted expression."""
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    assert isinstance(node, ast.BinOp)
    value = _apply(_AST_OPERATORS[type(node.op)], _evaluate(node.left), _evaluate(node.right))
    if abs(value.numerator) > MAX_MAGNITUDE or value.denominator > MAX_MAGNITUDE:
        raise _Rejected("intermediate value too large")
    return value


def _parse_step(sentence: str) -> tuple[int, str, int, int, bool] | None:
    """A reasoning step `a op b = c.` as (a, op, b, c, whether c is exactly a op b); None if it is not one."""
    match = _STEP_RE.fullmatch(sentence.strip())
    if not match:
        return None
    a, op, b, c = int(match[1]), match[2], int(match[3]), int(match[4])
    try:
        exact = _tree_value((op, a, b)) == c  # int arithmetic: the checker calls this for every step it sees
    except _Rejected:
        exact = False
    return a, op, b, c, exact


def canonical_expression(node: ast.AST) -> str:
    """A solution's identity for the diversity metric.

    Chains of the associative, commutative operators (+, *) are flattened and their operands sorted,
    so a+(b+c), (a+b)+c and c+b+a are one solution; - and / keep their operand order. Compound
    operands are always parenthesised so the text stays unambiguous.
    """
    if isinstance(node, ast.Expression):
        node = node.body
    if isinstance(node, ast.Constant):
        return str(node.value)
    assert isinstance(node, ast.BinOp)
    op = _AST_OPERATORS[type(node.op)]

    def operand(child: ast.AST) -> str:
        text = canonical_expression(child)
        return f"({text})" if isinstance(child, ast.BinOp) else text

    if op in "+*":
        operands: list[ast.AST] = []
        pending = [node.left, node.right]
        while pending:
            child = pending.pop()
            if isinstance(child, ast.BinOp) and type(child.op) is type(node.op):
                pending.extend([child.left, child.right])
            else:
                operands.append(child)
        return op.join(sorted(operand(child) for child in operands))
    return f"{operand(node.left)}{op}{operand(node.right)}"


def _verdict_by_ast(numbers: list[int], target: int, expression: str) -> Verdict:
    """The general checker: Python's own parser, then the whitelist. Any text, however odd, ends here."""
    literals: list[int] | None = None  # known once the whole expression passed the whitelist
    try:
        with warnings.catch_warnings():  # model text like "3and" makes the parser warn on stderr
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(expression, mode="eval")
        collected: list[int] = []
        _check_syntax(tree.body, expression, collected)
        literals = collected
        canonical = canonical_expression(tree)
        value = _evaluate(tree.body)
    except _Rejected as rejected:
        return _rejected_verdict(numbers, expression, str(rejected), literals)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as error:
        return _rejected_verdict(numbers, expression, f"unparseable answer ({type(error).__name__})", literals)
    return _final_verdict(numbers, target, expression, literals, canonical, value)


def _uses_given_numbers(numbers: list[int], literals: list[int] | None) -> bool:
    """Whether a whitelisted answer's literals are exactly the given numbers (None: not whitelisted)."""
    return literals is not None and sorted(literals) == sorted(numbers)


def _rejected_verdict(numbers: list[int], expression: str, reason: str, literals: list[int] | None) -> Verdict:
    """An answer that has no value: unparseable, outside the whitelist, or failing to evaluate (a
    division by zero still tells whether the numbers were the right ones)."""
    return Verdict(False, answer=expression, reason=reason, uses_given_numbers=_uses_given_numbers(numbers, literals))


def _final_verdict(numbers: list[int], target: int, expression: str, literals: list[int], canonical: str,
                   value: Fraction | int) -> Verdict:
    if not _uses_given_numbers(numbers, literals):
        return Verdict(False, expression, canonical, f"uses {sorted(literals)}, must use each of {sorted(numbers)} once",
                       uses_given_numbers=False)
    if value != target:
        return Verdict(False, expression, canonical, f"evaluates to {value}, not {target}", uses_given_numbers=True)
    return Verdict(True, expression, canonical, uses_given_numbers=True)


# The fast path below takes only text made of these characters; everything else goes to `ast`.
_PLAIN_ARITHMETIC_RE = re.compile(r"[0-9+\-*/() ]+")
_TOKEN_RE = re.compile(r"[0-9]+|[-+*/()]")


class _NotPlain(Exception):
    """The text is not a well-formed plain expression; the `ast` path decides what it is."""


_BINDING = {"+": 1, "-": 1, "*": 2, "/": 2, "(": 0}


def _parse_plain(tokens: list[str]) -> tuple[Tree, list[int]]:
    """A tree of (op, left, right) / int from tokens of a plain expression, and its literals in order.

    The grammar is the subset of Python's that the whitelist accepts: + - * / binary and
    left-associative, * / binding tighter, parentheses, unsigned decimal integer literals. A token
    sequence outside it (a unary minus, `**`, `//`, `()`, adjacent numbers, unbalanced parentheses, a
    leading-zero literal Python rejects) raises _NotPlain, so whatever this accepts, `ast.parse`
    builds the same tree. Operator precedence with explicit stacks: no recursion, however deep the
    parentheses.
    """
    literals: list[int] = []
    operands: list[Tree] = []
    operators: list[str] = []
    binding = _BINDING

    def reduce() -> None:
        right = operands.pop()
        operands[-1] = (operators.pop(), operands[-1], right)

    want_operand = True
    for token in tokens:
        if want_operand:
            if token == "(":
                operators.append(token)
            elif token[0].isdigit() and not (token[0] == "0" and token.strip("0")):  # 012: a SyntaxError
                value = int(token)
                literals.append(value)
                operands.append(value)
                want_operand = False
            else:
                raise _NotPlain
        elif token == ")":
            while operators and operators[-1] != "(":
                reduce()
            if not operators:
                raise _NotPlain
            operators.pop()
        elif token in binding and token != "(":
            # Left-associative: an operator already waiting at the same level applies first.
            while operators and binding[operators[-1]] >= binding[token]:
                reduce()
            operators.append(token)
            want_operand = True
        else:
            raise _NotPlain
    if want_operand:
        raise _NotPlain
    while operators:
        if operators[-1] == "(":
            raise _NotPlain
        reduce()
    return operands[0], literals


def _tree_canonical(tree: Tree) -> str:
    """`canonical_expression` on a parsed tree, to the character."""
    if type(tree) is int:
        return str(tree)
    op, left, right = tree
    if op == "+" or op == "*":
        # Flatten the chain of this operator; the order of collection is irrelevant after sorting.
        parts: list[str] = []
        pending = [left, right]
        while pending:
            child = pending.pop()
            if type(child) is int:
                parts.append(str(child))
            elif child[0] == op:
                pending.append(child[1])
                pending.append(child[2])
            else:
                parts.append(f"({_tree_canonical(child)})")
        parts.sort()
        return op.join(parts)
    left_text = str(left) if type(left) is int else f"({_tree_canonical(left)})"
    right_text = str(right) if type(right) is int else f"({_tree_canonical(right)})"
    return f"{left_text}{op}{right_text}"


def _tree_value(tree: Tree) -> Fraction | int:
    """`_evaluate` on a parsed tree: the same value, bounds and rejections, in the same order.

    Values stay Python ints while every division is exact, which is most of the time, and become
    Fractions only when one is not: Fraction arithmetic costs several times int arithmetic.
    """
    if isinstance(tree, int):
        return tree
    op, left_tree, right_tree = tree
    left, right = _tree_value(left_tree), _tree_value(right_tree)
    if op == "+":
        value = left + right
    elif op == "-":
        value = left - right
    elif op == "*":
        value = left * right
    elif right == 0:
        raise _Rejected("division by zero")
    elif type(left) is int and type(right) is int and left % right == 0:
        value = left // right
    else:
        value = Fraction(left) / right
    if type(value) is int:
        if abs(value) > MAX_MAGNITUDE:
            raise _Rejected("intermediate value too large")
    elif abs(value.numerator) > MAX_MAGNITUDE or value.denominator > MAX_MAGNITUDE:
        raise _Rejected("intermediate value too large")
    return value


def _verdict_plain(numbers: list[int], target: int, expression: str) -> Verdict | None:
    """The verdict `_verdict_by_ast` gives, for a plain arithmetic expression (what models write);
    None when the text is anything else. No `ast.parse`, no source-segment lookups, int arithmetic."""
    if not _PLAIN_ARITHMETIC_RE.fullmatch(expression):
        return None
    try:
        tree, literals = _parse_plain(_TOKEN_RE.findall(expression))
        if any(literal > MAX_LITERAL for literal in literals):
            return _rejected_verdict(numbers, expression, "literal too large", None)  # as `ast`: not whitelisted
        canonical = _tree_canonical(tree)
        value = _tree_value(tree)
    except _NotPlain:
        return None
    except _Rejected as rejected:
        return _rejected_verdict(numbers, expression, str(rejected), literals)
    except RecursionError:  # only on a caller already deep in its stack; `ast` says what it says then
        return None
    return _final_verdict(numbers, target, expression, literals, canonical, value)


def check_countdown_answer(numbers: list[int], target: int, completion: str) -> Verdict:
    """Exact verdict on one completion; never raises, never executes the text."""
    expression = _answer_expression(completion)
    if expression is None:
        return Verdict(False, reason="no 'The answer is' in completion", uses_given_numbers=False)
    if not expression:
        return _rejected_verdict(numbers, expression, "empty answer", None)
    if len(expression) > MAX_EXPRESSION_CHARS:
        return _rejected_verdict(numbers, expression[:MAX_EXPRESSION_CHARS], "answer too long", None)
    verdict = _verdict_plain(numbers, target, expression)
    return verdict if verdict is not None else _verdict_by_ast(numbers, target, expression)


# --------------------------------------------------------------------------------------------
# Data files
# --------------------------------------------------------------------------------------------

# The row shapes `--data-file` reads, as the refusal of any other row lists them.
DATA_FILE_SHAPES = (
    "{numbers|nums: [..], target[, reference|solution]} (ours, TinyZero's Countdown-Tasks-3to4, Stream-of-Search); "
    "{reward_model: {ground_truth: {numbers, target}}} (TinyZero's verl parquet); "
    "{input: 'a,b,c,target', output: 'a+b=x,x*c=y'} (MGDM); "
    "{input: 'a,b,c', output: 'target'} (d1); "
    "{input: a question naming the numbers and the target, output[, solutions]} (LaDiR)"
)
_NUMBER_LIST_RE = re.compile(r"\s*[0-9]+(?:\s*,\s*[0-9]+)+\s*")
_INTEGER_TEXT_RE = re.compile(r"\s*-?[0-9]+\s*")


class _UnreadableRow(Exception):
    """A data file row in none of `DATA_FILE_SHAPES`; the message says what was found instead."""


def _integer_or_none(value: object) -> int | None:
    """An integer as data files write one: 22, 22.0 (a parquet float column), "22" (d1); else None."""
    if isinstance(value, str):
        return int(value) if _INTEGER_TEXT_RE.fullmatch(value) else None
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_list(value: object) -> list | None:
    """The items of a list, tuple or one-dimensional array (parquet list columns arrive as numpy
    arrays); None for anything else, a string included."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if getattr(value, "ndim", None) == 1 and hasattr(value, "tolist"):
        return value.tolist()
    return None


def _warn(message: str) -> None:
    """One warning line on stderr, the way the harness writes them."""
    from rich.markup import escape

    from harness.progress import console

    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


class CountdownTask(Task):
    """Generated splits; with `data_file`, that file's problems are the test split (see `file_problems`)."""

    option_types = {**SPLIT_SIZE_OPTIONS, "data_file": str}
    kind = "countdown"
    checker = "ast whitelist (+ - * / parentheses), exact Fraction value, each number used once"
    n_numbers: int

    def split_size(self, split: str) -> int:
        return int(self.options.get(f"{split}_size") or DEFAULT_SIZES[split])

    def load_split(self, split: str) -> list[Problem]:
        # Held-out splits first, then train avoids their (numbers, target) keys: no test problem
        # is ever trained on. Each split has its own random stream, so resizing one never
        # changes another.
        if split == "test" and self.options.get("data_file"):
            return self.file_problems(self.options["data_file"])
        excluded: set[tuple[tuple[int, ...], int]] = set()
        if split == "val":
            excluded = {_problem_key(p["numbers"], p["target"]) for p in self.problems("test")}
        elif split == "train":
            excluded = {_problem_key(p["numbers"], p["target"]) for p in self.problems("test") + self.problems("val")}
        rng = random.Random(f"{self.name}/{split}/{self.seed}")
        problems: list[Problem] = []
        seen: set[tuple[tuple[int, ...], int]] = set()
        size = self.split_size(split)
        while len(problems) < size:
            numbers, target, sentences, tree = generate_problem(rng, self.n_numbers)
            key = _problem_key(numbers, target)
            if key in excluded or key in seen:
                continue
            seen.add(key)
            problems.append({
                "task_id": f"{self.name}/{split}/{len(problems)}",
                "prompt": format_prompt(numbers, target),
                "reference": " ".join(sentences) + f" The answer is {render_expression(tree)}.",
                "numbers": numbers,
                "target": target,
            })
        return problems

    def file_problems(self, data_file: str) -> list[Problem]:
        """The test problems of a local file (JSON / JSONL / parquet), one a row, each row in one of the
        shapes that Countdown data is published in (`DATA_FILE_SHAPES`, read by `_row_contents`).

        The first of a row's solutions whose steps are valid from the numbers and leave the target
        becomes its reference (our sentences, then `The answer is ...`); a row without one is usable
        for evaluation only. Rows with another count of numbers than this task's (TinyZero mixes 3 and
        4) are skipped, with a warning line saying how many; a row in no known shape is refused. The
        generated train and val splits then leave out the file's problems. A problem's task_id keeps
        its row's index, so its samples' seeds do not depend on which rows around it were skipped."""
        from harness.errors import BadInput

        problems = []
        skipped_sizes: Counter[int] = Counter()
        rows = read_local_rows(data_file)
        for index, row in enumerate(rows):
            try:
                numbers, target, solutions = self._row_contents(row)
            except _UnreadableRow as unreadable:
                raise BadInput(f"{data_file}: row {index} is not a Countdown problem ({unreadable}); "
                               f"accepted rows: {DATA_FILE_SHAPES}") from None
            if len(numbers) != self.n_numbers:
                skipped_sizes[len(numbers)] += 1
                continue
            problem: Problem = {"task_id": f"{self.name}/test/{index}", "prompt": format_prompt(numbers, target),
                                "numbers": numbers, "target": target}
            reference = row.get("reference") or next(
                filter(None, (self._reference_from_solution(problem, s) for s in solutions)), None)
            if reference:
                problem["reference"] = reference
            problems.append(problem)
        other_sizes = ", ".join(f"{count} with {size}" for size, count in sorted(skipped_sizes.items()))
        if not problems:
            found = f" (rows: {other_sizes} numbers)" if other_sizes else " (the file has no rows)"
            raise BadInput(f"{data_file}: no row has the {self.n_numbers} numbers that task {self.name!r} takes{found}")
        if skipped_sizes:
            _warn(f"{data_file}: skipped {skipped_sizes.total()} of {len(rows)} rows whose count of numbers is not "
                  f"the {self.n_numbers} that task {self.name!r} takes ({other_sizes} numbers)")
        return problems

    def _row_contents(self, row: dict) -> tuple[list[int], int, list]:
        """(numbers, target, candidate solutions) of a data file row, in any of `DATA_FILE_SHAPES`;
        _UnreadableRow otherwise. Numbers of any count: the caller selects this task's size."""
        output = row.get("output")
        ground_truth = row["reward_model"].get("ground_truth") if isinstance(row.get("reward_model"), dict) else None
        question = row.get("input") if isinstance(row.get("input"), str) else None
        if "numbers" in row or "nums" in row:
            numbers, target = row.get("numbers", row.get("nums")), row.get("target")
        elif isinstance(ground_truth, dict):
            numbers, target = ground_truth.get("numbers", ground_truth.get("nums")), ground_truth.get("target")
        elif question is not None and _NUMBER_LIST_RE.fullmatch(question):
            listed = [int(n) for n in question.split(",")]
            if _integer_or_none(output) is not None:  # d1: the input is the numbers, the output the target
                numbers, target, output = listed, output, None
            else:  # MGDM: the input ends with the target, the output is the chain of steps reaching it
                numbers, target = listed[:-1], listed[-1]
        elif question is not None:  # LaDiR: a question in words
            numbers, target = self._numbers_and_target_in_text(question)
            if numbers is None:
                raise _UnreadableRow(f"cannot find the numbers and a target in its 'input' {question[:80]!r}")
        else:
            raise _UnreadableRow(f"fields {', '.join(map(repr, row)) or 'none'}")
        numbers, target = _as_list(numbers), _integer_or_none(target)
        integers = [_integer_or_none(n) for n in numbers or ()]
        if target is None or not integers or None in integers:
            raise _UnreadableRow("its numbers and target are not integers")
        more = row.get("solutions")
        more = [more] if isinstance(more, str) else _as_list(more) or []
        return integers, target, [row.get("solution"), output, *more]

    def _numbers_and_target_in_text(self, text: str) -> tuple[list[int] | None, int | None]:
        """A question in words: the target is the integer after "target", "equals", "reach", "make" or
        "get"; the numbers are a bracketed list (of this task's size where there are several), or else
        every other integer of the text. (None, None) when there is no target or no number."""
        marked = _TARGET_IN_TEXT_RE.search(text)
        if marked is None:
            return None, None
        target = int(marked[1])
        listed = [[int(n) for n in _DECIMAL_LITERAL_RE.findall(group)] for group in re.findall(r"\[([^\]]*)\]", text)]
        listed = [numbers for numbers in listed if numbers]
        if listed:
            return next((numbers for numbers in listed if len(numbers) == self.n_numbers), listed[0]), target
        numbers = [int(m[0]) for m in _DECIMAL_LITERAL_RE.finditer(text) if m.start() != marked.start(1)]
        return (numbers, target) if numbers else (None, None)

    def _reference_from_solution(self, problem: Problem, solution) -> str | None:
        """Our reference from a solution's steps, when they are valid and leave the target. A string
        solution (`"3*5=15, 15+7=22"` as Stream-of-Search and MGDM write them, or sentences ending in
        `The answer is ...`) gives its `a op b = c` steps before the answer."""
        if isinstance(solution, str):
            solution = [m[0] for m in _STEP_RE.finditer(solution.split(ANSWER_MARKER)[0])]
        solution = _as_list(solution)
        if solution is None:
            return None
        sentences = [f"{str(step).strip().rstrip('.')}." for step in solution if str(step).strip()]
        answer = self.answer_from_steps(problem, sentences)
        reference = " ".join([*sentences, answer]) if answer else None
        return reference if reference and self.check(problem, reference).passed else None

    def _replay(self, problem: Problem, sentences: Sequence[str]) -> tuple[list[bool], list[tuple[int, Tree]]]:
        """Apply the steps `a op b = c.` to the pool of (value, expression tree): a step is valid when a
        and b are still in the pool (each value usable once) and c is its exact value; a valid step
        replaces a and b by c. Returns each step's validity and the final pool."""
        pool: list[tuple[int, Tree]] = [(n, n) for n in problem["numbers"]]
        verdicts = []
        for sentence in sentences:
            step = _parse_step(sentence)
            ok = False
            if step is not None and step[4]:
                a, op, b, c, _ = step
                # Where a value occurs twice, take the newest: a step usually uses the last result.
                newest = list(range(len(pool) - 1, -1, -1))
                i = next((k for k in newest if pool[k][0] == a), -1)
                j = next((k for k in newest if pool[k][0] == b and k != i), -1)
                ok = i >= 0 and j >= 0
                if ok:
                    tree = (op, pool[i][1], pool[j][1])
                    pool = [p for k, p in enumerate(pool) if k not in (i, j)] + [(c, tree)]
            verdicts.append(ok)
        return verdicts, pool

    def steps_valid(self, problem: Problem, sentences: Sequence[str]) -> list[bool]:
        return self._replay(problem, sentences)[0]

    def steps_arithmetic(self, sentences: Sequence[str]) -> list[bool]:
        return [step is not None and step[4] for step in map(_parse_step, sentences)]

    def answer_from_steps(self, problem: Problem, sentences: Sequence[str]) -> str | None:
        """`The answer is <expression>.` built from the steps when all are valid and leave one value."""
        verdicts, pool = self._replay(problem, sentences)
        if not verdicts or not all(verdicts) or len(pool) != 1:
            return None
        return f"The answer is {render_expression(pool[0][1])}."

    def chain_valid(self, problem: Problem, sentences: Sequence[str]) -> bool:
        """MGDM's Countdown criterion on reasoning steps: every one valid on the pool (`steps_valid`)
        and the last one's result is the target. Stricter than MGDM's own scorer, which checks each
        step's arithmetic alone, not that its operands are still in the pool; like it, it neither
        asks that every number be used nor looks at the answer sentence."""
        verdicts, pool = self._replay(problem, sentences)
        # After valid steps, the pool's last value is the last step's result.
        return bool(verdicts) and all(verdicts) and pool[-1][0] == problem["target"]

    def check(self, problem: Problem, completion: str) -> Verdict:
        """The answer's verdict (`check_countdown_answer`), with `chain_valid` of the reasoning before it."""
        verdict = check_countdown_answer(problem["numbers"], problem["target"], completion)
        return replace(verdict, chain_valid=self.chain_valid(problem, self.split_target(completion)[0]))


@register_task("countdown3")
class Countdown3(CountdownTask):
    name = "countdown3"
    n_numbers = 3


@register_task("countdown4")
class Countdown4(CountdownTask):
    name = "countdown4"
    n_numbers = 4


@register_task("countdown5")
class Countdown5(CountdownTask):
    name = "countdown5"
    n_numbers = 5
