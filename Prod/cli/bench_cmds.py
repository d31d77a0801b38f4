"""``reco bench ...``: registers the benchmarks of :mod:`Prod.bench` (parse options, run one
function, print its report): faults, serving, ingest, embed, als, spark, publish, chat, cold."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from Prod.cli.output import JsonOption, console, dict_table, emit, err_console, run_reporting_errors
from Prod.cli.servers import with_servers

_THREADS_HELP = "torch CPU threads (default: torch's own choice)."


def _say(message: str) -> None:
    err_console.print(f"[dim]{message}[/]")


_COLUMNS = {  # report key -> header, short so that the table fits 80 columns
    "fault": "fault",
    "requests": "requests",
    "non_2xx": "non-2xx",
    "status_503": "503",
    "server_errors": "5xx*",
    "transport_errors": "no ans",
    "acknowledged": "acked",
    "acknowledged_missing": "lost",
    "down_s": "down s",
    "recovery_s": "recov s",
}
_LEGEND = (
    "5xx*: server errors other than 503; no ans: no HTTP answer; acked: interactions answered "
    "2xx; lost: acked but not in Postgres; recov s: from the store answering again (trainer: "
    "from the kill) until every endpoint answers 2xx (trainer: a new run accepted and served)"
)


def _render_faults(result: dict) -> None:
    from rich import box
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title=f"fault injection (setup {result['setup_s']} s, total {result['total_s']} s, "
        f"load {result['load_avg_1m']})",
    )
    for key, header in _COLUMNS.items():
        table.add_column(header, justify="left" if key == "fault" else "right", no_wrap=True)
    for row in result["faults"]:
        table.add_row(
            *(
                "[red]none[/]"
                if key == "recovery_s" and not row["recovered"]
                else "-"
                if row[key] is None
                else str(row[key])
                for key in _COLUMNS
            )
        )
    console.print(table)
    console.print(f"  {_LEGEND}", style="dim")
    for row in result["faults"]:
        failed = {e: c["non_2xx"] for e, c in row["by_endpoint"].items() if c["non_2xx"]}
        console.print(f"  {row['fault']}: non-2xx by endpoint {failed or 'none'}; {row['detail']}")
    for name, met in result["targets"].items():
        if name != "all_met":
            console.print(f"  {'[green]met[/]' if met else '[red]missed[/]'}  {name}")


def _render_serving(result: dict) -> None:
    console.print(dict_table(result, title="serving benchmark"))
    targets = {
        "p50 <= 1.5 ms": result["p50_ms"] <= 1.5,
        "p99 <= 10 ms": result["p99_ms"] <= 10,
        ">= 1000 req/s at c32": result["rps_c32"] >= 1000,
        "no errors": result["errors"] == 0,
        ">= 3x naive": (result["speedup"] or 0) >= 3,
    }
    for name, met in targets.items():
        console.print(f"  {'[green]met[/]' if met else '[red]missed[/]'}  {name}")


def _render_ingest(result: dict) -> None:
    console.print(
        dict_table(
            {k: v for k, v in result.items() if k not in ("postgres", "chroma")},
            title="bench ingest",
        )
    )
    console.print(dict_table(result["postgres"], title="postgres"))
    console.print(dict_table(result["chroma"], title="chroma (MiniLM)"))


def _render_embed_bench(result: dict) -> None:
    from rich.table import Table

    table = Table(
        title=f"embedding {result['products']} products ({result['mean_tokens']} tokens on average)"
    )
    columns = (
        "backend",
        "device",
        "threads",
        "products_per_s",
        "products_per_cpu_s",
        "cosine_to_fp32_mean",
        "cosine_to_fp32_min",
    )
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in result["backends"]:
        table.add_row(*(str(row[column]) for column in columns))
    console.print(table)
    load = f"{result['load_avg_1m']} -> {result['load_avg_1m_after']}"
    console.print(
        f"median of {result['repeats']} run(s); {result['cpus']} CPUs, load {load}", style="dim"
    )


def _render_publish(result: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(
        dict_table(
            {
                "time to switch s": result["to_switch_s"],
                "stages s": result["stages_s"],
                "items hash MB (Redis)": result["items_hash_mb"],
                "engine load from Redis s": result["engine_load_redis_s"],
                "engine load from Chroma s": result["engine_load_chroma_s"] or "-",
                "old design: time to switch s": result["old_design_to_switch_s"],
                "Chroma state after": result["item_index_state"],
                "load average": f"{result['load_average_before']} -> "
                f"{result['load_average_after']}",
            },
            title=f"publish {result['items']:,} items x {result['factors']}, "
            f"{result['users']:,} users",
        )
    )
    table = Table(title=f"Chroma fill after the switch (batch {result['chroma_batch']})")
    for column in ("writers", "fill s", "items/s", "Chroma CPU s", "CPU ms/item", "writer CPU s"):
        table.add_column(column, justify="right")
    for fill in result["chroma_fills"]:
        table.add_row(
            *(
                str(fill[key] if fill[key] is not None else "-")
                for key in (
                    "writers",
                    "fill_s",
                    "items_per_s",
                    "chroma_cpu_s",
                    "chroma_cpu_ms_per_item",
                    "writer_cpu_s",
                )
            )
        )
    console.print(table)


def _als_table(result: dict[str, Any]):
    from rich.table import Table

    table = Table(
        title=f"ALS speed: {result['interactions']:,} training non-zeros, "
        f"{result['users']:,} users x {result['items']:,} items"
    )
    columns = ("", "s/iter (median)", "CPU s/iter", "nDCG@10", "peak MB", "runs s/iter")
    for column in columns:
        table.add_column(column, justify="right" if column else "left")
    labels = {"torch": f"torch {result['kernel']}", "batched": "torch batched"}
    names = [n for n in ("torch", "batched", "implicit") if f"{n}_s_per_iter" in result]
    for name in names:
        table.add_row(
            labels.get(name, name),
            f"{result[f'{name}_s_per_iter']:.3f}",
            f"{result[f'{name}_cpu_s_per_iter']:.3f}",
            f"{result[f'{name}_ndcg@10']:.4f}",
            "-" if result[f"{name}_peak_mb"] is None else f"{result[f'{name}_peak_mb']:,.0f}",
            ", ".join(f"{t:.3f}" for t in result[f"{name}_runs_s_per_iter"]),
        )
    for name, prefix in (("torch", ""), ("batched", "batched_")):
        if name in names:
            table.add_row(
                f"{labels[name].split()[-1]} / implicit",
                f"{result[f'{prefix}ratio']:.3f}",
                f"{result[f'{prefix}cpu_ratio']:.3f}",
                f"{result[f'{prefix}ndcg_ratio']}",
                "",
                "",
            )
    return table


def _render_chat(result: dict) -> None:
    console.print(dict_table(result["ranking"], title="embed + retrieve + rerank + blend (ms)"))
    console.print(dict_table(result["first_token"], title="time to first streamed token (ms)"))
    console.print(
        dict_table(
            {k: v for k, v in result.items() if k not in ("ranking", "first_token")}, title="setup"
        )
    )


def _render_cold(result: dict) -> None:
    for report in result["datasets"]:
        console.print(dict_table(report, title=f"cold items: {report['dataset']}"))


def _render_profile(result: dict) -> None:
    examples = result.get("llm_examples", [])
    flat = {k: v for k, v in result.items() if k != "llm_examples"}
    console.print(dict_table(flat, title="preference summaries"))
    for example in examples:
        console.print(f"  {example['user_id']} ({example['by']}): {example['summary']}")


def register(app: typer.Typer, bench_app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add every ``reco bench`` command."""

    @bench_app.command("faults")
    def bench_faults(
        fault: list[str] = typer.Option(
            None,
            "--fault",
            help="Fault to inject (repeatable): postgres, redis, chroma, "
            "trainer; default all four.",
        ),
        seconds: float = typer.Option(8.0, min=1, help="Seconds a store stays down under load."),
        concurrency: int = typer.Option(4, min=1, max=64, help="Client threads."),
        rate: float = typer.Option(40.0, min=1, help="Requests/s over all clients, at most."),
        max_recovery: float = typer.Option(60.0, min=5, help="Seconds to wait for recovery."),
        as_json: bool = JsonOption,
    ) -> None:
        """Kill each store under load (and a trainer mid-publish) on temporary loopback servers;
        count non-2xx, server errors, acknowledged writes missing and recovery time."""
        from Prod.bench.faults import FAULTS, FaultsConfig, run_faults_bench

        cfg = FaultsConfig(
            faults=tuple(fault or FAULTS),
            seconds=seconds,
            concurrency=concurrency,
            rate=rate,
            max_recovery_s=max_recovery,
        )

        result = run_reporting_errors(lambda: run_faults_bench(cfg, _say))
        emit(result, as_json, _render_faults)
        if not result["targets"]["all_met"]:
            raise typer.Exit(1)

    @bench_app.command("serving")
    def bench_serving(
        items: int = typer.Option(20_000, min=100, help="Items in the synthetic model."),
        factors: int = typer.Option(64, min=2, max=512, help="Latent factors."),
        users: int = typer.Option(2_000, min=10, help="Users (each with seen items)."),
        seen: int = typer.Option(20, min=0, help="Seen items per user (removed from results)."),
        requests: int = typer.Option(3_000, min=10, help="Requests per load phase."),
        concurrency: int = typer.Option(32, min=1, help="Connections in the throughput phase."),
        naive_requests: int = typer.Option(500, min=10, help="Requests to the naive design."),
        max_seconds: float = typer.Option(60.0, min=1, help="Time limit of each load phase."),
        workers: int = typer.Option(1, min=1, max=8, help="Engine worker processes."),
        ann_min_items: int = typer.Option(
            None, min=0, help="The engine's ANN_MIN_ITEMS (default: its setting; 0 = exact)."
        ),
        recall_users: int = typer.Option(300, min=1, help="Users whose recall@k is measured."),
        naive: bool = typer.Option(True, help="Also load-test the naive design."),
        as_json: bool = JsonOption,
    ) -> None:
        """Start temporary stores, publish a synthetic model, load-test engine and naive design
        (recall@k of the served top-k against the exact one; ANN index build time and size)."""
        from Prod.bench.serving import BenchConfig, run_serving_bench

        cfg = BenchConfig(
            items=items,
            factors=factors,
            users=users,
            seen_per_user=seen,
            requests=requests,
            concurrency=concurrency,
            naive_requests=naive_requests,
            max_seconds=max_seconds,
            workers=workers,
            ann_min_items=ann_min_items,
            recall_users=recall_users,
            naive=naive,
        )

        result = run_reporting_errors(lambda: run_serving_bench(cfg, _say))
        emit(result, as_json, _render_serving)

    @bench_app.command("ingest")
    def bench_ingest(
        interactions: int = typer.Option(
            1_000_000, "--interactions", min=1, help="Interactions in the generated dataset."
        ),
        products: int = typer.Option(
            2000, "--products", min=1, help="Products in the generated dataset (embedded)."
        ),
        repeats: int = typer.Option(3, "--repeats", min=1, help="Postgres loads (median)."),
        batch_size: int = typer.Option(
            256, "--batch-size", min=1, help="Texts embedded per batch."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Ingest throughput: fresh load into Postgres and MiniLM embedding into Chroma."""
        from Prod.bench.ingest import run_ingest_bench

        result = run_reporting_errors(
            lambda: with_servers(run_ingest_bench, interactions, products, repeats, batch_size)
        )
        emit(result, as_json, _render_ingest)

    @bench_app.command("embed")
    def bench_embed(
        products: int = typer.Option(500, "--products", min=1, help="Products embedded per run."),
        backends: list[str] = typer.Option(
            ["torch", "onnx", "onnx-int8"], "--backend", help="CPU backends to compare (repeat)."
        ),
        repeats: int = typer.Option(3, "--repeats", min=1, help="Runs per backend (median)."),
        dataset: Path = typer.Option(
            None,
            "--dataset",
            help="Canonical dataset whose products to embed (default: a "
            "freshly generated catalogue).",
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Products/s, products per CPU-second and cosine to fp32 of each embedding backend on
        the same texts (plus torch on the GPU when there is one). No servers needed."""
        from Prod.bench.ingest import run_embed_bench

        result = run_reporting_errors(lambda: run_embed_bench(products, backends, repeats, dataset))
        emit(result, as_json, _render_embed_bench)

    @bench_app.command("als")
    def bench_als(
        interactions: int = typer.Option(
            1_000_000,
            "--interactions",
            min=1000,
            help="Size of the synthetic matrix (no --dataset).",
        ),
        dataset: Path | None = typer.Option(
            None, "--dataset", help="Canonical dataset folder instead (e.g. from reco generate)."
        ),
        factors: int = typer.Option(64, "--factors", min=1, help="Latent factors of both ALS."),
        iterations: int = typer.Option(5, "--iterations", min=1, help="ALS iterations per fit."),
        threads: int = typer.Option(
            2, "--threads", min=1, help="Threads for both implementations."
        ),
        repeats: int = typer.Option(
            3, "--repeats", min=1, help="Timed runs each; medians reported."
        ),
        seed: int = typer.Option(0, "--seed", help="Split (and synthetic data) seed."),
        device: str | None = typer.Option(None, "--device", help="torch device (cpu, cuda)."),
        eval_users: int = typer.Option(
            50_000, "--eval-users", min=1, help="nDCG@10 on at most this many sampled users."
        ),
        kernel: str = typer.Option(
            "auto", "--kernel", help="This ALS's kernel: auto, fused (CPU) or batched."
        ),
        batched: bool = typer.Option(
            True,
            "--batched/--no-batched",
            help="With the fused kernel, also time the batched one in the same rounds.",
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Seconds per iteration of this ALS vs implicit's (medians), their ratio and both
        nDCG@10 (on CPU, the fused and the batched kernel in one run)."""
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

        def run() -> dict:
            from Prod.bench.als import bench_als as bench

            what = str(dataset) if dataset else f"{interactions:,} synthetic interactions"
            with err_console.status(f"benchmarking ALS on {what}") as status:

                def progress(label: str) -> None:
                    status.update(f"benchmarking ALS on {what}: {label}")

                return bench(
                    interactions,
                    factors,
                    iterations,
                    threads,
                    repeats,
                    seed,
                    device=device,
                    dataset_dir=dataset,
                    progress=progress,
                    max_eval_users=eval_users,
                    kernel=kernel,
                    compare_batched=batched,
                )

        emit(run_reporting_errors(run), as_json, lambda r: console.print(_als_table(r)))

    @bench_app.command("spark")
    def bench_spark(
        dataset: Path | None = typer.Option(
            None, "--dataset", help="Canonical dataset folder (default: synthetic interactions)."
        ),
        interactions: int = typer.Option(
            100_000, "--interactions", min=1000, help="Synthetic size (no --dataset)."
        ),
        params_file: Path | None = typer.Option(
            None, "--params", help="ALS params file (default: settings.als_params_path)."
        ),
        master: list[str] = typer.Option(
            ["local[*]"], "--master", help="Spark master(s) to time (repeatable)."
        ),
        standalone: int = typer.Option(
            0, "--standalone", min=0, help="Also start a standalone master + N workers."
        ),
        partitions: int = typer.Option(0, "--partitions", min=0, help="0: the cluster's cores."),
        seed: int = typer.Option(0, "--seed", help="Split (and synthetic data) seed."),
        trainer: bool = typer.Option(
            False, "--trainer", help="Also time one whole training run per backend (--dataset)."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Torch ALS vs Spark MLlib ALS (ALS_BACKEND=spark) on one split: fit wall time, Spark
        session start and input, nDCG@10 of both (same params file)."""

        def run() -> dict:
            from config import get_settings
            from Prod.als_trainer.service import load_params
            from Prod.bench.spark import bench_spark as bench

            params = load_params(params_file or get_settings().als_params_path)
            with err_console.status("benchmarking Spark ALS") as status:
                return bench(
                    dataset,
                    interactions,
                    params,
                    tuple(master),
                    standalone,
                    partitions,
                    seed,
                    progress=lambda label: status.update(f"benchmarking Spark ALS: {label}"),
                    trainer=trainer,
                )

        emit(run_reporting_errors(run), as_json)

    @bench_app.command("publish")
    def bench_publish(
        items: int = typer.Option(100_000, "--items", min=1, help="Synthetic items."),
        users: int = typer.Option(10_000, "--users", min=1, help="Synthetic users."),
        factors: int = typer.Option(64, "--factors", min=1, max=1024, help="Item vector size."),
        writers: list[int] = typer.Option(
            [0],
            "--writers",
            min=0,
            help="Chroma writers of a fill (repeatable: one fill each; 0: "
            "the publisher's default).",
        ),
        batch: int = typer.Option(0, "--batch", min=0, help="Items a Chroma add (0: server max)."),
        chroma_read: bool = typer.Option(
            False, "--chroma-read", help="Also time the old load path (paged read from Chroma)."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Publish N synthetic items on temporary stores: time to the switch (users + Redis items
        hash + read-back + meta + switch), the engine's load, the Chroma fill after the switch."""
        from Prod.bench.publish import bench_publish as bench

        def run() -> dict:
            with err_console.status("benchmarking publish") as status:
                return bench(
                    items,
                    users,
                    factors,
                    tuple(writers),
                    batch,
                    chroma_read=chroma_read,
                    progress=lambda label: status.update(f"benchmarking publish: {label}"),
                )

        emit(run_reporting_errors(run), as_json, _render_publish)

    @bench_app.command("chat")
    def bench_chat(
        dataset_dir: Path = typer.Option(None, "--dataset", help="Default: settings.dataset_dir"),
        repeats: int = typer.Option(100, min=5, help="Timed rankings."),
        max_products: int = typer.Option(20000, min=1, help="Index at most this many."),
        user_id: str = typer.Option(None, help="Personalise for this user (blend step)."),
        threads: int = typer.Option(None, min=1, help=_THREADS_HELP),
        as_json: bool = JsonOption,
    ) -> None:
        """Latency of embed + retrieve 50 + rerank + blend (p50/p99, no LLM; free-text queries,
        so all candidates are reranked) and time to first streamed token with the loopback
        Ollama stand-in (ollama_stub). Uses the configured servers, or temporary ones when those
        do not answer."""
        from config import get_settings
        from Prod.bench.chat import run_chat_bench

        folder = dataset_dir or get_settings().dataset_dir
        result = run_reporting_errors(
            lambda: with_servers(run_chat_bench, folder, repeats, max_products, user_id, threads)
        )
        emit(result, as_json, _render_chat)

    @bench_app.command("profile")
    def bench_profile(
        dataset_dir: Path = typer.Option(None, "--dataset", help="Default: settings.dataset_dir"),
        users: int = typer.Option(20, min=1, max=1000, help="Users profiled."),
        llm: str = typer.Option(
            None, help="provider/model to write summaries (local/smollm2: the packaged model)."
        ),
        max_tokens: int = typer.Option(60, min=8, help="LLM tokens per summary."),
        seed: int = typer.Option(0, help="Seed of the user sample."),
        threads: int = typer.Option(None, min=1, help=_THREADS_HELP),
        as_json: bool = JsonOption,
    ) -> None:
        """Preference summaries (GET /users/{user_id}/profile): template, cached and LLM latency
        p50/p99 and the share of LLM summaries the grounding guard let through
        (Prod/bench/profile.py). Configured servers must hold the dataset; temporary ones are
        loaded with it."""
        from config import get_settings
        from Prod.bench.profile import run_profile_bench
        from Prod.cli.servers import configured_or_temporary

        folder = dataset_dir or get_settings().dataset_dir

        def run() -> dict:
            with configured_or_temporary(get_settings()) as (settings, which):
                report = run_profile_bench(
                    settings,
                    folder,
                    users,
                    llm,
                    seed,
                    threads,
                    max_tokens,
                    load=which == "temporary",
                    say=_say,
                )
                return {**report, "servers": which}

        emit(run_reporting_errors(run), as_json, _render_profile)

    @bench_app.command("cold")
    def bench_cold(
        dataset_dirs: list[Path] = typer.Argument(None, help="Default: settings.dataset_dir"),
        shares: str = typer.Option("0,0.1,0.2", help="FRESH_SHARE values, comma-separated."),
        cold_share: float = typer.Option(0.1, min=0.01, max=0.9, help="Newest items held back."),
        k: int = typer.Option(10, min=1, max=100, help="List length of nDCG@k."),
        as_json: bool = JsonOption,
    ) -> None:
        """nDCG@k of mixing fresh items in by content (FRESH_SHARE) on a user-last split, the
        newest items' factors held back (Prod/bench/cold.py); no servers needed."""
        from config import get_settings
        from Prod.bench.cold import parse_shares, run_cold_bench

        folders = dataset_dirs or [get_settings().dataset_dir]
        result = run_reporting_errors(
            lambda: run_cold_bench(folders, parse_shares(shares), cold_share, k)
        )
        emit(result, as_json, _render_cold)

    @bench_app.command("wish")
    def bench_wish(
        dataset_dirs: list[Path] = typer.Argument(None, help="Default: settings.dataset_dir"),
        weights: str = typer.Option("0,0.25,0.5,0.75,1", help="WISH_WEIGHT values, commas."),
        users: int = typer.Option(300, "--users", min=1, help="Held-out users sampled."),
        n_last: int = typer.Option(5, "--n-last", min=1, help="Last items held out per user."),
        candidates: int = typer.Option(100, "--candidates", min=10, help="ALS top-N reranked."),
        reranker: str = typer.Option(None, help="Cross-encoder (default RERANKER_MODEL)."),
        as_json: bool = JsonOption,
    ) -> None:
        """nDCG@10 of wish recommendations ("something in <category/genre>") per WISH_WEIGHT,
        ALS alone to wish alone, on a user-last split (Prod/bench/wish.py); no servers."""
        from config import get_settings
        from Prod.bench.wish import parse_weights, render, run_wish_bench

        folders = dataset_dirs or [get_settings().dataset_dir]
        result = run_reporting_errors(
            lambda: run_wish_bench(
                folders, parse_weights(weights), users, n_last, candidates, 10, reranker
            )
        )
        emit(
            result,
            as_json,
            lambda r: render(r, lambda line: console.print(line, markup=False, highlight=False)),
        )

    @bench_app.command("named-items")
    def bench_named_items(
        dataset_dir: Path = typer.Option(None, "--dataset", help="A MovieLens folder."),
        titles: int = typer.Option(300, "--titles", min=10, help="Titles drawn for matching."),
        users: int = typer.Option(200, "--users", min=0, help="Held-out users (0: skip)."),
        seed: int = typer.Option(7, help="Draws and perturbations."),
        no_matching: bool = typer.Option(
            False, "--no-matching", help="Recommendations from the true 3 items only (fast)."
        ),
        as_json: bool = JsonOption,
    ) -> None:
        """Conversational cold start on MovieLens: title matching accuracy@1 per perturbation
        (typos, partial titles, years, lower case; rapidfuzz alone vs blended with MiniLM) and
        nDCG@10 from 3 named favourites (fold-in / cosine + popularity prior, picked on
        validation users) vs popularity (Prod/bench/named_items.py); no servers needed."""
        from Prod.bench.named_items import DEFAULT_DATASET, render, run_named_items_bench

        folder = dataset_dir or DEFAULT_DATASET
        result = run_reporting_errors(
            lambda: run_named_items_bench(folder, titles, users, seed, matching=not no_matching)
        )
        emit(
            result,
            as_json,
            lambda r: render(r, lambda line: console.print(line, markup=False, highlight=False)),
        )
