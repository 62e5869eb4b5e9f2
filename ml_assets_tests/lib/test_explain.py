"""Reasons per customer: contributions that add up to each model kind's raw score, and the reasons they give."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import polars as pl
import pytest

from lib.backtest import labelled_snapshots, weekly_snapshots
from lib.baselines import bgnbd_inputs, bgnbd_matrix_scores, fit_bgnbd
from lib.datagen import RetailConfig, generate_retail, retail_as_transactions
from lib.explain import (
    ADDITIVITY_TOLERANCE,
    ExplainSpec,
    explain,
    explained_count,
    explained_positions,
    path_shapley,
    raw_score,
    reasons_frame,
    reference_row,
    sampled_orders,
    top_reasons,
)
from lib.export import onnx_churn_probability, onnx_session
from lib.features import FEATURE_COLUMNS, feature_columns, feature_label, model_features
from lib.stacking import bgnbd_logit, fit_stack, logit, pack, packed_to_onnx
from lib.training import feature_matrix, load_booster, train_lgbm

HORIZON = 90


def _spec(kind: str, data: bytes, features: tuple[str, ...], ref: tuple[float, ...]) -> ExplainSpec:
    return ExplainSpec(kind, f"{kind}-test", features, data, hashlib.sha256(data).hexdigest(), ref, HORIZON)


@pytest.fixture(scope="module")
def world():
    """LightGBM, BG/NBD, their stack and a network, trained on a small generated retail log."""
    cfg = RetailConfig(start=dt.date(2024, 1, 1), end=dt.date(2025, 3, 31), customers=1_500, seed=7)
    tx = retail_as_transactions(generate_retail(cfg))
    days = weekly_snapshots(cfg.start, cfg.end - dt.timedelta(days=HORIZON), 8, 90)
    frame = labelled_snapshots(tx, days, HORIZON, feature_columns({"quantity"}))
    features = model_features(frame)
    train = frame.filter(pl.col("snapshot_date") < days[-2])
    valid = frame.filter(pl.col("snapshot_date") == days[-2])
    scored = frame.filter(pl.col("snapshot_date") == days[-1])
    lgbm = train_lgbm(train, valid, {"learning_rate": 0.1}, 60, 10, [{"num_leaves": 15, "min_data_in_leaf": 50}])
    bgnbd = fit_bgnbd(*bgnbd_inputs(train.filter(pl.col("snapshot_date") == train["snapshot_date"].max())))
    x_valid = feature_matrix(valid, features)
    raw = load_booster(lgbm.model_text).predict(x_valid, raw_score=True)
    stack = fit_stack(valid["churned"].to_numpy(), raw, bgnbd_logit(bgnbd, features, HORIZON, x_valid))
    bgnbd_json = json.dumps(bgnbd.as_dict()).encode()
    packed = pack(lgbm.model_text, bgnbd.as_dict(), stack, HORIZON, features, {})
    ref = reference_row(train.select(features), features)
    specs = {
        "lightgbm": _spec("lightgbm", lgbm.model_text.encode(), features, ref),
        "bgnbd": _spec("bgnbd", bgnbd_json, features, ref),
        "stack": _spec("stack", packed, features, ref),
    }
    return specs, feature_matrix(scored, features), features, (train, valid), packed


def _torch_spec(world) -> tuple[ExplainSpec, bytes]:
    from lib.torch_net import TorchTrainConfig, load_net, net_to_onnx, train_net

    specs, _, features, (train, valid), _ = world
    net = train_net(
        feature_matrix(train, features),
        train["churned"].to_numpy().astype(np.float32),
        feature_matrix(valid, features),
        valid["churned"].to_numpy().astype(np.float32),
        TorchTrainConfig(hidden=(16, 8), max_epochs=4, patience=2, device="cpu"),
    )
    graph = net_to_onnx(load_net(net.state, net.architecture), len(features))
    return _spec("torch", graph, features, specs["lightgbm"].reference), graph


@pytest.mark.slow
def test_contributions_and_base_add_up_to_every_kinds_raw_score_and_served_probability(world) -> None:
    from lib.baselines import bgnbd_from_dict, bgnbd_to_onnx
    from lib.export import lgbm_to_onnx

    specs, x, features, _, packed = world
    torch_spec, torch_graph = _torch_spec(world)
    specs = {**specs, "torch": torch_spec}
    bgnbd = bgnbd_from_dict(json.loads(specs["bgnbd"].artifact))
    graphs = {
        "lightgbm": lgbm_to_onnx(specs["lightgbm"].artifact.decode(), len(features)),
        "bgnbd": bgnbd_to_onnx(bgnbd, features, float(HORIZON)),
        "stack": packed_to_onnx(packed),
        "torch": torch_graph,
    }
    for kind, spec in specs.items():
        e = explain(spec, x)
        assert e.contributions.shape == x.shape, kind
        # The explanation adds up to the model's own raw score (computed without the explainer) ...
        assert np.max(np.abs(e.raw - raw_score(spec, x))) <= ADDITIVITY_TOLERANCE, kind
        # ... and, through the sigmoid, to the probability the served ONNX graph gives (float32 outputs).
        served = onnx_churn_probability(onnx_session(graphs[kind]), x)
        assert np.max(np.abs(1 / (1 + np.exp(-e.raw)) - served)) <= 1e-5, kind
        # Something moves every score: not all contributions are zero.
        assert np.abs(e.contributions).sum(axis=1).min() > 0 or kind == "bgnbd", kind
    # BG/NBD sees three inputs: every other feature gets exactly nothing, in BG/NBD alone and in the stack's BG/NBD part.
    inputs = {features.index(c) for c in ("repeat_days", "active_span_days", "tenure_days")}
    others = [j for j in range(len(features)) if j not in inputs]
    assert not explain(specs["bgnbd"], x).contributions[:, others].any()
    # The base of the baseline-Shapley kinds is the reference customer's own score.
    ref = np.asarray([specs["bgnbd"].reference], dtype=np.float32)
    assert explain(specs["bgnbd"], x).base == pytest.approx(float(logit(bgnbd_matrix_scores(bgnbd, features, HORIZON, ref))[0]))


def test_the_sampling_explainer_reports_the_rows_it_has_explained() -> None:
    """At scale the network's reasons take minutes: each chunk of rows is reported, the last with every row."""
    from lib.explain import CHUNK_ROWS

    m = np.ones((CHUNK_ROWS * 2 + 5, 3), dtype=np.float32)
    seen: list[int] = []
    path_shapley(lambda z: z.sum(axis=1), m, np.zeros(3, np.float32), range(3), sampled_orders(3), seen.append)
    assert seen == [CHUNK_ROWS, CHUNK_ROWS * 2, CHUNK_ROWS * 2 + 5]


