"""The demo recipe's GRPO setup: the arithmetic GRPO measures is what SFT taught, on problems SFT never saw."""

from __future__ import annotations

import json

from cluster.recipe import load_recipe, stage_configs


def test_demo_grpo_heldout_is_the_sft_range_and_disjoint_from_sft_data(tmp_path):
    from pipeline.chat.arithmetic import heldout_pool
    from pipeline.train.grpo import ProblemSource, heldout
    from pipeline.train.rl import arithmetic_defaults
    from pipeline.train.sft import build_conversations, chat_defaults

    cfgs = stage_configs(load_recipe("demo"), str(tmp_path))
    sft, grpo = cfgs["sft"], cfgs["grpo"]
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "config.json").write_text("{}")
    (tmp_path / "sft" / "sft.json").write_text(json.dumps(chat_defaults(sft)))
    arith, system = arithmetic_defaults(grpo, grpo.init_dir())
    assert arith == chat_defaults(sft)["arithmetic"] and system == sft.default_system()

    problems = heldout(grpo, arith)
    assert problems == heldout(grpo, arith)  # the same set before and after
    # Every held-out problem of the range is measured (55 for `+ -`, 0..19), not a smaller sample.
    pool = heldout_pool(arith["ops"], arith["lo"], arith["hi"])
    assert len(problems) == min(grpo.eval_n, len(pool)) >= 50
    convs, _, _ = build_conversations(sft)
    seen = {m["content"] for c in convs for m in c["messages"] if m["role"] == "user"}
    assert not seen & {p["question"] for p in problems}
    # GRPO's own training problems come from the same generator, so they avoid the set too.
    drawn = {p["question"] for step in range(5) for p in ProblemSource(grpo, arith)(step, 0)}
    assert drawn and not drawn & {p["question"] for p in problems}
