"""``reco bench als`` on a tiny matrix: the report's shape and consistency (never its timings)."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from Prod.bench.als import (
    _with_peak,
    bench_als,
    bench_data,
    sample_eval_users,
    synthetic_interactions,
)
from Prod.cli.main import app


def test_synthetic_interactions_are_long_tailed_and_seeded():
    frame = synthetic_interactions(20_000, seed=3)
    assert len(frame) == 20_000
    assert frame.equals(synthetic_interactions(20_000, seed=3))
    per_item = frame["item_id"].value_counts()
    # Zipf-like popularity: the top 1% of items get far more than 1% of the events
    top = per_item.iloc[: max(1, len(per_item) // 100)].sum()
    assert top / len(frame) > 0.05


def test_bench_report_is_consistent():
    before = torch.get_num_threads()
    result = bench_als(n_interactions=8_000, factors=8, iterations=2, threads=1, repeats=2)
    data, source = bench_data(8_000)
    assert source == "synthetic" and result["data"] == "synthetic"
    assert result["interactions"] == data.train._nnz()
    assert len(result["torch_runs_s_per_iter"]) == len(result["implicit_runs_s_per_iter"]) == 2
    assert min(result["torch_runs_s_per_iter"]) <= result["torch_s_per_iter"]
    assert result["torch_s_per_iter"] <= max(result["torch_runs_s_per_iter"])
    assert result["ratio"] == round(result["torch_s_per_iter"] / result["implicit_s_per_iter"], 3)
    # on CPU the default (fused) kernel is timed beside the batched one, in the same rounds
    assert result["kernel"] == "fused" and len(result["batched_runs_s_per_iter"]) == 2
    assert result["batched_ratio"] == round(
        result["batched_s_per_iter"] / result["implicit_s_per_iter"], 3
    )
    for name in ("torch", "batched", "implicit"):
        assert 0.0 < result[f"{name}_ndcg@10"] <= 1.0
    # peak memory growth of each fit (Linux; tiny fits may reuse memory already mapped)
    assert all(result[f"{name}_peak_mb"] >= 0 for name in ("torch", "batched", "implicit"))
    # the two kernels solve the same equations: the same quality up to float rounding
    assert abs(result["torch_ndcg@10"] - result["batched_ndcg@10"]) < 0.01
    assert torch.get_num_threads() == 1  # the bench sets the threads it was asked for
    torch.set_num_threads(before)


def test_bench_command_prints_one_json_object_last():
    before = torch.get_num_threads()
    out = CliRunner().invoke(
        app,
        [
            "bench",
            "als",
            "--interactions",
            "5000",
            "--factors",
            "4",
            "--iterations",
            "1",
            "--threads",
            "1",
            "--repeats",
            "1",
            "--kernel",
            "batched",
            "--json",
        ],
    )
    torch.set_num_threads(before)
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert result["factors"] == 4 and result["repeats"] == 1 and result["threads"] == 1
    assert result["ratio"] > 0 and result["cpu_ratio"] > 0
    assert result["kernel"] == "batched" and "batched_ratio" not in result


def test_bench_command_refuses_an_unknown_kernel():
    out = CliRunner().invoke(app, ["bench", "als", "--interactions", "5000", "--kernel", "fast"])
    assert out.exit_code == 1
    assert "unknown ALS kernel 'fast'" in out.output and "Traceback" not in out.output


def test_eval_user_sample_keeps_users_and_their_relevant_items_aligned():
    data, _ = bench_data(8_000)
    sample = sample_eval_users(data, 25, seed=1)
    assert sample.users.numel() == len(sample.relevant) == 25
    position = {int(u): i for i, u in enumerate(data.users)}
    for user, relevant in zip(sample.users.tolist(), sample.relevant, strict=True):
        assert relevant == data.relevant[position[user]]
    assert sample_eval_users(data, 10**9) is data


def test_peak_memory_growth_counts_memory_touched_inside():
    def touch_64_mb():
        block = torch.ones(16 * 2**20)  # 64 MB of float32, written
        return float(block[-1])

    result, peak = _with_peak(touch_64_mb)
    assert result == 1.0 and 60 <= peak <= 200  # the block, plus allocator slack
    _, idle = _with_peak(lambda: None)
    assert idle < 16
