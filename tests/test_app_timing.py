"""Speed figures are taken when the model makes each token, not when a reader takes it: a slow reader
(the UI) delays what it shows, never the tok/s. Prefill and decode are reported apart, in the columns
and in the JSON/CSV exports (with the prompt, the reference answer and the UTC time)."""

from __future__ import annotations

import csv
import io
import re
import threading
import time

import pytest
from tiny import tiny_llama

from app_backend.generation import GenStats, stream_generate_steps
from app_backend.results import compare_json, results_csv

STEP_S = 0.02  # each forward of the paced model sleeps this long on top of its own time
N = 12


@pytest.fixture
def paced_model():
    """A tiny LM whose every forward sleeps STEP_S and records when it ended (when its token is made)."""
    model = tiny_llama()
    model.generation_config.eos_token_id = None
    model.made, model.all_made = [], threading.Event()

    def hook(*_):
        time.sleep(STEP_S)
        model.made.append(time.perf_counter())
        if len(model.made) == N:
            model.all_made.set()

    model.register_forward_hook(hook)
    return model


def test_a_slow_reader_does_not_change_the_figures(paced_model):
    """The reader takes nothing until the model has made every token, then all at once: timed when read,
    tokens 2..N would take no time at all; timed when made, they take what the model took."""
    stats = [GenStats()]
    before = time.perf_counter()
    for i, _step in enumerate(
        stream_generate_steps(paced_model, [[5, 6, 7, 8]], N, stats=stats, stop_at_eos=False)
    ):
        if i == 0:
            assert paced_model.all_made.wait(60)
    made = paced_model.made
    st = stats[0]
    assert st.n_tokens == N and len(made) == N
    model_speed = (N - 1) / (made[-1] - made[0])  # the model's own decode speed, from inside its forward
    assert st.decode_tokens_per_s == pytest.approx(model_speed, rel=0.15)
    assert model_speed <= 1 / STEP_S  # sanity: no forward was faster than its sleep
    assert STEP_S <= st.prefill_s <= made[0] - before
    assert st.total_s == pytest.approx(made[-1] - made[0] + st.prefill_s, rel=0.1)


def test_gen_stats_lines_and_fields():
    st = GenStats()
    for at in (0.25, 0.35, 0.45):
        st.add(at)
    assert st.prefill_s == 0.25 and st.decode_tokens_per_s == pytest.approx(10.0)
    assert st.line() == "3 tokens · prefill 250 ms · decode 10.0 tok/s · total 0.45 s"
    assert st.fields() == {
        "new_tokens": 3,
        "prefill_s": 0.25,
        "decode_tokens_per_s": 10.0,
        "seconds": 0.45,
        "tokens_per_s": 6.67,
    }
    one = GenStats()
    one.add(0.1)
    assert one.decode_tokens_per_s is None and "decode – " in one.line()  # one token has no decode time


def test_exports_carry_prompt_answer_time_and_both_speeds():
    cols = [
        dict(name="a|b", text="It is 4, <b>", token_ids=[1, 2], settings={"seed": 0}, error=None, **st)
        for st in [GenStats(n_tokens=2, first_token_s=0.1, last_token_s=0.2).fields()]
    ]
    result = compare_json('What is 2+2, "really"?', cols, answer="4")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result["time_utc"])
    r = result["results"][0]
    assert r["prefill_s"] == 0.1 and r["decode_tokens_per_s"] == 10.0 and r["correct"] is True
    rows = list(csv.DictReader(io.StringIO(results_csv(result))))
    assert rows[0]["prompt"] == 'What is 2+2, "really"?' and rows[0]["reference_answer"] == "4"
    assert rows[0]["time_utc"] == result["time_utc"] and rows[0]["name"] == "a|b"
    assert float(rows[0]["prefill_s"]) == 0.1 and float(rows[0]["decode_tokens_per_s"]) == 10.0
