"""/metrics: requests by route template and status, latency by route, the security and
delivery counters; no label ever holds an email, a code or a raw path.

The metrics live in the process-wide registry, shared by every app a test session starts:
each test compares what it reads after its requests with what it read before.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from taxease_auth import metrics
from tests.api.conftest import API, login, register, request_otp, verify
from tests.conftest import STRONG_PASSWORD, RunningApp, SettingsFactory, StartApp


def samples(text: str) -> Iterator[Sample]:
    for family in text_string_to_metric_families(text):
        yield from family.samples


class Scrape:
    """One reading of /metrics."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = list(samples(text))

    def value(self, name: str, **labels: str) -> float:
        """The sample's value (0 when it does not exist yet, as for a counter never moved)."""
        for sample in self.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        return 0.0

    def label_values(self) -> set[str]:
        return {value for sample in self.samples for value in sample.labels.values()}


async def scrape(app: RunningApp) -> Scrape:
    response = await app.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


REQUESTS = "taxease_http_requests_total"
SECONDS_COUNT = "taxease_http_request_duration_seconds_count"


async def test_requests_are_counted_by_route_template_and_status(dev_app: RunningApp) -> None:
    before = await scrape(dev_app)

    await register(dev_app.client, "counted@example.com")
    await register(dev_app.client, "counted@example.com", accept_terms=False)
    await dev_app.client.get(f"{API}/register")  # a POST route: 405
    await dev_app.client.get("/healthz")

    after = await scrape(dev_app)
    register_route = f"{API}/register"
    assert moved(before, after, REQUESTS, route=register_route, status="201") == 1
    assert moved(before, after, REQUESTS, route=register_route, status="422") == 1
    assert moved(before, after, REQUESTS, route=register_route, status="405") == 1
    assert moved(before, after, REQUESTS, route="/healthz", status="200") == 1
    assert moved(before, after, SECONDS_COUNT, route=register_route) == 3
    assert moved(before, after, "taxease_http_request_duration_seconds_bucket",
                 route=register_route, le="+Inf") == 3  # fmt: skip


async def test_latency_is_observed_in_seconds(dev_app: RunningApp) -> None:
    before = await scrape(dev_app)

    await register(dev_app.client, "latency@example.com")

    after = await scrape(dev_app)
    route = f"{API}/register"
    spent = moved(before, after, "taxease_http_request_duration_seconds_sum", route=route)
    assert 0 < spent < 10  # one registration: one argon2id hash at test cost


async def test_unmatched_paths_share_one_label_and_never_appear(dev_app: RunningApp) -> None:
    before = await scrape(dev_app)

    for path in ("/nothing-here", f"{API}/verify-otp/leaked@example.com", "/123456"):
        assert (await dev_app.client.get(path)).status_code == 404

    after = await scrape(dev_app)
    assert moved(before, after, REQUESTS, route="unmatched", status="404") == 3
    assert "nothing-here" not in after.text
    assert "leaked@example.com" not in after.text


async def test_no_label_holds_an_email_a_code_or_a_raw_path(dev_app: RunningApp) -> None:
    email = "labels@example.com"
    await register(dev_app.client, email)
    code = await dev_app.latest_code(email)
    wrong = "000000" if code != "000000" else "111111"
    assert (await verify(dev_app.client, email, wrong)).status_code == 400
    assert (await verify(dev_app.client, email, code)).status_code == 200
    assert (await login(dev_app.client, email, STRONG_PASSWORD)).status_code == 200
    await request_otp(dev_app.client, email, "password_reset")
    await dev_app.client.get(f"/api/v1/auth/{email}?code={code}")

    after = await scrape(dev_app)

    assert email not in after.text
    assert code not in after.text
    for value in after.label_values():
        assert "@" not in value, value
        assert not re.fullmatch(r"[0-9]{6,10}", value), value  # nothing shaped like a code
        # Routes are the app's templates (or "unmatched"), never what a client typed.
        assert "?" not in value, value
    # The registry is the process's, so it holds the routes of every app started this
    # session: each label is a template (or "unmatched"), never a path a client typed.
    routes = {s.labels["route"] for s in after.samples if "route" in s.labels}
    for route in routes - {"unmatched"}:
        assert re.fullmatch(r"(/\.?[a-z0-9_-]+|/\{[a-z_]+\})+(\.json)?", route), route
    assert f"{API}/register" in routes


async def test_code_login_and_mail_counters_move(dev_app: RunningApp) -> None:
    email = "flow-counters@example.com"
    before = await scrape(dev_app)

    await register(dev_app.client, email)
    code = await dev_app.latest_code(email)
    await dev_app.settled_outbox()
    wrong = "000000" if code != "000000" else "111111"
    await verify(dev_app.client, email, wrong)
    await verify(dev_app.client, email, code)
    await login(dev_app.client, email, STRONG_PASSWORD)
    await login(dev_app.client, email, "not the password at all")

    after = await scrape(dev_app)
    purpose = "email_verification"
    assert moved(before, after, "taxease_codes_issued_total", purpose=purpose) == 1
    checked = "taxease_codes_checked_total"
    assert moved(before, after, checked, purpose=purpose, outcome="verified") == 1
    failure_outcomes = {
        sample.labels["outcome"]
        for sample in after.samples
        if sample.name == checked and sample.labels["outcome"] != "verified"
    }
    failures = [
        moved(before, after, checked, purpose=purpose, outcome=outcome)
        for outcome in failure_outcomes
    ]
    assert sum(failures) == 1
    logins = "taxease_logins_total"
    assert moved(before, after, logins, outcome="success") == 1
    login_outcomes = {sample.labels["outcome"] for sample in after.samples if sample.name == logins}
    assert sum(moved(before, after, logins, outcome=outcome) for outcome in login_outcomes) == 2
    assert moved(before, after, "taxease_mails_total", kind=purpose, outcome="sent") == 1


