"""bench/reproduce_more_capacity.py and bench/capacity_data.py: the splits, the records guard, the gate and
the paired statistics (the training itself is tests/test_top_layers.py's)."""

import json
import math

import pytest

from bench import capacity_data as cd
from bench import reproduce_more_capacity as rmc


def test_the_facts_splits_are_seeded_and_the_paraphrases_held_out():
    a, b = cd.generate(80, seed=3), cd.generate(80, seed=3)
    assert a == b and a != cd.generate(80, seed=4)
    assert [len(a[s]) for s in ("train", "facts", "dev", "test")] == [240, 80, 80, 160]
    prompts = {s: {r["prompt"] for r in a[s]} for s in a}
    assert not prompts["dev"] & prompts["train"] and not prompts["test"] & prompts["train"]
    assert not prompts["dev"] & prompts["test"] and prompts["facts"] <= prompts["train"]
    for rel, (values, train_t, dev_t, test_t) in cd.RELATIONS.items():
        assert len(values) == len(set(values)) == 20 and len(train_t) == 3 and len(dev_t) == 1
        assert len(test_t) == 2 and not set(train_t) & set(dev_t + test_t) and rel
    with pytest.raises(ValueError, match="multiple of 4"):
        cd.generate(10, 0)


def test_every_held_out_question_asks_a_trained_fact():
    sp = cd.generate(40, seed=0)
    trained = {}
    for r in sp["train"]:
        for rel, (_, train_t, _, _) in cd.RELATIONS.items():
            for t in train_t:
                head, _, tail = t.partition("{x}")
                if r["module"] == rel and r["prompt"].startswith(head) and r["prompt"].endswith(tail):
                    trained[(rel, r["prompt"][len(head) : len(r["prompt"]) - len(tail)])] = r["answer"]
    assert len(trained) == 40
    for split in ("dev", "test"):
        for r in sp[split]:
            _, _, dev_t, test_t = cd.RELATIONS[r["module"]]
            for t in dev_t + test_t:
                head, _, tail = t.partition("{x}")
                if r["prompt"].startswith(head) and r["prompt"].endswith(tail):
                    person = r["prompt"][len(head) : len(r["prompt"]) - len(tail)]
                    if (r["module"], person) in trained:
                        assert trained[(r["module"], person)] == r["answer"]
                        break
            else:
                pytest.fail(f"{r} asks no trained fact")


def test_the_digit_cipher_rewrites_only_answers():
    s = rmc.SETTINGS["pilot-cipher"]
    plain = rmc.load_splits({**s, "testbed": "mathematics"})
    ciph = rmc.load_splits(s)
    assert [r["prompt"] for r in plain["train"]] == [r["prompt"] for r in ciph["train"]]
    changed = [
        (p["answer"], c["answer"]) for p, c in zip(plain["train"], ciph["train"], strict=True) if p != c
    ]
    assert changed and all(len(x) == len(y) for x, y in changed)
    table = {}
    for x, y in changed:
        for u, v in zip(x, y, strict=True):
            assert table.setdefault(u, v) == v  # one fixed substitution
    assert {u for u, v in table.items() if u != v} == set("0123456789")  # of the digits only


def test_a_rerun_with_other_settings_or_weights_is_refused(tmp_path):
    s = {**rmc.SETTINGS["quick"], "data": "abc", "weights": {"source": "gguf", "sha256": "1" * 64}}
    rmc.Records(tmp_path / "rec", tmp_path / "work", s)
    rmc.Records(tmp_path / "rec", tmp_path / "work", s)  # the same: resumes
    with pytest.raises(SystemExit, match=r"other settings \(weights differ\)"):
        rmc.Records(tmp_path / "rec", tmp_path / "work", {**s, "weights": {"source": "hub", "revision": "x"}})
    with pytest.raises(SystemExit, match=r"other settings \(steps differ\)"):
        rmc.Records(tmp_path / "rec", tmp_path / "work", {**s, "steps": 1})
    assert json.loads((tmp_path / "rec" / "settings.json").read_text())["weights"]["sha256"] == "1" * 64


def test_paired_statistics():
    a, b = "0000011111" * 10, "0000111111" * 10  # b right on 10 more of 100 questions, never worse
    z = rmc.paired_z(a, b)
    assert z["diff"] == pytest.approx(0.1) and z["n"] == 100
    assert z["se"] == pytest.approx(math.sqrt(0.1 * 0.9 * 100 / 99 / 100))
    mc = rmc.mcnemar(a, b)
    assert (mc["only_a"], mc["only_b"]) == (0, 10) and mc["p"] == pytest.approx(2 / 2**10)
    assert rmc.mcnemar(a, a)["p"] == 1.0
    assert rmc.mcnemar("10" * 5, "01" * 5)["p"] == pytest.approx(1.0)  # 5 against 5
    bs = rmc.bootstrap([int(x) for x in a], [int(x) for x in b])
    assert bs["diff"] == pytest.approx(0.1) and 0.03 < bs["ci95"][0] < 0.1 < bs["ci95"][1] < 0.17
    assert bs["p"] < 0.01
    same = rmc.bootstrap([int(x) for x in a], [int(x) for x in a[::-1]])
    assert same["diff"] == 0 and same["p"] == 1.0


