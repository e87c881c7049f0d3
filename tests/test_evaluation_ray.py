"""``evaluate --ray``: a local Ray run gives the serial run's rows; a worker killed mid-image is
replaced and the image retried (every index exactly once); an interrupted run resumed, on Ray or
serially, equals an uninterrupted one; retries are bounded. One local Ray (2 CPUs) for the module,
8 shapes test images, Occlusion at a coarse stride (deterministic)."""
from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from explainers import evaluation as E
from explainers.errors import ExplainerError

ray = pytest.importorskip("ray")

N = 8
METHOD, PARAMS = "occlusion", {"window": 16, "stride": 16}
METRICS = ["pointing", "deletion", "insertion"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    from explainers.classifiers.embedded import EMBEDDED

    if not EMBEDDED["shapes-resnet"].weights.exists():
        pytest.skip("shapes-resnet weights not trained yet")

    from explainers.classifiers import load_classifier
    from explainers.data import load_dataset
    from explainers.evaluation_ray import connect

    clf = load_classifier("shapes-resnet", device="cpu")
    ds = load_dataset("shapes", "test", limit=N)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' share: the same float sums, so the same values
    try:
        serial = E.evaluate(clf, ds, METHOD, METRICS, tmp_path_factory.mktemp("serial") / "s.jsonl", PARAMS)
    finally:
        torch.set_num_threads(threads)
    started = connect(num_cpus=2)
    yield clf, ds, serial
    if started:
        ray.shutdown()


def _run(setup, out, **kw):
    from explainers.evaluation_ray import evaluate_ray

    clf, ds, _ = setup
    return evaluate_ray(clf, ds, METHOD, METRICS, out, PARAMS, model="shapes-resnet", device="cpu", **kw)


def _same(a, b):
    assert [r["index"] for r in a] == [r["index"] for r in b]
    for x, y in zip(a, b):
        assert {k for k in x if k != "seconds"} == {k for k in y if k != "seconds"}
        for k in x:
            if k != "seconds":
                assert x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-9), (x["index"], k)


def _indices_on_disk(path):
    lines = [json.loads(l) for l in path.read_text().splitlines()]
    assert "header" in lines[0] and all("index" in l for l in lines[1:])
    return [l["index"] for l in lines[1:]]


def test_a_ray_run_gives_the_serial_rows(setup, tmp_path):
    out = tmp_path / "r.jsonl"
    seen = []
    rows = _run(setup, out, workers=2, progress=lambda d, t, m="": seen.append((d, t)),
                on_row=lambda actors, row, k: seen.append(("worker", k)))
    _same(rows, setup[2])
    assert sorted(_indices_on_disk(out)) == list(range(N))
    counts = [x for x in seen if x[0] != "worker"]
    assert counts[0] == (0, N) and counts[-1] == (N, N) and [d for d, _ in counts] == list(range(N + 1))
    assert {x[1] for x in seen if x[0] == "worker"} == {0, 1}  # both workers took images
    computed = []  # nothing left: every row read back from the file, none computed again
    assert _run(setup, out, on_row=lambda actors, row, k: computed.append(row["index"])) == rows
    assert computed == []


