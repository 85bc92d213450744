"""Trans-LoRA deterministic units (ALGORITHMS.md 6.5): the list prompt and its parser, the
filter rule and loop (stub discriminator: ties, the round cap), the discriminator's data and
template, teacher labels, the student's loss mask and the answer-only loss."""

from __future__ import annotations

import math
import random

import pytest
import torch

from generation.answer_loss import answer_only_loss
from generation.prompting import IGNORE_INDEX, encode_prompt
from generation.tasks import Example, Task
from generation.trainer import example_batches
from generation.translora.discriminator import (
    DISC_TEMPLATE,
    NO,
    YES,
    Discriminator,
    answer_token_ids,
    discriminator_task,
)
from generation.translora.distill import student_task, teacher_labels
from generation.translora.filtering import keep_iff_more_likely_real, rejection_sample
from generation.translora.params import TransferParams
from generation.translora.seeds import select_seeds
from generation.translora.synthesis import build_list_prompt, keep_new, parse_list_continuation
from hub.core.errors import BadInputError
from tests.factories import tiny_llama
from tests.test_generation_tiny import tiny_base, tiny_task

SEEDS = ["France", "Peru", "Chad", "Laos", "Mali"]


# -- 1. prompt builder and parser -------------------------------------------------------------
def test_prompt_shows_every_seed_numbered_and_ends_with_the_next_number():
    prompt = build_list_prompt(SEEDS, header_count=10)
    lines = prompt.split("\n")
    assert lines[0] == "Here are 10 examples:"
    assert lines[1:6] == [f"{i}. {s}" for i, s in enumerate(SEEDS, 1)]
    assert lines[6] == "6." and prompt.endswith("\n6.")


@pytest.mark.parametrize(
    ("seeds", "header"), [(SEEDS, 5), (SEEDS, 3), ([], 10), (["a\nb", "c"], 10), ([" ", "c"], 10)]
)
def test_prompt_refuses_a_header_not_above_the_seed_count_and_bad_seeds(seeds, header):
    with pytest.raises(BadInputError):
        build_list_prompt(seeds, header_count=header)


def test_parser_reads_items_in_order_until_the_list_breaks():
    text = " Spain\n7. Italy\n8.  Japan \n\n9. Chile\n"
    assert parse_list_continuation(text, 6, 10, 40) == ["Spain", "Italy", "Japan"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Spain\n8. Italy\n", ["Spain"]),  # a skipped number ends the list
        (" Spain\nprose here\n7. Italy\n", ["Spain"]),  # so does a line that is no item
        (" Spain\n7. Ita", ["Spain"]),  # the last line has no newline: maybe cut off
        (" Spain", []),
        (" \n7. Italy\n8.\n9. Peru\n", ["Italy", "Peru"]),  # empty items are dropped
        (" Spain\n7. Italy\n8. Peru\n9. Cuba\n10. Iran\n11. Iraq\n", ["Spain", "Italy", "Peru",
                                                                      "Cuba", "Iran"]),
        (" Spain\n7. " + "x" * 41 + "\n8. Peru\n", ["Spain", "Peru"]),  # over max_chars
        (" Spain\n7.Italy\n", ["Spain"]),  # "7.Italy" is not an item
    ],
)  # fmt: skip
def test_parser_edge_cases(text, expected):
    assert parse_list_continuation(text, 6, 10, 40) == expected


def test_keep_new_drops_seeds_and_repeats_in_order():
    seen = set(SEEDS)
    assert keep_new(["Peru", "Cuba", "Iran", "Cuba", "Mali", "Oman"], seen) == [
        "Cuba",
        "Iran",
        "Oman",
    ]
    assert keep_new(["Iran", "Fiji"], seen) == ["Fiji"]


