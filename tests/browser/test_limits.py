"""The dashboard on the production defaults: RATE_LIMIT 60/minute and
WS_MAX_CONNECTIONS_PER_CLIENT 5 per client, with every tab of the page one client (one
operator token). Events are made by other identities (tokens of other `sub`s, agents with
their own tokens), so that only the page's own requests count against its budget.

- A working page spends a small share of the budget however many events flow: views follow
  the streams, and fetch only what events cannot tell, a burst at a time.
- Six tabs stay live on five sockets: a SharedWorker holds the streams for all of them.
- A refused socket says so, and shows "—", never made-up figures.
- A 429 shows one line with the time of the next try, no toasts, and the page recovers.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import pytest
import requests
from playwright.sync_api import expect

from orchestrator_client.ws_client import Client
from shared import tokens
from tests.support.browser import Api
from tests.support.live_server import live_server_fixture

KEY = "l" * 48
TOKEN_KEY = "orchestrator.dashboard.token"
pytestmark = [pytest.mark.shared_data, pytest.mark.browser]


# A production server on the default limits (the suite's own servers have none).
defaults = live_server_fixture(
    ORCHESTRATOR_ENV="production",
    API_SECRET_KEY=KEY,
    RATE_LIMIT="60/minute",
    WS_MAX_CONNECTIONS_PER_CLIENT="5",
)
# The same budget in a window of 15 s: the 429 test waits for its window to end.
short_window = live_server_fixture(
    ORCHESTRATOR_ENV="production",
    API_SECRET_KEY=KEY,
    RATE_LIMIT="60/15 seconds",
    WS_MAX_CONNECTIONS_PER_CLIENT="5",
)


def token(sub: str, role: str = "operator") -> str:
    return tokens.mint(key=KEY, sub=sub, role=role)


class Crowd:
    """The rest of the world: operators of their own identities (round robin, so that none
    of them is rate limited) and agents acting with their own tokens."""

    def __init__(self, base: str, size: int = 12) -> None:
        self.base = base
        run = uuid.uuid4().hex[:6]
        self.apis = itertools.cycle([Api(base, token(f"crowd-{run}-{i}")) for i in range(size)])

    def api(self) -> Api:
        return next(self.apis)

    def agent(self, name: str, capabilities=("CODE_GENERATION",), max_tasks: int = 3):
        registered = self.api().agent(capabilities=capabilities, max_tasks=max_tasks, name=name)
        return registered, Api(self.base, registered["token"])


def dashboard_context(browser, sub: str):
    """A browser context whose every tab has the operator token `sub` (one client)."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(15_000)
    context.add_init_script(f"sessionStorage.setItem({TOKEN_KEY!r}, {token(sub)!r})")
    return context


def page_requests(page) -> list[tuple[float, str, str]]:
    """The page's own /api/v1 calls (time, method, URL), with the statuses it got."""
    seen: list[tuple[float, str, str]] = []
    page.on(
        "request",
        lambda r: seen.append((time.monotonic(), r.method, r.url)) if "/api/v1/" in r.url else None,
    )
    return seen


def test_six_tabs_on_five_sockets_all_live(defaults, browser):
    crowd = Crowd(defaults)
    context = dashboard_context(browser, f"tabs-{uuid.uuid4().hex[:6]}")
    try:
        pages = []
        for _ in range(6):
            page = context.new_page()
            page.goto(f"{defaults}/dashboard")
            pages.append(page)
        for page in pages:
            expect(page.locator("#connection")).to_have_text("Live")
            expect(page.locator("#sys-database")).to_have_text("ok")
            expect(page.locator("#stream-banner")).to_be_hidden()
        title = f"Seen by every tab {uuid.uuid4().hex[:6]}"
        crowd.api().session(title)
        for page in pages:
            expect(page.locator("#sessions-body tr", has_text=title)).to_have_count(1)
        # a tab on another view is live too (the same shared socket)
        pages[5].goto(f"{defaults}/dashboard#/activity")
        crowd.api().session(f"{title} again")
        expect(
            pages[5].locator("#activity-feed .feed-item[data-type='session.created']")
        ).not_to_have_count(0)
        expect(pages[0].locator("#sessions-body tr", has_text=f"{title} again")).to_have_count(1)
    finally:
        context.close()