def test_path_shapley_is_exact_over_every_order_and_for_additive_functions_over_sampled_orders() -> None:
    # f = z0 * z1 from the reference (0, 0) to (2, 3): the interaction is shared equally, 3 each.
    m = np.array([[2.0, 3.0]], dtype=np.float32)
    e = path_shapley(lambda z: z[:, 0] * z[:, 1], m, np.zeros(2, np.float32), [0, 1], sampled_orders(2))
    assert e.contributions.tolist() == [[3.0, 3.0]] and e.base.tolist() == [0.0]
    # An additive function: every order credits each feature with its own term, so sampled orders are exact too.
    rng = np.random.default_rng(3)
    m = rng.normal(size=(50, 12)).astype(np.float32)
    ref = rng.normal(size=12).astype(np.float32)
    w = rng.normal(size=12)

    def f(z: np.ndarray) -> np.ndarray:
        return np.sin(z.astype(np.float64)) @ w

    orders = sampled_orders(12)
    assert len(orders) == 16 and all(sorted(o) == list(range(12)) for o in orders) and orders[1] == orders[0][::-1]
    e = path_shapley(f, m, ref, range(12), orders)
    expected = (np.sin(m.astype(np.float64)) - np.sin(ref.astype(np.float64))) * w
    assert np.max(np.abs(e.contributions - expected)) < 1e-9
    assert np.max(np.abs(e.raw - f(m))) < 1e-9
    # The orders are fixed: the batch and the service walk the same ones.
    assert sampled_orders(12) == orders