async def test_outcome_labels_do_not_tell_whether_an_account_exists(dev_app: RunningApp) -> None:
    """Review 17.3: a wrong password and an unknown address move one login outcome; a code
    for an address without one and a wrong code move one code outcome."""
    email = "outcomes@example.com"
    await register(dev_app.client, email)
    code = await dev_app.latest_code(email)
    wrong = "000000" if code != "000000" else "111111"
    before = await scrape(dev_app)

    await login(dev_app.client, email, "not the password at all")
    await login(dev_app.client, "nobody-here@example.com", "not the password at all")
    await verify(dev_app.client, email, wrong)
    await verify(dev_app.client, "nobody-here@example.com", wrong)
    await verify(dev_app.client, email, "1234567")  # not OTP_LENGTH digits: the input alone

    after = await scrape(dev_app)
    assert moved(before, after, "taxease_logins_total", outcome="bad_credentials") == 2
    checked = "taxease_codes_checked_total"
    purpose = "email_verification"
    assert moved(before, after, checked, purpose=purpose, outcome="rejected") == 2
    assert moved(before, after, checked, purpose=purpose, outcome="malformed") == 1
    outcomes = {s.labels.get("outcome") for s in after.samples if s.name in (checked,
                "taxease_logins_total")}  # fmt: skip
    assert outcomes <= {"verified", "malformed", "rejected", "success", "challenged",
                        "unverified", "bad_credentials"}, outcomes  # fmt: skip


async def test_outbox_and_circuit_gauges_are_exposed(dev_app: RunningApp) -> None:
    await register(dev_app.client, "gauges@example.com")
    await dev_app.settled_outbox()

    after = await scrape(dev_app)

    for gauge in (
        "taxease_outbox_pending",
        "taxease_outbox_oldest_pending_age_seconds",
        "taxease_mail_circuit_open",
    ):
        assert f"# TYPE {gauge} gauge" in after.text


async def test_rate_limited_requests_are_counted_by_budget(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    running = await start_app(make_settings(rate_limit_register_per_ip="1/hour"))
    before = await scrape(running)

    assert (await register(running.client, "first@example.com")).status_code == 201
    assert (await register(running.client, "second@example.com")).status_code == 429

    after = await scrape(running)
    assert moved(before, after, "taxease_rate_limited_total", budget="register-ip") == 1
    assert moved(before, after, REQUESTS, route=f"{API}/register", status="429") == 1


def test_a_scrape_skips_the_file_of_a_process_starting_this_instant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Multiprocess mode: a process creates its file empty and sizes it next; a scrape in
    between must still answer, with every other process's values."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    served = MmapedDict(str(tmp_path / "counter_4001.db"))
    key = mmap_key(REQUESTS, REQUESTS, ["route", "status"], ["/healthz", "200"], "HTTP requests")
    served.write_value(key, 3.0, 0.0)
    served.close()
    (tmp_path / "counter_4002.db").touch()  # the process starting: not sized yet

    scraped = Scrape(metrics.render().decode())

    assert scraped.value(REQUESTS, route="/healthz", status="200") == 3.0


# --- who may read /metrics on the API's port (issue 17.3) -------------------------------------

METRICS_TOKEN = "a-random-metrics-token-for-the-tests-" + "t" * 12


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def production_app(start_app: StartApp, ses_settings: SettingsFactory) -> RunningApp:
    """Production mode (mail through SES at moto) with METRICS_TOKEN set."""
    return await start_app(ses_settings(metrics_token=METRICS_TOKEN))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("a-random-metrics-token-for-the-tests-" + "t" * 11 + "x"),
        bearer(""),
        {"Authorization": METRICS_TOKEN},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
        bearer(METRICS_TOKEN + "x"),
    ],
    ids=["none", "wrong", "empty", "no-scheme", "basic", "longer"],
)
async def test_production_metrics_without_the_right_token_is_an_unknown_path(
    production_app: RunningApp, headers: dict[str, str]
) -> None:
    refused = await production_app.client.get("/metrics", headers=headers)
    unknown = await production_app.client.get("/no-such-route", headers=headers)

    assert refused.status_code == 404
    assert refused.json() == unknown.json()
    assert "taxease_" not in refused.text


async def test_production_metrics_with_the_token_answers(production_app: RunningApp) -> None:
    response = await production_app.client.get("/metrics", headers=bearer(METRICS_TOKEN))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "taxease_http_requests_total" in response.text


async def test_the_bearer_scheme_is_case_insensitive(production_app: RunningApp) -> None:
    headers = {"Authorization": f"bearer {METRICS_TOKEN}"}

    assert (await production_app.client.get("/metrics", headers=headers)).status_code == 200


async def test_production_metrics_without_a_configured_token_is_always_404(
    start_app: StartApp, ses_settings: SettingsFactory
) -> None:
    running = await start_app(ses_settings())

    for headers in ({}, bearer(""), bearer("None"), bearer(METRICS_TOKEN)):
        assert (await running.client.get("/metrics", headers=headers)).status_code == 404


async def test_development_mode_keeps_metrics_open(dev_app: RunningApp) -> None:
    assert dev_app.settings.metrics_token is None

    assert (await dev_app.client.get("/metrics")).status_code == 200