def test_a_refused_socket_says_so_and_shows_no_made_up_figures(defaults, browser):
    sub = f"crowded-{uuid.uuid4().hex[:6]}"
    ws_base = defaults.replace("http://", "ws://")
    holders = [Client.connect(f"{ws_base}/ws/system?token={token(sub)}") for _ in range(5)]
    context = dashboard_context(browser, sub)
    try:
        page = context.new_page()
        page.goto(f"{defaults}/dashboard")
        expect(page.locator("#connection")).to_have_text("Refused")
        banner = page.locator("#stream-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("WS_MAX_CONNECTIONS_PER_CLIENT")
        expect(banner).to_contain_text("Next try at")
        for figure in ("#sys-database", "#sys-redis", "#sys-workers"):
            expect(page.locator(figure)).to_have_text("—")
        expect(page.locator("#sys-counts")).to_have_text("")
        expect(page.locator("#page-info")).to_contain_text("— sessions")
        expect(page.locator("#message")).to_be_hidden()  # a line, not a toast
        for holder in holders:
            holder.close()
        holders = []
        # a later try (at most 20 s after the last) gets in, and the real figures come
        expect(page.locator("#connection")).to_have_text("Live", timeout=40_000)
        expect(page.locator("#sys-database")).to_have_text("ok")
        expect(page.locator("#page-info")).to_contain_text("Page 1 of")
        expect(banner).to_be_hidden()
    finally:
        for holder in holders:
            holder.close()
        context.close()


class Traffic(threading.Thread):
    """Events at a steady clip from other identities: sessions and tasks created, agents
    taking, doing and finishing tasks, heartbeats with a changing load."""

    def __init__(self, crowd: Crowd, session_id: str, agents) -> None:
        super().__init__(daemon=True)
        self.crowd = crowd
        self.session_id = session_id
        self.agents = agents
        self.halt = threading.Event()
        self.made = {"sessions": 0, "tasks": 0, "completed": 0, "heartbeats": 0}
        self.errors: list[str] = []

    def run(self) -> None:
        tick = 0
        while not self.halt.is_set():
            try:
                self.step(tick)
            except Exception as exc:  # noqa: BLE001  (reported by the test)
                self.errors.append(repr(exc))
            tick += 1
            self.halt.wait(1.0)

    def step(self, tick: int) -> None:
        # Each identity stays within its own 60 a minute: a task every 2 s and a session
        # every 8 s over a dozen operators; each agent polls every 5 s (its heartbeat, its
        # tasks, and a start or a completion for each it holds).
        api = self.crowd.api()
        if tick % 2 == 0:
            api.task(self.session_id, f"Load task {self.made['tasks']}")
            self.made["tasks"] += 1
        if tick % 8 == 0:
            api.session(f"Load session {tick}", start=True)
            self.made["sessions"] += 1
        agent, agent_api = self.agents[tick % len(self.agents)]
        agent_api.post(
            f"/api/v1/agents/{agent['id']}/heartbeat", {"current_load": (tick * 7) % 100}
        )
        self.made["heartbeats"] += 1
        for task in agent_api.call("GET", f"/api/v1/agents/{agent['id']}/tasks")["items"]:
            if task["status"] == "ASSIGNED":
                agent_api.post(f"/api/v1/tasks/{task['id']}/start")
            else:
                agent_api.post(f"/api/v1/tasks/{task['id']}/complete", {"result": {"n": 1}})
                self.made["completed"] += 1


def test_a_working_day_fits_in_the_rate_budget(defaults, browser):
    """Each view open for a while under a steady flow of events: the page's own requests
    stay far below RATE_LIMIT (60 a minute), and the views stay current."""
    crowd = Crowd(defaults)
    run = uuid.uuid4().hex[:6]
    agents = [crowd.agent(f"load-{run}-{i}") for i in range(5)]
    busy = crowd.api().session(f"Busy {run}", start=True)
    context = dashboard_context(browser, f"budget-{run}")
    page = context.new_page()
    sent = page_requests(page)
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if "/api/v1/" in r.url else None)
    traffic = Traffic(crowd, busy["id"], agents)
    dwell = 20  # seconds on each view
    try:
        page.goto(f"{defaults}/dashboard")
        expect(page.locator("#connection")).to_have_text("Live")
        started = time.monotonic()
        traffic.start()

        page.wait_for_timeout(dwell * 1000)  # the sessions list
        expect(page.locator("#sessions-body tr", has_text="Load session")).not_to_have_count(0)

        page.goto(f"{defaults}/dashboard#/sessions/{busy['id']}")
        expect(page.locator("#session-title-heading")).to_have_text(busy["title"])
        page.wait_for_timeout(dwell * 1000)
        newest = f"Load task {traffic.made['tasks'] - 3}"
        expect(page.locator(".node", has_text=newest)).to_have_count(1, timeout=20_000)
        expect(page.locator(".node[data-status=COMPLETED]").first).to_be_visible()

        page.goto(f"{defaults}/dashboard#/agents")
        page.wait_for_timeout(dwell * 1000)
        for agent, _ in agents:
            expect(page.locator(f'#agents-body tr[data-agent-id="{agent["id"]}"]')).to_be_visible()

        page.goto(f"{defaults}/dashboard#/activity")
        page.wait_for_timeout(dwell * 1000)
        expect(page.locator("#activity-feed .feed-item")).not_to_have_count(0)
        elapsed = time.monotonic() - started
    finally:
        traffic.halt.set()
        traffic.join(10)
        context.close()

    assert not traffic.errors, traffic.errors[:3]
    assert traffic.made["tasks"] >= 35 and traffic.made["completed"] >= 20, traffic.made
    during = [t for t, _, _ in sent if t >= started]
    per_minute = len(during) / (elapsed / 60)
    busiest = max(sum(1 for u in during if t <= u < t + 60) for t in during) if during else 0
    print(
        f"\ndashboard requests: {len(during)} in {elapsed:.0f} s = {per_minute:.1f}/min "
        f"(busiest minute {busiest}); events made: {traffic.made}"
    )
    assert 429 not in statuses
    assert per_minute <= 20, (per_minute, [(round(t - started), m, u) for t, m, u in sent])
    assert busiest <= 30, busiest


