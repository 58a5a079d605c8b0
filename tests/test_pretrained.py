"""`pretrained`: any HF model directory (or GGUF file) evaluated few-shot without training, through
its chat template when it has one; the stop sequence after the first answer line."""

from __future__ import annotations

import json

from baselines.pretrained import cut_at_answer
from harness.backbone import RESERVED_TOKENS, build_char_tokenizer, tiny_llama
from harness.config import ModelConfig, load_config, parse_override
from harness.runs import create_run
from tasks import get_task
from tests.conftest import MICRO_SETTINGS, micro_args, run_cli

CHAT = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}")


def _model_dir(tmp_path, chat_template=None):
    task = get_task("countdown3")
    texts = [task.training_text(p) for p in task.problems("train")[:2000]] + ["[]\n_abcdefghijklmnopqrstuvwxyz"]
    tokenizer = build_char_tokenizer(texts)
    if chat_template:
        tokenizer.chat_template = chat_template
    model = tiny_llama(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), len(tokenizer),
                       tokenizer, seed=0)
    directory = tmp_path / ("chat-model" if chat_template else "model")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_cut_at_answer_stops_after_the_first_answer_line():
    assert cut_at_answer("1+2=3. The answer is 1+2.\n\nUse 4 5 to make 9.\nThe answer is 4+5.") == "1+2=3. The answer is 1+2."
    assert cut_at_answer("no answer here\n") == "no answer here"


def test_few_shot_prompts_plain_and_chat_and_an_end_to_end_eval(tmp_path, runs_dir):
    for template, run in ((None, "plain"), (CHAT, "chat")):
        directory = _model_dir(tmp_path, template)
        config = load_config("tiny", None, [parse_override(o) for o in [*MICRO_SETTINGS, "method_options.shots=2"]])
        config.method, config.task, config.model.name = "pretrained", "countdown3", str(directory)
        method, ctx = create_run(config, run, runs_dir)
        method.train()
        problem = ctx.task.problems("test")[0]
        examples = ctx.task.problems("train")[:2]
        prompt = method.prompt(problem)
        assert all(e["prompt"] in prompt and e["reference"] in prompt for e in examples)
        assert prompt.index(examples[1]["reference"]) < prompt.index(problem["prompt"])
        assert method.uses_chat_template == (template is not None)
        if template is not None:
            assert prompt.startswith("[user] ") and prompt.endswith("[assistant] ")
        else:
            assert prompt.endswith(problem["prompt"])
    assert all(token in ctx.tokenizer.get_vocab() for token in RESERVED_TOKENS)
    metrics = json.loads(run_cli(["eval", "--run", "chat", "--k", "2", "--limit", "2", "--knob", "max_new_tokens=12",
                                  "--json"], runs_dir).stdout)
    assert metrics["method"] == "pretrained" and metrics["n_samples"] == 4
    refused = run_cli(["train", "--method", "pretrained", "--task", "countdown3", "--run", "none", *micro_args()],
                      runs_dir, check=False)
    assert refused.returncode == 2 and "--model" in refused.stderr and not (runs_dir / "none").exists()