# -- 2. filter rule and loop with a stub discriminator ---------------------------------------
def test_keep_iff_p_yes_above_p_no_and_ties_are_rejected():
    assert keep_iff_more_likely_real(0.6, 0.4)
    assert not keep_iff_more_likely_real(0.4, 0.6)
    assert not keep_iff_more_likely_real(0.5, 0.5)
    assert keep_iff_more_likely_real(1e-9, 0.0)


def _stub_judge(scores: dict[str, tuple[float, float]]):
    calls: list[list[str]] = []

    def judge(items):
        calls.append(list(items))
        return [scores[x] for x in items]

    return judge, calls


def test_loop_stops_at_target_and_judges_each_input_once():
    rounds = [["a", "b", "a", "seed"], ["b", "c", "d"], ["e", "f"], ["g"]]
    scores = {x: (0.7, 0.2) for x in "abcdefg"} | {"b": (0.3, 0.3), "d": (0.1, 0.8)}
    judge, calls = _stub_judge(scores)
    kept, stats = rejection_sample(
        lambda i: rounds[i], judge, target=3, max_rounds=10, seen={"seed"}
    )
    assert kept == ["a", "c", "e"]  # b: tie, d: judged synthetic
    assert calls == [["a", "b"], ["c", "d"], ["e", "f"]]  # repeats and seeds never judged
    assert (stats.rounds, stats.stopped, stats.kept) == (3, "target", 3)
    assert (stats.generated, stats.new, stats.judged) == (9, 6, 6)
    assert (stats.accepted, stats.rejected, stats.ties) == (4, 2, 1)
    doc = stats.to_dict()
    assert doc["acceptance_rate"] == pytest.approx(4 / 6, abs=1e-4)
    assert doc["mean_p_yes_rejected"] == pytest.approx(0.2)


def test_loop_stops_at_the_round_cap_when_everything_is_rejected():
    judge, _ = _stub_judge({f"x{i}": (0.1, 0.9) for i in range(100)})
    kept, stats = rejection_sample(lambda i: [f"x{i}"], judge, target=5, max_rounds=4, seen=set())
    assert kept == [] and (stats.rounds, stats.stopped, stats.rejected) == (4, "max_rounds", 4)


def test_without_a_judge_every_new_input_is_kept():
    kept, stats = rejection_sample(
        lambda i: ["a", "b", "c"][i:], None, target=10, max_rounds=3, seen={"b"}
    )
    assert kept == ["a", "c"] and stats.judged == 0 and stats.stopped == "max_rounds"


# -- 3. discriminator data and template -------------------------------------------------------
def test_discriminator_data_is_balanced_and_never_labels_a_real_input_no():
    real = [f"real{i}" for i in range(30)] + ["real0"]
    fake = [f"fake{i}" for i in range(12)] + ["real3", "fake1"]
    task = discriminator_task(real, fake, "Do X.", holdout=0.25, rng=random.Random(0))
    rows = task.train + task.eval
    yes = [r.input for r in rows if r.output == YES]
    no = [r.input for r in rows if r.output == NO]
    assert len(yes) == len(no) == 12  # 12 distinct synthetic inputs that are not real
    assert "real3" not in no and len(set(no)) == 12 and set(yes) <= set(real)
    assert sum(r.output == YES for r in task.eval) == sum(r.output == NO for r in task.eval) == 3
    assert not set(r.input for r in task.eval) & set(r.input for r in task.train)


def test_discriminator_data_needs_two_of_each():
    with pytest.raises(BadInputError, match="at least 2"):
        discriminator_task(["a", "b"], ["a", "c"], "d", rng=random.Random(0))


def test_template_is_identical_at_training_and_judging_time():
    base = tiny_base()
    task = discriminator_task(
        ["a1", "a2"], ["b1", "b2"], "Say it.", holdout=0, rng=random.Random(0)
    )
    disc = Discriminator(base, None, task)
    text = DISC_TEMPLATE.replace("{input}", "a1").replace("{description}", "Say it.")
    assert task.render("a1") == text  # what the trainer renders (one description)
    assert disc.prompts(["a1"]) == [encode_prompt(base.tokenizer, text)]
    rows = next(example_batches(base, task, task.train, 4, random.Random(0)))
    yes, no = answer_token_ids(base.tokenizer)
    first_answer = [int(lab[lab != IGNORE_INDEX][0]) for lab in rows["labels"]]
    assert set(first_answer) == {yes, no}  # the judged tokens are the trained ones