def test_a_429_shows_one_line_with_the_next_try_and_no_toasts(short_window, browser):
    defaults = short_window
    sub = f"spender-{uuid.uuid4().hex[:6]}"
    crowd = Crowd(defaults)
    context = dashboard_context(browser, sub)
    page = context.new_page()
    try:
        page.goto(f"{defaults}/dashboard")
        expect(page.locator("#connection")).to_have_text("Live")
        expect(page.locator("#page-info")).to_contain_text("Page 1 of")
        page.evaluate(
            """() => { window.toasts = 0;
            new MutationObserver(() => { if (!document.querySelector('#message').hidden)
              window.toasts += 1; }).observe(document.querySelector('#message'),
              { attributes: true, attributeFilter: ['hidden'] }); }"""
        )
        # someone else with the same identity spends the budget
        spender = {"Authorization": f"Bearer {token(sub)}"}
        for _ in range(70):
            answer = requests.get(f"{defaults}/api/v1/agents", headers=spender, timeout=10)
            if answer.status_code == 429:
                break
        assert answer.status_code == 429
        titles = [f"Wanted {uuid.uuid4().hex[:6]} {i}" for i in range(4)]
        for title in titles:  # each makes the page want the list again
            crowd.api().session(title)
            page.wait_for_timeout(300)
        line = page.locator("#rate-banner")
        expect(line).to_be_visible()
        expect(line).to_contain_text("rate limit")
        expect(line).to_contain_text("next try at")
        assert page.evaluate("window.toasts") == 0
        # the window ends: the page fetches what it missed, and the line goes
        for title in titles:
            expect(page.locator("#sessions-body tr", has_text=title)).to_have_count(
                1, timeout=75_000
            )
        expect(line).to_be_hidden()
        assert page.evaluate("window.toasts") == 0
    finally:
        context.close()