def _run(method, seed, hits_test, hits_dev=None, params=None, lr=0.01):
    return {
        "key": f"{method}|seed{seed}",
        "method": method,
        "seed": seed,
        "lr": lr,
        "params": params,
        "test": {"em": hits_test.count("1") / len(hits_test), "hits": hits_test, "wrong": {}},
        "dev": {
            "em": (hits_dev or hits_test).count("1") / len(hits_dev or hits_test),
            "hits": hits_dev or hits_test,
        },
        "facts": {"em": 1.0, "hits": "1"},
        "cpu_s": 1.0,
        "wall_s": 2.0,
    }


def test_the_gate_the_pairing_and_the_answer():
    rows = {}
    n = 200
    patterns = {  # test hits per method: LoRA grows with rank up to 16, MoRe k=4 r=1 reaches LoRA r=16
        "LoRA r=1": "1" * 20 + "0" * 180,
        "LoRA r=4": "1" * 60 + "0" * 140,
        "LoRA r=16": "1" * 120 + "0" * 80,
        "LoRA r=40": "1" * 121 + "0" * 79,
        "MoRe k=4 r=1": "1" * 118 + "0" * 82,
    }
    params = {"LoRA r=1": 100, "LoRA r=4": 400, "LoRA r=16": 1600, "LoRA r=40": 4000, "MoRe k=4 r=1": 400}
    for m, h in patterns.items():
        rows[f"{m}|lr"] = {"lr": 0.01, "edge": None, "trials": {}}
        for seed in (0, 1):
            rows[f"{m}|seed{seed}"] = _run(m, seed, h, params=params[m])
    s = {**rmc.SETTINGS["full"], "methods": list(patterns), "seeds": [0, 1]}
    g = rmc.gate(rows)
    assert g["passed"] and g["diff"] == pytest.approx(0.5) and g["z"] > 10 and g["n"] == n
    tied = {**rows, "LoRA r=16|seed0": _run("LoRA r=16", 0, "1" * 24 + "0" * 176, params=1600)}
    g = rmc.gate(tied)
    assert not g["passed"] and 0 < g["z"] < 3  # 4 questions apart: under 3 standard errors
    assert rmc.gate({k: v for k, v in rows.items() if k != "LoRA r=1|seed0"}) is None
    stats = rmc.method_stats(rows, s)
    tests = rmc.paired_tests(stats, rows, s)
    by = {(t["more"], t["factor"]): t for t in tests}
    assert by[("MoRe k=4 r=1", 1)]["lora"] == "LoRA r=4" and by[("MoRe k=4 r=1", 4)]["lora"] == "LoRA r=16"
    assert by[("MoRe k=4 r=1", 10)]["lora"] == "LoRA r=40" and by[("MoRe k=4 r=1", 10)]["ratio"] == 10
    assert by[("MoRe k=4 r=1", 1)]["bootstrap"]["ci95"][0] > 0  # ahead of LoRA at equal parameters
    pl = rmc.plateau(stats, rows, s)
    assert pl["lora_best"] == "LoRA r=40" and pl["lora_plateau_from"] == "LoRA r=16"
    assert pl["more_reaching"] == "MoRe k=4 r=1" and pl["fraction_of_plateau_rank"] == pytest.approx(0.25)
    text = rmc.answer_paragraph(stats, pl, tests, None)
    assert "MoRe k=4 r=1 (400 parameters, 0.590): 25% of the parameters of LoRA" in text
    assert "may still be rising" not in text  # LoRA r=40 is no better than r=16: a plateau inside the grid
    rising = {**stats, "LoRA r=40": {**stats["LoRA r=40"], "test_mean": 0.9}}
    rows40 = {**rows, **{f"LoRA r=40|seed{x}": _run("LoRA r=40", x, "1" * 180 + "0" * 20) for x in (0, 1)}}
    pl = rmc.plateau(rising, rows40, s)
    assert pl["lora_plateau_from"] == "LoRA r=40"
    assert "may still be rising" in rmc.answer_paragraph(rising, pl, tests, None)