def test_probabilities_are_softmax_at_the_last_prompt_position():
    base = tiny_base()
    task = discriminator_task(
        ["a1", "a2"], ["b1", "b2"], "Say it.", holdout=0, rng=random.Random(0)
    )
    disc = Discriminator(base, None, task, batch_size=2)
    got = disc.probabilities(["a1", "a longer input", "b"])
    yes, no = answer_token_ids(base.tokenizer)
    for text, (p_yes, p_no) in zip(["a1", "a longer input", "b"], got, strict=True):
        ids = torch.tensor([disc.prompts([text])[0]])
        with torch.no_grad():
            probs = torch.softmax(base.model(ids).logits[0, -1], -1)
        assert p_yes == pytest.approx(float(probs[yes]), abs=1e-5)
        assert p_no == pytest.approx(float(probs[no]), abs=1e-5)


# -- 4. teacher labels and the student's loss -------------------------------------------------
def test_teacher_labels_are_reproducible_and_match_the_evaluator():
    from generation.evaluator import evaluate

    base, task = tiny_base(), tiny_task(n_eval=6)
    inputs = [ex.input for ex in task.eval]
    first = teacher_labels(base, None, task, inputs, batch_size=4, max_new_tokens=6)
    again = teacher_labels(base, None, task, inputs, batch_size=3, max_new_tokens=6)
    assert first == again
    evaluated = evaluate(base, None, task, batch_size=2, max_new_tokens=6)
    assert first == [o["output"] for o in evaluated.outputs]


def test_student_task_keeps_the_prompt_and_drops_empty_answers():
    task = tiny_task()
    student = student_task(task, ["a", "b", "c"], ["X", "", "Y"])
    assert [(e.input, e.output) for e in student.train] == [("a", "X"), ("c", "Y")]
    assert (student.prompt, student.descriptions) == (task.prompt, task.descriptions)
    with pytest.raises(BadInputError) as info:
        student_task(task, ["a"], [""])
    assert info.value.code == "no_usable_samples"


def test_student_loss_masks_the_prompt_tokens():
    base = tiny_base()
    task = student_task(tiny_task(), ["apple7", "cedar9"], ["A", "C"])
    batch = next(example_batches(base, task, task.train, 2, random.Random(0)))
    for ids, labels, mask in zip(
        batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True
    ):
        scored = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
        n = int(mask.sum())
        assert scored == [n - 2, n - 1]  # the answer letter and the end id only
        assert base.tokenizer.decode(ids[: n - 2]).endswith("### Output:\n")


def _tiny_gemma3(softcap: float | None):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
        final_logit_softcapping=softcap,
    )  # fmt: skip
    return Gemma3ForCausalLM(config).eval()


@pytest.mark.parametrize(
    "make", [lambda: tiny_llama(seed=3), lambda: _tiny_gemma3(None), lambda: _tiny_gemma3(2.0)]
)
def test_answer_only_loss_equals_the_models_own_loss(make):
    model = make()
    torch.manual_seed(0)
    ids = torch.randint(3, 128, (3, 9))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 5:] = ids[0, 5:]
    labels[1, 2:4] = ids[1, 2:4]
    labels[2, 8] = ids[2, 8]
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    with torch.no_grad():
        torch.testing.assert_close(
            answer_only_loss(model, batch), model(**batch).loss, rtol=1e-5, atol=1e-6
        )


