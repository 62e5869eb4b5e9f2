"""What the registry's hash chain costs: trusted reads, verify, appends with a key and an anchor, the erased-id check.

Setup (a temporary SQLite registry): V model versions (each registered,
exported, parity-checked; every fifth promoted), K API keys and E erasures,
so the chain holds about 4V + K + E events.

Baselines in the same run: the plain table reads the service's poller made
before the chain was trusted (`champion()` + `api_keys()`), an append without
key or anchor, and a request with nothing erased.

    python -m benchmarks.bench_chain [--quick] [--versions V] [--keys K] [--erasures E]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import Timing, machine, repeat


def _registry(root: Path, versions: int, keys: int, erasures: int, **fields: str):
    from resources import ModelRegistry

    registry = ModelRegistry(url=f"sqlite:///{root / 'registry.sqlite'}", **fields)
    for i in range(versions):
        version = f"lgbm-{i:012d}"
        registry.register(
            version=version,
            kind="lgbm",
            run_id=f"run-{i}",
            data_window={"horizon_days": 30},
            features=["recency_days"],
            params={},
            metrics={"backtest_roc_auc": 0.8},
            artifact_uri=f"/a/{version}.txt",
            artifact_sha256=f"{i:064x}",
        )
        registry.attach_onnx(version, f"/a/{version}.onnx", f"{i + 1:064x}", f"run-{i}")
        registry.record_parity(version, f"{i + 1:064x}", True, {"max_abs_diff": 1e-7}, f"run-{i}")
        if i % 5 == 0:
            registry.promote(version, actor="bench", reason="better", run_id=f"run-{i}")
    for k in range(keys):
        registry.create_api_key(f"partner-{k}", ["predict"], actor="bench")
    for e in range(erasures):
        registry.record_erasure(f"C{e:08d}", actor="bench", reason="asked", removed={})
    return registry


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--versions", type=int, default=1_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--erasures", type=int, default=1_000)
    args = parser.parse_args(argv)
    versions, keys, erasures = (20, 5, 20) if args.quick else (args.versions, args.keys, args.erasures)
    n = 5 if args.quick else 50
    root = Path(tempfile.mkdtemp(prefix="bench-chain-"))
    try:
        registry = _registry(root, versions, keys, erasures)
        events = len(registry.chain()[0])
        from resources import ModelRegistry

        def fresh() -> ModelRegistry:
            return ModelRegistry(url=registry.url)

        plain = repeat("poller's plain reads: champion() + api_keys()", lambda: (registry.champion(), registry.api_keys()), n)
        warm = fresh()
        warm.trusted_champion()
        cold = repeat(
            "a new process: engine set-up, whole chain read and replayed", lambda: fresh().trusted_champion() and None, max(3, n // 10)
        )
        steady = repeat(
            "trusted reads, head unchanged: trusted_champion() + trusted_api_keys()",
            lambda: (warm.trusted_champion(), warm.trusted_api_keys()),
            n,
        )

        def one_more() -> None:
            registry.keep(None, reason="bench", run_id=None)
            warm.trusted_champion()

        incremental = repeat("append one event, then trusted reads (incremental replay)", one_more, n)
        verify = repeat("churn registry verify without artifacts (chain + tables)", lambda: fresh().verify(None), max(3, n // 10))
        append = repeat("append, unkeyed, no anchor", lambda: registry.keep(None, reason="bench", run_id=None), n)
        keyed_anchored = fresh().model_copy(update={"chain_key": "bench-chain-key", "chain_anchor": str(root / "anchor")})
        keyed_anchored.keep(None, reason="start the keyed part", run_id=None)
        append_keyed = repeat(
            "append, keyed + anchored in a local folder", lambda: keyed_anchored.keep(None, reason="bench", run_id=None), n
        )
        erased = warm.erased_hashes()
        request = [f"C{9_000_000 + i:08d}" for i in range(100)]
        nothing = repeat("100 ids checked, nothing erased", lambda: warm.is_erased(request, set()), n * 10)
        checked = repeat(f"100 ids checked against {len(erased):,} erased hashes", lambda: warm.is_erased(request, erased), n * 10)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def ms(t: Timing, base: Timing | None) -> str:
        ratio = f"{t.median / base.median:.2f}x" if base else "baseline"
        return f"| {t.label} | {t.median * 1e3:.3f} | {min(t.samples) * 1e3:.3f} | {max(t.samples) * 1e3:.3f} | {ratio} |"

    lines = [
        "",
        f"### The registry's hash chain ({events:,} events: {versions:,} versions, {keys} keys, {erasures:,} erasures; SQLite)",
        "",
        f"machine: {machine()}",
        "",
        "| operation | median ms | min ms | max ms | vs baseline |",
        "|---|---|---|---|---|",
        ms(plain, None),
        ms(steady, plain),
        ms(incremental, plain),
        ms(cold, plain),
        ms(verify, plain),
        ms(append, None),
        ms(append_keyed, append),
        ms(nothing, None),
        ms(checked, nothing),
    ]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