def test_the_pilots_report_shows_killed_trials_and_keeps_the_reading(tmp_path):
    import optuna

    runs, out = tmp_path / "more-capacity-runs", tmp_path / "out"
    weights = {"source": "gguf", "sha256": "1" * 64}
    done = rmc.Records(
        runs / "pilot-facts", tmp_path / "w", {**rmc.SETTINGS["pilot-facts"], "weights": weights}
    )
    done.add({"key": "base", "dev": {"em": 0.0, "hits": "0" * 200}})
    done.add({"key": "heuristic", "dev": {"em": 0.085}})
    for m, hits in (("LoRA r=1", "1" * 20 + "0" * 180), ("LoRA r=16", "1" * 90 + "0" * 110)):
        trial = {"state": "COMPLETE", "steps": 600, "dev_em": hits.count("1") / 200}
        done.add({"key": f"{m}|lr", "lr": 0.01, "edge": None, "trials": {"1e-02": trial}})
        done.add(_run(m, 0, hits, params=10))
    probe = rmc.Records(runs / "pilot-facts-probe", tmp_path / "w", rmc.SETTINGS["pilot-facts-probe"])
    for row in done.rows().values():
        probe.add(row)  # the same figures at one lr: a probe, not the gate
    killed = rmc.Records(
        runs / "pilot-math", tmp_path / "w", {**rmc.SETTINGS["pilot-math"], "weights": weights}
    )
    study = optuna.create_study(study_name="LoRA r=1", storage=killed.storage(), direction="maximize")
    trial = study.ask({"lr": optuna.distributions.CategoricalDistribution([0.003, 0.01, 0.03])})
    trial.report(0.15555, 100)  # then the process was killed: the trial stays RUNNING in the journal
    (out / "more-capacity-pilots.md").parent.mkdir(parents=True)
    (out / "more-capacity-pilots.md").write_text(f"old table\n{rmc.READING}\nWhat the pilots say.\n")
    rmc.write_report(killed, rmc.SETTINGS["pilot-math"], "pilot-math", out, "")
    md = (out / "more-capacity-pilots.md").read_text()
    facts_row = next(x for x in md.splitlines() if x.startswith("| pilot-facts |"))
    assert (
        "0.100 (lr 0.01) | 0.450 (lr 0.01) | +0.350 (0.034), 10.4 | **passed** | 1.000 / 1.000 |" in facts_row
    )
    probe_row = next(x for x in md.splitlines() if x.startswith("| pilot-facts-probe |"))
    assert "| +0.350 (0.034), 10.4 | not the gate (one lr): z >= 3 |" in probe_row
    math_row = next(x for x in md.splitlines() if x.startswith("| pilot-math |"))
    assert (
        f"at step 100 of 300 (lr {trial.params['lr']:g}, running) | not run | - | not reached | - |"
        in math_row
    )
    assert (
        "0.156" in math_row
        and "old table" not in md
        and md.endswith(f"{rmc.READING}\nWhat the pilots say.\n")
    )
    js = json.loads((out / "more-capacity-pilots.json").read_text())
    assert js["pilot-math"]["journal"]["LoRA r=1"][0]["rungs"] == {"100": 0.15555}
    assert js["pilot-facts"]["gate"]["passed"] and js["pilot-facts"]["dev_rows"] == 200
    assert js["pilot-facts-probe"]["not_the_gate"] and not js["pilot-facts"]["not_the_gate"]


def test_a_choice_at_the_grids_edge_is_checked_one_point_past_it():
    """The next 1-3-10 grid point past either edge; the report says whether the edge bound the choice
    (the point past it better on dev), and a check not yet run says so instead of guessing."""
    assert [rmc.beyond(0.03, "highest"), rmc.beyond(0.01, "highest")] == [0.1, 0.03]
    assert [rmc.beyond(1e-3, "lowest"), rmc.beyond(3e-3, "lowest")] == [3e-4, 1e-3]
    rows = {
        "A|lr": {"lr": 0.03, "edge": "highest", "trials": {}},
        "A|seed0": _run("A", 0, "1" * 50 + "0" * 150),
        "A|edge-lr=1e-01|seed0": _run("A", 0, "1" * 60 + "0" * 140),
        "B|lr": {"lr": 0.001, "edge": "lowest", "trials": {}},
        "B|seed0": _run("B", 0, "1" * 50 + "0" * 150),
        "B|edge-lr=3e-04|seed0": _run("B", 0, "1" * 40 + "0" * 160),
        "C|lr": {"lr": 0.03, "edge": "highest", "trials": {}},
        "C|seed0": _run("C", 0, "1" * 50 + "0" * 150),
        "D|lr": {"lr": 0.01, "edge": None, "trials": {}},
        "D|seed0": _run("D", 0, "1" * 50 + "0" * 150),
    }
    checks = {c["method"]: c for c in rmc.edge_checks(rows, {"methods": ["A", "B", "C", "D"]})}
    assert set(checks) == {"A", "B", "C"}  # D's lr is inside the grid
    assert checks["A"]["past_lr"] == 0.1 and checks["A"]["bound"] is True
    assert checks["B"]["past_lr"] == 3e-4 and checks["B"]["bound"] is False
    assert checks["C"]["past_dev_em"] is None and checks["C"]["bound"] is None
    table = "\n".join(rmc.edge_lines(list(checks.values())))
    assert "| A | 0.03 |" in table and "| yes |" in table and "| no |" in table and "not run yet" in table