# -- seeds and parameters ----------------------------------------------------------------------
def test_seeds_are_distinct_single_line_train_examples_chosen_by_seed():
    rows = [{"input": f"w{i % 7}", "output": "o"} for i in range(40)]
    rows.append({"input": "two\nlines", "output": "o"})
    task = Task(name="t", descriptions=["d"], train=rows)
    seeds = select_seeds(task, 5, seed=1)
    assert len({s.input for s in seeds}) == 5 and all("\n" not in s.input for s in seeds)
    assert seeds == select_seeds(task, 5, seed=1) and seeds != select_seeds(task, 5, seed=2)
    assert len(select_seeds(task, 50, seed=0)) == 7  # all distinct inputs when fewer


@pytest.mark.parametrize(
    "train",
    [[], [{"input": "a", "output": "x"}], [{"input": "a", "output": "x"}] * 5],
)
def test_fewer_than_two_seed_examples_is_refused(train):
    task = Task(name="t", descriptions=["d"], train=train, eval=[Example(input="q", output="r")])
    with pytest.raises(BadInputError) as info:
        select_seeds(task, 5, seed=0)
    assert info.value.code == "too_few_seeds"


def test_params_header_must_claim_more_than_the_seeds():
    TransferParams(seeds=9, header_count=10)
    with pytest.raises(ValueError, match="header_count"):
        TransferParams(seeds=10, header_count=10)


# -- the sampler -------------------------------------------------------------------------------
def test_list_ended_stops_each_row_once_it_has_the_wanted_newlines():
    from generation.translora.synthesis import _ListEnded

    stop = _ListEnded(prompt_width=2, newline_ids=torch.tensor([7, 9]), lines=2)
    ids = torch.tensor([[1, 7, 7, 5, 5], [1, 1, 9, 9, 5], [7, 7, 7, 5, 5]])
    assert stop(ids, None).tolist() == [False, True, False]  # prompt newlines do not count


def test_sampler_prompts_shuffle_the_seeds_and_rounds_are_reproducible(monkeypatch):
    from generation.translora import synthesis

    texts: list[str] = []
    real_parse = synthesis.parse_list_continuation

    def recording(text, *args):
        texts.append(text)
        return real_parse(text, *args)

    monkeypatch.setattr(synthesis, "parse_list_continuation", recording)
    base = tiny_base()

    def sampler():
        return synthesis.ListSampler(
            base, SEEDS, header_count=8, temperature=1.0, top_p=0.9, batch=3, max_chars=40, seed=4
        )

    prompts = [sampler().prompt() for _ in range(2)] + [sampler().prompt()]
    assert prompts[0] == prompts[1] == prompts[2]  # the order comes from the sampler's seed
    one = sampler()
    orders = {tuple(line[3:] for line in one.prompt().split("\n")[1:6]) for _ in range(6)}
    assert len(orders) > 1 and all(sorted(o) == sorted(SEEDS) for o in orders)
    first, again = sampler(), sampler()
    assert first.round(0) == again.round(0) and len(texts) == 6
    assert texts[:3] == texts[3:]  # same seed and round: the same continuations
    assert first.max_new_tokens <= 512 and first.wanted == 3


def test_judge_is_taught_only_synthetic_negatives_and_reports_them():
    from generation.translora.judging import train_judge

    base, task = tiny_base(), tiny_task()
    real_inputs = {ex.input for ex in task.train}

    class StubSampler:  # round 0: two real inputs, junk and a seed; later rounds: more junk
        def round(self, index):
            return ["apple0", "berry1", f"#{index}a", f"#{index}b", "cedar2"]

    params = TransferParams(disc_real=6, disc_steps=2, disc_batch=4, max_rounds=5)
    seen: list[tuple[float, str]] = []
    disc, report = train_judge(base, task, params, StubSampler(), ["cedar2"], "cpu",
                               lambda f, m: seen.append((f, m)), (0.1, 0.2, 0.3))  # fmt: skip
    taught = report["taught_no"]
    assert len(taught) == report["synthetic_inputs"] == 6 and not set(taught) & real_inputs
    assert report["real_inputs"] == 6 and report["negatives_rounds"] == 3
    assert report["train_examples"] + report["holdout_examples"] == 12
    assert 0.0 <= report["seeds_judged_real"] <= 1.0 and disc.adapter is not None
    assert seen[0] == (0.1, "generating 6 synthetic negatives for the discriminator")
    assert seen[-1][1].startswith("training discriminator 2/2") and seen[-1][0] == 0.3
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)


