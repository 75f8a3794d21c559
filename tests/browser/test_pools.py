"""The dashboard's pool selector, on a server that requires tokens: choosing a pool shows
only its sessions, agents and events (the streams are shared, the page leaves other pools'
events out), the choice is kept in the hash route and across a reload, and a token scoped
to one pool sees the selector fixed to it."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from shared import tokens
from tests.support.browser import WEB_ENV, Api
from tests.support.live_server import live_server_fixture

KEY = "p" * 48
pytestmark = [pytest.mark.shared_data, pytest.mark.browser]

production = live_server_fixture(**WEB_ENV, ORCHESTRATOR_ENV="production", API_SECRET_KEY=KEY)


def token(**claims) -> str:
    return tokens.mint(key=KEY, sub=f"operator-{uuid.uuid4().hex[:6]}", role="operator", **claims)


def sign_in(page, value: str) -> None:
    page.get_by_label("Token", exact=True).fill(value)
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#connection")).to_have_text("Live")


def agent(api: Api, name: str, pool: str) -> dict:
    body = {"name": name, "type": "BACKEND", "capabilities": ["TESTING"], "pool": pool}
    return api.post("/api/v1/agents/register", body, 201)


def session_row(page, session: dict):
    return page.locator(f'#sessions-body tr[data-session-id="{session["id"]}"]')


def agent_row(page, found: dict):
    return page.locator(f'#agents-body tr[data-agent-id="{found["id"]}"]')


def test_a_pool_shows_only_its_rows_and_events_and_is_kept(production, page):
    api = Api(production, token())
    suffix = uuid.uuid4().hex[:6]
    red, blue = f"red-{suffix}", f"blue-{suffix}"
    red_session = api.session(f"Red work {suffix}", start=True, pool=red)
    blue_session = api.session(f"Blue work {suffix}", start=True, pool=blue)
    red_agent = agent(api, f"red-agent-{suffix}", red)
    blue_agent = agent(api, f"blue-agent-{suffix}", blue)

    page.goto(f"{production}/dashboard")
    sign_in(page, token())
    expect(session_row(page, red_session)).to_be_visible()  # every pool, each row badged
    expect(session_row(page, blue_session).locator(".pool-badge")).to_have_text(blue)
    page.get_by_role("link", name="Agents").click()  # the agents' pools join the selector
    expect(agent_row(page, blue_agent).locator(".pool-badge")).to_have_text(blue)

    page.locator("#pool-select").select_option(red)
    expect(page).to_have_url(re.compile(rf"#/agents\?pool={red}$"))
    expect(agent_row(page, red_agent)).to_be_visible()
    expect(agent_row(page, blue_agent)).to_have_count(0)
    expect(page.locator("#sys-counts")).to_have_text(
        f"Pool {red}: 1 session running · 0 tasks in progress · 1 agent online"
    )
    page.get_by_role("link", name="Sessions").click()
    expect(page).to_have_url(re.compile(rf"#/sessions\?pool={red}$"))
    expect(session_row(page, red_session)).to_be_visible()
    expect(session_row(page, blue_session)).to_have_count(0)
    expect(page.locator("#page-info")).to_contain_text("1 session")

    # live: the red pool's events change its rows; the blue pool's bring nothing in
    late_blue = api.session(f"Blue later {suffix}", pool=blue)
    late_red = api.session(f"Red later {suffix}", pool=red)
    api.post(f"/api/v1/sessions/{blue_session['id']}/pause")
    api.post(f"/api/v1/sessions/{red_session['id']}/pause")
    expect(session_row(page, red_session).locator(".status-cell")).to_have_text("PAUSED")
    expect(session_row(page, late_red)).to_be_visible()
    expect(session_row(page, late_blue)).to_have_count(0)
    expect(session_row(page, blue_session)).to_have_count(0)
    # a session made here goes into the pool shown
    page.locator("#session-title").fill(f"Red from the page {suffix}")
    page.get_by_role("button", name="Create session").click()
    made = page.locator("#sessions-body tr", has_text=f"Red from the page {suffix}")
    expect(made.locator(".pool-badge")).to_have_text(red)

    page.get_by_role("link", name="Activity").click()
    feed = page.locator("#activity-feed")
    expect(feed.locator(f'a[href="#/sessions/{red_session["id"]}"]').first).to_be_visible()
    expect(feed.locator(f'a[href="#/sessions/{late_red["id"]}"]').first).to_be_visible()
    for other in (blue_session, late_blue):
        expect(feed.locator(f'a[href="#/sessions/{other["id"]}"]')).to_have_count(0)
    expect(feed).not_to_contain_text(blue_agent["name"])
    page.locator("#pool-select").select_option("")  # all pools: the blue events are there
    expect(feed.locator(f'a[href="#/sessions/{late_blue["id"]}"]').first).to_be_visible()
    expect(page).to_have_url(re.compile(r"#/activity$"))

    page.locator("#pool-select").select_option(red)
    page.goto(f"{production}/dashboard#/sessions")
    page.reload()  # the pool is kept (localStorage) and written into the route
    expect(page.locator("#pool-select")).to_have_value(red)
    expect(page).to_have_url(re.compile(rf"#/sessions\?pool={red}$"))
    expect(session_row(page, late_red)).to_be_visible()
    expect(session_row(page, late_blue)).to_have_count(0)
    # a link naming a pool chooses it, one typed in too
    page.goto(f"{production}/dashboard#/agents?pool={blue}")
    expect(page.locator("#pool-select")).to_have_value(blue)
    expect(agent_row(page, blue_agent)).to_be_visible()
    expect(agent_row(page, red_agent)).to_have_count(0)
    page.locator("#pool-select").select_option("*other*")
    page.locator("#pool-other").fill("Not A Pool")
    page.locator("#pool-other").press("Enter")
    expect(page.locator("#message")).to_contain_text("is not a pool name")
    empty = f"empty-{suffix}"
    page.locator("#pool-other").fill(empty)
    page.locator("#pool-other").press("Enter")
    expect(page).to_have_url(re.compile(rf"#/agents\?pool={empty}$"))
    expect(page.locator("#pool-select")).to_have_value(empty)
    expect(page.locator("#agents-count")).to_have_text("0 agents registered, 0 online")


def test_a_token_scoped_to_one_pool_sees_the_selector_fixed_to_it(production, page):
    suffix = uuid.uuid4().hex[:6]
    mine, theirs = f"mine-{suffix}", f"theirs-{suffix}"
    admin = Api(production, token())
    own = admin.session(f"Mine {suffix}", start=True, pool=mine)
    other = admin.session(f"Theirs {suffix}", start=True, pool=theirs)

    page.goto(f"{production}/dashboard#/sessions?pool={theirs}")  # kept from before
    page.evaluate(f"localStorage.setItem('orchestrator.dashboard.pool', '\"{theirs}\"')")
    sign_in(page, token(pools=[mine]))
    select = page.locator("#pool-select")
    expect(select).to_have_value(mine)
    expect(select).to_be_disabled()
    expect(select.locator("option")).to_have_text([mine])
    expect(page).to_have_url(re.compile(rf"#/sessions\?pool={mine}$"))
    expect(session_row(page, own)).to_be_visible()
    expect(session_row(page, other)).to_have_count(0)
    expect(page.locator("#sys-counts")).to_contain_text(f"Pool {mine}: 1 session running")