def test_steps_that_change_nothing_are_not_evaluated_and_the_values_stay_exact() -> None:
    """Most customers sit at the reference on many features (nothing bought in a window, a zero share): those steps
    leave the row as it was, so the walk credits them 0 without evaluating the model, and stops evaluating after a
    row's last change (the row itself, scored once). The values are still every order's exact Shapley values."""
    import itertools
    from math import factorial

    rng = np.random.default_rng(7)
    ref = np.array([0.5, 0.0, 1.0, 2.0], dtype=np.float32)
    m = rng.normal(size=(300, 4)).astype(np.float32)
    at_ref = rng.random((300, 4)) < 0.5
    m[at_ref] = np.broadcast_to(ref, m.shape)[at_ref]
    evaluated = [0]

    def f(z: np.ndarray) -> np.ndarray:
        evaluated[0] += len(z)
        z = z.astype(np.float64)
        return z[:, 0] * z[:, 1] * z[:, 2] + np.tanh(z[:, 3] - z[:, 0])

    e = path_shapley(f, m, ref, range(4), sampled_orders(4))
    # Shapley's formula, subset by subset, for each row.
    expected = np.zeros((300, 4))
    for j in range(4):
        others = [i for i in range(4) if i != j]
        for size in range(4):
            for subset in itertools.combinations(others, size):
                weight = factorial(size) * factorial(3 - size) / factorial(4)
                without = np.where(np.isin(np.arange(4), subset), m, ref).astype(np.float32)
                with_j = np.where(np.isin(np.arange(4), [*subset, j]), m, ref).astype(np.float32)
                expected[:, j] += weight * (f(with_j) - f(without))
    assert np.max(np.abs(e.contributions - expected)) < 1e-9
    assert not e.contributions[at_ref].any()
    evaluated[0] = 0
    path_shapley(f, m, ref, range(4), sampled_orders(4))
    # Every step of 24 orders would be 24 x 4 x 300 rows; the start and the row itself are two evaluations more.
    changed = (~at_ref).sum(axis=1)
    needed = 24 * np.maximum(changed - 1, 0).sum() + 2 * 300
    assert evaluated[0] <= needed < 24 * 4 * 300


def test_top_reasons_are_the_largest_positive_contributions_in_words() -> None:
    features = ("recency_days", "spend_90d", "web_share", "n_country_values")
    c = np.array([[0.5, -0.1, 0.2, 0.9], [-1.0, -2.0, 0.1, -0.5], [0.3, 0.3, 0.0, 0.0]])
    names, values = top_reasons(c, features)
    assert [names[r][0] for r in range(3)] == [
        "distinct country values in the last 90 days",
        "days since the last purchase",
        "share of purchases through web",
    ]
    assert values[0].tolist() == [0.9, 0.5, 0.2]
    assert [names[r][1] for r in range(3)] == ["share of purchases through web", None, None]
    assert values[1, 0] == 0.1 and np.isnan(values[1, 1:]).all()
    # Ties keep the feature order.
    assert [names[r][2] for r in range(2)] == ["days since the last purchase", "spend in the last 90 days"]
    # Every built-in feature has the analyst's words, not its column name.
    assert all(feature_label(f) != f.replace("_", " ") for f in FEATURE_COLUMNS)


def test_the_first_reason_summary_counts_each_customers_first_reason() -> None:
    from lib.explain import first_reason_summary

    c = np.array([[0.5, 0.1], [0.2, 0.4], [0.7, 0.0], [-0.1, -0.3]])
    rows = first_reason_summary(c, ("recency_days", "spend_90d"))
    assert rows == [
        {"first reason": "days since the last purchase", "share of customers": 0.5, "mean contribution (log-odds)": 0.6},
        {"first reason": "(nothing raised the score)", "share of customers": 0.25, "mean contribution (log-odds)": 0.0},
        {"first reason": "spend in the last 90 days", "share of customers": 0.25, "mean contribution (log-odds)": 0.4},
    ]


def test_the_model_card_explains_a_seeded_sample_of_a_large_test_split_and_says_so() -> None:
    from lib.explain import first_reason_summary
    from lib.model_card import CardFacts, card_html, card_sample

    assert card_sample(5, cap=10).tolist() == [0, 1, 2, 3, 4]
    sample = card_sample(100_000, cap=2_000)
    assert len(sample) == len(set(sample.tolist())) == 2_000 and (np.diff(sample) > 0).all()
    assert card_sample(100_000, cap=2_000).tolist() == sample.tolist()  # the same rows on every run
    # A first reason held by 30 % of the rows: the sample's share within a few points of it.
    rng = np.random.default_rng(1)
    c = np.where(rng.random((100_000, 1)) < 0.3, [[1.0, 0.0]], [[0.0, 1.0]])
    share = first_reason_summary(c[sample], ("recency_days", "spend_90d"))[1]["share of customers"]
    assert abs(share - 0.3) < 0.04
    facts = dict(version="v", kind="torch", created_at="", code_version="", horizon_days=30, decision="kept", reason="")
    rest = dict(data_window={}, population={}, out_of_time=[], test_metrics={}, calibration=[], business=[], reasons=[], drift=[])
    assert "a seeded sample of 2,000 rows" in card_html(CardFacts(**facts, **rest, first_reasons_rows=2_000))
    assert "seeded sample" not in card_html(CardFacts(**facts, **rest))