# -- 5. teacher-confidence filter (our addition) ----------------------------------------------
def test_threshold_is_margin_times_the_95th_percentile_with_a_floor():
    from generation.translora.confidence import FLOOR_NLL, threshold_from

    real = [0.01 * i for i in range(1, 21)]  # 0.01 .. 0.20; q95 = 19th of 20 = 0.19
    assert threshold_from(real, margin=2.0) == pytest.approx(0.38)
    assert threshold_from([*real, float("inf")], margin=2.0) == pytest.approx(0.38)
    assert threshold_from([0.001, 0.002], margin=2.0) == FLOOR_NLL  # near-certain teacher
    assert threshold_from([float("inf")], margin=2.0) == FLOOR_NLL  # nothing finite


def test_confident_filter_drops_what_the_judge_accepted_and_counts_it():
    judge, _ = _stub_judge({x: (0.9, 0.1) for x in "abcdef"} | {"b": (0.1, 0.9)})
    seen_by_teacher: list[list[str]] = []

    def confident(inputs):
        seen_by_teacher.append(list(inputs))
        return [x not in {"c", "e"} for x in inputs]

    kept, stats = rejection_sample(
        lambda i: [["a", "b", "c"], ["d", "e", "f"]][i], judge, target=3, max_rounds=5,
        seen=set(), confident=confident,
    )  # fmt: skip
    assert kept == ["a", "d", "f"]
    assert seen_by_teacher == [["a", "c"], ["d", "e", "f"]]  # only what the judge accepted
    assert (stats.rejected, stats.unconfident, stats.kept) == (1, 2, 3)
    assert stats.to_dict()["unconfident"] == 2


def test_teacher_filter_reuses_labels_and_keeps_answers_the_teacher_is_sure_of():
    from generation.forced_eval import score_answers
    from generation.translora.confidence import TeacherFilter

    base, task = tiny_base(), tiny_task(n_eval=8)
    inputs = [ex.input for ex in task.eval]
    filt = TeacherFilter(base, None, task, batch=3)
    nll = filt.score(inputs)
    # The labels are the teacher's greedy answers, and the NLL is that of those answers.
    assert [filt.labels[x] for x in inputs] == teacher_labels(base, None, task, inputs)
    forced = score_answers(base, None, task, [(x, filt.labels[x]) for x in inputs])
    assert nll == pytest.approx([sc.worst_nll for sc in forced])
    assert all(sc.worst_nll >= sc.nll for sc in forced if math.isfinite(sc.nll))
    assert all(math.isfinite(n) == bool(filt.labels[x]) for n, x in zip(nll, inputs, strict=True))
    report = filt.calibrate(inputs[:4], margin=1.0)
    assert report["max_nll"] == pytest.approx(filt.max_nll, abs=1e-4) and filt.max_nll >= 0.05
    keep = filt(inputs)
    assert keep == [n <= filt.max_nll for n in nll]
    assert len(filt.labels) == len(set(inputs))  # scored once each


def test_score_answers_marks_empty_answers_unusable():
    from generation.forced_eval import score_answers

    base, task = tiny_base(), tiny_task(n_eval=2)
    x = task.eval[0].input
    empty, some = score_answers(base, None, task, [(x, ""), (x, "ab")])
    assert tuple(empty) == (False, float("inf"), float("inf"))
    assert 0 < some.nll <= some.worst_nll