def test_killed_workers_are_replaced_and_their_images_retried(setup, tmp_path):
    marker = tmp_path / "died"

    class DieOnce:  # defined here, so pickled by value; unpickled in a worker it kills it mid-task once
        def __init__(self, path):
            self.path = str(path)

        def __setstate__(self, state):
            self.__dict__.update(state)
            if not os.path.exists(self.path):
                open(self.path, "w").close()
                os._exit(1)

    clf, ds, serial = setup

    class Data:  # the shapes images, index 5 carrying the killer
        classes, name, split = ds.classes, ds.name, ds.split

        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            item = ds[i]
            if i == 5:
                item = replace(item, extra=dict(item.extra, die=DieOnce(marker)))
            return item

    killed = []

    def kill_the_other(actors, row, k):  # and the other worker from the driver, while it works
        if not killed:
            killed.append(1 - k)
            ray.kill(actors[1 - k], no_restart=False)

    from explainers.evaluation_ray import evaluate_ray

    out = tmp_path / "r.jsonl"
    rows = evaluate_ray(clf, Data(), METHOD, METRICS, out, PARAMS, model="shapes-resnet", device="cpu", workers=2,
                        on_row=kill_the_other)
    assert marker.exists() and killed
    assert sorted(_indices_on_disk(out)) == list(range(N))  # each exactly once
    _same(rows, serial)


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(setup, tmp_path):
    out = tmp_path / "r.jsonl"

    def stop_after_three(actors, row, k):
        if len(_indices_on_disk(out)) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(setup, out, workers=2, on_row=stop_after_three)
    assert len(_indices_on_disk(out)) == 3
    clf, ds, serial = setup
    E.evaluate(clf, ds, METHOD, METRICS, out, PARAMS, limit=5)  # a serial stretch in between
    assert len(_indices_on_disk(out)) == 5
    rows = _run(setup, out, workers=2)
    assert sorted(_indices_on_disk(out)) == list(range(N))
    _same(rows, serial)


def test_retries_are_bounded(setup, tmp_path, monkeypatch):
    from explainers import evaluation_ray as R

    monkeypatch.setattr(R, "MAX_RESTARTS", 1)  # each restart loads the classifier again: keep the test short
    monkeypatch.setattr(R, "MAX_TASK_RETRIES", 1)
    clf, ds, _ = setup

    deaths = tmp_path / "deaths"

    class DieAlways:  # each unpickling in a worker leaves a line in ``deaths``, then kills the worker
        def __init__(self, path):
            self.path = str(path)

        def __setstate__(self, state):
            with open(state["path"], "a") as f:
                f.write("died\n")
            os._exit(1)

    class Data:
        classes, name, split = ds.classes, ds.name, ds.split

        def __len__(self):
            return 3

        def __getitem__(self, i):
            item = ds[i]
            if i == 1:
                item = replace(item, extra=dict(item.extra, die=DieAlways(deaths)))
            return item

    from explainers.evaluation_ray import evaluate_ray

    out = tmp_path / "r.jsonl"
    with pytest.raises(ExplainerError, match="worker died"):
        evaluate_ray(clf, Data(), METHOD, METRICS, out, PARAMS, model="shapes-resnet", device="cpu", workers=1)
    # image 1 was tried once and retried MAX_TASK_RETRIES = 1 times, never more (an unbounded retry
    # loop would hang or write more lines); rows on disk are each written once
    assert deaths.read_text().count("died") == 2
    assert len(set(_indices_on_disk(out))) == len(_indices_on_disk(out))


def test_the_command_line_runs_on_ray(setup, tmp_path, capsys):
    from explainers.__main__ import build_parser, main

    p = build_parser()
    base = ["evaluate", "--model", "m", "--method", "x", "--data", "d", "--metric", "pointing"]
    assert p.parse_args(base).ray is None and p.parse_args(base + ["--ray"]).ray == ""
    assert p.parse_args(base + ["--ray", "auto", "--ray-cpus-per-worker", "2"]).ray_cpus_per_worker == 2
    out = tmp_path / "r.jsonl"
    code = main(["evaluate", "--model", "shapes-resnet", "--device", "cpu", "--method", METHOD, "--data", "shapes",
                 "--metric", ",".join(METRICS), "--limit", "3", "--set", "window=16", "--set", "stride=16",
                 "--out", str(out), "--json", "--ray", "--ray-workers", "1"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 3
    rows = E.read_results(out)[1]
    _same([rows[i] for i in sorted(rows)], setup[2][:3])


def test_a_worker_larger_than_the_cluster_is_refused(setup, tmp_path):
    with pytest.raises(ExplainerError, match="cluster has 2 CPUs"):
        _run(setup, tmp_path / "r.jsonl", cpus_per_worker=3)