def test_reasons_frame_and_a_tampered_artifact(world) -> None:
    from lib.explain import ExplainDigestError

    specs, x, _, _, _ = world
    frame = reasons_frame(specs["stack"], x)
    assert frame.columns == ["reason_1", "reason_2", "reason_3", "contribution_1", "contribution_2", "contribution_3"]
    assert frame.height == x.shape[0] and frame["reason_1"].null_count() < frame.height
    ranked = frame.drop_nulls()
    assert (ranked["contribution_1"] >= ranked["contribution_2"]).all() and (ranked["contribution_2"] >= ranked["contribution_3"]).all()
    assert (frame["reason_1"].is_null() == frame["contribution_1"].is_null()).all()
    spec = specs["lightgbm"]
    forged = ExplainSpec(spec.kind, spec.version, spec.features, spec.artifact + b"\n", "0" * 64, spec.reference, HORIZON)
    with pytest.raises(ExplainDigestError, match="hashes to"):
        explain(forged, x[:2])


def test_the_explained_rows_are_the_days_highest_scores_ties_by_id_whatever_their_order() -> None:
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.7, 0.5, 0.3, 0.9, 0.4])
    ids = ["c07", "c03", "c11", "c01", "c05", "c09", "c02", "c04", "c10", "c06"]
    assert explained_count(10, 0.3) == 3 and explained_count(10, 0.01) == 1 and explained_count(0, 0.5) == 0
    assert explained_count(10, 1.0) == 10
    # Three rows tie at 0.9: all three are the top 3; of the two at 0.5 the smaller id goes first.
    assert explained_positions(scores, ids, 0.3).tolist() == [1, 3, 8]
    assert explained_positions(scores, ids, 0.5).tolist() == [1, 3, 5, 6, 8]  # c02 before c11 at 0.5
    assert explained_positions(scores, ids, 1.0).tolist() == list(range(10))
    # The same customers in any row order (one chunk or several, either engine).
    rng = np.random.default_rng(3)
    for _ in range(5):
        p = rng.permutation(10)
        picked = {ids[p[i]] for i in explained_positions(scores[p], [ids[j] for j in p], 0.5)}
        assert picked == {"c03", "c01", "c10", "c09", "c02"}


@pytest.mark.slow
def test_a_days_reasons_go_to_its_highest_scores_however_feast_cuts_the_chunks(world) -> None:
    """The scoring step's day buffer: one chunk or chunks of 7 rows cutting across days give the same rows, and the
    reasons land on each day's top ``share`` exactly, equal to explaining those rows directly."""
    from types import SimpleNamespace

    from lib.progress import Ticker
    from ml_assets.assets.inference_days import DayBuffer

    specs, x, features, _, _ = world
    spec = specs["lightgbm"]
    champion = SimpleNamespace(explainer=spec)
    n = min(len(x), 60)
    rows = pl.DataFrame(x[:n], schema=list(features), orient="row").with_columns(
        pl.Series("customer_id", [f"u{i:03d}" for i in range(n)]),
        pl.Series("snapshot_date", [dt.date(2025, 1, 1 + i % 3) for i in range(n)]),
    )
    probability = 1 / (1 + np.exp(-load_booster(spec.artifact.decode()).predict(x[:n], raw_score=True)))
    served = rows.select("customer_id", "snapshot_date", pl.Series("churn_probability", probability), pl.lit("champion").alias("arm"))

    def run(chunk: int) -> pl.DataFrame:
        buffer = DayBuffer(rows.select("customer_id", "snapshot_date"), [champion], 0.25)  # type: ignore[list-item]
        ticker, out = Ticker("t", buffer.to_explain, lambda _: None), []
        for lo in range(0, n, chunk):
            for day in buffer.add(served.slice(lo, chunk), rows.slice(lo, chunk)):
                out.append(buffer.explained(day, champion, None, ticker)[0])  # type: ignore[arg-type]
        assert not buffer.parts and buffer.done == buffer.to_explain == sum(explained_count(20, 0.25) for _ in range(3))
        return pl.concat(out).sort("customer_id")

    whole, chunked = run(n), run(7)
    assert whole.equals(chunked) and whole.height == n
    for (day,), part in whole.partition_by("snapshot_date", as_dict=True).items():
        top = set(part["customer_id"].gather(explained_positions(part["churn_probability"].to_numpy(), part["customer_id"], 0.25)))
        assert set(part.filter(pl.col("contribution_1").is_not_null() | pl.col("reason_1").is_not_null())["customer_id"]) <= top
        assert part.filter(~pl.col("customer_id").is_in(list(top)))["reason_1"].null_count() == part.height - len(top), day
        mine = part.filter(pl.col("customer_id").is_in(list(top))).sort("customer_id")
        direct = reasons_frame(spec, feature_matrix(rows.filter(pl.col("customer_id").is_in(list(top))).sort("customer_id"), features))
        assert mine["reason_1"].to_list() == direct["reason_1"].to_list()
